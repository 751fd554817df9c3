"""The least a backfill client must fetch per block, as fast as one connection allows.

Per block its hash by number (``chain_getBlockHash`` with lists of 256 numbers), its
header, and the storage a row needs, by ``--storage``:

- ``now``: ``Timestamp.Now`` with ``state_getStorage`` (a block time and nothing else);
- ``row``: ``Timestamp.Now`` and ``Domains.SuccessfulBundles(0)`` in one
  ``state_queryStorageAt`` (what a consensus row needs, read block by block);
- ``ranges``: the same two keys by one ``state_queryStorage`` per 256 blocks (nodes
  that allow unsafe methods).

Pipelined under a cap on messages in flight, in JSON-RPC batches of ``--batch`` calls;
raw ``websockets`` and ``orjson``, no decoding, no rows.  This is the ceiling that
bench/backfill_vs_reference.py compares blocktimesd with.

    python bench/ceiling.py WS_URL FIRST LAST [--inflight 64] [--batch 16] [--storage now]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from typing import Any

import orjson
import uvloop
from websockets.asyncio.client import connect

NOW_KEY = "0xf0c365c3cf59d671eb72da0e7a4113c49f1f0515f462cdcf84e0f1d6045dfcbb"
# Domains.SuccessfulBundles(0): twox128("Domains") ++ twox128("SuccessfulBundles") ++ 0u32
# (an Identity-hashed map of DomainId)
BUNDLES_KEY = "0x0b41d0c7f7b4485bd7be1d66066b00ad38420b1ba9feb1a2d2173b0caecad9d100000000"
HASHES_PER_CALL = 256


async def ceiling(
    url: str, first: int, last: int, inflight: int, batch: int, storage: str = "now"
) -> float:
    """Blocks per second for blocks ``first..last``."""
    ids = itertools.count(1)
    slots = asyncio.Semaphore(inflight)
    waiting: dict[int, asyncio.Future[Any]] = {}  # first id of a message -> its future

    def message(calls: list[tuple[str, list[Any]]]) -> tuple[int, bytes]:
        payload = [{"jsonrpc": "2.0", "id": next(ids), "method": m, "params": p} for m, p in calls]
        return payload[0]["id"], orjson.dumps(payload if len(payload) > 1 else payload[0])

    async with connect(url, max_size=None, compression=None, proxy=None) as ws:

        async def read() -> None:
            async for raw in ws:
                reply = orjson.loads(raw)
                head = reply[0] if isinstance(reply, list) else reply
                fut = waiting.pop(min(r["id"] for r in reply) if isinstance(reply, list)
                                  else head["id"])  # fmt: skip
                fut.set_result(reply)

        async def send(calls: list[tuple[str, list[Any]]]) -> Any:
            async with slots:
                first_id, body = message(calls)
                fut = asyncio.get_running_loop().create_future()
                waiting[first_id] = fut
                await ws.send(body, text=True)
                return await fut

        def per_block(block_hash: str) -> list[tuple[str, list[Any]]]:
            if storage == "row":
                return [
                    ("chain_getHeader", [block_hash]),
                    ("state_queryStorageAt", [[NOW_KEY, BUNDLES_KEY], block_hash]),
                ]
            if storage == "now":
                return [
                    ("chain_getHeader", [block_hash]),
                    ("state_getStorage", [NOW_KEY, block_hash]),
                ]
            return [("chain_getHeader", [block_hash])]

        reader = asyncio.create_task(read())
        started = time.perf_counter()

        async def chunk(lo: int, hi: int) -> None:
            reply = await send([("chain_getBlockHash", [list(range(lo, hi + 1))])])
            hashes = reply["result"]
            calls = [c for h in hashes for c in per_block(h)]
            sends = [send(calls[i : i + batch]) for i in range(0, len(calls), batch)]
            if storage == "ranges":
                keys = [NOW_KEY, BUNDLES_KEY]
                sends.append(send([("state_queryStorage", [keys, hashes[0], hashes[-1]])]))
            await asyncio.gather(*sends)

        await asyncio.gather(
            *(chunk(lo, min(lo + HASHES_PER_CALL - 1, last))
              for lo in range(first, last + 1, HASHES_PER_CALL))
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        reader.cancel()
    return (last - first + 1) / elapsed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("first", type=int)
    parser.add_argument("last", type=int)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--storage", choices=["now", "row", "ranges"], default="now")
    a = parser.parse_args()
    rate = uvloop.run(ceiling(a.url, a.first, a.last, a.inflight, a.batch, a.storage))
    print(f"{rate:,.0f} blocks/s")
