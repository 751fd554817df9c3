"""The progress bar drawn on a terminal (rich), apart so that a run whose output is not
a terminal never imports rich."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

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

__all__ = ["BarProgress"]

_REFRESHES_PER_S = 4  # the bar is redrawn (rate, ETA) even while nothing arrives


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
