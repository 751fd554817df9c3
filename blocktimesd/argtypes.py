"""Number types for command-line options: a clear argparse error, then exit 2."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

__all__ = ["non_negative", "positive"]

N = TypeVar("N", int, float)


def _number(kind: type[N], text: str) -> N:
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def positive(kind: type[N]) -> Callable[[str], N]:
    """An option type: a number above 0."""

    def parse(text: str) -> N:
        value = _number(kind, text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value

    return parse


def non_negative(kind: type[N]) -> Callable[[str], N]:
    """An option type: a number of 0 or more."""

    def parse(text: str) -> N:
        value = _number(kind, text)
        if not value >= 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text}")
        return value

    return parse
