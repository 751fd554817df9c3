"""When an open file is rolled: the rotation policy, pure, with time passed in.

A file is written in one go when its buffer is rolled; :class:`Rotator` decides when:
at ``max_rows`` rows, ``max_age`` seconds after its first row arrived, when a chain's
rows move to another partition (a new UTC date), and on flush or shutdown.  Each chain
has at most one open buffer per dataset, so the rows held in memory are bounded by
``max_rows`` times the number of chains.  Where the files go and how they are named is
:mod:`blocktimesd.dataset.layout`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Generic, TypeVar

from blocktimesd.dataset.layout import Partition, file_name

__all__ = [
    "Batch",
    "RollReason",
    "RotationPolicy",
    "Rotator",
]

T = TypeVar("T")


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
