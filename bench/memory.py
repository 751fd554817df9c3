"""Peak memory of ``blocktimesd backfill`` against the raw fetcher's, on one devnet.

One `blocktimesd devnet` process (--history blocks) serves the consensus chain; then
--pairs times, back to back and alternating which goes first:

- ceiling: bench/ceiling.py fetching what a consensus row needs (``--storage row``:
  hash by number, header, Timestamp.Now and Domains.SuccessfulBundles per block),
  pipelined, no decoding, no rows, no files;
- blocktimesd: ``python -m blocktimesd backfill --chain consensus --kind consensus
  --rpc URL --start 1 --end N --data <fresh dir>``, end to end, as an operator runs it.

Each is its own process; its peak RSS is the kernel's (``ru_maxrss`` of that child, by
``os.wait4``), its speed the blocks over its wall time (process start-up included, for
both alike).  Also the peak RSS of bare interpreters importing what the backfill needs,
the floor under any figure of blocktimesd's.  Prints each pair and the ratios
blocktimesd / ceiling (target: memory within 2x; speed as before).

    python bench/memory.py [--history 20000] [--pairs 3] [--timeline]
        [--backfill-flag=--window --backfill-flag=2048]
        [--backfill-env ARROW_DEFAULT_MEMORY_POOL=system]

With --timeline the backfill's resident memory is also sampled every 10 ms (from
/proc/PID/status) and shown as a coarse curve, to see when it grows.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
# This interpreter, its path normalized (see devnet_process.PYTHON; not imported here:
# this process stays small, since a child's peak RSS starts from its parent's).
PYTHON = os.path.normpath(sys.executable)
FLOORS = {
    "python": "pass",
    "import pyarrow, websockets, orjson, uvloop": "import pyarrow, websockets, orjson, uvloop",
    "... and pyarrow.parquet": "import pyarrow, pyarrow.parquet, websockets, orjson, uvloop",
    # pyarrow imports numpy whenever it is installed; `blocktimesd backfill` keeps it out
    # (blocktimesd.cli._keep_numpy_out), so the floor is the second of these.
    "... and blocktimesd's backfill modules, with numpy": (
        "import pyarrow.parquet, uvloop, blocktimesd.commands.backfill_app"
    ),
    "... and blocktimesd's backfill modules, numpy kept out": (
        "import sys; sys.modules['numpy'] = None\n"
        "import pyarrow.parquet, uvloop, blocktimesd.commands.backfill_app"
    ),
}
FLOOR = "... and blocktimesd's backfill modules, numpy kept out"


@dataclass
class Run:
    peak_mib: float
    seconds: float
    output: str
    timeline: list[tuple[float, float]]  # (seconds since start, RSS MiB)


def measure(argv: list[str], *, timeline: bool = False, env: dict[str, str] | None = None) -> Run:
    """Run ``argv`` to its end; its own peak RSS (not a sibling's).

    Linux carries the resident size of the forked image over exec into the child's
    ``ru_maxrss``: a child's figure is never below this process's size when it was
    started.  So this process imports nothing big (no pyarrow: rows are counted by
    another process), and :func:`main` prints its own peak to show the bound."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdout=out, stderr=err, env=None if env is None else {**os.environ, **env}
        )
        samples: list[tuple[float, float]] = []
        done = threading.Event()
        sampler = threading.Thread(target=_sample, args=(proc.pid, started, samples, done))
        if timeline:
            sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        done.set()
        if timeline:
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[:4]} exited {proc.returncode}: {err.read()[-2000:]!r}")
        return Run(usage.ru_maxrss / 1024, seconds, out.read().decode(), samples)


def _sample(
    pid: int, started: float, samples: list[tuple[float, float]], done: threading.Event
) -> None:
    while not done.wait(0.01):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        if found:
            samples.append((time.perf_counter() - started, int(found.group(1)) / 1024))


def start_devnet(history: int) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [PYTHON, "-m", "blocktimesd", "--log-level", "WARNING", "devnet",
         "--consensus-port", "0", "--domain-port", "0", "--history", str(history),
         "--chain-stall-every", "0"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    url = proc.stdout.readline().decode().split()[1]
    proc.stdout.readline()  # the auto-evm endpoint
    return proc, url


def ceiling(url: str, last: int, inflight: int, batch: int) -> Run:
    return measure(
        [PYTHON, str(HERE / "ceiling.py"), url, "1", str(last), "--storage", "row",
         "--inflight", str(inflight), "--batch", str(batch)]
    )  # fmt: skip


def backfill(
    url: str, last: int, extra: list[str], timeline: bool, env: dict[str, str] | None = None
) -> Run:
    with tempfile.TemporaryDirectory() as data:
        run = measure(
            [PYTHON, "-m", "blocktimesd", "backfill", "--log-level", "WARNING",
             "--chain", "consensus", "--kind", "consensus", "--rpc", url, "--start", "1",
             "--end", str(last), "--data", data, *extra],
            timeline=timeline,
            env=env,
        )  # fmt: skip
        rows = rows_in(data, last)
    if rows != last:
        raise RuntimeError(f"the backfill wrote {rows} rows of blocks 1-{last}")
    return run


def rows_in(data: str, last: int) -> int:
    """The consensus rows of blocks 1..``last`` in ``data``, counted by another process:
    this one must stay small (see :func:`measure`)."""
    code = (
        "import sys\n"
        "from blocktimesd.core.ranges import Span\n"
        "from blocktimesd.dataset.objects import data_location\n"
        "from blocktimesd.dataset.scan import durable_runs\n"
        "runs = durable_runs(data_location(sys.argv[1]), 'consensus', Span(1, int(sys.argv[2])))\n"
        "print(sum(run.count for run in runs))\n"
    )
    out = subprocess.run([PYTHON, "-c", code, data, str(last)], check=True, capture_output=True)
    return int(out.stdout)


def show_timeline(samples: list[tuple[float, float]], columns: int = 24) -> None:
    if not samples:
        return
    end = samples[-1][0]
    step = end / columns
    marks = []
    for i in range(columns):
        inside = [rss for t, rss in samples if i * step <= t < (i + 1) * step]
        if inside:
            marks.append(f"{(i + 0.5) * step:.1f}s:{max(inside):.0f}")
    print("    RSS MiB over time: " + " ".join(marks))


def main(args: argparse.Namespace) -> None:
    print("floor (peak RSS of a bare interpreter):")
    floors = {}
    for label, code in FLOORS.items():
        floors[label] = min(measure([PYTHON, "-c", code]).peak_mib for _ in range(3))
        print(f"  {label:45s} {floors[label]:6.1f} MiB")
    started = time.perf_counter()
    devnet, url = start_devnet(args.history)
    try:
        print(f"devnet with {args.history:,} blocks: serving after "
              f"{time.perf_counter() - started:.0f} s")  # fmt: skip
        last = args.history - 100
        extra = args.backfill_flag or []
        env = dict(item.split("=", 1) for item in args.backfill_env or [])
        memory, speed, tops = [], [], []
        print(f"\n{'pair':>4s} {'ceiling MiB':>12s} {'backfill MiB':>13s} {'ratio':>6s}  "
              f"{'ceiling b/s':>12s} {'backfill b/s':>13s} {'ratio':>6s}")  # fmt: skip
        for pair in range(args.pairs):
            steps = ["ceiling", "backfill"] if pair % 2 == 0 else ["backfill", "ceiling"]
            runs: dict[str, Run] = {}
            for step in steps:
                if step == "ceiling":
                    runs[step] = ceiling(url, last, args.inflight, args.batch)
                else:
                    runs[step] = backfill(url, last, extra, args.timeline, env)
            top, ours = runs["ceiling"], runs["backfill"]
            tops.append(top.peak_mib)
            memory.append(ours.peak_mib / top.peak_mib)
            speed.append(top.seconds / ours.seconds)
            print(f"{pair + 1:4d} {top.peak_mib:12.1f} {ours.peak_mib:13.1f} {memory[-1]:6.2f}  "
                  f"{last / top.seconds:12,.0f} {last / ours.seconds:13,.0f} {speed[-1]:6.2f}"
                  f"   (ceiling's own rate {top.output.strip()})")  # fmt: skip
            if args.timeline:
                show_timeline(ours.timeline)
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\n(this process's own peak RSS, under which no figure above can fall: "
              f"{own:.1f} MiB)")  # fmt: skip
        print(f"blocktimesd / ceiling over {last:,} blocks, median of {args.pairs} pairs: "
              f"peak RSS {statistics.median(memory):.2f}x, "
              f"speed {statistics.median(speed):.2f}x")  # fmt: skip
        print(f"the floor (imports alone, {floors[FLOOR]:.1f} MiB) / ceiling: "
              f"{floors[FLOOR] / statistics.median(tops):.2f}x")  # fmt: skip
    finally:
        devnet.terminate()
        devnet.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=20_000, help="devnet blocks")
    parser.add_argument("--pairs", type=int, default=3, help="back-to-back pairs")
    parser.add_argument("--inflight", type=int, default=64, help="the ceiling's messages in flight")
    parser.add_argument("--batch", type=int, default=16, help="the ceiling's calls per batch")
    parser.add_argument("--timeline", action="store_true", help="sample the backfill's RSS")
    parser.add_argument(
        "--backfill-flag",
        action="append",
        metavar="FLAG",
        help="one more argument for blocktimesd backfill (repeatable)",
    )
    parser.add_argument("--backfill-env", action="append", metavar="NAME=VALUE",
                        help="an environment variable for blocktimesd backfill (repeatable), "
                        "e.g. ARROW_DEFAULT_MEMORY_POOL=system")  # fmt: skip
    main(parser.parse_args())
