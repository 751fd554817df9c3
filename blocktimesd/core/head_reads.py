"""When a follower reads its new heads' storage: at once, or a few heads together.

Each new head's storage is read (its timestamp shows how far behind the chain's head
the node is, and its row needs its facts once it is confirmed).  One read per head is
one round trip per head, and its costs (a message out, a wake-up for the answer) are
most of a follower's work per block when heads come fast: a chain catching up, a
simulated chain run fast.  So a head that comes ``every_s`` or more after the last read
is read at once, as a chain at its normal pace has it (a block every few seconds); the
heads that come sooner wait for the next read, which takes them all, at the first head
``every_s`` after the last read, at ``most`` heads, or when no head came for that long
(:meth:`HeadReads.wait`).  A head's row is never held back by this: a row whose facts
are not read yet reads them when it is confirmed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from blocktimesd.core.header import Header

__all__ = ["HeadReads"]


class HeadReads:
    """The heads whose storage is not read yet, and when to read it."""

    def __init__(
        self, every_s: float, most: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if every_s < 0 or most < 1:
            raise ValueError(f"every_s must not be negative and most positive: {every_s}, {most}")
        self.every_s = every_s
        self.most = most
        self._clock = clock
        self._unread: list[Header] = []
        self._last_read = -float("inf")

    @property
    def pending(self) -> int:
        """Heads not read yet."""
        return len(self._unread)

    def add(self, header: Header) -> None:
        """A new head, to read now or with the next ones (see :meth:`due`)."""
        self._unread.append(header)

    def due(self) -> bool:
        """Whether to read the heads not read yet now."""
        unread = len(self._unread)
        return unread >= self.most or (
            unread > 0 and self._clock() - self._last_read >= self.every_s
        )

    def wait(self, limit: float) -> float:
        """How long to wait for the next head before reading the heads not read yet
        (``limit`` when there are none), at most ``limit`` and never below 0."""
        if not self._unread:
            return max(0.0, limit)
        return max(0.0, min(limit, self._last_read + self.every_s - self._clock()))

    def take(self) -> list[Header]:
        """The heads not read yet, oldest first, to be read now; they are forgotten here
        (a read that fails is not asked again for them: a confirmed block whose facts
        are missing reads them on its own)."""
        taken, self._unread = self._unread, []
        self._last_read = self._clock()
        return taken
