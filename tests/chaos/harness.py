"""Chaos runs: the simulated network and the daemon as separate processes, faults
switched on through the simulator's control methods, ``kill -9`` and restarts at
random moments, then faults off, a clean stop, and the dataset compared with the
network's canonical chains (:mod:`tests.chaos.walk`).

Every random choice of a run (the simulator's seed, when each fault strikes and how
hard) comes from one seed, so a failing run can be replayed.  Used by the chaos tests
and by ``bench/soak.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from websockets.exceptions import ConnectionClosed

from tests.chaos.walk import Rpc, Verdict, compare

__all__ = [
    "ALL_FAULTS",
    "FAULTS_OFF",
    "K_CONSENSUS",
    "K_DOMAIN",
    "Daemon",
    "Middle",
    "Outcome",
    "Scenario",
    "run_scenario",
]

SPEED = 60.0  # simulated seconds per wall second: ~10 consensus blocks a second
HISTORY = 80
K_CONSENSUS = 6
K_DOMAIN = 4
MAX_ROWS_PER_FILE = 5  # files rotate twice a second: kills land mid-rotation too
FAULTS_OFF: Mapping[str, float] = {
    "latency_ms": 0,
    "latency_jitter_ms": 0,
    "drop_connections_every_s": 0,
    "stall_every_s": 0,
    "error_rate": 0,
    "drop_subscriptions_every_s": 0,
    "notification_delay_ms": 0,
}
# Every lasting fault at once, at levels that still let a follower make progress.
ALL_FAULTS: Mapping[str, float] = {
    "error_rate": 0.03,
    "latency_ms": 5,
    "latency_jitter_ms": 30,
    "drop_connections_every_s": 3.0,
    "stall_every_s": 4.0,
    "stall_duration_s": 0.8,
    "drop_subscriptions_every_s": 3.5,
    "notification_delay_ms": 300,
}
# One-shot faults a scenario can schedule, each at a random moment of its faulty phase.
EVENTS = frozenset(
    {
        "kill",  # kill -9 the daemon, restart it after a random pause
        "reorg",  # a branch deeper than K replaces the best chain
        "reorg-lower",  # the same, to a lower height
        "upgrade",  # both runtimes upgrade at the next block
        "outage-consensus",  # the consensus endpoint refuses connections for a while
        "outage-domain",
        "stall",
        "drop-connections",
        "drop-subscriptions",
    }
)
_OUTAGE_CHAIN = {"outage-consensus": "consensus", "outage-domain": "auto-evm"}
_CONTROL_TIMEOUT_S = 30.0
_WARM_UP_TIMEOUT_S = 15.0
_TAIL_S = 1.5  # fault-free running before the daemon is asked to catch up
_SETTLE_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 30.0
_FILE_NAME = re.compile(r"part-\d+-(\d+)-[0-9a-f]+\.parquet$")
_METRICS_URL = re.compile(r"^\s*metrics\s+(http://\S+)", re.MULTILINE)
_CONFIRMED = re.compile(r'^blocktimes_confirmed_block\{chain="([^"]+)"\} (\S+)$', re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Scenario:
    """What goes wrong during a run, and how much progress proves the daemon kept up."""

    name: str
    faults: Mapping[str, float] = field(default_factory=dict)  # devnet_setFaults while faulty
    events: Mapping[str, int] = field(default_factory=dict)  # one-shot fault -> how many
    seconds: float = 5.0  # length of the faulty phase (wall clock)
    fork_rate: float = 0.05
    # A short daemon request timeout lets an outage outlast it in a few seconds.
    request_timeout_s: float | None = None
    restart_in_outage: bool = False  # kill -9 and restart the daemon early in each outage
    # Seconds an outage lasts beyond the daemon's request timeout (drawn in this range).
    outage_beyond_timeout_s: tuple[float, float] = (1.0, 3.0)
    max_rows_per_file: int = MAX_ROWS_PER_FILE
    settings: Mapping[str, float] = field(default_factory=dict)  # more of the daemon's
    kill_every: tuple[float, float] | None = None  # kill -9 at intervals drawn from this range
    # Rows per chain that show the daemon kept up: at least this many, or half the
    # blocks the chain made during the run (from the first row) if fewer (the domain
    # idles for stretches).
    min_rows: int = 25
    log_level: str = "INFO"  # the daemon's
    # Seconds the daemon has to catch up once the faults stop: longer where its
    # reconnect backoff may have reached its cap (30 s) when they do.
    settle_timeout_s: float = _SETTLE_TIMEOUT_S

    def __post_init__(self) -> None:
        unknown = set(self.events) - EVENTS
        assert not unknown, f"unknown events {sorted(unknown)}"
        unknown = set(self.faults) - set(FAULTS_OFF) - {"stall_duration_s"}
        assert not unknown, f"unknown faults {sorted(unknown)}"


@dataclass(slots=True)
class Outcome:
    scenario: str
    seed: int
    verdict: Verdict | None = None
    progress: dict[str, int] = field(default_factory=dict)  # chain -> least last row expected
    made: dict[str, int] = field(default_factory=dict)  # chain -> blocks made during the run
    exits: list[str] = field(default_factory=list)  # the daemon stopped by itself
    stop_code: int | None = None  # exit status after the final SIGTERM
    kills: int = 0
    restarts: int = 0
    scheduled: Counter[str] = field(default_factory=Counter)
    injected: dict[str, int] = field(default_factory=dict)  # as the simulator counted them
    seconds: float = 0.0
    log: Path | None = None

    def problems(self, min_rows: int) -> list[str]:
        found = list(self.exits)
        if self.stop_code != 0:
            found.append(f"the daemon exited with {self.stop_code} on SIGTERM (expected 0)")
        if self.verdict is None:
            return [*found, "no verdict: the run did not reach the comparison"]
        found += self.verdict.problems()
        for name, chain in self.verdict.chains.items():
            made = self.made.get(name, 2 * min_rows)
            least = self.progress.get(name)
            if chain.first is not None:
                # A dataset without a row yet is a fresh start, from the head: blocks
                # made before the first row was durable were never the daemon's to write
                # (the domain may idle at first, then make blocks while the daemon is down).
                made = min(made, chain.head - chain.first)
                if least is not None:
                    # Blocks past the least last row expected may still be waiting for
                    # confirmation (a domain that wakes up late in the run).
                    made = min(made, max(0, least - chain.first + 1))
            least_rows = min(min_rows, made // 2)
            if chain.rows < least_rows:
                found.append(f"{name}: only {chain.rows} rows (expected at least {least_rows})")
            if least is not None and (chain.last or 0) < least:
                found.append(
                    f"{name}: the last row is #{chain.last}, below #{least}: the daemon "
                    "did not catch up once the faults stopped"
                )
        return found

    def report(self, min_rows: int) -> str:
        lines = [
            f"chaos scenario {self.scenario!r} with BLOCKTIMESD_CHAOS_SEED={self.seed} "
            f"({self.seconds:.0f} s, {self.kills} kills, {self.restarts} restarts)",
            f"  scheduled: {dict(sorted(self.scheduled.items()))}",
            f"  injected by the simulator: {self.injected}",
        ]
        if self.verdict is not None:
            lines += [f"  {line}" for line in self.verdict.summary().splitlines()]
        lines += [f"  PROBLEM {p}" for p in self.problems(min_rows)]
        if self.log is not None:
            lines.append(f"  daemon log: {self.log}")
        return "\n".join(lines)


# -- processes ---------------------------------------------------------------------------


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "blocktimesd", *args]


class Simulator:
    """``blocktimesd devnet`` in its own process, steered by its control methods."""

    def __init__(self, proc: asyncio.subprocess.Process, consensus: str, domain: str) -> None:
        self.proc = proc
        self.consensus = consensus
        self.domain = domain

    async def control(self, method: str, *params: Any) -> Any:
        """Call a control method on whichever endpoint is up (outages take them down)."""
        deadline = time.monotonic() + _CONTROL_TIMEOUT_S
        last: Exception | None = None
        while True:
            for url in (self.consensus, self.domain):
                try:
                    async with Rpc(url) as rpc:
                        return await rpc.call(method, *params)
                except (OSError, ConnectionClosed) as exc:  # down, or its connections cut
                    last = exc
            if time.monotonic() > deadline:
                raise AssertionError(f"neither endpoint answers {method}: {last}")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def simulator(seed: int, fork_rate: float, log: Path) -> AsyncIterator[Simulator]:
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            *_command("--log-level", "INFO", "devnet", "--consensus-port", "0",
                      "--domain-port", "0", "--seed", str(seed), "--speed", str(SPEED),
                      "--history", str(HISTORY), "--fork-rate", str(fork_rate)),
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 60)).decode() for _ in "cd"]
        urls = dict(line.split() for line in lines)
        yield Simulator(proc, urls["consensus"], urls["auto-evm"])
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


class Daemon:
    """``blocktimesd run`` as a supervisor would run it: restarted whenever it stops."""

    def __init__(
        self, env: Mapping[str, str], args: list[str], log: Path, log_level: str = "INFO"
    ) -> None:
        self.env = {**os.environ, **env}
        self.args = args
        self.log = log
        self.log_level = log_level
        self.proc: asyncio.subprocess.Process | None = None
        self._log_offset = 0
        self.starts = 0
        self.exits: list[str] = []

    async def start(self) -> None:
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *_command("--log-level", self.log_level, "run", *self.args),
                stdout=out,
                stderr=out,
                env=self.env,
            )
        self.starts += 1

    async def kill(self) -> None:
        """``kill -9``: no shutdown, no flush."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> int:
        """SIGTERM; the exit status."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), _STOP_TIMEOUT_S)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return -9

    async def check(self, when: float) -> None:
        """Restart the daemon if it stopped by itself, and note that it did."""
        assert self.proc is not None
        if self.proc.returncode is None:
            return
        tail = self._tail()
        self.exits.append(
            f"the daemon exited with {self.proc.returncode} by itself at {when:.1f} s: {tail}"
        )
        await self.start()

    def _tail(self) -> str:
        text = self.log.read_bytes()[self._log_offset :].decode(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return " | ".join(lines[-3:])

    def metrics_url(self) -> str | None:
        """Where the running daemon serves metrics (it prints it on start)."""
        text = self.log.read_bytes()[self._log_offset :].decode(errors="replace")
        found = _METRICS_URL.findall(text)
        return found[-1] if found else None


def _durable_tip(data: Path, chain: str) -> int:
    """The highest block number in a chain's files, read from their names (documented
    in docs/schema.md: ``part-<first>-<last>-<token>.parquet``)."""
    names = (p.name for p in (data / "block_times" / f"chain={chain}").glob("date=*/*.parquet"))
    return max((int(m[1]) for m in map(_FILE_NAME.match, names) if m), default=-1)


def _confirmed(url: str) -> dict[str, int]:
    """The last confirmed block per chain, as the daemon's metrics say."""
    with urllib.request.urlopen(url, timeout=2) as response:
        text = response.read().decode()
    return {chain: int(float(value)) for chain, value in _CONFIRMED.findall(text)}


async def _catch_up(
    daemon: Daemon, data: Path, targets: Mapping[str, int], timeout: float = _SETTLE_TIMEOUT_S
) -> None:
    """Wait until the daemon confirmed the targets (its metrics say so, or its files
    reach them), or time runs out: the comparison then shows what is missing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reached = {chain: _durable_tip(data, chain) for chain in targets}
        url = daemon.metrics_url()
        if url is not None:
            with contextlib.suppress(OSError, ValueError):
                for chain, number in (await asyncio.to_thread(_confirmed, url)).items():
                    reached[chain] = max(reached.get(chain, -1), number)
        if all(reached[chain] >= target for chain, target in targets.items()):
            return
        await asyncio.sleep(0.25)


# -- a run -------------------------------------------------------------------------------


class Middle(Protocol):
    """Something between the daemon and the simulator (a proxy), told of each phase.

    ``endpoints`` yields the consensus and domain URLs the daemon is given; ``faulty``
    is called once the daemon has warmed up (True) and when the faults stop (False);
    ``stopping`` before the daemon's final SIGTERM; ``excluded`` names, per chain, the
    block hashes whose timestamps the comparison must not check (see
    :func:`tests.chaos.walk.compare`)."""

    def endpoints(self, net: Simulator) -> AbstractAsyncContextManager[tuple[str, str]]: ...

    async def faulty(self, daemon: Daemon, on: bool) -> None: ...

    async def stopping(self, daemon: Daemon) -> None: ...

    def excluded(self) -> Mapping[str, Collection[str]]: ...


@contextlib.asynccontextmanager
async def _direct(net: Simulator) -> AsyncIterator[tuple[str, str]]:
    yield net.consensus, net.domain


async def _warm_up(data: Path) -> None:
    """Wait until each chain has a durable file (or time runs out): faults begin once
    the daemon has somewhere to resume from, so a run tests resuming, not a fresh start."""
    deadline = time.monotonic() + _WARM_UP_TIMEOUT_S
    chains = [data / "block_times" / f"chain={chain}" for chain in ("consensus", "auto-evm")]
    while time.monotonic() < deadline:
        if all(any(chain.glob("date=*/*.parquet")) for chain in chains):
            return
        await asyncio.sleep(0.2)


HEAD_POLL_S = 0.5  # ~5 consensus blocks at SPEED: a dropped subscription is noticed quickly


def _config(workdir: Path, scenario: Scenario) -> list[str]:
    lines = [f"head_poll_s = {HEAD_POLL_S}"]
    if scenario.request_timeout_s is not None:
        lines.append(f"request_timeout_s = {scenario.request_timeout_s}")
    lines.extend(f"{name} = {value}" for name, value in scenario.settings.items())
    path = workdir / "blocktimesd.toml"
    path.write_text("\n".join(lines) + "\n")
    return ["--config", str(path)]


@dataclass(frozen=True, slots=True)
class Strike:
    """One one-shot fault: when (seconds into the faulty phase), what, and how hard."""

    at: float
    kind: str
    args: tuple[Any, ...] = ()  # of the control method; a kill's pause before the restart
    lasts: float = 0.0  # seconds the fault goes on after ``at``


def _schedule(scenario: Scenario, rng: random.Random) -> list[Strike]:
    strikes: list[Strike] = []
    for kind, count in sorted(scenario.events.items()):
        for _ in range(count):
            at = rng.uniform(1.0, scenario.seconds - 0.5)
            if kind == "kill":
                pause = rng.uniform(0.0, 1.5)
                strikes.append(Strike(at, kind, (pause,), pause))
            elif kind in ("reorg", "reorg-lower"):
                depth = K_CONSENSUS + rng.randint(1, 12)  # deeper than K: rows are repaired
                shorter = rng.randint(1, 3) if kind == "reorg-lower" else 0
                strikes.append(Strike(at, kind, (depth, shorter)))
            elif kind.startswith("outage-"):
                # Longer than the daemon's request timeout: that is when waiting is not enough.
                beyond = rng.uniform(*scenario.outage_beyond_timeout_s)
                seconds = (scenario.request_timeout_s or 2.0) + beyond
                strikes.append(Strike(at, kind, (_OUTAGE_CHAIN[kind], seconds), seconds))
                if scenario.restart_in_outage:
                    # A restart while a node is down: the daemon starts without it.
                    pause = rng.uniform(0.0, 0.5)
                    strikes.append(Strike(at + rng.uniform(0.2, 1.0), "kill", (pause,), pause))
            elif kind == "stall":
                seconds = rng.uniform(0.5, 2.0)
                strikes.append(Strike(at, kind, (seconds,), seconds))
            else:
                strikes.append(Strike(at, kind))
    if scenario.kill_every is not None:
        at = rng.uniform(*scenario.kill_every)
        while at < scenario.seconds - 0.5:
            pause = rng.uniform(0.0, 1.5)
            strikes.append(Strike(at, "kill", (pause,), pause))
            at += rng.uniform(*scenario.kill_every)
    return sorted(strikes, key=lambda s: s.at)


_CONTROL = {
    "upgrade": "devnet_upgrade",
    "outage-consensus": "devnet_outage",
    "outage-domain": "devnet_outage",
    "stall": "devnet_stall",
    "drop-connections": "devnet_dropConnections",
    "drop-subscriptions": "devnet_dropSubscriptions",
}


async def _strike(
    strike: Strike, net: Simulator, daemon: Daemon, outcome: Outcome, floor: int
) -> None:
    """Strike; a reorg forks above ``floor`` (where the daemon began following)."""
    if strike.kind == "kill":
        await daemon.kill()
        outcome.kills += 1
        await asyncio.sleep(strike.args[0])
        await daemon.start()
    elif strike.kind in ("reorg", "reorg-lower"):
        depth, shorter = strike.args
        best = (await net.control("devnet_info"))["consensusBest"]
        depth = max(1, min(depth, best - floor))
        await net.control("devnet_reorg", depth, max(1, depth - shorter) if shorter else None)
    else:
        await net.control(_CONTROL[strike.kind], *strike.args)
    outcome.scheduled[strike.kind] += 1


async def run_scenario(
    scenario: Scenario, seed: int, workdir: Path, middle: Middle | None = None
) -> Outcome:
    """Run the daemon through a scenario and compare its dataset with the chains; with
    a ``middle``, the daemon talks to the simulator through it."""
    rng = random.Random(seed)
    outcome = Outcome(scenario.name, seed, log=workdir / "daemon.log")
    began = time.monotonic()
    data = workdir / "data"
    endpoints = _direct if middle is None else middle.endpoints
    async with (
        simulator(rng.getrandbits(32), scenario.fork_rate, workdir / "devnet.log") as net,
        endpoints(net) as (consensus, domain),
    ):
        env = {
            "CONSENSUS_RPC_WS": consensus,
            "AUTO_EVM_RPC_WS": domain,
            "K_CONSENSUS": str(K_CONSENSUS),
            "K_AUTO_EVM": str(K_DOMAIN),
            "MAX_ROWS_PER_FILE": str(scenario.max_rows_per_file),
            "METRICS_ADDR": "127.0.0.1:0",
            "DATA_DIR": str(data),
        }
        daemon = Daemon(env, _config(workdir, scenario), workdir / "daemon.log", scenario.log_level)
        first = await net.control("devnet_info")
        await daemon.start()
        try:
            await _warm_up(data)
            if scenario.faults:
                await net.control("devnet_setFaults", dict(scenario.faults))
            if middle is not None:
                await middle.faulty(daemon, True)
            start = time.monotonic()
            strikes = _schedule(scenario, rng)
            for strike in strikes:
                await asyncio.sleep(max(0.0, start + strike.at - time.monotonic()))
                await daemon.check(time.monotonic() - began)
                await _strike(strike, net, daemon, outcome, first["consensusBest"] + 2)
            # The faulty phase lasts until the last outage or stall is over.
            end = max([scenario.seconds, *(s.at + s.lasts + 0.5 for s in strikes)])
            await asyncio.sleep(max(0.0, start + end - time.monotonic()))
            await daemon.check(time.monotonic() - began)
            # Faults off; then the daemon must catch up with the chains as they are then.
            if middle is not None:
                await middle.faulty(daemon, False)
            await net.control("devnet_setFaults", dict(FAULTS_OFF))
            await net.control("devnet_heal")
            await asyncio.sleep(_TAIL_S)
            await daemon.check(time.monotonic() - began)
            info = await net.control("devnet_info")
            outcome.progress = {
                "consensus": info["consensusBest"] - K_CONSENSUS,
                # A domain block waits for its consensus block to be confirmed too.
                "auto-evm": info["domainBest"] - K_DOMAIN - K_CONSENSUS,
            }
            outcome.made = {
                "consensus": info["consensusBest"] - first["consensusBest"],
                "auto-evm": info["domainBest"] - first["domainBest"],
            }
            await _catch_up(daemon, data, outcome.progress, scenario.settle_timeout_s)
            await daemon.check(time.monotonic() - began)
        finally:
            if middle is not None:
                await middle.stopping(daemon)
            outcome.stop_code = await daemon.stop()
            outcome.exits = daemon.exits
            outcome.restarts = daemon.starts - 1
        outcome.injected = (await net.control("devnet_info"))["injected"]
        excluded = None if middle is None else middle.excluded()
        outcome.verdict = await compare(data, net.consensus, net.domain, excluded=excluded)
    outcome.seconds = time.monotonic() - began
    return outcome
