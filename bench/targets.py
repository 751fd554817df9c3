"""Every speed and memory target of blocktimesd, measured in one run, as ratios of
back-to-back pairs (the machine may be shared and its speed drift: each pair runs under
the same conditions, and the ratio reported is the median of the pairs).

1. 0 ms latency, --zero-blocks blocks (20,000): the whole process, spawn to exit, of
   `blocktimesd backfill` of the consensus chain (storage read per block, as any node
   allows) against the batched raw fetcher (bench/ceiling.py: block hashes by number,
   headers and the row's storage per block, pipelined, raw websockets and orjson, no
   decoding, no rows; the best of its batch mixes, chosen first), each in its own
   process, with its bytecode cached as when installed; and each one's peak RSS (the
   kernel's, from wait4).  Each run's CPU time is printed too, its own and the devnet's
   meanwhile, and each client's own CPU per second of its run: near 1, a client is held
   up by its own CPU; well below, by the devnet's answers.
   Targets: at least 0.9 of the raw fetcher's speed; peak RSS within 2x of its.
2. Start-up: spawn to the first block request (bench/startup.py's recording proxy),
   median of --startup-runs runs, bytecode cached, the package installed as pip
   installs it (as the Docker image and systemd unit run it); runs from the checkout
   (its editable install) alternate with them and are printed too.  Target: under 200 ms.
3. 50 ms latency, --latency-blocks blocks (10,000): `blocktimesd backfill` with its
   pool of connections probed (the default) against the raw ceiling of one connection
   (bench/ceiling.py, the better of single calls and batches of 16, chosen first).
   Target: at least 3x.
4. 50 ms latency, --peer-blocks blocks (2,000): each peer of bench/peers/run.py
   (unmodified, installed there at pinned versions, each checked to read the same
   block times as blocktimesd) against blocktimesd.  Target: at least 5x each.
5. Follow CPU: bench/follow.py for --follow-seconds (150: the daemon following both
   chains of a simulator at 300x, its files rolled every minute): CPU per confirmed
   block from the first 15 s line after the first file was written (that write imports
   pyarrow, once per process) to the end, which takes in the next file's write; and
   over every line but the first, the first file's write included.  Target: 0.3 ms.

Prints each section as it is measured, then one table of every target.

    python bench/targets.py [--pairs 3] [--zero-blocks 20000] [--latency-blocks 10000]
                            [--peer-blocks 2000] [--follow-seconds 150] [--skip peers,follow]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import uvloop
import websockets
from devnet_process import PYTHON, devnet_cpu_seconds, devnet_process
from startup import Client, Proxy, child_env, installed, one_run

HERE = Path(__file__).resolve().parent
SECTIONS = ("zero", "startup", "latency", "peers", "follow")
ZERO_MIXES = [(64, 16), (64, 64), (64, 256), (16, 256)]  # (in flight, calls per batch)
LATENCY_MIXES = [(64, 1), (64, 16)]


@dataclass
class Target:
    what: str
    goal: str
    median: float
    pairs: list[float] = field(default_factory=list)
    met: bool = False
    unit: str = "x"

    def line(self) -> str:
        listed = ", ".join(f"{v:.2f}" for v in self.pairs)
        figure = f"{self.median:.2f}{self.unit}"
        verdict = "met" if self.met else "NOT MET"
        return f"  {verdict:8s} {self.what:58s} {figure:>10s}  ({self.goal}) [{listed}]"


@dataclass
class Process:
    seconds: float  # spawn to exit
    peak_rss_mib: float
    out: str
    cpu_seconds: float  # its own, user and system
    devnet_cpu_seconds: float = 0.0  # the devnet's meanwhile (see run_against)


# Every client runs as an installed package does, its bytecode cached (pip compiles it at
# install time; a checkout may say PYTHONDONTWRITEBYTECODE): in a cache of this run's own.
ENV = child_env(tempfile.mkdtemp(prefix="blocktimesd-pycache-"))


def spawn(argv: list[str], env: dict[str, str] = ENV) -> Process:
    """Run ``argv`` to its end: its wall time, its own peak RSS and CPU time (wait4's
    rusage)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        printed, complained = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]} exited {proc.returncode}: {complained[-2000:]}")
    return Process(seconds, usage.ru_maxrss / 1024, printed, usage.ru_utime + usage.ru_stime)


def backfill_argv(url: str, last: int, data: str) -> list[str]:
    return [
        PYTHON, "-m", "blocktimesd", "--log-level", "WARNING", "backfill",
        "--chain", "consensus", "--kind", "consensus", "--rpc", url,
        "--start", "1", "--end", str(last), "--data", data,
    ]  # fmt: skip


def ceiling_argv(url: str, last: int, mix: tuple[int, int]) -> list[str]:
    inflight, batch = mix
    return [
        PYTHON, str(HERE / "ceiling.py"), url, "1", str(last), "--storage", "row",
        "--inflight", str(inflight), "--batch", str(batch),
    ]  # fmt: skip


async def run_against(url: str, argv: list[str]) -> Process:
    """``argv`` run to its end (:func:`spawn`), with the CPU time that the devnet serving
    ``url`` spent meanwhile: which of the two a run waits on."""
    before = devnet_cpu_seconds(url)
    proc = await asyncio.to_thread(spawn, argv)
    proc.devnet_cpu_seconds = devnet_cpu_seconds(url) - before
    return proc


async def backfill(url: str, last: int) -> Process:
    with tempfile.TemporaryDirectory() as data:
        return await run_against(url, backfill_argv(url, last, data))


async def raw(url: str, last: int, mix: tuple[int, int]) -> Process:
    return await run_against(url, ceiling_argv(url, last, mix))


async def best_mix(url: str, last: int, mixes: list[tuple[int, int]]) -> tuple[int, int]:
    times = [(await raw(url, last, mix)).seconds for mix in mixes]
    return mixes[times.index(min(times))]


async def pair(url: str, last: int, mix: tuple[int, int], i: int) -> tuple[Process, Process]:
    """blocktimesd's backfill and the raw fetcher, back to back (the ``i``-th pair: odd
    ones run the raw fetcher first); (blocktimesd's, the raw fetcher's)."""
    if i % 2:
        theirs = await raw(url, last, mix)
        return await backfill(url, last), theirs
    ours = await backfill(url, last)
    return ours, await raw(url, last, mix)


def pairs_line(label: str, ours: list[float], theirs: list[float], unit: str = "s") -> None:
    shown = ", ".join(f"{o:.2f}/{t:.2f}" for o, t in zip(ours, theirs, strict=True))
    print(f"  {label}: blocktimesd/other {unit} per pair: {shown}", flush=True)


# -- 1. 0 ms: speed and memory against the batched raw fetcher ------------------------------


async def zero(args: argparse.Namespace) -> list[Target]:
    last = args.zero_blocks
    print(f"\n1. 0 ms, blocks 1..{last:,}, whole processes", flush=True)
    async with devnet_process("--history", str(last + 200), "--chain-stall-every", "0") as (
        url,
        _,
    ):
        mix = await best_mix(url, last, ZERO_MIXES)
        await backfill(url, last)  # fills the bytecode cache
        print(f"  raw fetcher's best mix: {mix[0]} in flight x {mix[1]} per batch", flush=True)
        speed: list[float] = []
        memory: list[float] = []
        runs: list[tuple[Process, Process]] = []
        for i in range(args.pairs):
            ours, theirs = await pair(url, last, mix, i)
            runs.append((ours, theirs))
            speed.append(theirs.seconds / ours.seconds)
            memory.append(ours.peak_rss_mib / theirs.peak_rss_mib)
            print(
                f"  pair {i + 1}: blocktimesd {_shown(ours)}; raw fetcher {_shown(theirs)}",
                flush=True,
            )
    _cpu_line(runs)
    s, m = statistics.median(speed), statistics.median(memory)
    return [
        Target(f"0 ms, {last:,} blocks: speed / batched raw fetcher", ">= 0.9", s, speed, s >= 0.9),
        Target("0 ms: peak RSS / raw fetcher's", "<= 2", m, memory, m <= 2.0),
    ]


def _shown(proc: Process) -> str:
    return (
        f"{proc.seconds:.2f} s ({proc.cpu_seconds:.2f} s of CPU, the devnet "
        f"{proc.devnet_cpu_seconds:.2f} s), {proc.peak_rss_mib:.0f} MiB"
    )


def _cpu_line(runs: list[tuple[Process, Process]]) -> None:
    """Each client's own CPU time per second of its run, medians: near 1, a client is held
    up by its own CPU; well below, by the devnet's answers."""

    def busy(procs: list[Process]) -> float:
        return statistics.median(p.cpu_seconds / p.seconds for p in procs)

    ours, theirs = [o for o, _ in runs], [t for _, t in runs]
    print(
        f"  own CPU per second of run: blocktimesd {busy(ours):.2f}, "
        f"raw fetcher {busy(theirs):.2f}",
        flush=True,
    )


# -- 2. start-up -------------------------------------------------------------------------------


async def startup(args: argparse.Namespace) -> list[Target]:
    print(f"\n2. start-up, {args.startup_runs} runs", flush=True)
    first, last = 1, 2000
    env = ENV
    times: dict[str, list[float]] = {"installed": [], "checkout": []}
    bare: list[float] = []
    async with devnet_process("--history", str(last + 200)) as (consensus, _):
        proxy = Proxy(consensus, first, last)
        async with websockets.serve(
            proxy.handle, "127.0.0.1", 0, max_size=None, compression=None
        ) as server:
            url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            with installed(None) as copy:
                clients = {"installed": copy, "checkout": Client()}
                for client in clients.values():  # fills the bytecode caches
                    await one_run(proxy, url, first, last, env, client)
                for turn in range(args.startup_runs):
                    order = list(clients) if turn % 2 == 0 else list(clients)[::-1]
                    for name in order:
                        seen, _whole = await one_run(proxy, url, first, last, env, clients[name])
                        if seen.first_block is None:
                            raise RuntimeError("the backfill made no block request")
                        times[name].append(seen.first_block * 1000)
                    # The machine's pace at that moment: a bare interpreter's start.
                    bare.append(spawn([PYTHON, "-c", "pass"]).seconds * 1000)
    print(
        "  bare interpreter (python -c pass), ms: "
        f"{', '.join(f'{t:.0f}' for t in bare)}; median {statistics.median(bare):.0f} "
        "(a slower host slows every start alike)"
    )
    for name, place in (("installed", "installed (as pip installs it)"),
                        ("checkout", "from the checkout (editable install)")):  # fmt: skip
        shown = ", ".join(f"{t:.0f}" for t in times[name])
        median = statistics.median(times[name])
        print(f"  {place}: spawn -> first block request, ms: {shown}; median {median:.0f}")
    median = statistics.median(times["installed"])
    return [Target("start-up: spawn -> first block request (installed)", "< 200 ms", median,
                   times["installed"], median < 200, " ms")]  # fmt: skip


# -- 3. 50 ms: the pool against one connection's raw ceiling --------------------------------


async def latency(args: argparse.Namespace) -> list[Target]:
    last, ms = args.latency_blocks, args.latency_ms
    print(f"\n3. {ms:g} ms, blocks 1..{last:,}: pool probed vs one-connection raw ceiling")
    flags = ("--history", str(last + 200), "--latency-ms", str(ms), "--chain-stall-every", "0")
    async with devnet_process(*flags) as (url, _):
        mix = await best_mix(url, last, LATENCY_MIXES)
        print(f"  one-connection ceiling's best mix: {mix[0]} in flight x {mix[1]} per batch")
        ratios: list[float] = []
        ours, theirs = [], []
        for i in range(args.pairs):
            mine, top = await pair(url, last, mix, i)
            ours.append(mine.seconds)
            theirs.append(top.seconds)
            ratios.append(top.seconds / mine.seconds)
        pairs_line("seconds", ours, theirs)
    median = statistics.median(ratios)
    return [Target(f"{ms:g} ms, {last:,} blocks: pool / one-connection raw ceiling", ">= 3",
                   median, ratios, median >= 3)]  # fmt: skip


# -- 4. 50 ms: the peers ---------------------------------------------------------------------


def peers_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("peers_run", HERE / "peers" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def peers(args: argparse.Namespace) -> list[Target]:
    print(f"\n4. {args.latency_ms:g} ms, blocks 1..{args.peer_blocks:,}: the peers", flush=True)
    run = peers_module()
    options = run.parse_args(
        ["--blocks", str(args.peer_blocks), "--pairs", str(args.pairs),
         "--latency-ms", f"{args.latency_ms:g}"]
        + (["--peers", args.peers] if args.peers else [])
    )  # fmt: skip
    for name in options.peers:
        if name in run.PYPI_PEERS:
            await asyncio.to_thread(run.install_pypi, name, False)
    if any(name in run.NPM_PEERS for name in options.peers):
        await asyncio.to_thread(run.install_npm, False)
    results = await run.compare(args.latency_ms, options)
    run.table(args.latency_ms, args.peer_blocks, results)
    found = []
    for name, pairs in results.items():
        median = statistics.median(pairs.ratios)
        what = f"{args.latency_ms:g} ms, {args.peer_blocks:,} blocks: {name} time / ours"
        found.append(Target(what, ">= 5", median, pairs.ratios, median >= 5))
    return found


# -- 5. follow CPU ---------------------------------------------------------------------------

_STEADY = re.compile(r"steady CPU ([0-9.]+) ms/block")
_AFTER_FIRST_FILE = re.compile(r"steady CPU after the first file ([0-9.]+) ms/block")


async def follow(args: argparse.Namespace) -> list[Target]:
    print(f"\n5. follow CPU, {args.follow_seconds:g} s", flush=True)
    every = 15.0
    argv = [PYTHON, str(HERE / "follow.py"), "--seconds", str(args.follow_seconds),
            "--every", str(every)]  # fmt: skip
    out = (await asyncio.to_thread(spawn, argv)).out
    print("\n".join("  " + line for line in out.splitlines()))
    found = _STEADY.search(out)
    if found is None:
        raise RuntimeError(f"bench/follow.py printed no steady figure: {out[-500:]}")
    ms = float(found.group(1))
    after = _AFTER_FIRST_FILE.search(out)
    if after is None:
        raise RuntimeError(
            "bench/follow.py wrote no file before its last interval (files roll every "
            f"minute: give --follow-seconds 90 or more): {out[-500:]}"
        )
    steady = float(after.group(1))
    return [
        Target("follow: CPU per confirmed block, after the first file", "<= 0.3 ms", steady,
               [steady], steady <= 0.3, " ms"),
        Target("follow: the same, with the first file's (pyarrow's import)", "<= 0.3 ms", ms,
               [ms], ms <= 0.3, " ms"),
    ]  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}, {args.pairs} pairs each", flush=True)  # fmt: skip
    steps = {"zero": zero, "startup": startup, "latency": latency, "peers": peers,
             "follow": follow}  # fmt: skip
    targets: list[Target] = []
    for name in SECTIONS:
        if name not in args.skip:
            targets += await steps[name](args)
    print(
        f"\nTargets (median of the pairs, pairs in brackets; {time.perf_counter() - started:.0f} s)"
    )
    for target in targets:
        print(target.line())
    if args.json:
        text = json.dumps([t.__dict__ for t in targets], indent=1)
        await asyncio.to_thread(Path(args.json).write_text, text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="back-to-back pairs per comparison")
    parser.add_argument("--zero-blocks", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--latency-blocks", type=int, default=10_000)
    parser.add_argument("--peer-blocks", type=int, default=2000)
    parser.add_argument("--peers", default="", help="comma-separated; default: all")
    parser.add_argument("--startup-runs", type=int, default=9)
    parser.add_argument("--follow-seconds", type=float, default=150)
    parser.add_argument("--skip", default="", type=lambda s: [x for x in s.split(",") if x],
                        help=f"comma-separated, of {', '.join(SECTIONS)}")  # fmt: skip
    parser.add_argument("--json", help="also write the targets to this file")
    options = parser.parse_args()
    unknown = set(options.skip) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    uvloop.run(main(options))
