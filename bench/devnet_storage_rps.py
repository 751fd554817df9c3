"""How many state_getStorage responses per second the devnet serves to one client.

Starts `blocktimesd devnet` in its own process (so that client and server do not share
an interpreter), then one pipelining client keeps W requests in flight for a few
seconds, for several W. Prints one line per window size.

    python bench/devnet_storage_rps.py [--seconds 5] [--history 2000]
"""

from __future__ import annotations

import argparse
import time

import orjson
import uvloop
from devnet_process import devnet_process
from websockets.asyncio.client import connect

NOW_KEY = "0xf0c365c3cf59d671eb72da0e7a4113c49f1f0515f462cdcf84e0f1d6045dfcbb"


async def measure(url: str, hashes: list[str], window: int, seconds: float) -> float:
    async with connect(url, max_size=None, compression=None) as ws:
        requests = [
            orjson.dumps(
                {"jsonrpc": "2.0", "id": i, "method": "state_getStorage", "params": [NOW_KEY, h]}
            ).decode()
            for i, h in enumerate(hashes)
        ]
        for request in requests[:window]:
            await ws.send(request)
        sent, received = window, 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            reply = orjson.loads(await ws.recv())
            assert "result" in reply, reply
            received += 1
            if time.perf_counter() >= deadline:
                break
            await ws.send(requests[sent % len(requests)])
            sent += 1
        elapsed = time.perf_counter() - start
        for _ in range(sent - received):
            await ws.recv()
        return received / elapsed


async def run(args: argparse.Namespace) -> None:
    async with devnet_process("--history", str(args.history)) as (url, _):
        async with connect(url, max_size=None) as ws:
            await ws.send(
                orjson.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "chain_getBlockHash",
                        "params": [list(range(1, args.history + 1))],
                    }
                ).decode()
            )
            hashes = orjson.loads(await ws.recv())["result"]
        print(
            f"devnet state_getStorage(Timestamp.Now, at) to one client, {args.seconds:.0f} s each"
        )
        for window in (1, 8, 64, 256):
            rate = await measure(url, hashes, window, args.seconds)
            print(f"  {window:4d} in flight: {rate:9,.0f} responses/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--history", type=int, default=2000)
    uvloop.run(run(parser.parse_args()))
