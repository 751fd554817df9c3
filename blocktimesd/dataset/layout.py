"""Where things live under ``DATA_DIR``: partitions, file names, temp names, the lock.

Layout (see ``docs/schema.md``)::

    block_times/chain=<chain>/date=<YYYY-MM-DD>/part-<first>-<last>-<token>.parquet
    reorgs/chain=<chain>/part-<first>-<last>-<token>.parquet
    reconciliation/<chain>.jsonl
    .writer.lock

``date`` is the UTC date of the rows' ``timestamp_ms``.  ``first`` and ``last`` are the
lowest and highest block number in the file, zero-padded to ten digits (a ``uint32``
has at most ten) so that names sort by block number; ``token`` makes names unique when
a range is written twice (a repaired file replaces the original under a new name).

Chain names become directory names, so the one rule for them lives here
(:func:`check_chain`, :data:`CHAIN_NAME_RULE`): the configuration checks its chain
names with it too, so a chain that can be configured can always be written.
Pure: nothing here touches the filesystem.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import NamedTuple

from blocktimesd.dataset.records import ReorgRecord, Row

__all__ = [
    "CHAIN_NAME_RULE",
    "DAY_MS",
    "LOCK_NAME",
    "MAX_BLOCK",
    "RECONCILIATION",
    "REORGS",
    "ROWS",
    "FileSpan",
    "Partition",
    "check_chain",
    "file_name",
    "is_chain_name",
    "is_temp_name",
    "new_token",
    "parse_file_name",
    "partition_runs",
    "reorg_partition",
    "row_partition",
    "span_disagreement",
    "temp_name",
    "utc_date",
]

ROWS = "block_times"  # the dataset of rows, one per block
REORGS = "reorgs"  # the dataset of reorg records
RECONCILIATION = "reconciliation"  # the directory of per-chain JSON-lines records
LOCK_NAME = ".writer.lock"  # dot-prefixed: no dataset reader looks at it
DAY_MS = 86_400_000
MAX_BLOCK = 2**32 - 1  # block_number is uint32

# Chain names become directory names; keep them to characters every filesystem and
# every Hive-partition reader takes literally (no '/', '=', '%', no leading '.' or '_').
_CHAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
CHAIN_NAME_RULE = "letters, digits, '-', '_' and '.', starting with a letter or digit"
_FILE_NAME = re.compile(r"part-(\d{10})-(\d{10})-([0-9a-f]{8})\.parquet")
_TOKEN = re.compile(r"[0-9a-f]{8}")
_TEMP_SUFFIX = ".tmp"


def is_chain_name(name: str) -> bool:
    """Whether ``name`` can name a chain (and so a directory)."""
    return _CHAIN_NAME.fullmatch(name) is not None


def check_chain(name: str) -> str:
    """``name`` if it can name a chain's directory; ValueError otherwise."""
    if not is_chain_name(name):
        raise ValueError(f"chain name {name!r} cannot name a directory: use {CHAIN_NAME_RULE}")
    return name


def utc_date(timestamp_ms: int) -> str:
    """``YYYY-MM-DD`` of a millisecond timestamp, in UTC."""
    return datetime.fromtimestamp(timestamp_ms // 1000, UTC).date().isoformat()


@dataclass(frozen=True, slots=True, order=True)
class Partition:
    """One directory of the dataset; ``date`` is None for datasets not split by day."""

    dataset: str
    chain: str
    date: str | None = None

    def __post_init__(self) -> None:
        check_chain(self.chain)

    @property
    def path(self) -> str:
        """The directory relative to ``DATA_DIR``, with '/' separators."""
        base = f"{self.dataset}/chain={self.chain}"
        return base if self.date is None else f"{base}/date={self.date}"


def row_partition(row: Row) -> Partition:
    return Partition(ROWS, row.chain, utc_date(row.timestamp_ms))


def reorg_partition(record: ReorgRecord) -> Partition:
    return Partition(REORGS, record.chain)


_CHAIN, _TIMESTAMP = attrgetter("chain"), attrgetter("timestamp_ms")


def partition_runs(rows: Sequence[Row]) -> list[Sequence[Row]]:
    """``rows`` cut, in order, where the partition (chain or UTC date) changes."""
    if not rows:
        return []
    stamps = list(map(_TIMESTAMP, rows))
    if min(stamps) // DAY_MS == max(stamps) // DAY_MS and len(set(map(_CHAIN, rows))) == 1:
        return [rows]  # the usual case, without a loop in Python
    runs: list[Sequence[Row]] = []
    start, key = 0, None
    for at, row in enumerate(rows):
        here = (row.chain, row.timestamp_ms // DAY_MS)
        if here != key:
            if key is not None:
                runs.append(rows[start:at])
            start, key = at, here
    runs.append(rows[start:])
    return runs


class FileSpan(NamedTuple):
    """What a data file's name says: its block range and its unique token."""

    first: int
    last: int
    token: str


def file_name(first: int, last: int, token: str) -> str:
    if not 0 <= first <= last <= MAX_BLOCK:
        raise ValueError(f"bad block range {first}..{last}")
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"token must be 8 lowercase hex digits, not {token!r}")
    return f"part-{first:010d}-{last:010d}-{token}.parquet"


def new_token() -> str:
    """A fresh token for a file name: a range written again gets a name of its own."""
    return uuid.uuid4().hex[:8]


def parse_file_name(name: str) -> FileSpan | None:
    """The span of a data file, or None for anything else (temp files, strangers)."""
    match = _FILE_NAME.fullmatch(name)
    if match is None:
        return None
    first, last = int(match[1]), int(match[2])
    return FileSpan(first, last, match[3]) if first <= last else None


def span_disagreement(span: FileSpan, rows: int, first: int | None, last: int | None) -> str | None:
    """Why a data file named for ``span`` cannot be trusted, or None if it can.

    ``rows`` is the file's row count and ``first``/``last`` its lowest and highest
    ``block_number`` (None when it has none), as its Parquet footer says.  The writer
    never writes an empty file and names every file for exactly the blocks it holds, so
    anything else means the file was renamed or written by something else.
    """
    if rows == 0:
        return "it holds no rows"
    if first is None or last is None:
        return "it holds no block numbers"
    if (first, last) != (span.first, span.last):
        return (
            f"its name says blocks {span.first}..{span.last}, but it holds blocks {first}..{last}"
        )
    return None


def temp_name(final: str) -> str:
    """Where a file is written before it is renamed to ``final``.

    The leading dot hides it from pyarrow datasets, Spark and Hive (which skip names
    starting with '.' or '_'); the suffix keeps it out of ``*.parquet`` globs, which
    DuckDB expands without special-casing dot files.
    """
    return f".{final}{_TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(_TEMP_SUFFIX)
