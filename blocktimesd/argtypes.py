"""Option types and shared options of the command line: a clear argparse error, then exit 2."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from blocktimesd.dataset.objects import DataPath

__all__ = [
    "add_break_lease_argument",
    "add_dataset_arguments",
    "data_dir_from",
    "non_negative",
    "positive",
    "shard_of",
]

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


def shard_of(text: str) -> tuple[int, int]:
    """An option type: ``I/N``, worker I (1 to N) of N."""
    index, slash, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = 0
    if not slash or not 1 <= i <= n:
        raise argparse.ArgumentTypeError(
            f"not I/N with 1 <= I <= N: {text!r} (e.g. 1/4 for the first of four workers)"
        )
    return i, n


def add_break_lease_argument(parser: argparse.ArgumentParser) -> None:
    """``--break-lease``, as the commands that write (``run``, ``backfill``) take it."""
    parser.add_argument(
        "--break-lease",
        action="store_true",
        help="in S3: take over the writer lease of a writer that has not renewed it "
        "within its TTL (one of this host whose process is gone is taken over anyway) "
        "(default: False)",
    )


def add_dataset_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--data`` and ``--chain``, as ``report`` and ``validate`` take them."""
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="dataset directory or s3://bucket/prefix (default: $DATA_DIR, else data)",
    )
    parser.add_argument(
        "--chain",
        action="append",
        metavar="NAME",
        help=f"a chain to {what}; repeat for several (default: every chain on disk)",
    )


def data_dir_from(option: str | None) -> DataPath:
    """``--data``, else ``$DATA_DIR``, else ``data`` (as the daemon resolves it): a local
    directory, or ``s3://bucket/prefix``."""
    from blocktimesd.dataset.objects import data_location, location_problem
    from blocktimesd.errors import ConfigError

    where = "--data" if option else "DATA_DIR"
    location = option or os.environ.get("DATA_DIR") or "data"
    problem = location_problem(location)
    if problem is not None:
        raise ConfigError(f"{where} {location}: {problem}")
    return data_location(location)
