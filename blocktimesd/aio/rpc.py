"""One chain's JSON-RPC client over WebSocket.

One connection at a time, owned by a supervisor task that connects (failing over
across the configured endpoints, with backoff), runs the preflight, and then waits on
the connection's single reader task.  Calls are pipelined under a cap on requests in
flight; lists of calls can go as JSON-RPC batches.  Subscriptions deliver into
bounded queues and end with :class:`SubscriptionGap` when anything goes wrong, so the
caller always knows when it must fill a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from blocktimesd.core.backoff import TokenBucket, backoff
from blocktimesd.core.jsonrpc import BatchResponse, ClientFraming, Notification, Response
from blocktimesd.errors import (
    ConnectionLost,
    NodeUnusable,
    ProtocolError,
    RpcError,
    RpcTimeout,
    SubscriptionGap,
)

__all__ = ["RpcClient", "RpcObserver", "RpcSettings", "Subscription"]

log = logging.getLogger(__name__)

# Set while the preflight runs: its calls (and tasks it starts) may use the connection
# before it is ready for everyone else.
_IN_PREFLIGHT: contextvars.ContextVar[bool] = contextvars.ContextVar("in_preflight", default=False)


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

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("at least one endpoint is needed")
        if self.max_inflight < 1 or self.batch_size < 1:
            raise ValueError("max_inflight and batch_size must be at least 1")


class RpcObserver(Protocol):
    """Where the client reports what it does (the metrics layer implements this)."""

    def request_done(self, method: str, outcome: str, seconds: float) -> None: ...

    def reconnected(self, endpoint: str) -> None: ...


class _NullObserver:
    def request_done(self, method: str, outcome: str, seconds: float) -> None:
        pass

    def reconnected(self, endpoint: str) -> None:
        pass


class Subscription:
    """Notifications of one subscription, in order, until it ends with a gap.

    Iterate with ``async for``: the iteration raises :class:`SubscriptionGap` when the
    consumer fell more than ``queue`` notifications behind, the connection was lost,
    the node went silent for ``stall_timeout`` seconds, or the node ended it.
    """

    def __init__(
        self, client: RpcClient, unsubscribe: str, queue: int, stall_timeout: float
    ) -> None:
        self._client = client
        self._unsubscribe = unsubscribe
        # Bounded: when full, the subscription ends with a gap instead of growing.
        self._queue: asyncio.Queue[Any] = asyncio.Queue(queue)
        self._stall_timeout = stall_timeout
        self._gap: SubscriptionGap | None = None
        self._wakeup = asyncio.Event()
        self.id: str | None = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        if not self._queue.empty():
            return self._queue.get_nowait()
        if self._gap is not None:
            raise self._gap
        self._wakeup.clear()
        getter = asyncio.ensure_future(self._queue.get())
        ended = asyncio.ensure_future(self._wakeup.wait())
        try:
            done, _ = await asyncio.wait(
                {getter, ended}, timeout=self._stall_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ended.cancel()
            if not getter.done():
                getter.cancel()
        if getter in done and not getter.cancelled():
            return getter.result()
        if self._gap is None:
            self.end(f"no notification for {self._stall_timeout:g} s")
            self._client._forget(self)
        assert self._gap is not None
        raise self._gap

    def deliver(self, item: Any) -> bool:
        """Queue one notification; False (and the subscription ends) when full."""
        if self._gap is not None:
            return False
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.end(f"consumer fell {self._queue.maxsize} notifications behind")
            return False
        return True

    def end(self, reason: str) -> None:
        if self._gap is None:
            self._gap = SubscriptionGap(reason)
            self._wakeup.set()

    @property
    def ended(self) -> bool:
        return self._gap is not None

    async def close(self) -> None:
        """Unsubscribe (best effort) and end the iteration."""
        self.end("closed by the consumer")
        self._client._forget(self)
        if self.id is not None:
            with contextlib.suppress(Exception):
                await self._client.call(self._unsubscribe, self.id, timeout=5)


@dataclass(eq=False)
class _Connection:
    ws: ClientConnection
    url: str
    framing: ClientFraming = field(default_factory=ClientFraming)
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    subscribing: dict[int, Subscription] = field(default_factory=dict)  # request id -> sub
    subscriptions: dict[str, Subscription] = field(default_factory=dict)  # sub id -> sub
    # Notifications that arrive before their subscribe reply; bounded, oldest dropped.
    early: dict[str, list[Any]] = field(default_factory=dict)


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
        self._conn: _Connection | None = None
        self._ready = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._fatal: BaseException | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self.connects = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, wait: float | None = None) -> None:
        """Start connecting; with ``wait``, return once ready or raise after that long."""
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name=f"rpc-{self.chain}")
        if wait is not None:
            await self.wait_ready(wait)

    async def close(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        if self._conn is not None:
            await self._conn.ws.close()

    async def __aenter__(self) -> RpcClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def endpoint(self) -> str | None:
        return self._conn.url if self._conn is not None else None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until connected and preflight passed; raise a fatal preflight error."""
        deadline = None if timeout is None else self._clock() + timeout
        while not self._ready.is_set():
            if self._fatal is not None:
                raise self._fatal
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                raise ConnectionLost(
                    f"{self.chain}: no usable endpoint within {timeout:g} s "
                    f"(tried {', '.join(self.settings.endpoints)})"
                )
            self._state_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), remaining)
        if self._fatal is not None:
            raise self._fatal

    def _signal(self) -> None:
        self._state_changed.set()

    async def _supervise(self) -> None:
        endpoints = self.settings.endpoints
        attempt = 0
        unusable: set[str] = set()
        delays = self._backoff()
        while not self._closing:
            delay = next(delays)
            if delay:
                await asyncio.sleep(delay)
            url = endpoints[attempt % len(endpoints)]
            attempt += 1
            try:
                ws = await connect(
                    url,
                    max_size=self.settings.max_message_bytes,
                    open_timeout=self.settings.connect_timeout,
                    compression=None,
                    ping_interval=20,
                    ping_timeout=20,
                )
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                log.warning(
                    "%s: cannot connect to %s: %s", self.chain, url, exc or type(exc).__name__
                )
                continue
            except InvalidURI as exc:
                self._fatal = NodeUnusable(f"{self.chain}: invalid endpoint URL {url!r}: {exc}")
                self._signal()
                return
            conn = _Connection(ws, url)
            self._conn = conn
            reader = asyncio.create_task(self._read(conn), name=f"rpc-reader-{self.chain}")
            try:
                if self._on_connect is not None:
                    token = _IN_PREFLIGHT.set(True)
                    try:
                        await self._on_connect(self)
                    finally:
                        _IN_PREFLIGHT.reset(token)
                self.connects += 1
                if self.connects > 1:
                    self._observer.reconnected(url)
                log.info("%s: connected to %s", self.chain, url)
                delays = self._backoff()  # success resets the backoff
                unusable.discard(url)
                self._ready.set()
                self._signal()
                await reader
            except NodeUnusable as exc:
                log.error("%s: %s", self.chain, exc)
                unusable.add(url)
                if unusable >= set(endpoints):
                    self._fatal = exc  # no endpoint can serve us: stop trying
                    await self._drop(conn, reader, str(exc))
                    return
            except (ConnectionLost, RpcTimeout, RpcError, ProtocolError) as exc:
                log.warning("%s: preflight on %s failed: %s", self.chain, url, exc)
            finally:
                await self._drop(conn, reader, "connection lost")
            if not self._closing:
                log.info("%s: connection to %s lost; reconnecting", self.chain, url)

    def _backoff(self) -> Any:
        return backoff(self.settings.backoff_initial, 2.0, self.settings.backoff_cap, self._rng)

    async def _drop(self, conn: _Connection, reader: asyncio.Task[None], reason: str) -> None:
        self._ready.clear()
        if self._conn is conn:
            self._conn = None
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        with contextlib.suppress(Exception):
            await conn.ws.close()
        conn.framing.fail_all()
        error = ConnectionLost(f"{self.chain}: {reason} ({conn.url})")
        for fut in conn.pending.values():
            if not fut.done():
                fut.set_exception(error)
        conn.pending.clear()
        for sub in [*conn.subscriptions.values(), *conn.subscribing.values()]:
            sub.end(f"{reason} ({conn.url})")
        conn.subscriptions.clear()
        conn.subscribing.clear()
        self._signal()

    # -- reading ---------------------------------------------------------------------------

    async def _read(self, conn: _Connection) -> None:
        try:
            async for message in conn.ws:
                for event in conn.framing.receive(message):
                    if type(event) is BatchResponse:
                        fut = conn.pending.pop(event.id, None)
                        if fut is not None and not fut.done():
                            fut.set_result(event.results)
                    elif type(event) is Response:
                        self._resolve(conn, event)
                    else:
                        assert type(event) is Notification
                        self._route(conn, event)
        except ConnectionClosed:
            return
        except ProtocolError as exc:
            log.warning("%s: %s; dropping the connection to %s", self.chain, exc, conn.url)

    def _resolve(self, conn: _Connection, event: Response) -> None:
        sub = conn.subscribing.pop(event.id, None)
        if sub is not None and event.error is None:
            sub_id = str(event.result)
            sub.id = sub_id
            conn.subscriptions[sub_id] = sub
            for item in conn.early.pop(sub_id, []):
                self._deliver(conn, sub_id, sub, item)
        fut = conn.pending.pop(event.id, None)
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
        if conn is not None and (self._ready.is_set() or _IN_PREFLIGHT.get()):
            return conn
        await self.wait_ready(self.settings.request_timeout)
        conn = self._conn
        if conn is None:
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
            raise ConnectionLost(f"{self.chain}: connection to {conn.url} closed") from None
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
            self._abandon(sent.conn, sent.key)
            self._observe(calls, "timeout", sent.started)
            raise RpcTimeout(
                f"{self.chain}: {calls[0][0]} got no answer from {sent.conn.url} "
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
        conn.subscribing.pop(key, None)
