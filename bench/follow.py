"""CPU per block and steady memory of the daemon following the simulator at high speed.

A `blocktimesd devnet` process runs at --speed (default 300: ~50 consensus blocks/s);
the daemon (blocktimesd's App, in this process) follows both chains with the default
K (100 and 64) for --seconds, writing to a temporary dataset.  Every --every seconds
it prints blocks confirmed so far, this process's CPU time per block (since the start,
and over the last interval alone: the steady figure, without the start-up's metadata
reads), and its RSS; at the end, one line with the steady figure over every interval but
the first, and, when a file was written before the last interval, one over the intervals
after the first file was written (the first write imports pyarrow, once per process:
not a cost per block; the writes after it are in).

    python bench/follow.py [--seconds 300] [--speed 300] [--every 30] [--max-file-minutes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

import uvloop
from devnet_process import devnet_process
from prometheus_client import CollectorRegistry

from blocktimesd.aio.app import App
from blocktimesd.config.model import ChainConfig, Config, MetricsAddr
from blocktimesd.core.chains import ChainKind


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _ms_per_block(cpu_s: float, blocks: float) -> float:
    return 1000 * cpu_s / blocks if blocks else float("nan")


async def run(args: argparse.Namespace) -> None:
    flags = ("--speed", str(args.speed), "--history", "300", "--chain-stall-every", "0")
    async with devnet_process(*flags) as (consensus_url, domain_url):
        with tempfile.TemporaryDirectory() as data:
            config = Config(
                chains=(
                    ChainConfig("consensus", ChainKind.CONSENSUS, (consensus_url,), 100,
                                domain_ids=(0,)),
                    ChainConfig("auto-evm", ChainKind.AUTO_EVM, (domain_url,), 64),
                ),
                data_dir=Path(data),
                metrics_addr=MetricsAddr("127.0.0.1", 0),
                max_file_minutes=args.max_file_minutes,
            )  # fmt: skip
            registry = CollectorRegistry()
            app = App(config, registry=registry)
            task = asyncio.create_task(app.run())
            start_wall, start_cpu = time.monotonic(), time.process_time()
            print(f"following the devnet at {args.speed:g}x for {args.seconds:g} s")
            print("   time  consensus  auto-evm  blocks/s  CPU ms/block  (interval)   RSS MiB")
            elapsed = 0.0
            marks: list[tuple[float, float]] = []  # (CPU s, blocks) at each line
            kernel: list[float] = []  # system CPU s at each line
            first_file: int | None = None  # the mark at which a file had been written
            while elapsed < args.seconds:
                await asyncio.sleep(args.every)
                elapsed = time.monotonic() - start_wall
                cpu = time.process_time() - start_cpu
                confirmed = {
                    c: int(
                        registry.get_sample_value("blocktimes_confirmed_block", {"chain": c}) or 0
                    )
                    for c in ("consensus", "auto-evm")
                }
                done = sum(  # confirmed blocks with a delta, both chains
                    registry.get_sample_value("blocktimes_block_delta_seconds_count", {"chain": c})
                    or 0
                    for c in ("consensus", "auto-evm")
                )
                per_block = 1000 * cpu / done if done else float("nan")
                last_cpu, last_done = marks[-1] if marks else (0.0, 0.0)
                marks.append((cpu, done))
                kernel.append(os.times().system)
                files = sum(
                    registry.get_sample_value("blocktimes_files_written_total", {"chain": c}) or 0
                    for c in ("consensus", "auto-evm")
                )
                if first_file is None and files:
                    first_file = len(marks) - 1
                recent = _ms_per_block(cpu - last_cpu, done - last_done)
                print(f"{elapsed:6.0f}s {confirmed['consensus']:10d} {confirmed['auto-evm']:9d} "
                      f"{done / elapsed:9.1f} {per_block:13.2f} {recent:11.2f} "
                      f"{rss_mib():9.1f}")  # fmt: skip
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if len(marks) > 1:
                (cpu0, done0), (cpu1, done1) = marks[0], marks[-1]
                steady = _ms_per_block(cpu1 - cpu0, done1 - done0)
                system = _ms_per_block(kernel[-1] - kernel[0], done1 - done0)
                print(f"steady CPU {steady:.3f} ms/block ({done1 - done0:.0f} blocks after "
                      f"the first {args.every:g} s; {system:.3f} of it in the kernel)")  # fmt: skip
            if first_file is not None and first_file < len(marks) - 1:
                (cpu0, done0), (cpu1, done1) = marks[first_file], marks[-1]
                after = _ms_per_block(cpu1 - cpu0, done1 - done0)
                since = args.every * (first_file + 1)
                print(f"steady CPU after the first file {after:.3f} ms/block "
                      f"({done1 - done0:.0f} blocks after {since:g} s)")  # fmt: skip
            for chain in ("consensus", "auto-evm"):
                blocks = registry.get_sample_value(
                    "blocktimes_block_delta_seconds_count", {"chain": chain}
                )
                asked = {
                    sample.labels["method"]: sample.value
                    for metric in registry.collect()
                    if metric.name == "blocktimes_rpc_requests"
                    for sample in metric.samples
                    if sample.name.endswith("_total") and sample.labels["chain"] == chain
                }
                if blocks:
                    shown = ", ".join(f"{m} {n / blocks:.2f}" for m, n in sorted(asked.items()))
                    print(f"{chain}: requests per confirmed block: {shown}")
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"peak RSS {peak:.1f} MiB (rows wait in memory until their file rotates)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--speed", type=float, default=300)
    parser.add_argument("--every", type=float, default=30)
    # At 300x, 15 minutes of rows is ~80,000 rows in memory; rotate often to see the plateau.
    parser.add_argument("--max-file-minutes", type=int, default=1)
    logging.basicConfig(level=logging.WARNING)
    uvloop.run(run(parser.parse_args()))
