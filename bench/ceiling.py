"""The least a backfill client must fetch per block, as fast as one connection allows.

Per block: its hash by number (``chain_getBlockHash`` with lists), its header and its
``Timestamp.Now`` (``state_getStorage``), pipelined under a cap on messages in flight,
optionally in JSON-RPC batches; raw ``websockets`` and ``orjson``, no decoding, no rows.
This is the ceiling that bench/backfill_vs_reference.py compares blocktimesd with.

    python bench/ceiling.py WS_URL FIRST LAST [--inflight 64] [--batch 16]
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
HASHES_PER_CALL = 256


async def ceiling(url: str, first: int, last: int, inflight: int, batch: int) -> float:
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

        reader = asyncio.create_task(read())
        started = time.perf_counter()

        async def chunk(lo: int, hi: int) -> None:
            reply = await send([("chain_getBlockHash", [list(range(lo, hi + 1))])])
            calls = [c for h in reply["result"] for c in
                     (("chain_getHeader", [h]), ("state_getStorage", [NOW_KEY, h]))]  # fmt: skip
            await asyncio.gather(*(send(calls[i : i + batch]) for i in range(0, len(calls), batch)))

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
    a = parser.parse_args()
    rate = uvloop.run(ceiling(a.url, a.first, a.last, a.inflight, a.batch))
    print(f"{rate:,.0f} blocks/s")
