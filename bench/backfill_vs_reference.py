"""blocktimesd's backfill against the seed design (polkadot.js, block by block) and
against the raw-fetch ceiling, on the same simulated network, at 0 and 50 ms latency.

For each latency one `blocktimesd devnet` process (--history blocks, --unsafe-rpc so
that the state_queryStorage path can be measured too) serves the consensus chain, and
each client runs in its own process, one after another.  At 0 ms the whole history is
backfilled (100,000 blocks by default: real backfills run to millions, so start-up and
the last file weigh as little as they would there); under latency --blocks-latency.

- blocktimesd: `blocktimesd backfill` of the consensus chain (bench/backfill_run.py),
  end to end (connect, preflight, metadata, rows, Parquet files), with storage read
  per block (what any node allows) and by state_queryStorage ranges (own node);
- reference: bench/reference/reference.mjs, the seed design with @polkadot/api (fewer
  blocks: it is slow, and its rate does not depend on the range);
- ceiling: bench/ceiling.py, the least a client must fetch for the same rows (hash by
  number batched, header, Timestamp.Now and Domains.SuccessfulBundles, per block or
  by ranges), pipelined, no processing; best of a few mixes of messages in flight and
  calls per batch.  Also the ceiling of a bare block time (Timestamp.Now alone), for
  reference.

The machine may be shared and its speed drift: each ceiling's best mix is chosen first,
then --repeat rounds run blocktimesd and the ceiling fetching the same back to back, and
the ratio is the median of those pairs.  Prints blocks/s (best of each) and the ratios
(targets: >= 10x the reference at 0 ms, >= 100x at 50 ms, >= 0.7 of the ceiling that
fetches the same).  With --memory-history N it also backfills N blocks (a
devnet with that much history; its build time is printed) and reports the backfill's
peak RSS.

    python bench/backfill_vs_reference.py [--history 100000] [--repeat 3]
    python bench/backfill_vs_reference.py --latencies none --memory-history 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop
from devnet_process import PYTHON, devnet_process

HERE = Path(__file__).parent
REFERENCE = HERE / "reference"
# (messages in flight, calls per batch): big batches win when the node answers fast,
# small ones when each call takes long (the devnet's latency is per call).
CEILING_MIXES = {True: [(64, 16), (64, 64), (64, 256), (16, 256)], False: [(64, 1), (64, 16)]}
STORAGE_LABELS = {
    "row": "ceiling (storage per block)",
    "ranges": "ceiling (queryStorage ranges)",
    "now": "ceiling (Timestamp.Now alone)",
}


@dataclass
class Figure:
    client: str
    blocks: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.blocks / self.seconds


async def run(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return out.decode()


async def blocktimesd(url: str, last: int, storage: str) -> Figure:
    return (await blocktimesd_peak(url, last, storage))[0]


async def blocktimesd_peak(url: str, last: int, storage: str) -> tuple[Figure, float]:
    out = await run(PYTHON, str(HERE / "backfill_run.py"), url, "1", str(last),
                    "--storage", storage)  # fmt: skip
    result = json.loads(out.splitlines()[-1])
    if result["exit"] != 0 or result["blocks"] != last:
        raise RuntimeError(f"backfill did not complete: {result}")
    label = "blocktimesd backfill " + (
        "(queryStorage ranges)" if storage == "range" else "(storage per block)"
    )
    note = f"client CPU {result['cpu_seconds']:.2f} s"
    return Figure(label, result["blocks"], result["seconds"], note), result["peak_rss_mib"]


async def reference(url: str, count: int) -> Figure:
    out = await run("node", str(REFERENCE / "reference.mjs"), url, "1", str(count))
    result = json.loads(out.splitlines()[-1])
    return Figure("reference (polkadot.js, seed design)", result["blocks"], result["seconds"])


async def ceiling(url: str, last: int, storage: str, mix: tuple[int, int]) -> Figure:
    inflight, batch = mix
    out = await run(PYTHON, str(HERE / "ceiling.py"), url, "1", str(last),
                    "--inflight", str(inflight), "--batch", str(batch),
                    "--storage", storage)  # fmt: skip
    rate = float(out.split()[0].replace(",", ""))
    return Figure(STORAGE_LABELS[storage], last, last / rate, f"{inflight} in flight x {batch}")


def best(figures: list[Figure]) -> Figure:
    return max(figures, key=lambda f: f.rate)


@dataclass
class Comparison:
    figures: dict[str, list[Figure]]
    ratios: dict[str, list[float]]  # blocktimesd / ceiling, measured back to back


async def compare(latency: float, args: argparse.Namespace) -> Comparison:
    """First each ceiling's best mix (one run of each), then --repeat rounds in which
    blocktimesd and the ceiling fetching the same run back to back: the ratio of each
    pair is measured under the same conditions, whatever the machine does meanwhile."""
    last = args.history - 100 if latency == 0 else min(args.history - 100, args.blocks_latency)
    ref_count = args.reference_blocks if latency == 0 else args.reference_blocks_latency
    flags = ("--history", str(args.history), "--latency-ms", str(latency), "--unsafe-rpc")
    figures: dict[str, list[Figure]] = {}
    ratios: dict[str, list[float]] = {"per-block": [], "range": []}
    async with devnet_process(*flags) as (url, _):
        mixes = {}
        for storage in ("row", "ranges", "now"):
            tried = [await ceiling(url, last, storage, m) for m in CEILING_MIXES[latency == 0]]
            chosen = best(tried)
            figures[storage] = [chosen]
            mixes[storage] = CEILING_MIXES[latency == 0][tried.index(chosen)]
        for round_ in range(args.repeat):
            for ours, storage in (("per-block", "row"), ("range", "ranges")):
                pair = [blocktimesd(url, last, ours), ceiling(url, last, storage, mixes[storage])]
                if round_ % 2:
                    pair.reverse()  # neither always goes first
                done = [await step for step in pair]
                mine = next(f for f in done if f.client.startswith("blocktimesd"))
                top = next(f for f in done if not f.client.startswith("blocktimesd"))
                figures.setdefault(ours, []).append(mine)
                figures[storage].append(top)
                ratios[ours].append(mine.rate / top.rate)
        figures["now"].append(await ceiling(url, last, "now", mixes["now"]))
        figures["reference"] = [await reference(url, ref_count)]
    return Comparison(figures, ratios)


def table(latency: float, c: Comparison) -> None:
    f = {key: best(figures) for key, figures in c.figures.items()}
    print(f"\nlatency {latency:g} ms (best of each)")
    print(f"  {'client':44s} {'blocks':>7s} {'seconds':>8s} {'blocks/s':>10s}  note")
    for key in ("per-block", "row", "range", "ranges", "now", "reference"):
        x = f[key]
        print(f"  {x.client:44s} {x.blocks:7d} {x.seconds:8.2f} {x.rate:10,.0f}  {x.note}")
    ours, ranges, ref = f["per-block"].rate, f["range"].rate, f["reference"].rate
    print(f"  blocktimesd / reference: {ours / ref:6.1f}x  (queryStorage ranges: "
          f"{ranges / ref:.1f}x)")  # fmt: skip
    for ours_mode, label in (("per-block", "storage per block"), ("range", "queryStorage ranges")):
        pairs = c.ratios[ours_mode]
        print(f"  blocktimesd / ceiling fetching the same, {label}: median "
              f"{statistics.median(pairs):.2f} of {len(pairs)} back-to-back pairs "
              f"({', '.join(f'{r:.2f}' for r in pairs)})")  # fmt: skip


async def memory(history: int) -> None:
    started = time.perf_counter()
    async with devnet_process("--history", str(history), "--chain-stall-every", "0") as (url, _):
        built = time.perf_counter() - started
        print(f"\ndevnet with {history:,} blocks of history: built and serving in {built:.0f} s")
        last = history - 100
        figure, peak = await blocktimesd_peak(url, last, "per-block")
        print(f"backfill of {last:,} blocks: {figure.seconds:.0f} s ({figure.rate:,.0f} blocks/s), "
              f"peak RSS {peak:.0f} MiB")  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    if shutil.which("node") is None:
        sys.exit("Node.js is needed for the reference client")
    if not (REFERENCE / "node_modules" / "@polkadot" / "api").is_dir():
        await asyncio.to_thread(
            subprocess.run,
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=REFERENCE,
            check=True,
        )
    if args.latencies != "none":
        for latency in (float(x) for x in args.latencies.split(",")):
            table(latency, await compare(latency, args))
    if args.memory_history:
        await memory(args.memory_history)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--latencies", default="0,50", help="comma-separated ms, or none")
    parser.add_argument("--blocks-latency", type=int, default=10_000,
                        help="blocks backfilled under latency")  # fmt: skip
    parser.add_argument("--reference-blocks", type=int, default=2000)
    parser.add_argument("--reference-blocks-latency", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5, help="back-to-back rounds")
    parser.add_argument("--memory-history", type=int, default=0)
    uvloop.run(main(parser.parse_args()))
