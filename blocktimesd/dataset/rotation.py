"""Where rows go on disk and when an open file is rolled: pure, with time passed in.

Layout under ``DATA_DIR`` (see ``docs/schema.md``)::

    block_times/chain=<chain>/date=<YYYY-MM-DD>/part-<first>-<last>-<token>.parquet
    reorgs/chain=<chain>/part-<first>-<last>-<token>.parquet

``date`` is the UTC date of the rows' ``timestamp_ms``.  ``first`` and ``last`` are the
lowest and highest block number in the file, zero-padded to ten digits (a ``uint32``
has at most ten) so that names sort by block number; ``token`` makes names unique when
a range is written twice (a repaired file replaces the original under a new name).

A file is written in one go when its buffer is rolled; :class:`Rotator` decides when:
at ``max_rows`` rows, ``max_age`` seconds after its first row arrived, when a chain's
rows move to another partition (a new UTC date), and on flush or shutdown.  Each chain
has at most one open buffer per dataset, so the rows held in memory are bounded by
``max_rows`` times the number of chains.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Generic, TypeVar

from blocktimesd.dataset.records import ReorgRecord, Row

__all__ = [
    "DAY_MS",
    "REORGS",
    "ROWS",
    "Batch",
    "FileSpan",
    "Partition",
    "RollReason",
    "RotationPolicy",
    "Rotator",
    "check_chain",
    "file_name",
    "is_temp_name",
    "parse_file_name",
    "reorg_partition",
    "row_partition",
    "span_disagreement",
    "temp_name",
    "utc_date",
]

ROWS = "block_times"
REORGS = "reorgs"
DAY_MS = 86_400_000

T = TypeVar("T")

# Chain names become directory names; keep them to characters every filesystem and
# every Hive-partition reader takes literally (no '/', '=', '%', no leading '.' or '_').
_CHAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FILE_NAME = re.compile(r"part-(\d{10})-(\d{10})-([0-9a-f]{8})\.parquet")
_TEMP_SUFFIX = ".tmp"
MAX_BLOCK = 2**32 - 1  # block_number is uint32


def check_chain(chain: str) -> str:
    """``chain`` if it can name a directory; ValueError otherwise."""
    if not _CHAIN_NAME.fullmatch(chain):
        raise ValueError(
            f"chain name {chain!r} cannot name a directory: use letters, digits, "
            "'-', '_' and '.', starting with a letter or digit"
        )
    return chain


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


@dataclass(frozen=True, slots=True)
class FileSpan:
    """What a data file's name says: its block range and its unique token."""

    first: int
    last: int
    token: str


def file_name(first: int, last: int, token: str) -> str:
    if not 0 <= first <= last <= MAX_BLOCK:
        raise ValueError(f"bad block range {first}..{last}")
    if not re.fullmatch(r"[0-9a-f]{8}", token):
        raise ValueError(f"token must be 8 lowercase hex digits, not {token!r}")
    return f"part-{first:010d}-{last:010d}-{token}.parquet"


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


class RollReason(enum.StrEnum):
    ROWS = "rows"  # the file reached max_rows
    AGE = "age"  # the first row arrived max_age seconds ago
    PARTITION = "partition"  # the chain's rows moved to another partition (new date)
    FLUSH = "flush"  # someone asked for everything to be durable
    SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    max_rows: int
    max_age: float  # seconds, on the clock passed to Rotator

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_age <= 0:
            raise ValueError("rotation needs max_rows >= 1 and max_age > 0")

    def reason(self, rows: int, opened_at: float, now: float) -> RollReason | None:
        """Whether an open file with ``rows`` rows, opened at ``opened_at``, rolls now."""
        if rows >= self.max_rows:
            return RollReason.ROWS
        if rows and now - opened_at >= self.max_age:
            return RollReason.AGE
        return None


@dataclass(frozen=True, slots=True)
class Batch(Generic[T]):
    """The content of one file: items sorted by block number."""

    partition: Partition
    items: tuple[T, ...]
    first: int
    last: int
    reason: RollReason

    def file_name(self, token: str) -> str:
        return file_name(self.first, self.last, token)


_FIRST, _SECOND = itemgetter(0), itemgetter(1)


@dataclass(slots=True)
class _Open(Generic[T]):
    partition: Partition
    opened_at: float
    items: list[tuple[int, T]] = field(default_factory=list)

    def roll(self, reason: RollReason) -> Batch[T]:
        ordered = sorted(self.items, key=_FIRST)
        return Batch(
            self.partition,
            tuple(map(_SECOND, ordered)),
            ordered[0][0],
            ordered[-1][0],
            reason,
        )


class Rotator(Generic[T]):
    """The open (in-memory) file of each chain and dataset; says when to write it.

    Every method returns the batches to write now, in the order to write them.
    """

    __slots__ = ("_open", "policy")

    def __init__(self, policy: RotationPolicy) -> None:
        self.policy = policy
        self._open: dict[tuple[str, str], _Open[T]] = {}

    def add(self, partition: Partition, number: int, item: T, now: float) -> list[Batch[T]]:
        """Buffer ``item`` (block ``number``) for ``partition``, arrived at ``now``."""
        return self.extend(partition, [(number, item)], now)

    def extend(
        self, partition: Partition, items: Sequence[tuple[int, T]], now: float
    ) -> list[Batch[T]]:
        """Buffer ``(block number, item)`` pairs for ``partition``, all arrived at ``now``."""
        out: list[Batch[T]] = []
        key = (partition.dataset, partition.chain)
        max_rows = self.policy.max_rows
        taken = 0
        while taken < len(items):
            current = self._open.get(key)
            if current is not None:
                if current.partition != partition:
                    out.append(self._roll(key, RollReason.PARTITION))
                    current = None
                elif reason := self.policy.reason(len(current.items), current.opened_at, now):
                    out.append(self._roll(key, reason))
                    current = None
            if current is None:
                current = self._open[key] = _Open(partition, now)
            room = max_rows - len(current.items)
            current.items.extend(items[taken : taken + room])
            taken += room
            if len(current.items) >= max_rows:
                out.append(self._roll(key, RollReason.ROWS))
        return out

    def due(self, now: float) -> list[Batch[T]]:
        """The open files that have grown old (or full) by ``now``."""
        out: list[Batch[T]] = []
        for key, current in list(self._open.items()):
            reason = self.policy.reason(len(current.items), current.opened_at, now)
            if reason is not None:
                out.append(self._roll(key, reason))
        return out

    def roll_all(self, reason: RollReason) -> list[Batch[T]]:
        """Every open file, for a flush or shutdown."""
        return [self._roll(key, reason) for key in list(self._open)]

    def discard_from(self, dataset: str, chain: str, number: int) -> int:
        """Drop buffered items of ``chain`` with block number >= ``number``; return how many."""
        key = (dataset, chain)
        current = self._open.get(key)
        if current is None:
            return 0
        kept = [pair for pair in current.items if pair[0] < number]
        dropped = len(current.items) - len(kept)
        if kept:
            current.items = kept
        else:
            del self._open[key]
        return dropped

    def open_files(self) -> list[tuple[tuple[str, str], float, int]]:
        """Each open file: its (dataset, chain), when it was opened, how many items."""
        return [(key, c.opened_at, len(c.items)) for key, c in self._open.items()]

    def copy(self, key: tuple[str, str], reason: RollReason) -> Batch[T]:
        """The open file ``key`` as it stands, as a batch; the file stays open."""
        return self._open[key].roll(reason)

    def next_deadline(self) -> float | None:
        """When the oldest open file becomes due by age; None with nothing open."""
        if not self._open:
            return None
        return min(current.opened_at for current in self._open.values()) + self.policy.max_age

    @property
    def buffered(self) -> int:
        """Items held in open files."""
        return sum(len(current.items) for current in self._open.values())

    def _roll(self, key: tuple[str, str], reason: RollReason) -> Batch[T]:
        return self._open.pop(key).roll(reason)
