"""A delete-from: planned with the survivors written first, applied from the highest
blocks down, so that what is visible is a gap-free prefix after any failure."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from blocktimesd.dataset.files import Files
from blocktimesd.dataset.layout import FileSpan, is_temp_name
from blocktimesd.dataset.records import Row
from blocktimesd.dataset.repair import Repair, apply, doomed, plan
from blocktimesd.dataset.scan import DataFile, chain_files
from blocktimesd.errors import InvalidDataFile
from tests.handmade import chain_rows, write_file

DAY = "2025-08-01"


def files_of(first_last: list[tuple[int, int] | None]) -> list[DataFile]:
    return [
        DataFile(Path(f"f{at}"), None if span is None else FileSpan(*span, "00000000"))
        for at, span in enumerate(first_last)
    ]


@pytest.mark.parametrize(
    ("spans", "number", "doomed_at"),
    [
        ([], 5, []),
        ([(1, 10), (11, 20)], 21, []),
        ([(1, 10), (11, 20)], 20, [1]),
        ([(1, 10), (11, 20)], 11, [1]),
        ([(1, 10), (11, 20)], 10, [0, 1]),
        ([(1, 10), (11, 20)], 0, [0, 1]),
        ([(1, 10), None, (11, 20)], 5, [0, 2]),  # strangers are not the writer's to remove
    ],
)
def test_doomed_files_hold_a_block_from_the_number_on(
    spans: list[tuple[int, int] | None], number: int, doomed_at: list[int]
) -> None:
    files = files_of(spans)
    assert doomed(files, number) == [files[at] for at in doomed_at]


@pytest.fixture
def rows() -> list[Row]:
    return chain_rows("consensus", [None] + [6000] * 299)


@pytest.fixture
def dataset(tmp_path: Path, rows: list[Row]) -> list[Path]:
    return [write_file(tmp_path, "consensus", DAY, rows[at : at + 100]) for at in (0, 100, 200)]


def on_disk(data_dir: Path) -> list[int]:
    numbers: list[int] = []
    for found in chain_files(data_dir, "consensus"):
        numbers += pq.read_table(found.path)["block_number"].to_pylist()
    return sorted(numbers)


def test_a_repair_keeps_the_rows_below_the_number(
    tmp_path: Path, dataset: list[Path], rows: list[Row]
) -> None:
    repair = Repair("consensus", 150, buffered=0)
    apply(repair, tmp_path, Files(), row_group_rows=1000)
    assert on_disk(tmp_path) == list(range(1, 150))
    assert repair.victims == [dataset[2], dataset[1]]  # highest blocks first
    assert (repair.rows, repair.survivors) == (151, [])
    survivor = chain_files(tmp_path, "consensus")[-1]
    assert survivor.span is not None
    assert (survivor.span.first, survivor.span.last) == (101, 149)
    assert pq.read_table(survivor.path).to_pylist()[-1]["hash"] == rows[148].hash


class FailAt(Files):
    """Fails the ``at``-th call of ``operation`` (counting from 1) with ``code``."""

    def __init__(self, operation: str, at: int, code: int = errno.EIO) -> None:
        self.operation, self.at, self.code, self.calls = operation, at, code, 0

    def _maybe_fail(self, operation: str, path: Path) -> None:
        if operation == self.operation:
            self.calls += 1
            if self.calls == self.at:
                raise OSError(self.code, os.strerror(self.code), str(path))

    def unlink(self, path: Path) -> None:
        self._maybe_fail("unlink", path)
        super().unlink(path)

    def replace(self, source: Path, target: Path) -> None:
        self._maybe_fail("replace", target)
        super().replace(source, target)

    def write_new(self, path: Path, data: bytes) -> None:
        self._maybe_fail("write_new", path)
        super().write_new(path, data)


@pytest.mark.parametrize(
    ("operation", "at", "visible"),
    [
        ("write_new", 1, list(range(1, 301))),  # disk full while planning: intact
        ("unlink", 2, list(range(1, 201))),  # the highest file is gone: a prefix
        ("replace", 1, list(range(1, 101))),  # both gone, survivor not yet in place
    ],
)
def test_after_a_failure_the_dataset_is_a_prefix_and_a_retry_completes(
    tmp_path: Path, dataset: list[Path], operation: str, at: int, visible: list[int]
) -> None:
    repair = Repair("consensus", 150, buffered=0)
    failing = FailAt(operation, at)
    with pytest.raises(OSError, match=os.strerror(errno.EIO)):
        apply(repair, tmp_path, failing, row_group_rows=1000)
    assert on_disk(tmp_path) == visible
    apply(repair, tmp_path, failing, row_group_rows=1000)  # the retry
    assert on_disk(tmp_path) == list(range(1, 150))
    assert not any(is_temp_name(path.name) for path in tmp_path.rglob("*"))


def test_a_damaged_file_stops_the_plan_before_anything_changes(
    tmp_path: Path, dataset: list[Path]
) -> None:
    dataset[1].write_bytes(dataset[1].read_bytes()[:100])
    repair = Repair("consensus", 150, buffered=0)
    with pytest.raises(InvalidDataFile, match=str(dataset[1])):
        plan(repair, tmp_path, Files(), row_group_rows=1000)
    assert repair.victims is None
    assert [found.path for found in chain_files(tmp_path, "consensus")] == dataset
    assert not any(is_temp_name(path.name) for path in tmp_path.rglob("*"))
