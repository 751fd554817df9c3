"""Progress of a long job: a bar (rich) on a terminal, a log line every few seconds otherwise.

A job reports units as they are done (:meth:`ProgressSink.advance`) and ends with the
true figure (:meth:`ProgressSink.close`), which may be below what was reported: units
done ahead may be dropped (an interrupted run, a domain that must stop early).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["BarProgress", "LineProgress", "ProgressSink", "format_duration", "progress_for"]

log = logging.getLogger(__name__)

LINE_EVERY_S = 5.0  # a plain line no more often than this: logs stay readable
_REFRESHES_PER_S = 4  # the bar is redrawn (rate, ETA) even while nothing arrives


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


class _Rate(ProgressColumn):
    """Units per second, as rich estimates it (over the last 30 s)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text(f"{speed or 0:,.0f} {self.unit}/s", style="progress.data.speed")


class BarProgress:
    """A rich bar on ``stream``, redrawn a few times a second by rich's own thread.

    While it is shown, log lines to ``stream`` are printed above it (not into its line):
    the root logger's handlers on ``stream`` write through rich for that time.
    """

    def __init__(self, label: str, total: int, stream: TextIO, unit: str = "blocks") -> None:
        console = Console(file=stream)
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            _Rate(unit),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=_REFRESHES_PER_S,
            redirect_stdout=False,
            redirect_stderr=False,  # handled below, for the logging handlers too
        )
        self._task = self._bar.add_task(label, total=total)
        self._logs = _logs_through(console, stream)
        self._logs.__enter__()
        self._bar.start()
        self._closed = False

    def advance(self, count: int) -> None:
        self._bar.advance(self._task, count)

    def close(self, done: int) -> None:
        if self._closed:
            return
        self._closed = True
        self._bar.update(self._task, completed=done)
        self._bar.stop()  # the last figures, then a newline
        self._logs.__exit__(None, None, None)


@contextmanager
def _logs_through(console: Console, stream: TextIO) -> Iterator[None]:
    """Handlers of the root logger that write to ``stream`` write through ``console``
    (above the bar) until the end of the block."""
    proxy = _AboveBar(console)
    swapped = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is stream
    ]
    for handler in swapped:
        handler.setStream(proxy)
    try:
        yield
    finally:
        for handler in swapped:
            handler.setStream(stream)


class _AboveBar(io.TextIOBase):
    """A text stream whose lines the console prints above its bar, as they were written
    (no markup, no highlighting, no re-wrapping: a log line stays one line)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._partial = ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._console.print(Text(line), soft_wrap=True, highlight=False)
        return len(text)

    def flush(self) -> None:
        """Nothing: a partial line waits for its end (printed alone, the bar would be
        drawn over it)."""
