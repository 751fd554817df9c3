"""Start-up of ``blocktimesd backfill``: from process spawn to its first block request.

    python bench/startup.py [--runs N] [--first 1] [--last 2000] [--latency-ms MS]
                            [--tree BASE_CHECKOUT --tree OTHER_CHECKOUT ...]

A simulator (``blocktimesd devnet``) runs in its own process; between it and the
client sits a small logging WebSocket proxy in this process, which notes when each
request arrives.  Each run spawns ``blocktimesd backfill --chain consensus --kind
consensus --rpc PROXY --start FIRST --end LAST --data <fresh dir>`` and measures, from
the spawn, the time to the connection, to the first request and to the first block
request (a ``chain_getBlockHash`` of a list of numbers, or of a number of the range, or
a ``state_queryStorage`` over it): what precedes it is imports, preflight and probing.
Every run must exit 0.  Then ``python -X importtime`` of the same command: the import
time in all, and the largest top-level imports.  Medians are printed.

The client runs as an installed package does: with its bytecode cached (pip compiles
it at install time), here in a cache directory of the benchmark's own
(``PYTHONPYCACHEPREFIX``), filled by a first, unmeasured run.  ``--no-bytecode`` runs
it with ``PYTHONDONTWRITEBYTECODE=1`` and no cache, compiling every module from source
at every start (as in a checkout whose environment sets that variable).

``--installed`` runs each tree's package as ``pip install`` puts it in place (the Docker
image and the systemd unit run it so): a virtual environment of its own with the
package's files in its site-packages, its dependencies reached through a path file
naming this environment's site-packages.  Without it, the client runs from the checkout
through this environment's editable install, whose import hook (setuptools' editable
finder) every interpreter start loads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devnet_process import PYTHON, devnet_process


@dataclass
class Observed:
    """What the proxy saw of one run, in monotonic seconds."""

    connected: float | None = None
    first_request: float | None = None
    first_block: float | None = None
    requests: list[tuple[float, str]] = field(default_factory=list)  # before the first block


def _is_block_request(call: Any, first: int, last: int) -> bool:
    if not isinstance(call, dict):
        return False
    method, params = call.get("method"), call.get("params") or []
    if method == "chain_getBlockHash" and params:
        number = params[0]
        if isinstance(number, list):
            return any(isinstance(n, int) and first <= n <= last for n in number)
        return isinstance(number, int) and first <= number <= last and number != 0
    return method == "state_queryStorage" and len(params) >= 3 and params[1] != params[2]


class Proxy:
    """Relays WebSocket messages both ways, noting the client's requests."""

    def __init__(self, upstream: str, first: int, last: int) -> None:
        self.upstream = upstream
        self.first, self.last = first, last
        self.seen = Observed()

    def reset(self) -> Observed:
        self.seen, seen = Observed(), self.seen
        return seen

    def note(self, message: str | bytes) -> None:
        now = time.monotonic()
        seen = self.seen
        if seen.first_request is None:
            seen.first_request = now
        if seen.first_block is not None:
            return
        try:
            obj = json.loads(message)
        except ValueError:
            return
        calls = obj if isinstance(obj, list) else [obj]
        for call in calls:
            if _is_block_request(call, self.first, self.last):
                seen.first_block = now
                return
        methods = ",".join(str(c.get("method")) for c in calls if isinstance(c, dict))
        seen.requests.append((now, methods if len(calls) < 4 else f"{len(calls)}x {methods[:40]}"))

    async def handle(self, client: Any) -> None:
        if self.seen.connected is None:
            self.seen.connected = time.monotonic()
        async with websockets.connect(self.upstream, max_size=None, compression=None) as server:

            async def up() -> None:
                async for message in client:
                    self.note(message)
                    await server.send(message)

            async def down() -> None:
                async for message in server:
                    await client.send(message)

            tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            except websockets.ConnectionClosed:
                pass
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)


def _command(url: str, first: int, last: int, data: str) -> list[str]:
    return [
        "-m", "blocktimesd", "--log-level", "WARNING", "backfill", "--chain", "consensus",
        "--kind", "consensus", "--rpc", url, "--start", str(first), "--end", str(last),
        "--data", data,
    ]  # fmt: skip


def child_env(pycache: str | None) -> dict[str, str]:
    """The client's environment: bytecode cached in ``pycache``, or (None) none at all."""
    env = dict(os.environ)
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    return env


@dataclass(frozen=True)
class Client:
    """Where a client runs from: a checkout (``tree``, None for the current directory)
    through this environment, or an installed copy of its package."""

    tree: str | None = None
    python: str = PYTHON
    installed: bool = False

    def where(self, data: str) -> tuple[str, str | None]:
        """The interpreter and working directory of a run whose data directory is
        ``data`` (an installed copy runs outside any checkout)."""
        return self.python, data if self.installed else self.tree


@contextlib.contextmanager
def installed(tree: str | None) -> Iterator[Client]:
    """``tree``'s package (None: this checkout's) as ``pip install`` puts it in place."""
    root = Path(tree) if tree else Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="blocktimesd-installed-") as venv:
        subprocess.run([PYTHON, "-m", "venv", "--without-pip", venv], check=True)
        site = Path(sysconfig.get_path("purelib", vars={"base": venv, "platbase": venv}))
        shutil.copytree(
            root / "blocktimesd", site / "blocktimesd", ignore=shutil.ignore_patterns("__pycache__")
        )
        # A path line only: the .pth files of this environment (its editable install's
        # hook among them) are not run.
        (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
        yield Client(tree, str(Path(venv, "bin", "python")), installed=True)


async def one_run(
    proxy: Proxy, url: str, first: int, last: int, env: dict[str, str], client: Client
) -> tuple[Observed, float]:
    proxy.reset()
    with tempfile.TemporaryDirectory() as data:
        python, cwd = client.where(data)
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            python,
            *_command(url, first, last, data),
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
        )
        _, err = await proc.communicate()
        ended = time.monotonic()
    if proc.returncode != 0:
        raise SystemExit(f"backfill exited {proc.returncode}: {err.decode()[-2000:]}")
    seen = proxy.reset()
    for name in ("connected", "first_request", "first_block"):
        moment = getattr(seen, name)
        if moment is not None:
            setattr(seen, name, moment - started)
    seen.requests = [(t - started, m) for t, m in seen.requests]
    return seen, ended - started


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_times(
    url: str, first: int, last: int, env: dict[str, str], client: Client
) -> tuple[float, list[tuple[float, str]]]:
    """Import time of one run in all (seconds), and the top-level imports by cost."""
    with tempfile.TemporaryDirectory() as data:
        python, cwd = client.where(data)
        done = subprocess.run(
            [python, "-X", "importtime", *_command(url, first, last, data)],
            capture_output=True,
            text=True,
            check=False,
            env=env,
            cwd=cwd,
        )
    top: list[tuple[float, str]] = []
    for line in done.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match and len(match.group(3)) == 1:  # one space: imported at the top level
            top.append((int(match.group(2)) / 1e6, match.group(4)))
    return sum(t for t, _ in top), sorted(top, reverse=True)


def _ms(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    return f"{statistics.median(known) * 1000:7.1f} ms (min {min(known) * 1000:.1f})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--last", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--verbose", action="store_true", help="list each run's requests")
    parser.add_argument(
        "--no-bytecode", action="store_true", help="compile every module at every start"
    )
    parser.add_argument(
        "--installed",
        action="store_true",
        help="run each tree's package installed as pip installs it, not from the checkout",
    )
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="DIR",
        help="run the client from this checkout (a git worktree); given several times, "
        "the runs alternate between them (in turns forward and backward) and the first "
        "is the base of the ratios (default: the current directory's)",
    )
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as pycache:
        await measure(opts, child_env(None if opts.no_bytecode else pycache))


async def measure(opts: argparse.Namespace, env: dict[str, str]) -> None:
    history = str(opts.last + 200)  # K = 100 below the tip, and some room
    flags = ["--history", history, "--latency-ms", str(opts.latency_ms)]
    trees: list[str | None] = list(opts.tree) or [None]
    runs: dict[str | None, list[tuple[Observed, float]]] = {tree: [] for tree in trees}
    imports: dict[str | None, list[tuple[float, list[tuple[float, str]]]]] = {
        tree: [] for tree in trees
    }
    with contextlib.ExitStack() as stack:
        clients = {
            tree: stack.enter_context(installed(tree)) if opts.installed else Client(tree)
            for tree in trees
        }
        await _measure_clients(opts, env, flags, clients, runs, imports)
    bytecode = "none" if opts.no_bytecode else "cached"
    place = "installed" if opts.installed else "from the checkout"
    print(
        f"blocktimesd backfill {opts.first}..{opts.last}, {opts.runs} runs, latency "
        f"{opts.latency_ms} ms, python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"bytecode {bytecode}, {place}, load average {os.getloadavg()[0]:.2f}"
    )
    for tree in trees:
        report(tree, runs[tree], imports[tree], verbose=opts.verbose)
    if len(trees) > 1:
        base = trees[0]
        print(f"first block request, per back-to-back pair, against {base}:")
        for tree in trees[1:]:
            ratios = [
                b.first_block / a.first_block
                for (a, _), (b, _) in zip(runs[base], runs[tree], strict=True)
                if a.first_block and b.first_block
            ]
            listed = " ".join(f"{r:.2f}" for r in ratios)
            print(f"  {tree}: median {statistics.median(ratios):.2f} ({listed})")
    print(f"command: python {' '.join(_command('URL', opts.first, opts.last, 'DIR'))}")


async def _measure_clients(
    opts: argparse.Namespace,
    env: dict[str, str],
    flags: list[str],
    clients: dict[str | None, Client],
    runs: dict[str | None, list[tuple[Observed, float]]],
    imports: dict[str | None, list[tuple[float, list[tuple[float, str]]]]],
) -> None:
    trees = list(clients)
    async with devnet_process(*flags) as (consensus, _):
        proxy = Proxy(consensus, opts.first, opts.last)
        async with websockets.serve(
            proxy.handle, "127.0.0.1", 0, max_size=None, compression=None
        ) as server:
            port = server.sockets[0].getsockname()[1]
            url = f"ws://127.0.0.1:{port}"
            for client in clients.values():  # fills the bytecode cache
                await one_run(proxy, url, opts.first, opts.last, env, client)
            # The trees one after another (back-to-back pairs), in turns forward and
            # backward: the second run of a pair starts a few per cent faster (one tree
            # against a copy of itself: 0.95), which must not favour one tree.
            for turn in range(opts.runs):
                for tree in trees if turn % 2 == 0 else trees[::-1]:
                    run = await one_run(proxy, url, opts.first, opts.last, env, clients[tree])
                    runs[tree].append(run)
            for _ in range(3):
                for tree in trees:
                    times = await asyncio.to_thread(
                        import_times, url, opts.first, opts.last, env, clients[tree]
                    )
                    imports[tree].append(times)


def report(
    tree: str | None,
    runs: list[tuple[Observed, float]],
    imports: list[tuple[float, list[tuple[float, str]]]],
    *,
    verbose: bool,
) -> None:
    print(f"{tree or 'this checkout'}:")
    print(f"  spawn -> connection       {_ms([s.connected for s, _ in runs])}")
    print(f"  spawn -> first request    {_ms([s.first_request for s, _ in runs])}")
    print(f"  spawn -> first block req  {_ms([s.first_block for s, _ in runs])}")
    print(f"  whole run                 {_ms([w for _, w in runs])}")
    print(f"  imports (-X importtime)   {_ms([t for t, _ in imports])}")
    before = statistics.median(len(s.requests) for s, _ in runs)
    print(f"  messages before the first block request: {before:g}")
    print("  largest top-level imports (last -X importtime run):")
    for seconds, name in imports[-1][1][:6]:
        print(f"    {seconds * 1000:7.1f} ms  {name}")
    if verbose:
        for seen, _ in runs:
            print("  run:", ", ".join(f"{t * 1000:.1f} {m}" for t, m in seen.requests))


if __name__ == "__main__":
    asyncio.run(main())
