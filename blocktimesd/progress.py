"""Progress of a long job: a bar with rate and ETA on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "format_duration"]

log = logging.getLogger(__name__)

_BAR_WIDTH = 30
_REDRAW_S = 0.2


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):  # NaN or unknown
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Progress:
    """Counts done units out of ``total``; draws a bar on a tty, logs every ``every`` s."""

    def __init__(
        self,
        label: str,
        total: int,
        stream: TextIO | None,
        *,
        tty: bool,
        every: float = 10.0,
        unit: str = "blocks",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.unit = unit
        self._stream = stream
        self._tty = tty and stream is not None
        self._every = every
        self._clock = clock
        self._started = clock()
        self._shown = self._started
        self._drawn = False

    @property
    def rate(self) -> float:
        elapsed = self._clock() - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float:
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else float("inf")

    def advance(self, count: int) -> None:
        self.done += count
        now = self._clock()
        if now - self._shown >= (_REDRAW_S if self._tty else self._every):
            self._shown = now
            self._show()

    def line(self) -> str:
        share = self.done / self.total if self.total else 1.0
        return (
            f"{self.label}: {self.done:,}/{self.total:,} {self.unit} ({share:.1%}), "
            f"{self.rate:,.0f} {self.unit}/s, ETA {format_duration(self.eta())}"
        )

    def _show(self) -> None:
        if not self._tty:
            log.info("%s", self.line())
            return
        assert self._stream is not None
        share = self.done / self.total if self.total else 1.0
        filled = int(share * _BAR_WIDTH)
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        self._stream.write(f"\r[{bar}] {self.line()}\x1b[K")
        self._stream.flush()
        self._drawn = True

    def finish(self) -> None:
        """The last figures: the bar completed with a newline, or one log line."""
        self._show()
        if self._drawn and self._stream is not None:
            self._stream.write("\n")
            self._stream.flush()
