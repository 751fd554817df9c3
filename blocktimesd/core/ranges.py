"""Block ranges for a backfill: what is still missing, cut into windows.  Pure.

A backfill never holds a whole range: it works through the blocks that the dataset
lacks (the requested range minus the runs of block numbers already durable), a
window of at most ``size`` blocks at a time.  Spans are inclusive at both ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["Shard", "Span", "describe", "merge", "runs", "subtract", "total", "windows"]


@dataclass(frozen=True, slots=True, order=True)
class Span:
    first: int
    last: int  # inclusive

    def __post_init__(self) -> None:
        if self.first > self.last:
            raise ValueError(f"empty span {self.first}..{self.last}")

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


def runs(numbers: Iterable[int]) -> list[Span]:
    """The runs of consecutive numbers in ``numbers`` (any order, duplicates allowed)."""
    out: list[Span] = []
    first = last = None
    for n in sorted(set(numbers)):
        if last is not None and n == last + 1:
            last = n
            continue
        if first is not None and last is not None:
            out.append(Span(first, last))
        first = last = n
    if first is not None and last is not None:
        out.append(Span(first, last))
    return out


def merge(spans: Iterable[Span]) -> list[Span]:
    """The union of ``spans``: sorted, with overlapping and adjacent spans joined."""
    out: list[Span] = []
    for span in sorted(spans):
        if out and span.first <= out[-1].last + 1:
            if span.last > out[-1].last:
                out[-1] = Span(out[-1].first, span.last)
        else:
            out.append(span)
    return out


def subtract(whole: Span, present: Sequence[Span]) -> list[Span]:
    """The parts of ``whole`` that no span of ``present`` covers, in order."""
    out: list[Span] = []
    cursor = whole.first
    for span in merge(present):
        if span.last < cursor:
            continue
        if span.first > whole.last:
            break
        if span.first > cursor:
            out.append(Span(cursor, span.first - 1))
        cursor = span.last + 1
        if cursor > whole.last:
            return out
    if cursor <= whole.last:
        out.append(Span(cursor, whole.last))
    return out


def windows(spans: Iterable[Span], size: int) -> Iterator[Span]:
    """Each span cut into consecutive windows of at most ``size`` blocks."""
    if size < 1:
        raise ValueError("a window holds at least one block")
    for span in spans:
        for first in range(span.first, span.last + 1, size):
            yield Span(first, min(first + size - 1, span.last))


def total(spans: Iterable[Span]) -> int:
    return sum(span.count for span in spans)


def describe(spans: Iterable[Span], limit: int = 20) -> str:
    """``"10-20, 35, 40-41"``; past ``limit`` spans, how many more."""
    spans = list(spans)
    text = ", ".join(str(span) for span in spans[:limit])
    if len(spans) > limit:
        text += f" and {len(spans) - limit} more"
    return text


@dataclass(frozen=True, slots=True)
class Shard:
    """Worker ``index`` (1-based) of ``count`` splitting a backfill: block numbers are
    cut into chunks of ``size`` aligned to multiples of ``size`` (chunk ``j`` holds
    ``j * size`` .. ``(j + 1) * size - 1``), dealt round-robin: chunk ``j`` is worker
    ``j % count + 1``'s.  Workers given the same ``count`` and ``size`` take disjoint
    blocks whose union is every block, whatever ranges each is given."""

    index: int
    count: int
    size: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count or self.size < 1:
            raise ValueError(f"no shard {self.index}/{self.count} of chunks of {self.size}")

    def spans(self, span: Span) -> list[Span]:
        """This worker's parts of ``span``, in order."""
        size, count = self.size, self.count
        out: list[Span] = []
        chunk = span.first // size
        while chunk * size <= span.last:
            if chunk % count == self.index - 1:
                first, last = max(span.first, chunk * size), min(span.last, (chunk + 1) * size - 1)
                out.append(Span(first, last))
            chunk += 1
        return out
