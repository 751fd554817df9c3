"""Partition paths, file names and the rotation policy: pure, with time passed in."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import pytest

from blocktimesd.dataset.records import ReorgRecord, Row
from blocktimesd.dataset.rotation import (
    REORGS,
    ROWS,
    Batch,
    FileSpan,
    Partition,
    RollReason,
    RotationPolicy,
    Rotator,
    file_name,
    is_temp_name,
    parse_file_name,
    reorg_partition,
    row_partition,
    temp_name,
    utc_date,
)

DAY_MS = 86_400_000


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


@pytest.mark.parametrize(
    ("rows", "opened_at", "now", "reason"),
    [
        (0, 0.0, 1e9, None),  # nothing open: nothing to roll however old
        (1, 0.0, 0.0, None),
        (9, 0.0, 59.999, None),
        (10, 0.0, 0.0, RollReason.ROWS),
        (11, 0.0, 0.0, RollReason.ROWS),
        (1, 0.0, 60.0, RollReason.AGE),
        (10, 0.0, 60.0, RollReason.ROWS),  # full wins over old
        (5, 100.0, 159.0, None),
        (5, 100.0, 160.0, RollReason.AGE),
    ],
)
def test_policy_reason(rows: int, opened_at: float, now: float, reason: RollReason | None) -> None:
    assert RotationPolicy(max_rows=10, max_age=60.0).reason(rows, opened_at, now) == reason


@pytest.mark.parametrize(("max_rows", "max_age"), [(0, 1.0), (1, 0.0), (5, -1.0)])
def test_policy_refuses_nonsense(max_rows: int, max_age: float) -> None:
    with pytest.raises(ValueError, match="rotation needs"):
        RotationPolicy(max_rows, max_age)


# -- the rotator: scenarios as tables ----------------------------------------------------


@dataclass(frozen=True)
class Add:
    chain: str
    block: int
    date: str
    at: float


@dataclass(frozen=True)
class Due:
    at: float


@dataclass(frozen=True)
class RollAll:
    reason: RollReason


@dataclass(frozen=True)
class Discard:
    chain: str
    block: int
    dropped: int


# What one step must return: (chain, date, first, last, reason) per batch, in order.
Out = list[tuple[str, str | None, int, int, RollReason]]

D1, D2 = "2024-01-01", "2024-01-02"

SCENARIOS: dict[str, list[tuple[Any, Out]]] = {
    "full at max_rows": [
        (Add("c", 1, D1, 0), []),
        (Add("c", 2, D1, 1), []),
        (Add("c", 3, D1, 2), [("c", D1, 1, 3, RollReason.ROWS)]),
        (Add("c", 4, D1, 3), []),
        (RollAll(RollReason.SHUTDOWN), [("c", D1, 4, 4, RollReason.SHUTDOWN)]),
    ],
    "old by age, measured from the first row": [
        (Add("c", 1, D1, 0), []),
        (Due(59), []),
        (Add("c", 2, D1, 59), []),
        (Due(60), [("c", D1, 1, 2, RollReason.AGE)]),
        (Due(500), []),
        (Add("c", 3, D1, 500), []),
        (Due(559), []),
        (Due(560), [("c", D1, 3, 3, RollReason.AGE)]),
    ],
    "old by age noticed on add": [
        (Add("c", 1, D1, 0), []),
        (Add("c", 2, D1, 61), [("c", D1, 1, 1, RollReason.AGE)]),
        (RollAll(RollReason.FLUSH), [("c", D1, 2, 2, RollReason.FLUSH)]),
    ],
    "new date rolls the chain's open file": [
        (Add("c", 10, D1, 0), []),
        (Add("c", 11, D1, 1), []),
        (Add("c", 12, D2, 2), [("c", D1, 10, 11, RollReason.PARTITION)]),
        (RollAll(RollReason.SHUTDOWN), [("c", D2, 12, 12, RollReason.SHUTDOWN)]),
    ],
    "chains are independent": [
        (Add("a", 1, D1, 0), []),
        (Add("b", 1, D2, 0), []),
        (Add("a", 2, D1, 1), []),
        (Add("b", 2, D2, 30), []),
        (Add("a", 3, D1, 31), [("a", D1, 1, 3, RollReason.ROWS)]),
        (Due(60), [("b", D2, 1, 2, RollReason.AGE)]),
        (RollAll(RollReason.SHUTDOWN), []),
    ],
    "rows arriving out of order are written sorted": [
        (Add("c", 5, D1, 0), []),
        (Add("c", 3, D1, 0), []),
        (Add("c", 4, D1, 0), [("c", D1, 3, 5, RollReason.ROWS)]),
    ],
    "discard drops buffered rows from a block on": [
        (Add("c", 1, D1, 0), []),
        (Add("c", 2, D1, 1), []),
        (Discard("c", 2, dropped=1), []),
        (Discard("other", 0, dropped=0), []),
        (Add("c", 2, D1, 2), []),
        (Add("c", 3, D1, 3), [("c", D1, 1, 3, RollReason.ROWS)]),
    ],
    "discarding everything closes the file, and its age with it": [
        (Add("c", 7, D1, 0), []),
        (Discard("c", 0, dropped=1), []),
        (Due(1000), []),
        (Add("c", 7, D1, 1000), []),
        (Due(1059), []),
        (Due(1060), [("c", D1, 7, 7, RollReason.AGE)]),
    ],
}


@pytest.mark.parametrize("steps", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_rotator(steps: list[tuple[Any, Out]]) -> None:
    rotator: Rotator[str] = Rotator(RotationPolicy(max_rows=3, max_age=60.0))
    for step, expected in steps:
        batches: list[Batch[str]]
        if isinstance(step, Add):
            partition = Partition(ROWS, step.chain, step.date)
            batches = rotator.add(partition, step.block, f"{step.chain}#{step.block}", step.at)
        elif isinstance(step, Due):
            batches = rotator.due(step.at)
        elif isinstance(step, RollAll):
            batches = rotator.roll_all(step.reason)
        else:
            assert rotator.discard_from(ROWS, step.chain, step.block) == step.dropped
            batches = []
        got = [(b.partition.chain, b.partition.date, b.first, b.last, b.reason) for b in batches]
        assert got == expected, step
        for batch in batches:  # items are the blocks named by first..last, in order
            numbers = [int(item.split("#")[1]) for item in batch.items]
            assert numbers == sorted(numbers)
            assert (numbers[0], numbers[-1]) == (batch.first, batch.last)


def test_rotator_keeps_datasets_apart_and_reports_deadlines() -> None:
    rotator: Rotator[int] = Rotator(RotationPolicy(max_rows=100, max_age=60.0))
    assert rotator.next_deadline() is None
    rotator.add(Partition(ROWS, "c", D1), 1, 1, now=10.0)
    rotator.add(Partition(REORGS, "c"), 1, 1, now=20.0)
    assert rotator.buffered == 2
    assert rotator.next_deadline() == 70.0
    assert [b.partition.dataset for b in rotator.due(70.0)] == [ROWS]
    assert rotator.next_deadline() == 80.0
    (batch,) = rotator.roll_all(RollReason.FLUSH)
    assert batch.partition == Partition(REORGS, "c")
    assert batch.file_name("0badcafe") == "part-0000000001-0000000001-0badcafe.parquet"
    assert rotator.buffered == 0
