"""blocktimesd's backfill against other Substrate clients, each used the way its docs
show, on the same simulated network: wall time for the same blocks, and a check that
every client read the same block times.

Peers (pinned; installed here on first use, or again with --reinstall):

- async-substrate-interface 2.2.1 and substrate-interface 1.8.1 (PyPI), each in a
  virtual environment of its own under bench/peers/.venv/ (the first needs cyscale,
  which cannot sit beside scalecodec, which the second needs); never in the project's;
- dedot 1.3.0, polkadot-api 2.2.2 and @subsquid/substrate-processor 8.5.1 (npm), in
  bench/peers/node_modules from package.json and package-lock.json.

For each --latency-ms one `blocktimesd devnet` process (its own interpreter) serves the
consensus chain with --blocks blocks of history plus a margin.  For each peer, --pairs
times back to back: `blocktimesd backfill` of blocks 1..--blocks into a fresh dataset,
then the peer fetching the header and Timestamp.Now of the same blocks (the peer
scripts beside this file; each prints its rows as JSON).  Every peer's hashes,
timestamps and deltas must equal the rows blocktimesd wrote (read from its Parquet
files).  Prints, per latency and peer, the median wall times and the median of the
per-pair ratios, peer time / blocktimesd time (above 1: blocktimesd is faster).

Times: blocktimesd's from the backfill's start (connect, preflight, metadata, rows,
Parquet files) to its end, in its own process; each peer's from before its client
connects to its last row, in its own process.  Asynchronous peers keep --concurrency
requests in flight on their one connection (the node's per-connection limit is 64);
substrate-interface is blocking, so under latency it runs --workers worker processes,
each with its own connection (one at 0 ms; processes, because scalecodec's decoders
are not safe in threads: see substrate-interface.py).

    python bench/peers/run.py [--blocks 2000] [--latency-ms 0,50] [--pairs 3]
    python bench/peers/run.py --peers dedot,polkadot-api --blocks 500 --pairs 1
    python bench/peers/run.py --install-only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from devnet_process import devnet_process  # noqa: E402

VENVS = HERE / ".venv"
PYPI_PEERS = {
    "async-substrate-interface": "async-substrate-interface==2.2.1",
    "substrate-interface": "substrate-interface==1.8.1",
}
NPM_PEERS = {
    "dedot": "dedot.mjs",
    "polkadot-api": "polkadot-api.mjs",
    "subsquid": "subsquid.mjs",
}
PEERS = [*PYPI_PEERS, *NPM_PEERS]
HISTORY_MARGIN = 200  # blocks above the last one read: reorgs never reach them
RUN_TIMEOUT_S = 1800


# -- installing the peers -------------------------------------------------------------


def venv_python(peer: str) -> Path:
    return VENVS / peer / "bin" / "python"


def install_pypi(peer: str, reinstall: bool) -> None:
    requirement = PYPI_PEERS[peer]
    stamp = VENVS / peer / ".installed"
    if not reinstall and stamp.is_file() and stamp.read_text() == requirement:
        return
    print(f"installing {requirement} into {VENVS / peer}", flush=True)
    venv.create(VENVS / peer, clear=True, with_pip=True)
    subprocess.run(
        [str(venv_python(peer)), "-m", "pip", "install", "--quiet", requirement], check=True
    )
    stamp.write_text(requirement)


def install_npm(reinstall: bool) -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        sys.exit("Node.js and npm are needed for the Node.js peers (or leave them out: --peers)")
    modules = HERE / "node_modules"
    if not reinstall and (modules / ".package-lock.json").is_file():
        return
    print(f"installing the npm peers into {modules}", flush=True)
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE, check=True
    )


# -- running blocktimesd and the peers --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    hash: str
    timestamp_ms: int
    delta_ms: int | None


async def run(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:3])} failed ({proc.returncode}): {err.decode()[-3000:]}"
        )
    return out.decode()


def read_rows(data: Path) -> dict[int, Row]:
    """The rows of a dataset's consensus chain, by block number."""
    rows: dict[int, Row] = {}
    columns = ["block_number", "hash", "timestamp_ms", "delta_since_parent_ms"]
    for path in sorted(data.glob("block_times/chain=consensus/*/*.parquet")):
        for r in pq.ParquetFile(path).read(columns=columns).to_pylist():
            rows[r["block_number"]] = Row(r["hash"], r["timestamp_ms"], r["delta_since_parent_ms"])
    return rows


async def blocktimesd(url: str, last: int) -> tuple[float, dict[int, Row]]:
    """One backfill of blocks 1..last into a fresh dataset: its seconds and its rows."""
    with tempfile.TemporaryDirectory(prefix="peers-bench-") as data:
        out = await run(sys.executable, str(HERE / "backfill_once.py"), url, "1", str(last), data)
        result = json.loads(out.splitlines()[-1])
        if result["exit"] != 0:
            raise RuntimeError(f"blocktimesd backfill failed: {result}")
        rows = await asyncio.to_thread(read_rows, Path(data))
    return float(result["seconds"]), rows


async def peer(
    name: str, url: str, last: int, latency_ms: float, args: Any
) -> tuple[float, list[Any]]:
    if name in PYPI_PEERS:
        script = HERE / f"{name}.py"
        workers = args.workers if latency_ms > 0 else 1
        concurrency = workers if name == "substrate-interface" else args.concurrency
        out = await run(str(venv_python(name)), str(script), url, "1", str(last), str(concurrency))
    else:
        out = await run(
            "node", str(HERE / NPM_PEERS[name]), url, "1", str(last), str(args.concurrency)
        )
    result = json.loads(out.splitlines()[-1])
    return float(result["seconds"]), result["rows"]


def check(name: str, theirs: list[Any], ours: dict[int, Row], last: int) -> None:
    """The peer's rows give blocktimesd's hashes, timestamps and deltas, block by block."""
    if sorted(ours) != list(range(1, last + 1)):
        raise AssertionError(f"blocktimesd wrote blocks {min(ours)}..{max(ours)} ({len(ours)})")
    if [r[0] for r in theirs] != list(range(1, last + 1)):
        raise AssertionError(f"{name} returned {len(theirs)} rows, not blocks 1..{last} in order")
    previous: int | None = None
    for number, block_hash, _parent, timestamp in theirs:
        row = ours[number]
        delta = None if previous is None else timestamp - previous
        if (block_hash, timestamp, delta) != (row.hash, row.timestamp_ms, row.delta_ms):
            raise AssertionError(
                f"{name} disagrees with blocktimesd at block {number}: "
                f"{(block_hash, timestamp, delta)} != {(row.hash, row.timestamp_ms, row.delta_ms)}"
            )
        previous = timestamp


# -- the comparison -----------------------------------------------------------------------


@dataclass
class Pairs:
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [t / o for o, t in zip(self.ours, self.theirs, strict=True)]


async def compare(latency_ms: float, args: argparse.Namespace) -> dict[str, Pairs]:
    flags = ["--history", str(args.blocks + HISTORY_MARGIN), "--chain-stall-every", "0"]
    if latency_ms > 0:
        flags += ["--latency-ms", f"{latency_ms:g}"]
    results: dict[str, Pairs] = {}
    async with devnet_process(*flags) as (url, _domain):
        for name in args.peers:
            pairs = results[name] = Pairs()
            for i in range(args.pairs):
                ours, rows = await blocktimesd(url, args.blocks)
                theirs, peer_rows = await peer(name, url, args.blocks, latency_ms, args)
                check(name, peer_rows, rows, args.blocks)
                pairs.ours.append(ours)
                pairs.theirs.append(theirs)
                print(
                    f"  {latency_ms:g} ms, pair {i + 1}/{args.pairs}: blocktimesd {ours:.2f} s, "
                    f"{name} {theirs:.2f} s ({theirs / ours:.1f}x), rows agree",
                    flush=True,
                )
    return results


def table(latency_ms: float, blocks: int, results: dict[str, Pairs]) -> None:
    print(f"\nlatency {latency_ms:g} ms, blocks 1..{blocks} (medians of back-to-back pairs)")
    print(
        f"  {'peer':28s} {'peer s':>8s} {'blocktimesd s':>14s} {'peer / blocktimesd':>19s}  pairs"
    )
    for name, p in results.items():
        ratios = ", ".join(f"{r:.1f}" for r in p.ratios)
        print(
            f"  {name:28s} {statistics.median(p.theirs):8.2f} {statistics.median(p.ours):14.2f} "
            f"{statistics.median(p.ratios):18.1f}x  {ratios}"
        )


async def main(args: argparse.Namespace) -> None:
    for name in args.peers:
        if name in PYPI_PEERS:
            install_pypi(name, args.reinstall)
    if any(name in NPM_PEERS for name in args.peers):
        install_npm(args.reinstall)
    if args.install_only:
        return
    started = time.perf_counter()
    for latency_ms in args.latency_ms:
        table(latency_ms, args.blocks, await compare(latency_ms, args))
    print(f"\n(all in {time.perf_counter() - started:.0f} s)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=2000, help="blocks 1..N are read")
    parser.add_argument(
        "--latency-ms", default="0,50", type=lambda s: [float(x) for x in s.split(",")],
        help="comma-separated latencies added by the devnet to every call",
    )  # fmt: skip
    parser.add_argument("--pairs", type=int, default=3, help="back-to-back pairs per peer")
    parser.add_argument("--peers", default=",".join(PEERS), type=lambda s: s.split(","),
                        help=f"comma-separated, of {', '.join(PEERS)}")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=64,
                        help="requests in flight of the asynchronous peers")  # fmt: skip
    parser.add_argument("--workers", type=int, default=16,
                        help="substrate-interface's worker processes under latency")  # fmt: skip
    parser.add_argument("--reinstall", action="store_true", help="install the peers again")
    parser.add_argument("--install-only", action="store_true",
                        help="install the peers only (for tests/devnet/test_peers.py)")  # fmt: skip
    args = parser.parse_args(argv)
    unknown = sorted(set(args.peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown peers {unknown}; known: {PEERS}")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
