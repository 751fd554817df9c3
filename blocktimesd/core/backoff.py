"""Reconnect delays and request pacing, as pure functions of what they are given.

:func:`backoff` yields the delay before each reconnection attempt: exponential with
full jitter, capped; a caller that connects successfully starts a fresh generator
(the reset).  :class:`TokenBucket` spaces requests to a rate, with time passed in.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

__all__ = ["TokenBucket", "backoff"]


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
