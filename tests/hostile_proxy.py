"""A hostile node: a WebSocket proxy in front of the simulator that, every few seconds,
does one thing a broken or lying node does, and a run of the daemon through it.

:class:`HostileProxy` serves one loopback port (port 0) per chain and forwards every
message both ways.  While its faults are on, a seeded schedule arms one fault of a
random kind on a random chain every few seconds:

* transient: malformed messages (an error with a null id, invalid JSON, an answer to an
  unknown id, an answer sent twice), a frame started then trickled a byte a second,
  silence, a dropped connection, trouble during a new connection's first calls (the
  preflight), and malformed answers (a head without ``digest``, a non-hex ``number``,
  a notification whose result is not an object, a null ``Timestamp.Now``);
* lies: a header that does not hash to the hash asked for (its parent link rewritten),
  and a forged ``Timestamp.Now`` (before its parent's, equal to it, or on the domain
  different from its consensus source's).

Every lie is recorded (:class:`Lie`); a forged timestamp is told again on every later
read of that block, so the daemon sees one consistent (lying) chain.  Transient faults
must cost no row; a forged timestamp must be written as told and flagged; a header lie
must never be written.  :class:`HostileRun` plugs the proxy into the chaos harness
(:func:`tests.chaos.harness.run_scenario`) and :func:`check` judges the outcome: the
dataset equal to the chains except the blocks lied about, every lie flagged, ``/healthz``
200 throughout, and no credential anywhere.  Used by ``bench/hostile.py`` and
``tests/e2e/test_hostile_proxy.py``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.chaos.harness import Daemon, Outcome, Scenario, Simulator
from tests.chaos.walk import NOW_KEY, Rpc, read_rows

__all__ = [
    "ALL_KINDS",
    "LIES",
    "SECRETS",
    "HostileProxy",
    "HostileRun",
    "Judgement",
    "Lie",
    "check",
    "describe",
    "hostile_scenario",
]

CONSENSUS, DOMAIN = "consensus", "auto-evm"
# Kinds that act on the chain's current connection at once.
MALFORMED_MESSAGES = ("error-null-id", "invalid-json", "unknown-id")
STUCK = ("trickle", "silence")
# Kinds that wait for the next message they apply to.
TRIGGERED = ("duplicate-answer", "no-digest", "non-hex-number", "result-not-object",
             "null-timestamp")  # fmt: skip
TIMESTAMP_LIES = ("timestamp-before-parent", "timestamp-equal-parent",
                  "timestamp-differs-from-consensus")  # fmt: skip
LIES = ("header-hash", *TIMESTAMP_LIES)
ALL_KINDS = (*MALFORMED_MESSAGES, *STUCK, "drop", "preflight", *TRIGGERED, *LIES)
DOMAIN_ONLY = frozenset({"timestamp-differs-from-consensus"})
# The flag the daemon must raise for each timestamp lie.
FLAG_OF = {
    "timestamp-before-parent": "non_positive_delta",
    "timestamp-equal-parent": "non_positive_delta",
    "timestamp-differs-from-consensus": "timestamp_differs_from_consensus",
}
_MALFORMED = {
    "error-null-id": '{"jsonrpc":"2.0","id":null,"error":"boom"}',
    "invalid-json": '{"jsonrpc":"2.0","id":',
    "unknown-id": '{"jsonrpc":"2.0","id":987654321,"result":"0x00"}',
}
_PREFLIGHT_CALLS = 6  # blocktimesd.aio.preflight asks six things of a new connection
# Not a wrong-typed result: the daemon takes one for another network and exits (see
# the report of bench/hostile.py's first runs: preflight does not check result types).
_PREFLIGHT_TROUBLE = ("invalid-json", "error-null-id", "abort", "internal-error")
_STUCK_MAX_S = 60.0  # the proxy gives up a stuck connection itself after this long
_NOW_KEY = NOW_KEY.lower()

# Credentials in every endpoint the daemon is given: none may show anywhere.
_USER, _PASSWORD, _APIKEY = "zq7user", "Xy9Passw0rdQ", "K3yAp1ZetaQ"
SECRETS = (_USER, _PASSWORD, _APIKEY, base64.b64encode(f"{_USER}:{_PASSWORD}".encode()).decode())


@dataclass(frozen=True, slots=True)
class Lie:
    """One lie told: about which block of which chain, and how."""

    chain: str
    kind: str
    block_hash: str
    number: int
    at_s: float  # seconds after the faults began
    detail: str = ""


@dataclass(slots=True)
class _Link:
    """One daemon connection and the proxy's upstream one behind it."""

    chain: str
    client: ServerConnection
    asked: dict[Any, tuple[int, str, list[Any]]] = field(default_factory=dict)
    requests: int = 0
    mode: str = "open"  # "open", or a STUCK kind: nothing more is forwarded to the daemon
    victim: tuple[int, str] | None = None  # preflight: (request index, what goes wrong)


def _u64(value: int) -> str:
    return "0x" + value.to_bytes(8, "little").hex()


def _from_u64(value: str) -> int:
    return int.from_bytes(bytes.fromhex(value[2:]), "little")


class HostileProxy:
    """One loopback proxy per chain, faults injected at random while switched on."""

    def __init__(
        self,
        upstreams: Mapping[str, str],
        seed: int,
        every: tuple[float, float] = (1.0, 4.0),
        kinds: Collection[str] = ALL_KINDS,
    ) -> None:
        unknown = set(kinds) - set(ALL_KINDS)
        assert not unknown, f"unknown kinds {sorted(unknown)}"
        self.upstreams = dict(upstreams)
        self.every = every
        self.kinds = tuple(k for k in ALL_KINDS if k in kinds)
        self.rng = random.Random(seed)
        self.armed: Counter[str] = Counter()  # scheduled
        self.injected: Counter[str] = Counter()  # done (a triggered kind once it applied)
        self.lies: list[Lie] = []
        self.ports: dict[str, int] = {}
        self._pending: dict[str, set[str]] = {c: set() for c in upstreams}
        self._links: dict[str, list[_Link]] = {c: [] for c in upstreams}
        self._preflight_next: dict[str, bool] = dict.fromkeys(upstreams, False)
        self._forged: dict[tuple[str, str], int] = {}  # (chain, block hash) -> told timestamp
        self._seen: dict[str, set[str]] = {c: set() for c in upstreams}  # timestamps asked
        self._side: dict[str, Rpc] = {}  # the proxy's own questions to the simulator
        self._side_lock = asyncio.Lock()
        self._scheduler: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._began = 0.0
        self._stack = contextlib.AsyncExitStack()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> HostileProxy:
        for chain, upstream in self.upstreams.items():

            async def handler(ws: ServerConnection, chain: str = chain) -> None:
                await self._serve(chain, ws)

            server = await self._stack.enter_async_context(
                serve(handler, "127.0.0.1", 0, max_size=None, ping_interval=None)
            )
            self.ports[chain] = server.sockets[0].getsockname()[1]
            self._side[chain] = await self._stack.enter_async_context(Rpc(upstream))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        await self._stack.aclose()

    def url(self, chain: str) -> str:
        """The URL the daemon is given: credentials and an API key included."""
        return f"ws://{_USER}:{_PASSWORD}@127.0.0.1:{self.ports[chain]}/?apikey={_APIKEY}"

    def start(self) -> None:
        """Faults on."""
        if self._scheduler is None:
            self._began = time.monotonic()
            self._scheduler = asyncio.create_task(self._schedule())

    async def stop(self) -> None:
        """Faults off: nothing more is armed, stuck connections are dropped.  Forged
        timestamps are still told for the blocks lied about (the lie stays consistent)."""
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
            self._scheduler = None
        for pending in self._pending.values():
            pending.clear()
        for chain in self._preflight_next:
            self._preflight_next[chain] = False
        for links in self._links.values():
            for link in links:
                link.victim = None
                if link.mode != "open":
                    link.client.transport.abort()
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the schedule ------------------------------------------------------------------------

    async def _schedule(self) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(*self.every))
            kind = self.rng.choice(self.kinds)
            chains = [c for c in self.upstreams if kind not in DOMAIN_ONLY or c == DOMAIN]
            if not chains:
                continue
            self._arm(self.rng.choice(chains), kind)

    def _arm(self, chain: str, kind: str) -> None:
        self.armed[kind] += 1
        link = self._current(chain)
        if kind in MALFORMED_MESSAGES:
            if link is not None:
                self._spawn(self._send_now(link, kind))
        elif kind == "drop":
            if link is not None:
                self.injected[kind] += 1
                link.client.transport.abort()
        elif kind in STUCK:
            if link is not None:
                self.injected[kind] += 1
                link.mode = kind
                self._spawn(self._stuck(link))
        elif kind == "preflight":
            self._preflight_next[chain] = True
            if link is not None:
                link.client.transport.abort()  # the next connection is the one troubled
        else:
            self._pending[chain].add(kind)

    def _current(self, chain: str) -> _Link | None:
        links = [link for link in self._links[chain] if link.mode == "open"]
        return links[-1] if links else None

    def _take(self, chain: str, kind: str) -> bool:
        if kind in self._pending[chain]:
            self._pending[chain].discard(kind)
            self.injected[kind] += 1
            return True
        return False

    async def _send_now(self, link: _Link, kind: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await link.client.send(_MALFORMED[kind])
            self.injected[kind] += 1

    async def _stuck(self, link: _Link) -> None:
        """A frame started and trickled a byte a second, or nothing at all, until the
        daemon gives up the connection (or the proxy does, after a minute)."""
        transport = link.client.transport
        try:
            if link.mode == "trickle":
                transport.write(bytes([0x81, 126, 0x03, 0xE8]))  # a 1,000-byte text frame
            for _ in range(int(_STUCK_MAX_S)):
                await asyncio.sleep(1.0)
                if transport.is_closing():
                    return
                if link.mode == "trickle":
                    transport.write(b"x")
        finally:
            transport.abort()

    # -- one connection ----------------------------------------------------------------------

    async def _serve(self, chain: str, client: ServerConnection) -> None:
        link = _Link(chain, client)
        if self._preflight_next[chain]:
            self._preflight_next[chain] = False
            link.victim = (
                self.rng.randrange(_PREFLIGHT_CALLS), self.rng.choice(_PREFLIGHT_TROUBLE)
            )  # fmt: skip
        self._links[chain].append(link)
        try:
            async with connect(self.upstreams[chain], max_size=None, ping_interval=None) as node:
                up = asyncio.create_task(self._requests(link, node))
                down = asyncio.create_task(self._answers(link, node))
                try:
                    await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (up, down):
                        task.cancel()
                    for task in (up, down):
                        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                            await task
        except (OSError, ConnectionClosed):
            pass  # the simulator is down or dropped us: the daemon sees its connection end
        finally:
            self._links[chain].remove(link)
            link.client.transport.abort()

    async def _requests(self, link: _Link, node: Any) -> None:
        async for text in link.client:
            try:
                message = json.loads(text)
            except ValueError:
                message = None
            for call in message if isinstance(message, list) else [message]:
                if isinstance(call, dict) and "id" in call:
                    params = call.get("params")
                    link.asked[call["id"]] = (
                        link.requests, str(call.get("method", "")),
                        params if isinstance(params, list) else [],
                    )  # fmt: skip
                    link.requests += 1
            await node.send(text)

    async def _answers(self, link: _Link, node: Any) -> None:
        async for text in node:
            if link.mode != "open":
                continue  # stuck: nothing reaches the daemon any more
            for out in await self._rewritten(link, str(text)):
                await link.client.send(out)

    async def _rewritten(self, link: _Link, text: str) -> list[str]:
        """What the daemon gets instead of ``text`` (usually ``[text]``)."""
        message = json.loads(text)
        chain = link.chain
        if isinstance(message, list):
            changed = False
            for at, item in enumerate(message):
                if isinstance(item, dict) and "result" in item and "id" in item:
                    call = link.asked.pop(item["id"], None)
                    if call is not None:
                        result = await self._answer(chain, call[1], call[2], item["result"])
                        if result is not item["result"]:
                            message[at] = {**item, "result": result}
                            changed = True
            return [json.dumps(message) if changed else text]
        if not isinstance(message, dict):
            return [text]
        if "id" in message and ("result" in message or "error" in message):
            call = link.asked.pop(message["id"], None)
            if call is not None and link.victim is not None and call[0] == link.victim[0]:
                return self._preflight_trouble(link, message)
            if call is not None and "result" in message:
                result = await self._answer(chain, call[1], call[2], message["result"])
                if result is not message["result"]:
                    text = json.dumps({**message, "result": result})
            if self._take(chain, "duplicate-answer"):
                return [text, text]
            return [text]
        params = message.get("params")
        if isinstance(params, dict) and isinstance(params.get("result"), dict):
            head = params["result"]
            if "number" in head and "parentHash" in head:
                return [self._head(chain, message, params, head) or text]
        return [text]

    def _head(
        self, chain: str, message: dict[str, Any], params: dict[str, Any], head: dict[str, Any]
    ) -> str | None:
        """A malformed head notification, if one is armed."""
        result: Any
        if self._take(chain, "no-digest"):
            result = {k: v for k, v in head.items() if k != "digest"}
        elif self._take(chain, "non-hex-number"):
            result = {**head, "number": "0xZZ" + head["number"][2:]}
        elif self._take(chain, "result-not-object"):
            result = "boom"
        else:
            return None
        return json.dumps({**message, "params": {**params, "result": result}})

    def _preflight_trouble(self, link: _Link, message: dict[str, Any]) -> list[str]:
        assert link.victim is not None
        _, how = link.victim
        link.victim = None
        self.injected["preflight"] += 1
        if how == "abort":
            link.client.transport.abort()
            return []
        if how == "internal-error":
            error = {"code": -32603, "message": "Internal error"}
            return [json.dumps({"jsonrpc": "2.0", "id": message["id"], "error": error})]
        return [_MALFORMED[how]]

    # -- answers about blocks ----------------------------------------------------------------

    async def _answer(self, chain: str, method: str, params: list[Any], result: Any) -> Any:
        """The result told for one call: a lie, a malformed value, or ``result``."""
        if method == "state_getStorage" and len(params) >= 2 and isinstance(result, str):
            if str(params[0]).lower() != _NOW_KEY:
                return result
            at = str(params[1])
            forged = self._forged.get((chain, at))
            if forged is not None:
                return _u64(forged)
            first = at not in self._seen[chain]
            self._seen[chain].add(at)
            if first:
                for kind in TIMESTAMP_LIES:
                    if kind in self._pending[chain]:
                        lie = await self._forge(chain, kind, at, _from_u64(result))
                        if lie is not None:
                            self._take(chain, kind)
                            return _u64(self._forged[(chain, at)])
            if self._take(chain, "null-timestamp"):
                return None
            return result
        if method == "state_queryStorageAt" and isinstance(result, list):
            return [self._forged_changes(chain, item) for item in result]
        asked_by_hash = method == "chain_getHeader" and params and params[0]
        if asked_by_hash and isinstance(result, dict) and self._take(chain, "header-hash"):
            # Another parent: the header no longer hashes to the hash asked for.
            fake = "0x" + self.rng.randbytes(32).hex()
            what = f"parentHash {result['parentHash']} -> {fake}"
            number = int(result["number"], 16)
            self._tell(Lie(chain, "header-hash", str(params[0]), number, self._now(), what))
            return {**result, "parentHash": fake}
        return result

    def _forged_changes(self, chain: str, item: Any) -> Any:
        """A ``state_queryStorageAt`` answer tells the same forged timestamps."""
        if not isinstance(item, dict) or (chain, str(item.get("block"))) not in self._forged:
            return item
        forged = self._forged[(chain, str(item["block"]))]
        changes = [
            [key, _u64(forged)] if str(key).lower() == _NOW_KEY and value else [key, value]
            for key, value in item.get("changes", [])
        ]
        return {**item, "changes": changes}

    async def _forge(self, chain: str, kind: str, at: str, true_ms: int) -> Lie | None:
        """Forge the timestamp of block ``at`` (asking the simulator for its parent's)."""
        try:
            async with self._side_lock:
                header = await self._side[chain].call("chain_getHeader", at)
                if header is None:
                    return None
                parent = str(header["parentHash"])
                parent_ms = self._forged.get((chain, parent))
                if parent_ms is None:
                    value = await self._side[chain].call("state_getStorage", NOW_KEY, parent)
                    parent_ms = None if value is None else _from_u64(value)
        except (OSError, ConnectionClosed, AssertionError):
            return None
        if kind == "timestamp-differs-from-consensus":
            forged = true_ms + 1
        elif parent_ms is None:
            return None  # the parent is genesis: no delta to spoil
        else:
            forged = parent_ms - 1000 if kind == "timestamp-before-parent" else parent_ms
        self._forged[(chain, at)] = forged
        lie = Lie(chain, kind, at, int(header["number"], 16), self._now(),
                  f"Timestamp.Now {true_ms} -> {forged}")  # fmt: skip
        self._tell(lie)
        return lie

    def _tell(self, lie: Lie) -> None:
        self.lies.append(lie)

    def _now(self) -> float:
        return time.monotonic() - self._began


# -- a run through the proxy -----------------------------------------------------------------

REQUEST_TIMEOUT_S = 3.0  # short: silence is noticed in seconds
# A connection must hold 30 s before the daemon's reconnect backoff starts again from
# nothing (core/backoff.py): with a fault every few seconds it is often at its 30 s cap
# when the faults stop.
SETTLE_TIMEOUT_S = 75.0


def hostile_scenario(seconds: float, log_level: str = "INFO") -> Scenario:
    """Only the proxy misbehaves; the simulator forks now and then, as chains do."""
    return Scenario(
        "hostile",
        seconds=seconds,
        fork_rate=0.05,
        request_timeout_s=REQUEST_TIMEOUT_S,
        min_rows=min(100, max(25, int(seconds))),
        log_level=log_level,
        settle_timeout_s=SETTLE_TIMEOUT_S,
    )


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


class HostileRun:
    """The :class:`tests.chaos.harness.Middle` of a hostile run: a :class:`HostileProxy`
    between daemon and simulator, ``/healthz`` polled every second while it lies."""

    def __init__(
        self, seed: int, every: tuple[float, float] = (1.0, 4.0), kinds: Collection[str] = ALL_KINDS
    ) -> None:
        self.seed = seed
        self.every = every
        self.kinds = kinds
        self.proxy: HostileProxy | None = None
        self.health_polls = 0
        self.health_failures: list[str] = []
        self.pages: dict[str, str] = {}  # what /readyz and /metrics said, for secrets
        self.metrics = ""  # the last /metrics
        self._poller: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def endpoints(self, net: Simulator) -> AsyncIterator[tuple[str, str]]:
        upstreams = {CONSENSUS: net.consensus, DOMAIN: net.domain}
        async with HostileProxy(upstreams, self.seed, self.every, self.kinds) as proxy:
            self.proxy = proxy
            yield proxy.url(CONSENSUS), proxy.url(DOMAIN)

    async def faulty(self, daemon: Daemon, on: bool) -> None:
        assert self.proxy is not None
        if on:
            self.proxy.start()
            self._poller = asyncio.create_task(self._poll(daemon))
        else:
            await self.proxy.stop()

    async def _poll(self, daemon: Daemon) -> None:
        began = time.monotonic()
        while True:
            url = daemon.metrics_url()
            if url is not None:
                base = url.rsplit("/", 1)[0]
                self.health_polls += 1
                try:
                    status, body = await asyncio.to_thread(_get, f"{base}/healthz")
                except OSError as exc:
                    status, body = 0, str(exc)
                if status != 200:
                    when = time.monotonic() - began
                    self.health_failures.append(f"{when:.0f} s: {status} {body.strip()[:200]}")
                if self.health_polls % 30 == 1:
                    await self._read_pages(base)
            await asyncio.sleep(1.0)

    async def _read_pages(self, base: str) -> None:
        for page in ("readyz", "metrics"):
            with contextlib.suppress(OSError):
                _, body = await asyncio.to_thread(_get, f"{base}/{page}")
                self.pages[page] = self.pages.get(page, "") + body
                if page == "metrics":
                    self.metrics = body

    async def stopping(self, daemon: Daemon) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        url = daemon.metrics_url()
        if url is not None and daemon.proc is not None and daemon.proc.returncode is None:
            await self._read_pages(url.rsplit("/", 1)[0])

    def excluded(self) -> Mapping[str, Collection[str]]:
        lies = [] if self.proxy is None else self.proxy.lies
        return {
            chain: {lie.block_hash for lie in lies if lie.chain == chain and lie.kind in FLAG_OF}
            for chain in (CONSENSUS, DOMAIN)
        }


# -- the judgement ---------------------------------------------------------------------------

_NON_POSITIVE = re.compile(
    r"(\S+): block #(\d+) (0x[0-9a-f]{64}): .*\((\w+)\); written as the chain says"
)
_DIFFERS = re.compile(r"(\S+): block #(\d+): timestamp -?\d+ differs from its consensus block")
_ANOMALIES = re.compile(
    r'^blocktimes_block_anomalies_total\{chain="([^"]+)",kind="([^"]+)"\} (\S+)$', re.MULTILINE
)


@dataclass(slots=True)
class Judgement:
    """What a hostile run showed, and what is wrong with it."""

    injected: Counter[str]
    armed: Counter[str]
    lies: list[Lie]
    written_lies: list[Lie] = field(default_factory=list)  # lies about blocks with a row
    flagged: list[Lie] = field(default_factory=list)
    unflagged: list[Lie] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)  # flags on blocks not lied about
    anomalies: dict[str, int] = field(default_factory=dict)  # the daemon's metric
    secrets: list[str] = field(default_factory=list)  # where a credential showed
    health_polls: int = 0
    health_failures: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _flags(log: str) -> tuple[set[tuple[str, str, str]], set[tuple[str, int]]]:
    """Rows flagged non_positive_delta (chain, hash, kind), and domain rows flagged as
    differing from their consensus block (chain, number)."""
    positive = {(m[1], m[3], m[4]) for m in _NON_POSITIVE.finditer(log)}
    differs = {(m[1], int(m[2])) for m in _DIFFERS.finditer(log)}
    return positive, differs


def _secrets_in(workdir: Path, daemon_log: str, pages: Mapping[str, str]) -> list[str]:
    texts = {"the daemon's output": daemon_log, **{f"/{p}": body for p, body in pages.items()}}
    found = [f"{s!r} in {where}" for where, text in texts.items() for s in SECRETS if s in text]
    for path in (workdir / "data").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            found += [f"{s!r} in {path}" for s in SECRETS if s.encode() in content]
    return found


def check(outcome: Outcome, run: HostileRun, workdir: Path, min_rows: int) -> Judgement:
    """Judge a finished run: every problem named in ``Judgement.problems``."""
    proxy = run.proxy
    assert proxy is not None
    judged = Judgement(proxy.injected, proxy.armed, list(proxy.lies))
    judged.health_polls, judged.health_failures = run.health_polls, run.health_failures
    problems = list(outcome.problems(min_rows))
    log = outcome.log.read_text(errors="replace") if outcome.log is not None else ""
    data = workdir / "data"
    rows = {chain: read_rows(data, chain) for chain in (CONSENSUS, DOMAIN)}
    written = {chain: {r["hash"]: r for r in chain_rows} for chain, chain_rows in rows.items()}
    positive, differs = _flags(log)
    for lie in judged.lies:
        if lie.kind == "header-hash":
            # Never written as told (the comparison checks the row); the daemon noticed.
            ok = f"asked for block {lie.block_hash}" in log
        elif lie.block_hash not in written[lie.chain]:
            continue  # a block that did not stay on the best chain: no row to flag
        elif FLAG_OF[lie.kind] == "non_positive_delta":
            ok = (lie.chain, lie.block_hash, "non_positive_delta") in positive
        else:
            ok = (lie.chain, lie.number) in differs
        judged.written_lies.append(lie)
        (judged.flagged if ok else judged.unflagged).append(lie)
    for lie in judged.unflagged:
        problems.append(f"a lie not flagged: {lie}")
    # A flag on a block not lied about is a false alarm, unless a consensus lie explains
    # it: a domain block whose consensus source was forged differs from it.
    lied = {(lie.chain, lie.block_hash) for lie in judged.lies if lie.kind in FLAG_OF}
    forged_sources = {h for c, h in lied if c == CONSENSUS}
    by_number = {chain: {int(r["block_number"]): r for r in rs} for chain, rs in rows.items()}
    for chain, block_hash, kind in sorted(positive):
        if (chain, block_hash) not in lied:
            judged.false_alarms.append(f"{chain} {block_hash} flagged {kind}")
    for chain, number in sorted(differs):
        row = by_number.get(chain, {}).get(number)
        if row is None:
            continue  # written, then replaced by a deeper reorg: the walk judges those rows
        if (chain, row["hash"]) in lied or row["consensus_block_hash"] in forged_sources:
            continue
        judged.false_alarms.append(f"{chain} #{number} flagged timestamp_differs_from_consensus")
    problems += [f"false alarm: {alarm}" for alarm in judged.false_alarms]
    judged.anomalies = {
        f"{chain}/{kind}": int(float(value))
        for chain, kind, value in _ANOMALIES.findall(run.metrics)
    }
    judged.secrets = _secrets_in(workdir, log, run.pages)
    problems += [f"secret shown: {where}" for where in judged.secrets]
    problems += [f"/healthz not 200 at {failure}" for failure in judged.health_failures]
    if judged.health_polls == 0:
        problems.append("/healthz was never polled (no metrics address in the daemon's log)")
    judged.problems = problems
    return judged


def describe(outcome: Outcome, judged: Judgement) -> str:
    """The figures of a run, one per line."""
    lines = [f"hostile run: {outcome.seconds:.0f} s, seed {outcome.seed}"]
    lines.append("faults injected by kind (armed):")
    for kind in ALL_KINDS:
        lines.append(f"  {kind:<34} {judged.injected[kind]:>5} ({judged.armed[kind]})")
    told = Counter(lie.kind for lie in judged.lies)
    lines.append(
        f"lies told: {len(judged.lies)} {dict(sorted(told.items()))}; about blocks "
        f"written: {len(judged.written_lies)}; flagged: {len(judged.flagged)}; "
        f"not flagged: {len(judged.unflagged)}"
    )
    lines.append(f"false alarms: {len(judged.false_alarms)}")
    lines.append(f"anomalies counted by the daemon: {judged.anomalies}")
    verdict = outcome.verdict
    totals = dict.fromkeys(("lost", "duplicated", "orphaned", "wrong"), 0)
    if verdict is not None:
        for name, chain in verdict.chains.items():
            span = "-" if chain.first is None else f"#{chain.first}..#{chain.last}"
            compared = chain.rows - len(chain.excluded)
            lines.append(
                f"  {name:<10} {chain.rows:>6} rows {span}, {compared} compared with the "
                f"chain, {len(chain.excluded)} lied about (node head #{chain.head})"
            )
            totals["lost"] += len(chain.missing)
            totals["duplicated"] += len(chain.duplicated)
            totals["orphaned"] += len(chain.orphaned)
            totals["wrong"] += (
                len(chain.wrong_timestamp) + len(chain.wrong_delta) + len(chain.wrong_link)
            )
    lines.append("rows " + ", ".join(f"{kind}: {n}" for kind, n in totals.items()))
    lines.append(
        f"/healthz: {judged.health_polls} polls, {len(judged.health_failures)} not 200; "
        f"daemon exits by itself: {len(outcome.exits)}; exit on SIGTERM: {outcome.stop_code}"
    )
    lines.append(f"secrets found: {len(judged.secrets)}")
    lines += [f"PROBLEM {p}" for p in judged.problems]
    if outcome.log is not None:
        lines.append(f"daemon log: {outcome.log}")
    return "\n".join(lines)
