"""Partition paths, file names, temp names and the chain-name rule: pure."""

from __future__ import annotations

import fnmatch

import pytest

from blocktimesd.dataset.layout import (
    CHAIN_NAME_RULE,
    DAY_MS,
    ROWS,
    FileSpan,
    Partition,
    check_chain,
    file_name,
    is_chain_name,
    is_temp_name,
    new_token,
    parse_file_name,
    partition_runs,
    reorg_partition,
    row_partition,
    span_disagreement,
    temp_name,
    utc_date,
)
from blocktimesd.dataset.records import ReorgRecord, Row


@pytest.mark.parametrize(
    ("timestamp_ms", "date"),
    [
        (0, "1970-01-01"),
        (DAY_MS - 1, "1970-01-01"),
        (DAY_MS, "1970-01-02"),
        (-1, "1969-12-31"),
        (1_700_000_000_000, "2023-11-14"),
        (1_709_251_199_999, "2024-02-29"),  # last millisecond of a leap day
        (1_709_251_200_000, "2024-03-01"),
    ],
)
def test_utc_date(timestamp_ms: int, date: str) -> None:
    assert utc_date(timestamp_ms) == date


def test_partition_paths() -> None:
    row = Row("auto-evm", 7, "0x07", "0x06", DAY_MS * 3 + 5, 6000, 0, None, None, "0xc", None, 1, 9)
    assert row_partition(row).path == "block_times/chain=auto-evm/date=1970-01-04"
    reorg = ReorgRecord("consensus", 0, 1, 10, "0xa", 10, "0xb", 9, "0x9", False)
    assert reorg_partition(reorg).path == "reorgs/chain=consensus"


@pytest.mark.parametrize("chain", ["", "a/b", "chain=x", ".hidden", "_meta", "a b", "é", "x%2F"])
def test_chain_names_that_cannot_be_directories_are_refused(chain: str) -> None:
    with pytest.raises(ValueError, match="cannot name a directory"):
        Partition(ROWS, chain, "2024-01-01")


@pytest.mark.parametrize(
    ("first", "last", "token", "name"),
    [
        (0, 0, "00000000", "part-0000000000-0000000000-00000000.parquet"),
        (1, 100, "deadbeef", "part-0000000001-0000000100-deadbeef.parquet"),
        (2**32 - 1, 2**32 - 1, "0123abcd", "part-4294967295-4294967295-0123abcd.parquet"),
    ],
)
def test_file_names_round_trip(first: int, last: int, token: str, name: str) -> None:
    assert file_name(first, last, token) == name
    assert parse_file_name(name) == FileSpan(first, last, token)


@pytest.mark.parametrize(
    ("first", "last", "token"),
    [(5, 4, "00000000"), (-1, 4, "00000000"), (0, 2**32, "00000000"), (0, 1, "XYZ"), (0, 1, "")],
)
def test_file_name_refuses_bad_input(first: int, last: int, token: str) -> None:
    with pytest.raises(ValueError, match=r"bad block range|token"):
        file_name(first, last, token)


@pytest.mark.parametrize(
    "name",
    [
        ".part-0000000001-0000000100-deadbeef.parquet.tmp",
        "part-0000000100-0000000001-deadbeef.parquet",  # last before first
        "part-1-100-deadbeef.parquet",
        "part-0000000001-0000000100-deadbeef.parquet.bak",
        "notes.txt",
        "_SUCCESS",
    ],
)
def test_parse_file_name_ignores_everything_else(name: str) -> None:
    assert parse_file_name(name) is None


def test_names_sort_by_first_block() -> None:
    spans = [(1000, 1999), (9, 99), (100, 999), (2**31, 2**31 + 5)]
    names = sorted(file_name(first, last, "0" * 8) for first, last in spans)
    assert [parse_file_name(n).first for n in names] == [9, 100, 1000, 2**31]  # type: ignore[union-attr]


def test_temp_names_are_invisible_to_readers() -> None:
    final = file_name(1, 2, "abcdef01")
    temp = temp_name(final)
    assert temp.startswith(".")  # pyarrow, Spark, Hive skip names starting with '.' or '_'
    assert not fnmatch.fnmatch(temp, "*.parquet")  # a glob that does not skip dot files
    assert is_temp_name(temp)
    assert not is_temp_name(final)
    assert parse_file_name(temp) is None


@pytest.mark.parametrize("chain", ["consensus", "auto-evm", "a.b", "A_1", "0x", "9"])
def test_chain_names_that_can_be_directories_are_taken(chain: str) -> None:
    assert is_chain_name(chain)
    assert check_chain(chain) == chain
    assert Partition(ROWS, chain).path == f"block_times/chain={chain}"


@pytest.mark.parametrize("chain", ["", "a/b", "chain=x", ".hidden", "_meta", "-x", "a\nb"])
def test_the_chain_name_rule_is_said_in_words(chain: str) -> None:
    assert not is_chain_name(chain)
    with pytest.raises(ValueError, match="cannot name a directory") as caught:
        check_chain(chain)
    assert CHAIN_NAME_RULE in str(caught.value)
    assert repr(chain) in str(caught.value)


@pytest.mark.parametrize(
    ("rows", "first", "last", "problem"),
    [
        (10, 1, 10, None),
        (3, 1, 10, None),  # fewer rows than blocks: a gap, but the name is right
        (0, None, None, "it holds no rows"),
        (5, None, None, "it holds no block numbers"),
        (10, 2, 10, "its name says blocks 1..10, but it holds blocks 2..10"),
        (10, 1, 11, "its name says blocks 1..10, but it holds blocks 1..11"),
    ],
)
def test_span_disagreement(
    rows: int, first: int | None, last: int | None, problem: str | None
) -> None:
    assert span_disagreement(FileSpan(1, 10, "deadbeef"), rows, first, last) == problem


def test_new_tokens_make_valid_distinct_names() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert parse_file_name(file_name(1, 2, token)) == FileSpan(1, 2, token)


def _row(chain: str, number: int, timestamp_ms: int) -> Row:
    return Row(chain, number, "0x", "0x", timestamp_ms, None, 0, None, None, None, None, 1, None)


@pytest.mark.parametrize(
    ("rows", "runs"),
    [
        ([], []),
        ([("a", 1, 0), ("a", 2, DAY_MS - 1)], [[1, 2]]),
        ([("a", 1, DAY_MS - 1), ("a", 2, DAY_MS), ("a", 3, DAY_MS + 1)], [[1], [2, 3]]),
        ([("a", 1, 0), ("b", 1, 0), ("a", 2, 0)], [[1], [1], [2]]),
        ([("a", 1, 0), ("a", 2, DAY_MS), ("a", 3, 0)], [[1], [2], [3]]),  # back and forth
    ],
)
def test_rows_are_cut_where_the_partition_changes(
    rows: list[tuple[str, int, int]], runs: list[list[int]]
) -> None:
    given = [_row(*spec) for spec in rows]
    got = partition_runs(given)
    assert [[row.block_number for row in run] for run in got] == runs
    assert [row for run in got for row in run] == given
    for run in got:
        assert len({row_partition(row) for row in run}) == 1
