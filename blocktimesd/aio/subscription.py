"""The notifications of one JSON-RPC subscription, delivered through a bounded queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any

from blocktimesd.errors import SubscriptionGap

if TYPE_CHECKING:
    from blocktimesd.aio.rpc import RpcClient

__all__ = ["QUIET", "Subscription"]

# What :meth:`Subscription.next_within` returns when nothing came in time.
QUIET: Any = object()


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
        # Bounded (unless ``queue`` <= 0): when full, the subscription ends with a gap
        # instead of growing.
        self._items: deque[Any] = deque()
        self._bound = queue
        self._stall_timeout = stall_timeout
        self._gap: SubscriptionGap | None = None
        self._waiter: asyncio.Future[None] | None = None  # the consumer's, while it waits
        self.id: str | None = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        item = await self.next_within(self._stall_timeout)
        if item is QUIET:
            self.end(f"no notification for {self._stall_timeout:g} s")
            self._client._forget(self)
            assert self._gap is not None
            raise self._gap
        return item

    async def next_within(self, timeout: float) -> Any:
        """The next notification, or :data:`QUIET` when none came within ``timeout``
        seconds (the subscription goes on).  Raises :class:`SubscriptionGap` once ended."""
        if self._items:
            return self._items.popleft()
        if self._gap is not None:
            raise self._gap
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self._items:  # a notification that came as the wait ended is still here
            return self._items.popleft()
        if self._gap is not None:
            raise self._gap
        return QUIET

    def deliver(self, item: Any) -> bool:
        """Queue one notification; False (and the subscription ends) when full."""
        if self._gap is not None:
            return False
        if 0 < self._bound <= len(self._items):
            self.end(f"consumer fell {self._bound} notifications behind")
            return False
        self._items.append(item)
        if self._waiter is not None:
            _wake(self._waiter)
        return True

    def end(self, reason: str) -> None:
        if self._gap is None:
            self._gap = SubscriptionGap(reason)
            if self._waiter is not None:
                _wake(self._waiter)

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


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
