"""The requests of one chain's RPC client: sent under a cap, paced, timed, reported.

A request waits for a slot under the in-flight cap (the node buffers only so many
messages per connection), then for the rate limit, then goes out as one message (a
single request, or a JSON-RPC batch) with a deadline that runs from the send.  Its
slot is freed when its answer arrives, fails, times out or is abandoned.  Requests
that time out in a row with nothing received meanwhile drop the connection: the
node no longer answers on it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

from blocktimesd.aio.rpc_connection import RpcConnection
from blocktimesd.aio.subscription import Subscription
from blocktimesd.core.backoff import TokenBucket
from blocktimesd.errors import ConnectionLost, RpcError, RpcTimeout, raise_node_errors

if TYPE_CHECKING:
    from blocktimesd.aio.rpc import RpcObserver

__all__ = ["Requests", "Sent", "Slots"]

Calls = Sequence[tuple[str, list[Any]]]


class _Expired(Exception):
    """A request's deadline passed (set on its future; becomes :class:`RpcTimeout`)."""


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(_Expired())


@dataclass(eq=False, slots=True)
class Sent:
    """One message on its way: where it went, its future, what it asked."""

    conn: RpcConnection
    key: int
    fut: asyncio.Future[Any]
    calls: Calls
    timeout: float
    started: float


class Slots:
    """A cap on requests in flight, handed out first come, first served.

    ``asyncio.Semaphore`` removes each woken waiter from a deque, which costs O(waiters);
    a backfill queues thousands of messages behind the cap, so here a release hands its
    slot straight to the oldest live waiter, and cancelled waiters are skipped when met.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        """Take a free slot at once, if one is free and nobody waits for one."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
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


class Requests:
    """Sends requests on the connection ``connection()`` gives, and collects answers.

    ``observer`` hears of every request's outcome when ``observed`` (per-call reports
    cost; they are skipped when nobody listens).
    """

    def __init__(
        self,
        chain: str,
        connection: Callable[[], Awaitable[RpcConnection]],
        observer: RpcObserver,
        *,
        ready: Callable[[], RpcConnection | None] | None = None,
        observed: bool,
        max_inflight: int,
        requests_per_second: float,
        request_timeout: float,
        timeouts_to_drop: int,
        clock: Callable[[], float],
    ) -> None:
        self.chain = chain
        self._connection = connection
        # The connection when it can be used at once (None: ``connection`` waits for one).
        self._ready = ready
        self._observer = observer
        self._observed = observed
        self._inflight = Slots(max_inflight)
        self._bucket = TokenBucket(requests_per_second) if requests_per_second > 0 else None
        self._request_timeout = request_timeout
        self._timeouts_to_drop = timeouts_to_drop
        self._clock = clock
        # Messages settled (answered, failed, timed out, abandoned) and their summed
        # seconds from the send: what a pool of connections judges its size by.
        self.settled = 0
        self.round_trips = 0.0

    async def many(self, calls: Calls, timeout: float | None, size: int) -> list[Any]:
        """``calls`` in messages of ``size``: all sent as slots free up, then their
        answers collected in order, the node's errors in place.  A transport error
        raises, and the answers still awaited are abandoned."""
        sent: list[Sent] = []
        try:
            for at in range(0, len(calls), size):
                sent.append(await self.post(calls[at : at + size], timeout, None))
            results: list[Any] = []
            for message in sent:
                results += await self.collect(message, errors_in_place=True)
            return results
        except BaseException:
            for message in sent:
                message.conn.abandon(message.key, message.fut)
            raise

    async def _pace(self) -> None:
        if self._bucket is not None:
            wait = self._bucket.delay(self._clock())
            if wait > 0:
                await asyncio.sleep(wait)

    def _settled(
        self, expiry: asyncio.TimerHandle, started: float
    ) -> Callable[[asyncio.Future[Any]], None]:
        """A message's done callback: stop its deadline, free its slot, count it."""

        def settled(_: asyncio.Future[Any]) -> None:
            expiry.cancel()
            self._inflight.release()
            self.settled += 1
            self.round_trips += self._clock() - started

        return settled

    async def post(
        self, calls: Calls, timeout: float | None, subscription: Subscription | None
    ) -> Sent:
        """Send ``calls`` as one message (a single request, or a batch) once a slot under
        the in-flight cap is free; the slot is freed when the message's one future is
        done (answered, failed, timed out or abandoned)."""
        timeout = self._request_timeout if timeout is None else timeout
        if not self._inflight.try_acquire():
            await self._inflight.acquire()
        try:
            conn = self._ready() if self._ready is not None else None
            if conn is None:
                conn = await self._connection()
            if self._bucket is not None:
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
        sent = Sent(conn, key, fut, calls, timeout, self._clock())
        # The deadline runs from here: waiting for a slot does not count against it.
        fut.add_done_callback(self._settled(loop.call_later(timeout, _expire, fut), sent.started))
        try:
            if not conn.ws.send_now(body):
                await conn.ws.send(body, text=True)
        except ConnectionClosed:
            conn.abandon(key, fut)
            self._observe(calls, "connection lost", sent.started)
            raise ConnectionLost(f"{self.chain}: connection to {conn.shown} closed") from None
        except BaseException:
            conn.abandon(key, fut)
            raise
        return sent

    async def collect(self, sent: Sent, errors_in_place: bool) -> list[Any]:
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
            raise self._timed_out(sent) from None
        except asyncio.CancelledError:
            sent.conn.abandon(sent.key, sent.fut)
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
            raise_node_errors(results)
        return results

    def _timed_out(self, sent: Sent) -> RpcTimeout:
        """The error for a message past its deadline; ``timeouts_to_drop`` of them in a
        row, with nothing received meanwhile, drop the connection."""
        conn = sent.conn
        conn.abandon(sent.key, sent.fut)
        self._observe(sent.calls, "timeout", sent.started)
        conn.silent_timeouts += 1  # the reader resets it with every message
        if conn.silent_timeouts >= self._timeouts_to_drop:
            conn.end(
                f"{conn.silent_timeouts} requests in a row got no answer, and nothing "
                "arrived meanwhile",
                "timeouts",
            )
        return RpcTimeout(
            f"{self.chain}: {sent.calls[0][0]} got no answer from {conn.shown} "
            f"within {sent.timeout:g} s"
        )

    def _observe(self, calls: Calls, outcome: str, started: float) -> None:
        if self._observed:
            elapsed = self._clock() - started
            for method, _ in calls:
                self._observer.request_done(method, outcome, elapsed)
