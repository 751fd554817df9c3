"""One WebSocket connection of the RPC client, and what it carries.

The client sends requests on it; its reader hands each answer to the call waiting
for it and each notification to its subscription, until the connection ends.  A
connection ends once, for one reason: the node closed it, the node sent something
that is not JSON-RPC, its watchdog saw no progress, or the client dropped it.  Then
every call and subscription it carries fails at once, so that no caller waits for a
timeout to learn what is already known.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed

from blocktimesd.aio.subscription import Subscription
from blocktimesd.aio.wsconn import WatchedConnection
from blocktimesd.core.jsonrpc import (
    BatchResponse,
    ClientFraming,
    ErrorWithoutId,
    Event,
    Notification,
    Response,
)
from blocktimesd.errors import ConnectionLost, MalformedAnswer, ProtocolError

__all__ = ["RpcConnection"]

log = logging.getLogger(__name__)

_EARLY_KEPT = 64


def _ignore(_: Any) -> None:
    pass


@dataclass(eq=False)
class RpcConnection:
    """The calls and subscriptions on one connection; ``on_end`` is told once it ends,
    ``on_subscription_ended`` when a subscription ends while the connection goes on."""

    ws: WatchedConnection
    url: str
    shown: str  # the URL as logs and errors show it: without credentials
    chain: str = ""
    on_end: Callable[[RpcConnection], None] = _ignore
    on_subscription_ended: Callable[[Subscription], None] = _ignore
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
    _error: Exception | None = None  # an error of ours that ended the connection

    # -- ending --------------------------------------------------------------------------

    def end(self, reason: str, dropped: str | None) -> None:
        """The connection is over (``dropped``: a DROP_REASONS entry when the client
        ends it): no new call goes to it, the calls it carries fail at once, and the
        socket closes, which ends its reader and wakes the supervisor."""
        if self.ended is not None:
            return
        self.ended = reason
        self.dropped = dropped
        self.on_end(self)
        self.ws.transport.abort()
        self.fail_open()

    def fail_open(self) -> None:
        """Fail every call and subscription the connection carries."""
        reason = self.ended or "the connection ended"
        self.framing.fail_all()
        if self.pending:
            error = ConnectionLost(f"{self.chain}: {reason} ({self.shown})")
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(error)
            self.pending.clear()
        for sub in [*self.subscriptions.values(), *self.subscribing.values()]:
            sub.end(f"{reason} ({self.shown})")
        self.subscriptions.clear()
        self.subscribing.clear()

    def abandon(self, key: int, fut: asyncio.Future[Any]) -> None:
        """Stop waiting for the answer to message ``key``, whose future is ``fut``.

        A future already failed (the connection ended meanwhile, and failed it even if it
        left ``pending`` then) is marked seen: its caller raises an error of its own, and
        asyncio would log this one as never retrieved."""
        self.framing.abandon(key)
        self.pending.pop(key, None)
        self.subscribing.pop(key, None)
        if not fut.done():
            fut.cancel()
        elif not fut.cancelled():
            fut.exception()

    async def watch(self, limit: float) -> None:
        """Drop the connection when a message, or our writes, make no progress."""
        try:
            while self.ended is None:
                await asyncio.sleep(max(0.01, min(1.0, limit / 4)))
                why = self.ws.stalled(limit)
                if why is not None:
                    self.end(why, "stalled")
        except Exception as exc:  # unwatched, the connection could hang: end it
            log.exception("%s: the watchdog of %s failed", self.chain, self.shown)
            self.end(f"internal error ({type(exc).__name__})", "internal")

    # -- reading ---------------------------------------------------------------------------

    async def read(self) -> None:
        """Hand what the node sends to the calls and subscriptions waiting for it, until
        the connection ends; then fail what is still open, at once.

        Each message is handled as it arrives, in the transport's callback
        (:meth:`receive`); this task only waits for the end, and raises the error of
        ours that ended the connection, if one did."""
        try:
            self.ws.consume(self.receive)
            await asyncio.shield(self.ws.connection_lost_waiter)
            if self._error is not None:
                raise self._error
            if self.ended is None:
                self.end(_closed(self.ws.close_exc), None)
        finally:
            self.fail_open()

    def receive(self, message: bytes) -> None:
        """One message from the node: answers resolve their calls, notifications go to
        their subscriptions.  What is not JSON-RPC ends the connection."""
        if self.ended is not None:
            return  # the rest of what one read brought, after the end
        self.silent_timeouts = 0
        self.received += 1
        try:
            for event in self.framing.receive(message):
                # Answers inline: a backfill reads hundreds of thousands of them.
                if type(event) is BatchResponse:
                    fut = self.pending.pop(event.id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(event.results)
                elif type(event) is Response:
                    self._resolve(event)
                else:
                    self._dispatch(event)
        except ProtocolError as exc:
            self.end(str(exc), "protocol error")
        except Exception as exc:
            self._error = exc  # raised by the reader task, for the supervisor to report
            self.end(f"internal error ({type(exc).__name__})", "internal")

    def _dispatch(self, event: Event) -> None:
        if type(event) is Notification:
            self._route(event)
        else:
            assert type(event) is ErrorWithoutId
            # The node could not read one of our requests (not which): that one times out.
            log.warning(
                "%s: %s sent an error not tied to any request (%s); carrying on",
                self.chain,
                self.shown,
                event.error,
            )

    def _resolve(self, event: Response) -> None:
        sub = self.subscribing.pop(event.id, None)
        fut = self.pending.pop(event.id, None)
        if sub is not None and event.error is None:
            sub_id = event.result
            if type(sub_id) is not str and type(sub_id) is not int:
                sub.end("the node answered the subscription without an id")
                if fut is not None and not fut.done():
                    fut.set_exception(
                        MalformedAnswer(
                            f"{self.chain}: {self.shown} answered a subscription with "
                            f"{type(sub_id).__name__}, not an id"
                        )
                    )
                return
            sub.id = str(sub_id)
            self.subscriptions[sub.id] = sub
            for item in self.early.pop(sub.id, []):
                self._deliver(sub.id, sub, item)
        if fut is None or fut.done():
            return
        if event.error is not None:
            fut.set_exception(event.error)
        else:
            fut.set_result(event.result)

    def _route(self, event: Notification) -> None:
        sub = self.subscriptions.get(event.subscription)
        if sub is None:
            early = self.early.setdefault(event.subscription, [])
            early.append(event.result)
            del early[:-_EARLY_KEPT]
            if len(self.early) > _EARLY_KEPT:
                del self.early[next(iter(self.early))]
            return
        self._deliver(event.subscription, sub, event.result)

    def _deliver(self, sub_id: str, sub: Subscription, item: Any) -> None:
        if not sub.deliver(item):
            self.subscriptions.pop(sub_id, None)
            log.warning("%s: subscription %s ended: %s", self.chain, sub_id, sub._gap)
            self.on_subscription_ended(sub)


def _closed(exc: ConnectionClosed) -> str:
    """Why a connection closed, in words (the node's own reason kept short)."""
    if exc.rcvd is not None:
        reason = f": {exc.rcvd.reason!r:.100}" if exc.rcvd.reason else ""
        return f"the node closed the connection (code {exc.rcvd.code}{reason})"
    if exc.sent is not None:  # closed from this side: keepalive, a message too big, ...
        return f"{exc.sent.reason or 'closed'} (code {exc.sent.code})"
    return "connection lost"
