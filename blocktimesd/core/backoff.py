"""Reconnect delays and request pacing, as pure functions of what they are given.

:func:`backoff` yields the delay before each reconnection attempt: exponential with
full jitter, capped.  :class:`EndpointSchedule` turns it into the decision an RPC
client needs after each attempt: which endpoint next, and after how long.
:class:`TokenBucket` spaces requests to a rate, with time passed in.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

__all__ = ["EndpointSchedule", "TokenBucket", "backoff"]


def backoff(
    initial: float = 0.5,
    factor: float = 2.0,
    cap: float = 30.0,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Delays in seconds: the first immediately (0), then ``initial * factor**n`` with
    full jitter (uniform in [d/2, d]), never above ``cap``."""
    if initial <= 0 or factor < 1 or cap < initial:
        raise ValueError("backoff needs initial > 0, factor >= 1 and cap >= initial")
    draw = rng.uniform if rng is not None else random.uniform
    yield 0.0
    delay = initial
    while True:
        yield draw(delay / 2, delay)
        delay = min(delay * factor, cap)


class EndpointSchedule:
    """Which endpoint to try next, and after how long.

    Endpoints are taken in turn: after an attempt ends (failed, lost, or given up on by
    the caller), the next one, since the one that just failed is the least likely to
    work at once.  The delays come from :func:`backoff`, one per ended attempt, and
    start again from 0 only after a connection held for ``stable_after`` seconds
    (default: ``cap``), and from the shortest after a productive one (see :meth:`after`):
    a node that accepts and then drops every connection before it serves is retried at
    growing intervals, never in a tight loop.  A fail-over to the only endpoint there is
    always waits (it is the node that was found wrong).  An endpoint whose URL cannot
    work is retired: never tried again.
    """

    __slots__ = (
        "_cap",
        "_delays",
        "_factor",
        "_index",
        "_initial",
        "_retired",
        "_rng",
        "size",
        "stable_after",
    )

    def __init__(
        self,
        endpoints: int,
        initial: float = 0.5,
        factor: float = 2.0,
        cap: float = 30.0,
        rng: random.Random | None = None,
        stable_after: float | None = None,
    ) -> None:
        if endpoints < 1:
            raise ValueError("a schedule needs at least one endpoint")
        self.size = endpoints
        self._initial, self._factor, self._cap, self._rng = initial, factor, cap, rng
        self.stable_after = cap if stable_after is None else stable_after
        self._delays = backoff(initial, factor, cap, rng)
        next(self._delays)  # the first attempt goes at once
        self._index = 0
        self._retired: set[int] = set()

    @property
    def current(self) -> int:
        """The endpoint of the attempt under way (0 at first)."""
        return self._index

    @property
    def exhausted(self) -> bool:
        """Every endpoint is retired: there is nothing left to try."""
        return len(self._retired) == self.size

    def retire(self, index: int) -> None:
        """Never try this endpoint again (its URL cannot work)."""
        self._retired.add(index)

    def after(
        self, held: float | None, fail_over: bool = False, productive: bool = False
    ) -> tuple[int, float]:
        """The attempt on :attr:`current` ended; ``held`` is how long its connection
        was usable (None if it never was), ``productive`` whether the node served on it
        once usable (answered, or held it idle).  Returns the endpoint to try next and
        the delay before it, in seconds.  A productive connection restarts the delays at
        the shortest one: a node that serves and drops connections every few seconds is
        not left waiting for the cap, while one that serves nothing still backs off."""
        if self.exhausted:
            raise ValueError("every endpoint is retired")
        if held is not None and held >= self.stable_after:
            self._delays = backoff(self._initial, self._factor, self._cap, self._rng)
        elif held is not None and productive:
            self._delays = backoff(self._initial, self._factor, self._cap, self._rng)
            next(self._delays)  # not at once: the shortest delay
        delay = next(self._delays)
        if fail_over and self.size - len(self._retired) == 1 and delay == 0:
            delay = next(self._delays)
        index = (self._index + 1) % self.size
        while index in self._retired:
            index = (index + 1) % self.size
        self._index = index
        return index, delay


class TokenBucket:
    """At most ``rate`` requests per second on average, bursts up to ``burst``."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self._tokens = self.burst
        self._last: float | None = None

    def delay(self, now: float) -> float:
        """Take one token at time ``now``; return how long to wait before sending."""
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= 1
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate
