"""Progress sinks: a bar on a terminal that leaves it clean, plain lines elsewhere."""

from __future__ import annotations

import io
import logging
import re

import pytest

from blocktimesd.progress import LineProgress, format_duration, progress_for
from blocktimesd.progress_bar import BarProgress

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal(io.StringIO):
    """What a terminal would receive."""

    def isatty(self) -> bool:
        return True

    def screen_lines(self) -> list[str]:
        """The lines left on the screen: each carriage return starts the line over."""
        text = _ESCAPES.sub("", self.getvalue())
        return [line.rsplit("\r", 1)[-1] for line in text.split("\n")]


def test_plain_lines_at_most_every_few_seconds_and_the_true_figure_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    line = LineProgress("consensus", 1000, every=5.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="blocktimesd.progress"):
        for _ in range(10):  # 100 blocks a second for 10 s
            now[0] += 1.0
            line.advance(100)
        line.close(640)  # fewer than reported: the rest was dropped
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "consensus: 500/1,000 blocks (50.0%), 100 blocks/s, ETA 00:05",
        "consensus: 1,000/1,000 blocks (100.0%), 100 blocks/s, ETA 00:00",
        "consensus: 640/1,000 blocks (64.0%), 64 blocks/s, ETA 00:05",
    ]


def test_a_stream_that_is_no_terminal_gets_plain_lines() -> None:
    assert isinstance(progress_for("x", 10, io.StringIO()), LineProgress)
    bar = progress_for("x", 10, Terminal())
    assert isinstance(bar, BarProgress)
    bar.close(0)


def test_the_bar_ends_on_the_true_figures_on_a_line_of_its_own() -> None:
    terminal = Terminal()
    bar = BarProgress("auto-evm", 325, terminal)
    bar.advance(300)
    bar.close(200)  # stopped early: 200 rows written
    bar.close(200)  # idempotent
    assert _ESCAPES.sub("", terminal.getvalue()).endswith("\n")
    (last,) = [line for line in terminal.screen_lines() if "auto-evm" in line][-1:]
    assert "200/325" in last
    assert "62%" in last
    print("interrupted", file=terminal)
    assert terminal.screen_lines()[-2] == "interrupted"


def test_log_lines_are_printed_above_the_bar_not_into_it() -> None:
    terminal = Terminal()
    handler = logging.StreamHandler(terminal)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        bar = BarProgress("consensus", 100, terminal)
        bar.advance(10)
        logging.getLogger("blocktimesd.test").warning("a retry")
        bar.close(10)
        assert handler.stream is terminal  # given back
    finally:
        root.removeHandler(handler)
    assert "a retry" in terminal.screen_lines()


def test_durations() -> None:
    assert format_duration(float("inf")) == "?"
    assert format_duration(59) == "00:59"
    assert format_duration(3600 + 61) == "1:01:01"
