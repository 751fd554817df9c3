"""The rotation policy and the rotator: pure, with time passed in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from blocktimesd.dataset.layout import REORGS, ROWS, Partition
from blocktimesd.dataset.rotation import Batch, RollReason, RotationPolicy, Rotator


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
