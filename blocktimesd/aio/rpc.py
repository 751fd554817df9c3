"""One chain's JSON-RPC client over WebSocket.

One connection at a time, owned by a supervisor task that connects (taking the
configured endpoints in turn, with backoff), runs the preflight while watching the
connection, and then waits on the connection's single reader task.  Calls are pipelined
under a cap on requests in flight; lists of calls can go as JSON-RPC batches.
Subscriptions deliver into bounded queues and end with :class:`SubscriptionGap` when
anything goes wrong, so the caller always knows when it must fill a gap.

A connection is judged by its progress, not by being open.  It is dropped, and the
next endpoint tried, when a message takes longer than ``message_timeout`` to arrive or
the node does not read what we send for as long (see :mod:`blocktimesd.aio.wsconn`),
when keepalive pings go unanswered, when ``timeouts_to_drop`` requests in a row time
out with nothing received meanwhile, when the node sends something that is not
JSON-RPC, and when the caller finds its answers wrong (:meth:`RpcClient.fail_over`).
The supervisor never stops on an error: what it did not expect is logged at ERROR and
counted, and it goes on with backoff; it stops only when no endpoint can serve the
chain (:attr:`RpcClient.failure` says why).

A connection and what it carries are in :mod:`blocktimesd.aio.rpc_connection`; the
requests (the in-flight cap, pacing, deadlines) in :mod:`blocktimesd.aio.rpc_calls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from blocktimesd.aio.rpc_calls import Requests
from blocktimesd.aio.rpc_connection import RpcConnection
from blocktimesd.aio.subscription import Subscription
from blocktimesd.aio.wsconn import ConnectionSettings, explain, open_connection
from blocktimesd.core.backoff import EndpointSchedule
from blocktimesd.core.redact import redact_url
from blocktimesd.errors import (
    BlocktimesError,
    ConnectionLost,
    NodeUnusable,
    Outcome,
    classify,
)

__all__ = [
    "DROP_REASONS",
    "NullRpcObserver",
    "RpcClient",
    "RpcObserver",
    "RpcSettings",
    "Subscription",
]

log = logging.getLogger(__name__)

# Set while the preflight runs: its calls (and tasks it starts) may use the connection
# before it is ready for everyone else.
_IN_PREFLIGHT: contextvars.ContextVar[bool] = contextvars.ContextVar("in_preflight", default=False)

# Why the client itself drops a connection: few and fixed, for metrics labels.
DROP_REASONS = (
    "fail over",  # the caller found the node's answers wrong
    "stalled",  # a message, or our writes, made no progress for message_timeout
    "timeouts",  # requests timed out in a row with nothing received
    "protocol error",  # the node sent something that is not JSON-RPC 2.0
    "internal",  # an error of ours while reading (logged with its traceback)
)


@dataclass(frozen=True, slots=True)
class RpcSettings:
    endpoints: tuple[str, ...]
    max_inflight: int = 64  # jsonrpsee buffers 64 messages per connection
    batch_size: int = 1  # calls per JSON-RPC batch in call_many; 1 sends them one by one
    request_timeout: float = 30.0
    max_message_bytes: int = 16 * 1024 * 1024  # Substrate answers up to 15 MiB
    requests_per_second: float = 0.0  # 0: no limit
    subscription_queue: int = 256
    stall_timeout: float = 120.0  # a subscription silent this long is presumed dead
    connect_timeout: float = 10.0
    backoff_initial: float = 0.5
    backoff_cap: float = 30.0
    ping_interval: float | None = 20.0  # keepalive pings; None disables them
    ping_timeout: float | None = 20.0  # a ping unanswered this long drops the connection
    # A message that takes longer than this to arrive, or writes the node does not read
    # for as long, drop the connection.  An answer later than request_timeout is of no
    # use to its request anyway.
    message_timeout: float = 30.0
    timeouts_to_drop: int = 3  # requests timed out in a row, nothing received meanwhile
    close_timeout: float = 2.0  # for the closing handshake, then the socket is closed

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("at least one endpoint is needed")
        if self.max_inflight < 1 or self.batch_size < 1 or self.timeouts_to_drop < 1:
            raise ValueError("max_inflight, batch_size and timeouts_to_drop must be at least 1")
        if min(self.request_timeout, self.connect_timeout, self.message_timeout) <= 0:
            raise ValueError("request, connect and message timeouts must be positive")
        if self.close_timeout <= 0 or self.backoff_initial <= 0:
            raise ValueError("close_timeout and backoff_initial must be positive")
        if self.backoff_cap < self.backoff_initial:
            raise ValueError("backoff_cap must be at least backoff_initial")


class RpcObserver(Protocol):
    """Where the client reports what it does (the metrics layer implements this).

    ``endpoint`` is the configured URL, credentials included: keep it out of labels.
    ``reason`` is one of :data:`~blocktimesd.aio.wsconn.CONNECT_FAILURES` (an attempt
    that never became ready) or of :data:`DROP_REASONS` (a connection the client
    dropped).
    """

    def request_done(self, method: str, outcome: str, seconds: float) -> None: ...

    def reconnected(self, endpoint: str) -> None: ...

    def connect_failed(self, endpoint: str, reason: str) -> None: ...

    def dropped(self, endpoint: str, reason: str) -> None: ...


class NullRpcObserver:
    """Hears nothing: a client without metrics."""

    def request_done(self, method: str, outcome: str, seconds: float) -> None:
        pass

    def reconnected(self, endpoint: str) -> None:
        pass

    def connect_failed(self, endpoint: str, reason: str) -> None:
        pass

    def dropped(self, endpoint: str, reason: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class _Ending:
    """How one attempt on one endpoint ended, for the supervisor's next decision."""

    detail: str  # for the log line; names neither chain nor endpoint
    held: float | None  # seconds the connection was ready; None if it never was
    failure: str | None = None  # a CONNECT_FAILURES entry, when it never became ready
    dropped: str | None = None  # a DROP_REASONS entry, when the client dropped it
    unusable: BaseException | None = None  # this endpoint cannot serve the chain
    retire: bool = False  # the URL itself cannot work: never try it again
    error: BaseException | None = None  # unexpected: logged at ERROR with its traceback
    productive: bool = False  # the node answered once it was ready, or held it idle


class RpcClient:
    """JSON-RPC over WebSocket to one chain, with failover across its endpoints."""

    def __init__(
        self,
        settings: RpcSettings,
        chain: str,
        *,
        on_connect: Callable[[RpcClient], Awaitable[None]] | None = None,
        observer: RpcObserver | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.chain = chain
        self._on_connect = on_connect
        self._observer: RpcObserver = observer or NullRpcObserver()
        self._rng = rng or random.Random()
        self._clock = clock
        self._requests = Requests(
            chain,
            self._connection,
            self._observer,
            ready=self._usable,
            observed=observer is not None,  # per-call reports cost; skip them when unheard
            max_inflight=settings.max_inflight,
            requests_per_second=settings.requests_per_second,
            request_timeout=settings.request_timeout,
            timeouts_to_drop=settings.timeouts_to_drop,
            clock=clock,
        )
        self._schedule = EndpointSchedule(
            len(settings.endpoints), settings.backoff_initial, 2.0, settings.backoff_cap, self._rng
        )
        self._ws_settings = ConnectionSettings(
            max_message_bytes=settings.max_message_bytes,
            connect_timeout=settings.connect_timeout,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            close_timeout=settings.close_timeout,
        )
        self._conn: RpcConnection | None = None
        self._ready = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._fatal: BaseException | None = None
        self._last_failure: str | None = None  # the last attempt's end, for wait_ready
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self.connects = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, wait: float | None = None) -> None:
        """Start connecting; with ``wait``, return once ready or raise after that long."""
        if self._supervisor is None:
            self._closing = False
            self._supervisor = asyncio.create_task(self._supervise(), name=f"rpc-{self.chain}")
        if wait is not None:
            await self.wait_ready(wait)

    async def close(self) -> None:
        self._closing = True
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})  # its own failure, if any, is in self.failure

    async def __aenter__(self) -> RpcClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def endpoint(self) -> str | None:
        return self._conn.url if self._conn is not None else None

    @property
    def shown_endpoint(self) -> str | None:
        """The current endpoint as logs and errors may show it (no credentials)."""
        return self._conn.shown if self._conn is not None else None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def settled(self) -> tuple[int, float]:
        """Messages settled so far (answered, failed, timed out or abandoned) and their
        summed seconds from the send, over all connections: how busy the node keeps us."""
        return self._requests.settled, self._requests.round_trips

    @property
    def supervisor_alive(self) -> bool:
        """Whether the task that keeps the chain connected runs.  It stops only when no
        endpoint can serve the chain (then :attr:`failure` says why) and at
        :meth:`close`; a health check should fail when it is not alive."""
        return self._supervisor is not None and not self._supervisor.done()

    @property
    def failure(self) -> BaseException | None:
        """Why the supervisor stopped for good, if it did: no endpoint can serve."""
        return self._fatal

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until connected and preflight passed; raise a fatal preflight error."""
        deadline = None if timeout is None else self._clock() + timeout
        while not self._ready.is_set():
            if self._fatal is not None:
                raise self._fatal
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                shown = ", ".join(redact_url(url) for url in self.settings.endpoints)
                last = f"; last attempt: {self._last_failure}" if self._last_failure else ""
                raise ConnectionLost(
                    f"{self.chain}: no usable endpoint within {timeout:g} s (tried {shown}){last}"
                )
            self._state_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), remaining)
        if self._fatal is not None:
            raise self._fatal

    def fail_over(self, reason: str) -> None:
        """The caller found the node's answers wrong (a :class:`~blocktimesd.errors.NodeFault`):
        drop the connection at once; the supervisor tries the next endpoint first (the
        same one, after a backoff, when it is the only one)."""
        conn = self._conn
        if conn is None or conn.ended is not None:
            log.info(
                "%s: asked to fail over (%s) while not connected; the next attempt goes to "
                "the next endpoint anyway",
                self.chain,
                reason,
            )
            return
        conn.end(f"failing over: {reason}", "fail over")

    def _signal(self) -> None:
        self._state_changed.set()

    def _tell(self, event: str, *args: str) -> None:
        """Report a rare event to the observer; an observer's failure is only logged."""
        try:
            getattr(self._observer, event)(*args)
        except Exception:
            log.exception("%s: the RPC observer failed on %s", self.chain, event)

    # -- the supervisor --------------------------------------------------------------------

    async def _supervise(self) -> None:
        try:
            await self._keep_connected()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the loop catches every Exception: a last guard
            log.critical("%s: the RPC supervisor stopped: %r", self.chain, exc, exc_info=True)
            if self._fatal is None:
                self._fatal = ConnectionLost(f"{self.chain}: the RPC client stopped ({exc!r})")
            self._signal()
            raise

    async def _keep_connected(self) -> None:
        endpoints = self.settings.endpoints
        schedule = self._schedule
        unusable: dict[int, BaseException] = {}
        delay = 0.0
        while not self._closing:
            if delay:
                await asyncio.sleep(delay)
            index = schedule.current
            url = endpoints[index]
            try:
                ending = await self._attempt(url)
            except Exception as exc:  # a bug or a surprise: it must not stop the chain
                ending = _Ending(f"{type(exc).__name__}: {exc}", None, "internal", error=exc)
            if ending.held is not None:
                unusable.pop(index, None)
            if ending.unusable is not None:
                unusable[index] = ending.unusable
            if ending.retire:
                schedule.retire(index)
            if ending.failure is not None:
                self._tell("connect_failed", url, ending.failure)
            shown = redact_url(url)
            self._last_failure = _at(shown, ending.detail)
            if len(unusable) == len(endpoints):
                log.error("%s: %s; no endpoint is left to try", self.chain, self._last_failure)
                self._fatal = ending.unusable or next(iter(unusable.values()))
                self._signal()
                return
            _, delay = schedule.after(
                ending.held, fail_over=ending.dropped == "fail over", productive=ending.productive
            )
            self._log_ending(ending, shown, delay, redact_url(endpoints[schedule.current]))

    def _log_ending(self, ending: _Ending, shown: str, delay: float, next_shown: str) -> None:
        """One line per ended attempt, with when and where the next one goes."""
        then = f"next attempt in {delay:.1f} s" + (
            "" if next_shown == shown else f" on {next_shown}"
        )
        if ending.retire:
            then = f"{shown} is not tried again; {then}"
        if ending.error is not None:
            log.error(
                "%s: unexpected error with %s: %s; %s",
                self.chain,
                shown,
                ending.detail,
                then,
                exc_info=ending.error,
            )
        elif ending.failure == "unusable":
            log.error("%s: %s; %s", self.chain, _at(shown, ending.detail), then)
        elif ending.failure == "preflight":
            log.warning("%s: preflight failed: %s; %s", self.chain, _at(shown, ending.detail), then)
        elif ending.failure == "lost":
            log.warning(
                "%s: connection to %s ended during the preflight: %s; %s",
                self.chain,
                shown,
                ending.detail,
                then,
            )
        elif ending.failure is not None:
            level = logging.ERROR if ending.retire else logging.WARNING
            log.log(
                level, "%s: cannot connect to %s: %s; %s", self.chain, shown, ending.detail, then
            )
        elif ending.dropped is not None:
            log.warning(
                "%s: dropped the connection to %s: %s; %s", self.chain, shown, ending.detail, then
            )
        else:
            log.warning("%s: connection to %s lost: %s; %s", self.chain, shown, ending.detail, then)

    async def _attempt(self, url: str) -> _Ending:
        """Connect to ``url``, run the preflight, serve until the connection ends."""
        shown = redact_url(url)
        try:
            ws = await open_connection(url, self._ws_settings)
        except Exception as exc:
            failure = await explain(url, exc, self.settings.connect_timeout)
            unusable = None
            if failure.permanent:
                unusable = NodeUnusable(f"{self.chain}: cannot use {shown}: {failure.detail}")
            return _Ending(
                failure.detail,
                None,
                failure.kind,
                unusable=unusable,
                retire=failure.permanent,
                error=exc if failure.kind == "internal" else None,
            )
        conn = RpcConnection(ws, url, shown, self.chain, self._on_end, self._on_subscription_ended)
        self._conn = conn
        reader = asyncio.create_task(conn.read(), name=f"rpc-reader-{self.chain}")
        watchdog = asyncio.create_task(
            conn.watch(self.settings.message_timeout), name=f"rpc-watchdog-{self.chain}"
        )
        try:
            ending = await self._preflight(conn, reader)
            if ending is not None:
                return ending
            ready_at = self._clock()
            self.connects += 1
            if self.connects > 1:
                self._tell("reconnected", url)
            log.info("%s: connected to %s", self.chain, shown)
            self._ready.set()
            self._signal()
            received, asked = conn.received, conn.framing.asked
            await asyncio.wait({reader})
            held = self._clock() - ready_at
            ending = self._ended(conn, reader, held)
            # Productive: it answered, or it held the connection idle (asked nothing) for
            # at least the shortest delay there is (half the initial one): a node that
            # drops idle connections is no sign that it cannot serve, and costs at most
            # one connection per initial delay.  One that drops them at once, or drops
            # requests unanswered, is still backed off from.
            idle = conn.framing.asked == asked and held >= self.settings.backoff_initial / 2
            return dataclasses.replace(ending, productive=conn.received > received or idle)
        finally:
            await self._drop(conn, reader, watchdog)

    async def _preflight(self, conn: RpcConnection, reader: asyncio.Task[None]) -> _Ending | None:
        """Run the ``on_connect`` hook, raced against the reader: a connection that ends
        during the preflight is noticed at once, not when a preflight call times out."""
        if self._on_connect is None:
            return None
        hook = self._on_connect

        async def run() -> None:
            await hook(self)

        context = contextvars.copy_context()
        context.run(_IN_PREFLIGHT.set, True)
        task = asyncio.create_task(run(), name=f"rpc-preflight-{self.chain}", context=context)
        try:
            await asyncio.wait({task, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        exc = None if task.cancelled() else task.exception()
        if reader.done() or task.cancelled():  # the connection's end is the reason
            ending = self._ended(conn, reader, None)
            if ending.error is not None:
                return ending
            return _Ending(ending.detail, None, "lost", dropped=ending.dropped)
        if exc is None:
            return None
        if isinstance(exc, BlocktimesError):
            # The preflight's errors name the chain already; the log line names it once.
            detail = str(exc).removeprefix(f"{self.chain}: ")
            if classify(exc) is Outcome.FATAL:
                return _Ending(detail, None, "unusable", unusable=exc)
            return _Ending(detail, None, "preflight")
        return _Ending(f"{type(exc).__name__}: {exc}", None, "internal", error=exc)

    def _ended(
        self, conn: RpcConnection, reader: asyncio.Task[None], held: float | None
    ) -> _Ending:
        """How the connection ended, from its reader (done, or about to be dropped)."""
        error = None
        if reader.done() and not reader.cancelled():
            error = reader.exception()
        if error is not None:
            detail = f"{type(error).__name__}: {error}"
            failure = "internal" if held is None else None
            return _Ending(detail, held, failure, dropped="internal", error=error)
        return _Ending(conn.ended or "the connection ended", held, dropped=conn.dropped)

    async def _drop(
        self, conn: RpcConnection, reader: asyncio.Task[None], watchdog: asyncio.Task[None]
    ) -> None:
        if self._conn is conn:
            self._conn = None
            self._ready.clear()
        polite = conn.ended is None  # the client is closing: say goodbye properly
        if polite:
            conn.ended = "the client closed the connection"
        watchdog.cancel()
        reader.cancel()
        await asyncio.wait({reader, watchdog})
        for task in (reader, watchdog):  # an error of theirs was reported; mark it seen
            if not task.cancelled():
                task.exception()
        if polite:
            with contextlib.suppress(Exception):
                await conn.ws.close()  # bounded by close_timeout
        conn.ws.transport.abort()
        conn.fail_open()
        self._signal()

    def _on_end(self, conn: RpcConnection) -> None:
        """A connection ended: if it is the current one, the client is not ready."""
        if self._conn is conn:
            self._ready.clear()
            self._signal()
        if conn.dropped is not None:
            self._tell("dropped", conn.url, conn.dropped)

    def _on_subscription_ended(self, sub: Subscription) -> None:
        asyncio.get_running_loop().create_task(self._unsubscribe_quietly(sub))

    async def _unsubscribe_quietly(self, sub: Subscription) -> None:
        if sub.id is not None:
            with contextlib.suppress(Exception):
                await self.call(sub._unsubscribe, sub.id, timeout=5)

    def _forget(self, sub: Subscription) -> None:
        conn = self._conn
        if conn is not None and sub.id is not None:
            conn.subscriptions.pop(sub.id, None)

    # -- calls -------------------------------------------------------------------------------

    def _usable(self) -> RpcConnection | None:
        """The current connection if it is ready (and not ended); else None."""
        conn = self._conn
        if conn is not None and conn.ended is None and self._ready.is_set():
            return conn
        return None

    async def _connection(self) -> RpcConnection:
        """The current connection: during preflight, or once ready."""
        conn = self._conn
        usable = conn is not None and conn.ended is None
        if usable and (self._ready.is_set() or _IN_PREFLIGHT.get()):
            assert conn is not None
            return conn
        await self.wait_ready(self.settings.request_timeout)
        conn = self._conn
        if conn is None or conn.ended is not None:
            raise ConnectionLost(f"{self.chain}: not connected")
        return conn

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """One request; raises the node's :class:`RpcError`, or a transport error."""
        sent = await self._requests.post([(method, list(params))], timeout, None)
        return (await self._requests.collect(sent, errors_in_place=False))[0]

    async def call_many(
        self,
        calls: Sequence[tuple[str, list[Any]]],
        timeout: float | None = None,
        batch_size: int | None = None,
    ) -> list[Any]:
        """Many requests, pipelined or in batches of ``batch_size`` (default: the
        setting).

        One task sends the messages as slots under the in-flight cap free up (a slot is
        freed when its answer arrives), then collects the answers in order.  The node's
        errors come back in place (as :class:`RpcError` values); a transport error
        raises, and the answers still awaited are abandoned.
        """
        size = batch_size or self.settings.batch_size
        return await self._requests.many(calls, timeout, size)

    async def subscribe(self, method: str, unsubscribe: str, *params: Any) -> Subscription:
        sub = Subscription(
            self, unsubscribe, self.settings.subscription_queue, self.settings.stall_timeout
        )
        sent = await self._requests.post([(method, list(params))], None, sub)
        await self._requests.collect(sent, errors_in_place=False)
        return sub


def _at(shown: str, detail: str) -> str:
    """``detail`` with the endpoint in front, unless it names the endpoint already."""
    return detail if shown in detail else f"{shown}: {detail}"
