"""Block ranges of a backfill: what is missing, in windows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocktimesd.core.ranges import Shard, Span, describe, merge, runs, subtract, total, windows


def spans(*pairs: tuple[int, int]) -> list[Span]:
    return [Span(a, b) for a, b in pairs]


@pytest.mark.parametrize(
    ("numbers", "expected"),
    [
        ([], []),
        ([5], [(5, 5)]),
        ([3, 1, 2, 2], [(1, 3)]),
        ([1, 2, 4, 5, 9], [(1, 2), (4, 5), (9, 9)]),
    ],
)
def test_runs(numbers: list[int], expected: list[tuple[int, int]]) -> None:
    assert runs(numbers) == spans(*expected)


@pytest.mark.parametrize(
    ("whole", "present", "missing"),
    [
        ((1, 10), [], [(1, 10)]),
        ((1, 10), [(1, 10)], []),
        ((1, 10), [(0, 3), (8, 20)], [(4, 7)]),
        ((1, 10), [(4, 5), (5, 6)], [(1, 3), (7, 10)]),
        ((1, 10), [(11, 12), (-5, 0)], [(1, 10)]),
        ((5, 5), [(5, 5)], []),
        ((1, 10), [(2, 2), (4, 4), (10, 10)], [(1, 1), (3, 3), (5, 9)]),
    ],
)
def test_subtract(
    whole: tuple[int, int], present: list[tuple[int, int]], missing: list[tuple[int, int]]
) -> None:
    assert subtract(Span(*whole), spans(*present)) == spans(*missing)


def test_merge_joins_overlapping_and_adjacent() -> None:
    assert merge(spans((5, 6), (1, 2), (3, 3), (8, 9), (9, 12))) == spans((1, 3), (5, 6), (8, 12))


def test_windows_never_exceed_the_size() -> None:
    cut = list(windows(spans((1, 10), (20, 20)), 4))
    assert cut == spans((1, 4), (5, 8), (9, 10), (20, 20))
    assert total(cut) == 11
    with pytest.raises(ValueError, match="at least one block"):
        list(windows(spans((1, 2)), 0))


def test_describe_and_empty_span() -> None:
    assert describe(spans((1, 2), (5, 5))) == "1-2, 5"
    assert describe(spans(*((i * 3, i * 3) for i in range(5))), limit=2) == "0, 3 and 3 more"
    with pytest.raises(ValueError, match="empty span"):
        Span(3, 2)


@given(
    first=st.integers(0, 5000),
    length=st.integers(1, 5000),
    count=st.integers(1, 6),
    size=st.integers(1, 700),
)
def test_shards_split_a_span_into_disjoint_aligned_chunks(
    first: int, length: int, count: int, size: int
) -> None:
    span = Span(first, first + length - 1)
    parts = [(i, part) for i in range(1, count + 1) for part in Shard(i, count, size).spans(span)]
    numbers = sorted(n for _, part in parts for n in range(part.first, part.last + 1))
    assert numbers == list(range(span.first, span.last + 1))  # each block once
    for i, part in parts:
        chunk = part.first // size
        assert part.last // size == chunk  # within one aligned chunk
        assert chunk % count == i - 1  # dealt round-robin


def test_a_shard_of_a_span_by_hand() -> None:
    assert Shard(2, 3, 10).spans(Span(5, 64)) == [Span(10, 19), Span(40, 49)]
    assert Shard(1, 3, 10).spans(Span(5, 64)) == [Span(5, 9), Span(30, 39), Span(60, 64)]
    with pytest.raises(ValueError, match="no shard 4/3"):
        Shard(4, 3, 10)
