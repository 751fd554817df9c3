"""Which transport mix fetches fastest: pipelining, batching, or both?

For each injected latency (0 ms and 50 ms by default) a `blocktimesd devnet` process
serves the consensus chain; blocktimesd's RPC client fetches `Timestamp.Now` at N
blocks with `call_many` under several (requests in flight, batch size) settings.
Remember that a Substrate node runs the calls of one batch one after another and
buffers 64 messages per connection; the devnet does the same.  Prints requests/s.

    python bench/rpc_transport.py [--blocks 3000] [--latencies 0,50]
"""

from __future__ import annotations

import argparse
import time

import uvloop
from devnet_process import devnet_process

from blocktimesd.aio.rpc import RpcClient, RpcSettings

NOW_KEY = "0xf0c365c3cf59d671eb72da0e7a4113c49f1f0515f462cdcf84e0f1d6045dfcbb"
MIXES = [(1, 1), (16, 1), (64, 1), (256, 1), (1, 64), (8, 8), (16, 4), (64, 4), (64, 16)]


async def measure(url: str, hashes: list[str], inflight: int, batch: int) -> float:
    settings = RpcSettings(endpoints=(url,), max_inflight=inflight, batch_size=batch)
    calls = [("state_getStorage", [NOW_KEY, h]) for h in hashes]
    async with RpcClient(settings, "bench") as client:
        await client.wait_ready(10)
        start = time.perf_counter()
        results = await client.call_many(calls, timeout=600)
        elapsed = time.perf_counter() - start
    assert all(isinstance(r, str) for r in results)
    return len(calls) / elapsed


async def run(args: argparse.Namespace) -> None:
    for latency in (float(x) for x in args.latencies.split(",")):
        async with devnet_process("--history", str(args.blocks), "--latency-ms", str(latency)) as (
            url,
            _,
        ):
            async with RpcClient(RpcSettings(endpoints=(url,)), "bench") as client:
                hashes = await client.call("chain_getBlockHash", list(range(1, args.blocks + 1)))
            # Fewer blocks under latency: the slow mixes would take minutes otherwise.
            sample = hashes if latency == 0 else hashes[: args.blocks // 5]
            print(f"latency {latency:g} ms, {len(sample)} x state_getStorage")
            best = (0.0, (0, 0))
            for inflight, batch in MIXES:
                if latency > 0 and inflight * batch < 8:
                    print(f"  in flight {inflight:3d}, batch {batch:3d}:  (skipped: too slow)")
                    continue
                rate = await measure(url, sample, inflight, batch)
                best = max(best, (rate, (inflight, batch)))
                print(f"  in flight {inflight:3d}, batch {batch:3d}: {rate:9,.0f} requests/s")
            print(f"  fastest: {best[1][0]} in flight, batch {best[1][1]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=3000)
    parser.add_argument("--latencies", default="0,50")
    uvloop.run(run(parser.parse_args()))
