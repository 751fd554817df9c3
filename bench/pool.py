"""The backfill over a pool of connections against one connection and against the
one-connection raw ceiling, on a `blocktimesd devnet` with a Substrate node's RPC
limits (64 messages in progress per connection, 100 connections).

Under latency (--latency, 50 ms by default) each round runs, back to back: the raw
ceiling over one connection (bench/ceiling.py, consensus rows' storage per block, the
better of single calls and batches of 16, chosen first), `blocktimesd backfill
--connections 1`, and `blocktimesd backfill` with its pool probed (the default); the
ratios are per round, then their median; with --fixed N also `--connections N`.
Without latency (--zero-blocks, 0: skip) it runs `--connections 1` and the probed pool
in back-to-back pairs: the probe must find no gain there and cost nothing.

    python bench/pool.py [--latency 50] [--blocks 10000] [--repeat 3] [--zero-blocks 20000]
                         [--fixed 8]
"""

from __future__ import annotations

import argparse
import json
import statistics

import uvloop
from backfill_vs_reference import HERE, Figure, ceiling, run
from devnet_process import PYTHON, devnet_process

MIXES = [(64, 1), (64, 16)]  # (messages in flight, calls per batch) for the ceiling


async def backfill(url: str, last: int, connections: int | None) -> Figure:
    flags = ["--storage", "per-block"]
    if connections is not None:
        flags += ["--connections", str(connections)]
    out = await run(PYTHON, str(HERE / "backfill_run.py"), url, "1", str(last), *flags)
    result = json.loads(out.splitlines()[-1])
    if result["exit"] != 0 or result["blocks"] != last:
        raise RuntimeError(f"backfill did not complete: {result}")
    label = "blocktimesd, " + (f"{connections} connection(s)" if connections else "pool probed")
    return Figure(label, result["blocks"], result["seconds"])


def show(title: str, rows: dict[str, list[Figure]], ratios: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    print(f"  {'client':40s} {'blocks/s (median)':>18s}   rounds")
    for label, figures in rows.items():
        rates = [f.rate for f in figures]
        listed = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"  {label:40s} {statistics.median(rates):18,.0f}   {listed}")
    for label, values in ratios.items():
        listed = ", ".join(f"{r:.2f}" for r in values)
        print(f"  {label}: median {statistics.median(values):.2f}x ({listed})")


async def latency_rounds(args: argparse.Namespace) -> None:
    last = args.blocks
    flags = ("--history", str(last + 200), "--latency-ms", str(args.latency))
    async with devnet_process(*flags) as (url, _):
        tried = [await ceiling(url, last, "row", mix) for mix in MIXES]
        mix = MIXES[max(range(len(tried)), key=lambda i: tried[i].rate)]
        rows: dict[str, list[Figure]] = {}
        ratios: dict[str, list[float]] = {
            "pool / one-connection ceiling": [],
            "pool / blocktimesd over one connection": [],
            "one connection / one-connection ceiling": [],
        }
        if args.fixed:
            ratios[f"{args.fixed} connections (--connections) / one-connection ceiling"] = []
        for _ in range(args.repeat):
            top = await ceiling(url, last, "row", mix)
            one = await backfill(url, last, 1)
            pool = await backfill(url, last, None)
            for figure in (top, one, pool):
                rows.setdefault(figure.client, []).append(figure)
            ratios["pool / one-connection ceiling"].append(pool.rate / top.rate)
            ratios["pool / blocktimesd over one connection"].append(pool.rate / one.rate)
            ratios["one connection / one-connection ceiling"].append(one.rate / top.rate)
            if args.fixed:
                fixed = await backfill(url, last, args.fixed)
                rows.setdefault(fixed.client, []).append(fixed)
                ratios[f"{args.fixed} connections (--connections) / one-connection ceiling"].append(
                    fixed.rate / top.rate
                )
    show(f"latency {args.latency:g} ms, {last:,} blocks (ceiling: {mix[0]} in flight x "
         f"{mix[1]} per batch)", rows, ratios)  # fmt: skip


async def zero_rounds(args: argparse.Namespace) -> None:
    last = args.zero_blocks
    async with devnet_process("--history", str(last + 200)) as (url, _):
        rows: dict[str, list[Figure]] = {}
        ratios: dict[str, list[float]] = {"pool probed / one connection": []}
        for round_ in range(args.repeat):
            order: list[int | None] = [1, None] if round_ % 2 == 0 else [None, 1]
            done = {c: await backfill(url, last, c) for c in order}
            for figure in done.values():
                rows.setdefault(figure.client, []).append(figure)
            ratios["pool probed / one connection"].append(done[None].rate / done[1].rate)
    show(f"latency 0 ms, {last:,} blocks", rows, ratios)


async def main(args: argparse.Namespace) -> None:
    await latency_rounds(args)
    if args.zero_blocks:
        await zero_rounds(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=50.0)
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="back-to-back rounds")
    parser.add_argument("--zero-blocks", type=int, default=20_000)
    parser.add_argument("--fixed", type=int, default=8, help="also --connections N; 0: skip")
    uvloop.run(main(parser.parse_args()))
