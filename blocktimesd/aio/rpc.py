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
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from websockets.exceptions import ConnectionClosed

from blocktimesd.aio.subscription import Subscription
from blocktimesd.aio.wsconn import (
    ConnectionSettings,
    WatchedConnection,
    explain,
    open_connection,
)
from blocktimesd.core.backoff import EndpointSchedule, TokenBucket
from blocktimesd.core.jsonrpc import (
    BatchResponse,
    ClientFraming,
    ErrorWithoutId,
    Event,
    Notification,
    Response,
)
from blocktimesd.core.redact import redact_url
from blocktimesd.errors import (
    BlocktimesError,
    ConnectionLost,
    MalformedAnswer,
    NodeUnusable,
    Outcome,
    ProtocolError,
    RpcError,
    RpcTimeout,
    classify,
)

__all__ = ["DROP_REASONS", "RpcClient", "RpcObserver", "RpcSettings", "Subscription"]

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


class _NullObserver:
    def request_done(self, method: str, outcome: str, seconds: float) -> None:
        pass

    def reconnected(self, endpoint: str) -> None:
        pass

    def connect_failed(self, endpoint: str, reason: str) -> None:
        pass

    def dropped(self, endpoint: str, reason: str) -> None:
        pass


@dataclass(eq=False)
class _Connection:
    ws: WatchedConnection
    url: str
    shown: str  # the URL as logs and errors show it: without credentials
    framing: ClientFraming = field(default_factory=ClientFraming)
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    subscribing: dict[int, Subscription] = field(default_factory=dict)  # request id -> sub
    subscriptions: dict[str, Subscription] = field(default_factory=dict)  # sub id -> sub
    # Notifications that arrive before their subscribe reply; bounded, oldest dropped.
    early: dict[str, list[Any]] = field(default_factory=dict)
    ended: str | None = None  # why the connection ended, once it has
    dropped: str | None = None  # the DROP_REASONS entry, when the client ended it
    silent_timeouts: int = 0  # requests timed out since the last message received
    received: int = 0  # messages received


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
    productive: bool = False  # the node sent something once the connection was ready


_EARLY_KEPT = 64


class _Expired(Exception):
    """A request's deadline passed (set on its future; becomes :class:`RpcTimeout`)."""


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(_Expired())


@dataclass(eq=False, slots=True)
class _Sent:
    """One message on its way: where it went, its future, what it asked."""

    conn: _Connection
    key: int
    fut: asyncio.Future[Any]
    calls: Sequence[tuple[str, list[Any]]]
    timeout: float
    started: float


class _Slots:
    """A cap on requests in flight, handed out first come, first served.

    ``asyncio.Semaphore`` removes each woken waiter from a deque, which costs O(waiters);
    a backfill queues thousands of messages behind the cap, so here a release hands its
    slot straight to the oldest live waiter, and cancelled waiters are skipped when met.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot, then cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1


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
        self._observer: RpcObserver = observer or _NullObserver()
        self._observed = observer is not None  # per-call reports cost; skip them when unheard
        self._rng = rng or random.Random()
        self._clock = clock
        self._inflight = _Slots(settings.max_inflight)
        self._bucket = (
            TokenBucket(settings.requests_per_second) if settings.requests_per_second > 0 else None
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
        self._conn: _Connection | None = None
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
        self._end(conn, f"failing over: {reason}", "fail over")

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
        conn = _Connection(ws, url, shown)
        self._conn = conn
        reader = asyncio.create_task(self._read(conn), name=f"rpc-reader-{self.chain}")
        watchdog = asyncio.create_task(self._watch(conn), name=f"rpc-watchdog-{self.chain}")
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
            received = conn.received
            await asyncio.wait({reader})
            ending = self._ended(conn, reader, self._clock() - ready_at)
            return dataclasses.replace(ending, productive=conn.received > received)
        finally:
            await self._drop(conn, reader, watchdog)

    async def _preflight(self, conn: _Connection, reader: asyncio.Task[None]) -> _Ending | None:
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

    def _ended(self, conn: _Connection, reader: asyncio.Task[None], held: float | None) -> _Ending:
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
        self, conn: _Connection, reader: asyncio.Task[None], watchdog: asyncio.Task[None]
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
        self._fail_open(conn)
        self._signal()

    def _end(self, conn: _Connection, reason: str, dropped: str | None) -> None:
        """The connection is over (``dropped``: a DROP_REASONS entry when the client
        ends it): no new call goes to it, the calls it carries fail at once, and the
        socket closes, which ends its reader and wakes the supervisor."""
        if conn.ended is not None:
            return
        conn.ended = reason
        conn.dropped = dropped
        if self._conn is conn:
            self._ready.clear()
            self._signal()
        if dropped is not None:
            self._tell("dropped", conn.url, dropped)
        conn.ws.transport.abort()
        self._fail_open(conn)

    def _fail_open(self, conn: _Connection) -> None:
        """Fail every call and subscription the connection carries."""
        reason = conn.ended or "the connection ended"
        conn.framing.fail_all()
        if conn.pending:
            error = ConnectionLost(f"{self.chain}: {reason} ({conn.shown})")
            for fut in conn.pending.values():
                if not fut.done():
                    fut.set_exception(error)
            conn.pending.clear()
        for sub in [*conn.subscriptions.values(), *conn.subscribing.values()]:
            sub.end(f"{reason} ({conn.shown})")
        conn.subscriptions.clear()
        conn.subscribing.clear()

    async def _watch(self, conn: _Connection) -> None:
        """Drop the connection when a message, or our writes, make no progress."""
        limit = self.settings.message_timeout
        try:
            while conn.ended is None:
                await asyncio.sleep(max(0.01, min(1.0, limit / 4)))
                why = conn.ws.stalled(limit)
                if why is not None:
                    self._end(conn, why, "stalled")
        except Exception as exc:  # unwatched, the connection could hang: end it
            log.exception("%s: the watchdog of %s failed", self.chain, conn.shown)
            self._end(conn, f"internal error ({type(exc).__name__})", "internal")

    # -- reading ---------------------------------------------------------------------------

    async def _read(self, conn: _Connection) -> None:
        """Hand what the node sends to the calls and subscriptions waiting for it, until
        the connection ends; then fail what is still open, at once."""
        try:
            while True:
                message = await conn.ws.recv()
                conn.silent_timeouts = 0
                conn.received += 1
                for event in conn.framing.receive(message):
                    # Answers inline: a backfill reads hundreds of thousands of them.
                    if type(event) is BatchResponse:
                        fut = conn.pending.pop(event.id, None)
                        if fut is not None and not fut.done():
                            fut.set_result(event.results)
                    elif type(event) is Response:
                        self._resolve(conn, event)
                    else:
                        self._dispatch(conn, event)
        except ConnectionClosed as exc:
            self._end(conn, _closed(exc), None)
        except ProtocolError as exc:
            self._end(conn, str(exc), "protocol error")
        except Exception as exc:
            self._end(conn, f"internal error ({type(exc).__name__})", "internal")
            raise
        finally:
            self._fail_open(conn)

    def _dispatch(self, conn: _Connection, event: Event) -> None:
        if type(event) is Notification:
            self._route(conn, event)
        else:
            assert type(event) is ErrorWithoutId
            # The node could not read one of our requests (not which): that one times out.
            log.warning(
                "%s: %s sent an error not tied to any request (%s); carrying on",
                self.chain,
                conn.shown,
                event.error,
            )

    def _resolve(self, conn: _Connection, event: Response) -> None:
        sub = conn.subscribing.pop(event.id, None)
        fut = conn.pending.pop(event.id, None)
        if sub is not None and event.error is None:
            sub_id = event.result
            if type(sub_id) is not str and type(sub_id) is not int:
                sub.end("the node answered the subscription without an id")
                if fut is not None and not fut.done():
                    fut.set_exception(
                        MalformedAnswer(
                            f"{self.chain}: {conn.shown} answered a subscription with "
                            f"{type(sub_id).__name__}, not an id"
                        )
                    )
                return
            sub.id = str(sub_id)
            conn.subscriptions[sub.id] = sub
            for item in conn.early.pop(sub.id, []):
                self._deliver(conn, sub.id, sub, item)
        if fut is None or fut.done():
            return
        if event.error is not None:
            fut.set_exception(event.error)
        else:
            fut.set_result(event.result)

    def _route(self, conn: _Connection, event: Notification) -> None:
        sub = conn.subscriptions.get(event.subscription)
        if sub is None:
            early = conn.early.setdefault(event.subscription, [])
            early.append(event.result)
            del early[:-_EARLY_KEPT]
            if len(conn.early) > _EARLY_KEPT:
                del conn.early[next(iter(conn.early))]
            return
        self._deliver(conn, event.subscription, sub, event.result)

    def _deliver(self, conn: _Connection, sub_id: str, sub: Subscription, item: Any) -> None:
        if not sub.deliver(item):
            conn.subscriptions.pop(sub_id, None)
            log.warning("%s: subscription %s ended: %s", self.chain, sub_id, sub._gap)
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

    async def _connection(self) -> _Connection:
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

    async def _pace(self) -> None:
        if self._bucket is not None:
            wait = self._bucket.delay(self._clock())
            if wait > 0:
                await asyncio.sleep(wait)

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """One request; raises the node's :class:`RpcError`, or a transport error."""
        sent = await self._post([(method, list(params))], timeout, None)
        return (await self._collect(sent, errors_in_place=False))[0]

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
        sent: list[_Sent] = []
        try:
            for at in range(0, len(calls), size):
                sent.append(await self._post(calls[at : at + size], timeout, None))
            results: list[Any] = []
            for message in sent:
                results += await self._collect(message, errors_in_place=True)
            return results
        except BaseException:
            for message in sent:
                if not message.fut.done():
                    self._abandon(message.conn, message.key)
                elif not message.fut.cancelled():
                    message.fut.exception()  # seen: no "exception was never retrieved"
            raise

    def _settled(self, expiry: asyncio.TimerHandle) -> Callable[[asyncio.Future[Any]], None]:
        """A message's done callback: stop its deadline and free its slot."""

        def settled(_: asyncio.Future[Any]) -> None:
            expiry.cancel()
            self._inflight.release()

        return settled

    async def subscribe(self, method: str, unsubscribe: str, *params: Any) -> Subscription:
        sub = Subscription(
            self, unsubscribe, self.settings.subscription_queue, self.settings.stall_timeout
        )
        sent = await self._post([(method, list(params))], None, sub)
        await self._collect(sent, errors_in_place=False)
        return sub

    async def _post(
        self,
        calls: Sequence[tuple[str, list[Any]]],
        timeout: float | None,
        subscription: Subscription | None,
    ) -> _Sent:
        """Send ``calls`` as one message (a single request, or a batch) once a slot under
        the in-flight cap is free; the slot is freed when the message's one future is
        done (answered, failed, timed out or abandoned)."""
        timeout = self.settings.request_timeout if timeout is None else timeout
        await self._inflight.acquire()
        try:
            conn = await self._connection()
            await self._pace()
        except BaseException:
            self._inflight.release()
            raise
        framing = conn.framing
        if len(calls) == 1:
            key, payload = framing.request(*calls[0])
            body = framing.encode(payload)
        else:
            key, payloads = framing.batch(calls)
            body = framing.encode(payloads)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        conn.pending[key] = fut
        if subscription is not None:
            conn.subscribing[key] = subscription
        sent = _Sent(conn, key, fut, calls, timeout, self._clock())
        # The deadline runs from here: waiting for a slot does not count against it.
        fut.add_done_callback(self._settled(loop.call_later(timeout, _expire, fut)))
        try:
            await conn.ws.send(body, text=True)
        except ConnectionClosed:
            self._abandon(conn, key)
            self._observe(calls, "connection lost", sent.started)
            raise ConnectionLost(f"{self.chain}: connection to {conn.shown} closed") from None
        except BaseException:
            self._abandon(conn, key)
            raise
        return sent

    async def _collect(self, sent: _Sent, errors_in_place: bool) -> list[Any]:
        """The answers to one message, in the order of its calls."""
        calls = sent.calls
        try:
            answer = await sent.fut
        except RpcError as exc:  # the node's error for a single request
            self._observe(calls, f"error {exc.code}", sent.started)
            if not errors_in_place:
                raise
            return [exc]
        except ConnectionLost:
            self._observe(calls, "connection lost", sent.started)
            raise
        except _Expired:
            conn = sent.conn
            self._abandon(conn, sent.key)
            self._observe(calls, "timeout", sent.started)
            conn.silent_timeouts += 1  # the reader resets it with every message
            if conn.silent_timeouts >= self.settings.timeouts_to_drop:
                self._end(
                    conn,
                    f"{conn.silent_timeouts} requests in a row got no answer, and nothing "
                    "arrived meanwhile",
                    "timeouts",
                )
            raise RpcTimeout(
                f"{self.chain}: {calls[0][0]} got no answer from {conn.shown} "
                f"within {sent.timeout:g} s"
            ) from None
        except asyncio.CancelledError:
            self._abandon(sent.conn, sent.key)
            raise
        if len(calls) == 1:
            self._observe(calls, "ok", sent.started)
            return [answer]
        results: list[Any] = answer
        if self._observed:
            elapsed = self._clock() - sent.started
            for (method, _), result in zip(calls, results, strict=True):
                outcome = f"error {result.code}" if isinstance(result, RpcError) else "ok"
                self._observer.request_done(method, outcome, elapsed)
        if not errors_in_place:
            for result in results:
                if isinstance(result, RpcError):
                    raise result
        return results

    def _observe(
        self, calls: Sequence[tuple[str, list[Any]]], outcome: str, started: float
    ) -> None:
        if self._observed:
            elapsed = self._clock() - started
            for method, _ in calls:
                self._observer.request_done(method, outcome, elapsed)

    @staticmethod
    def _abandon(conn: _Connection, key: int) -> None:
        conn.framing.abandon(key)
        fut = conn.pending.pop(key, None)
        if fut is not None and not fut.done():
            fut.cancel()
        elif fut is not None and not fut.cancelled():
            # Failed meanwhile (the connection ended during the send): the caller raises
            # an error of its own, so mark this one seen, or asyncio logs it as lost.
            fut.exception()
        conn.subscribing.pop(key, None)


def _at(shown: str, detail: str) -> str:
    """``detail`` with the endpoint in front, unless it names the endpoint already."""
    return detail if shown in detail else f"{shown}: {detail}"


def _closed(exc: ConnectionClosed) -> str:
    """Why a connection closed, in words (the node's own reason kept short)."""
    if exc.rcvd is not None:
        reason = f": {exc.rcvd.reason!r:.100}" if exc.rcvd.reason else ""
        return f"the node closed the connection (code {exc.rcvd.code}{reason})"
    if exc.sent is not None:  # closed from this side: keepalive, a message too big, ...
        return f"{exc.sent.reason or 'closed'} (code {exc.sent.code})"
    return "connection lost"
