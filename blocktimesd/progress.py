"""Progress of a long job: a bar (rich) on a terminal, a log line every few seconds otherwise.

A job reports units as they are done (:meth:`ProgressSink.advance`) and ends with the
true figure (:meth:`ProgressSink.close`), which may be below what was reported: units
done ahead may be dropped (an interrupted run, a domain that must stop early).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol, TextIO

__all__ = ["LineProgress", "ProgressSink", "format_duration", "progress_for"]

log = logging.getLogger(__name__)

LINE_EVERY_S = 5.0  # a plain line no more often than this: logs stay readable


class ProgressSink(Protocol):
    """Where a job reports what it has done."""

    def advance(self, count: int) -> None: ...

    def close(self, done: int) -> None:
        """The job is over (or interrupted): ``done`` is the true figure; the terminal is
        left on a fresh line."""


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):  # NaN or unknown
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def progress_for(label: str, total: int, stream: TextIO, unit: str = "blocks") -> ProgressSink:
    """A bar when ``stream`` is a terminal, plain log lines otherwise (CI, journald)."""
    if stream.isatty():
        from blocktimesd.progress_bar import BarProgress  # rich: only for a terminal

        return BarProgress(label, total, stream, unit)
    return LineProgress(label, total, unit)


class LineProgress:
    """One log line at most every ``every`` seconds, and one at the end."""

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "blocks",
        *,
        every: float = LINE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.unit = unit
        self._every = every
        self._clock = clock
        self._started = self._shown = clock()

    def advance(self, count: int) -> None:
        self.done += count
        now = self._clock()
        if now - self._shown >= self._every:
            self._shown = now
            log.info("%s", self.line())

    def close(self, done: int) -> None:
        self.done = done
        log.info("%s", self.line())

    def line(self) -> str:
        elapsed = self._clock() - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        share = self.done / self.total if self.total else 1.0
        return (
            f"{self.label}: {self.done:,}/{self.total:,} {self.unit} ({share:.1%}), "
            f"{rate:,.0f} {self.unit}/s, ETA {format_duration(eta)}"
        )
