"""Reading DATA_DIR: the walk, what a data file is, and what the daemon resumes from."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from blocktimesd.core.ranges import Span
from blocktimesd.dataset.layout import FileSpan, file_name, parse_file_name
from blocktimesd.dataset.scan import (
    DataFile,
    chain_files,
    check_files,
    dataset_chains,
    dataset_files,
    durable_runs,
    durable_tail,
    last_durable_row,
    temp_files,
)
from blocktimesd.dataset.writer import ParquetWriter
from blocktimesd.errors import ConfigError, InvalidDataFile
from tests.dataset.test_writer import MIDNIGHT, SETTINGS, last_block, row, written
from tests.handmade import chain_rows, write_file, write_rows


async def test_temp_files_and_strangers_are_ignored_by_last_durable(tmp_path: Path) -> None:
    assert last_block(tmp_path, "consensus") is None
    async with ParquetWriter(tmp_path, SETTINGS) as writer:
        await writer.put([row(n, ts=MIDNIGHT + 6000 * (n - 150)) for n in range(1, 301)])
    directory = tmp_path / "block_times" / "chain=consensus" / "date=2023-11-14"
    (directory / ".part-0000000900-0000000999-00000000.parquet.tmp").write_bytes(b"PAR1")
    (directory / "notes.txt").write_text("hello")
    assert last_block(tmp_path, "consensus") == (300, row(300).hash)
    assert last_durable_row(tmp_path, "consensus") == row(300, ts=MIDNIGHT + 6000 * 150)
    assert last_block(tmp_path, "auto-evm") is None


async def test_resume_refuses_a_file_whose_name_claims_other_blocks(tmp_path: Path) -> None:
    first, _ = await written(tmp_path, [row(n) for n in range(1, 151)])  # 1-100, 101-150
    liar = first.with_name(file_name(1, 999_999_999, "0badc0de"))
    first.rename(liar)
    for read in (
        lambda: last_durable_row(tmp_path, "consensus"),
        lambda: durable_tail(tmp_path, "consensus", 10),
    ):
        with pytest.raises(InvalidDataFile) as caught:
            read()
        message = str(caught.value)
        assert f"{liar}: its name says blocks 1..999999999, but it holds blocks 1..100" in message
        assert f"Move it out of {tmp_path}" in message
        assert "blocktimesd validate" in message
        assert caught.value.path == str(liar)


async def test_resume_names_a_truncated_file_and_the_fix(tmp_path: Path) -> None:
    _, newest = await written(tmp_path, [row(n) for n in range(1, 151)])
    content = newest.read_bytes()
    newest.write_bytes(content[: len(content) // 2])  # a copy cut short, a bad disk
    for read in (
        lambda: last_block(tmp_path, "consensus"),
        lambda: durable_tail(tmp_path, "consensus", 10),
    ):
        with pytest.raises(InvalidDataFile, match="cannot be read as Parquet") as caught:
            read()
        assert str(newest) in str(caught.value)
        assert "Move it out of" in str(caught.value)
    # An empty file, and a file without the block_number column, are refused as well.
    newest.write_bytes(b"")
    with pytest.raises(InvalidDataFile, match=str(newest)):
        last_block(tmp_path, "consensus")
    pq.write_table(pa.table({"x": [1]}), newest)
    with pytest.raises(InvalidDataFile, match="no block_number column"):
        last_block(tmp_path, "consensus")


# -- the walk: what a data file is -------------------------------------------------------


def test_a_data_file_is_any_parquet_file_in_a_date_directory(tmp_path: Path) -> None:
    rows = chain_rows("consensus", [None] + [6000] * 9)
    (writers,) = write_rows(tmp_path, rows)
    directory = writers.parent
    stranger = directory / "export.parquet"  # a glob reads it, so report and validate see it
    stranger.write_bytes(b"PAR1")
    (directory / f".{writers.name}.tmp").write_bytes(b"PAR1")  # temp files are not
    (directory / "notes.txt").write_text("hello")
    (directory.parent / "date=2025-08-02").write_text("a file where a directory goes")
    (directory.parent / "misc").mkdir()
    (directory.parent / "misc" / "part-0000000001-0000000001-00000000.parquet").write_bytes(b"")
    assert chain_files(tmp_path, "consensus") == [
        DataFile(stranger, None),
        DataFile(writers, parse_file_name(writers.name)),
    ]
    assert chain_files(tmp_path, "auto-evm") == []
    assert dataset_files(tmp_path) == {"consensus": [stranger, writers]}
    assert dataset_chains(tmp_path) == ["consensus"]
    # The daemon reads only the writer's files; validate refuses the stranger.
    assert last_durable_row(tmp_path, "consensus") == rows[-1]
    with pytest.raises(InvalidDataFile, match=r"export\.parquet: its name is not part-"):
        check_files(tmp_path)


def test_files_are_walked_by_date_then_block(tmp_path: Path) -> None:
    day1 = chain_rows("consensus", [None] + [6000] * 9)
    day2 = chain_rows(
        "consensus", [6000] * 10, first=11, start_ms=day1[-1].timestamp_ms + 86_400_000
    )
    paths = write_rows(tmp_path, day2 + day1, per_file=4)
    found = chain_files(tmp_path, "consensus")
    assert [f.path for f in found] == sorted(paths)
    assert [f.span for f in found] == [parse_file_name(p.name) for p in sorted(paths)]
    assert [f.span.first for f in found if f.span] == [1, 5, 9, 11, 15, 19]


def test_chains_without_data_files_are_not_chains_on_disk(tmp_path: Path) -> None:
    (tmp_path / "block_times" / "chain=empty" / "date=2025-08-01").mkdir(parents=True)
    write_rows(tmp_path, chain_rows("auto-evm", [None, 6000]))
    assert list(dataset_files(tmp_path)) == ["auto-evm"]
    assert dataset_chains(tmp_path) == ["auto-evm"]


def test_no_dataset_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Parquet files under"):
        dataset_chains(tmp_path)
    with pytest.raises(ConfigError, match="does not exist or is not a directory"):
        dataset_files(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="pass --data DIR or set DATA_DIR"):
        dataset_files(tmp_path / "file")


def test_temp_files_are_found_in_every_dataset(tmp_path: Path) -> None:
    rows = tmp_path / "block_times" / "chain=c" / "date=2025-08-01"
    reorgs = tmp_path / "reorgs" / "chain=c"
    for directory in (rows, reorgs):
        directory.mkdir(parents=True)
        (directory / ".part-0000000001-0000000002-00000000.parquet.tmp").write_bytes(b"")
        (directory / "part-0000000001-0000000002-00000000.parquet").write_bytes(b"")
    (tmp_path / "reconciliation").mkdir()
    (tmp_path / "reconciliation" / ".c.jsonl.tmp").write_bytes(b"")  # not the writer's
    assert sorted(temp_files(tmp_path)) == sorted(
        [
            rows / ".part-0000000001-0000000002-00000000.parquet.tmp",
            reorgs / ".part-0000000001-0000000002-00000000.parquet.tmp",
        ]
    )
    assert temp_files(tmp_path / "missing") == []


# -- durable runs, for the backfill ------------------------------------------------------


def test_durable_runs_trust_gap_free_names_and_read_the_rest(tmp_path: Path) -> None:
    rows = chain_rows("consensus", [None] + [6000] * 99)
    write_file(tmp_path, "consensus", "2025-08-01", rows[:40])  # 1-40, gap-free
    gappy = [r for r in rows[40:80] if r.block_number % 10]  # 41-79 without 50, 60, 70
    write_file(tmp_path, "consensus", "2025-08-01", gappy)
    write_file(tmp_path, "consensus", "2025-08-01", rows[90:])  # 91-100
    assert durable_runs(tmp_path, "consensus", Span(1, 100)) == [
        Span(1, 49),
        Span(51, 59),
        Span(61, 69),
        Span(71, 79),
        Span(91, 100),
    ]
    assert durable_runs(tmp_path, "consensus", Span(35, 55)) == [Span(35, 49), Span(51, 55)]
    assert durable_runs(tmp_path, "consensus", Span(80, 90)) == []
    assert durable_runs(tmp_path, "auto-evm", Span(1, 100)) == []


def test_durable_runs_name_a_file_that_lies_about_its_blocks(tmp_path: Path) -> None:
    path = write_file(tmp_path, "consensus", "2025-08-01", chain_rows("consensus", [None, 6000]))
    liar = path.with_name(file_name(1, 5, "0badc0de"))
    path.rename(liar)
    with pytest.raises(
        InvalidDataFile, match=r"its name says blocks 1\.\.5, but it holds blocks 1\.\.2"
    ):
        durable_runs(tmp_path, "consensus", Span(1, 10))
    assert parse_file_name(liar.name) == FileSpan(1, 5, "0badc0de")
    with pytest.raises(ValueError, match="cannot name a directory"):
        durable_runs(tmp_path, "a/b", Span(1, 10))
