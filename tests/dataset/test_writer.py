"""The Parquet writer against a real filesystem (tmp_path) and real pyarrow.

Failures are simulated by a :class:`Files` subclass that raises ``OSError`` on demand;
crashes by one that raises something the writer does not handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fnmatch
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from blocktimesd.aio.app import App
from blocktimesd.cli import main
from blocktimesd.dataset.files import Files
from blocktimesd.dataset.layout import parse_file_name, temp_name
from blocktimesd.dataset.records import COLUMNS, ReorgRecord, Row
from blocktimesd.dataset.scan import last_durable_row
from blocktimesd.dataset.schema import REORG_SCHEMA, ROW_SCHEMA
from blocktimesd.dataset.writer import (
    DeleteFrom,
    Flush,
    ParquetWriter,
    Reconciliation,
    WriterSettings,
    WriterStatus,
)
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams
from blocktimesd.errors import (
    ConfigError,
    DataDirInUse,
    DataDirUnusable,
    InvalidDataFile,
    LockLost,
    StorageError,
    WriterClosed,
)
from tests.daemon import advance, config_for

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
MIDNIGHT = 1_700_006_400_000  # 2023-11-15T00:00:00Z


def row(n: int, chain: str = "consensus", ts: int | None = None, fork: str = "") -> Row:
    """A row with every column filled in a way that depends on ``n`` (nulls included)."""
    timestamp = T0 + 6000 * n if ts is None else ts
    consensus = chain == "consensus"
    return Row(
        chain=chain,
        block_number=n,
        hash=f"0x{fork}{n:064x}"[:66],
        parent_hash=f"0x{n - 1:064x}",
        timestamp_ms=timestamp,
        delta_since_parent_ms=None if n == 1 else 6000 + n % 7,
        ingestion_ts_ms=timestamp + 30_000,
        contained_store_segment_headers=(n % 3 == 0) if consensus else None,
        bundle_count=n % 5 if consensus else None,
        consensus_block_hash=None if consensus else f"0x{n * 2:064x}",
        slot=n * 6 if consensus else None,
        spec_version=1 + n // 1000,
        consensus_block_number=None if consensus else 2 * n,
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Recorder:
    """A WriterObserver that remembers everything."""

    files: list[tuple[str, str, int]]
    deleted: list[tuple[str, int]]
    failures: list[str]
    recoveries: int = 0
    queue_lengths: int = 0
    pending: dict[str, int] = field(default_factory=dict)
    successes: int = 0

    def file_written(self, dataset: str, chain: str, rows: int) -> None:
        self.files.append((dataset, chain, rows))

    def rows_deleted(self, chain: str, rows: int) -> None:
        self.deleted.append((chain, rows))

    def write_failed(self, reason: str) -> None:
        self.failures.append(reason)

    def write_recovered(self) -> None:
        self.recoveries += 1

    def queue_length(self, items: int) -> None:
        self.queue_lengths += 1

    def rows_pending(self, chain: str, rows: int) -> None:
        self.pending[chain] = rows

    def write_succeeded(self) -> None:
        self.successes += 1


class FlakyFiles(Files):
    """Fails named operations with an errno while ``fail`` says so (a partial write
    first, like a disk that fills mid-file); runs ``hook`` after each operation."""

    def __init__(self) -> None:
        self.fail: dict[str, int] = {}
        self.fail_once: dict[str, int] = {}
        self.hook: Callable[[str, Path], None] | None = None

    def _check(self, operation: str, path: Path) -> None:
        code = self.fail.get(operation) or self.fail_once.pop(operation, None)
        if code:
            raise OSError(code, os.strerror(code), str(path))

    def _after(self, operation: str, path: Path) -> None:
        if self.hook is not None:
            self.hook(operation, path)

    def write_new(self, path: Path, data: bytes) -> None:
        if self.fail.get("write_new"):
            with open(path, "xb") as half:
                half.write(data[: len(data) // 2])
        self._check("write_new", path)
        super().write_new(path, data)
        self._after("write_new", path)

    def write_at(self, path: Path, offset: int, data: bytes) -> None:
        self._check("write_at", path)
        super().write_at(path, offset, data)

    def replace(self, source: Path, target: Path) -> None:
        self._check("replace", target)
        super().replace(source, target)
        self._after("replace", target)

    def fsync_dir(self, path: Path) -> None:
        self._check("fsync_dir", path)
        super().fsync_dir(path)

    def unlink(self, path: Path) -> None:
        self._check("unlink", path)
        super().unlink(path)


SETTINGS = WriterSettings(
    max_rows=100, max_minutes=10, queue_size=64, poll_interval=0.01, retry_initial=0.01,
    retry_cap=0.05,
)  # fmt: skip


@pytest.fixture
def recorder() -> Recorder:
    return Recorder([], [], [])


@pytest.fixture
def files() -> FlakyFiles:
    return FlakyFiles()


@pytest.fixture
async def writer(
    tmp_path: Path, recorder: Recorder, files: FlakyFiles
) -> AsyncIterator[ParquetWriter]:
    w = ParquetWriter(tmp_path, SETTINGS, observer=recorder, files=files, clock=FakeClock())
    await w.start()
    yield w
    await w.close(timeout=5)


# -- reading back ------------------------------------------------------------------------


def data_files(root: Path) -> list[Path]:
    """What a glob like DuckDB's ``**/*.parquet`` finds: it does not skip dot files."""
    return sorted(
        Path(directory, name)
        for directory, _, names in os.walk(root)
        for name in names
        if fnmatch.fnmatch(name, "*.parquet")
    )


def temp_files(root: Path) -> list[Path]:
    return [Path(d, n) for d, _, names in os.walk(root) for n in names if n.endswith(".tmp")]


def read_rows(root: Path) -> list[Row]:
    """Every row in the dataset, file by file, checking each file's schema and name."""
    rows: list[Row] = []
    for path in data_files(root / "block_times"):
        table = pq.read_table(path, partitioning=None)
        assert table.schema.equals(ROW_SCHEMA), path
        assert tuple(table.column_names) == COLUMNS
        span = parse_file_name(path.name)
        assert span is not None
        numbers = table["block_number"].to_pylist()
        assert numbers == sorted(numbers)
        assert (numbers[0], numbers[-1]) == (span.first, span.last)
        rows.extend(Row(*values) for values in zip(*table.to_pydict().values(), strict=True))
    return rows


def assert_exactly(root: Path, expected: Iterable[Row]) -> None:
    got = read_rows(root)
    assert sorted(got, key=lambda r: (r.chain, r.block_number)) == sorted(
        expected, key=lambda r: (r.chain, r.block_number)
    )


def last_block(data_dir: Path, chain: str) -> tuple[int, str] | None:
    """The highest block of ``chain`` on disk and its hash, as the daemon resumes from."""
    found = last_durable_row(data_dir, chain)
    return None if found is None else (found.block_number, found.hash)


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll: the conditions are about files and state that signal nothing when they change."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


# -- rows in, files out ------------------------------------------------------------------


async def test_rows_come_back_exactly_once_with_the_exact_schema(
    tmp_path: Path, writer: ParquetWriter, recorder: Recorder
) -> None:
    rows = [row(n) for n in range(1, 251)] + [row(n, "auto-evm") for n in range(1, 31)]
    await writer.put(rows[0])  # one at a time ...
    await writer.put(rows[1:200])  # ... or in lists
    await writer.put(rows[200:])
    with pytest.raises(TypeError, match="does not take tuple"):
        await writer.put(tuple(rows[200:]))  # a tuple of rows is not a Row: refused
    await writer.flush()
    assert_exactly(tmp_path, rows)
    assert sorted(recorder.files) == sorted(
        [("block_times", "consensus", 100)] * 2
        + [("block_times", "consensus", 50), ("block_times", "auto-evm", 30)]
    )
    (sample, *_) = data_files(tmp_path)
    meta = pq.ParquetFile(sample).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert meta.row_group(0).sorting_columns[0].column_index == 1  # block_number
    # The Hive layout reads as one dataset when the partition types are given.
    partitioning = ds.partitioning(
        pa.schema([("chain", pa.string()), ("date", pa.date32())]), flavor="hive"
    )
    table = ds.dataset(tmp_path / "block_times", partitioning=partitioning).to_table()
    assert table.num_rows == len(rows)
    assert table.column_names == [*COLUMNS, "date"]


@pytest.mark.parametrize("gather_s", [0.0, 0.2])
async def test_rows_that_come_one_at_a_time_are_taken_together_within_gather_s(
    tmp_path: Path, recorder: Recorder, gather_s: float
) -> None:
    """As the daemon's rows come: one each, a little apart.  With ``gather_s``, one wake
    of the task takes them all (the queue is reported at most twice per wake), and a flush that
    comes meanwhile is not held back; without it, each row is a wake of its own."""
    settings = dataclasses.replace(SETTINGS, gather_s=gather_s)
    rows = [row(n) for n in range(1, 9)] + [row(n, "auto-evm") for n in range(1, 5)]
    async with ParquetWriter(tmp_path, settings, observer=recorder, clock=FakeClock()) as w:
        for one in rows:
            await w.put(one)
            await asyncio.sleep(0.002)
        wakes = recorder.queue_lengths
        await w.flush()
        assert_exactly(tmp_path, rows)
        assert recorder.pending == {"consensus": 0, "auto-evm": 0}
    if gather_s:
        assert wakes <= 2
    else:
        assert wakes >= len(rows) - 1


def test_gather_s_is_not_negative() -> None:
    with pytest.raises(ValueError, match="gather_s must not be negative"):
        WriterSettings(gather_s=-1)


async def test_rotation_by_rows_happens_without_a_flush(
    tmp_path: Path, writer: ParquetWriter
) -> None:
    await writer.put([row(n) for n in range(1, 231)])
    await eventually(lambda: writer.buffered_rows == 30)
    assert len(data_files(tmp_path)) == 2
    assert last_block(tmp_path, "consensus") == (200, row(200).hash)


async def test_rotation_by_age_on_the_injected_clock(tmp_path: Path, recorder: Recorder) -> None:
    clock = FakeClock()
    async with ParquetWriter(tmp_path, SETTINGS, observer=recorder, clock=clock) as writer:
        await writer.put([row(1), row(2)])
        await asyncio.sleep(0.05)  # age counts from when the writer takes the row
        clock.now += 9 * 60
        await writer.put(row(3))
        await asyncio.sleep(0.05)
        assert data_files(tmp_path) == []
        clock.now += 60  # ten minutes after the first row
        await eventually(lambda: writer.buffered_rows == 0)
        assert len(data_files(tmp_path)) == 1
    assert recorder.files == [("block_times", "consensus", 3)]
    assert_exactly(tmp_path, [row(1), row(2), row(3)])


async def test_a_new_date_rolls_the_previous_one(tmp_path: Path, writer: ParquetWriter) -> None:
    before = [row(n, ts=MIDNIGHT - 6000 * (5 - n)) for n in range(1, 5)]
    after = [row(n, ts=MIDNIGHT + 6000 * (n - 5)) for n in range(5, 8)]
    await writer.put(before)
    await writer.put(after[0])
    await eventually(lambda: len(data_files(tmp_path)) == 1)
    (first,) = data_files(tmp_path)
    assert first.parent.name == "date=2023-11-14"
    await writer.put(after[1:])
    await writer.flush()
    dates = [p.parent.name for p in data_files(tmp_path)]
    assert sorted(dates) == ["date=2023-11-14", "date=2023-11-15"]
    assert_exactly(tmp_path, before + after)


async def test_shutdown_writes_open_files_and_close_is_idempotent(tmp_path: Path) -> None:
    writer = ParquetWriter(tmp_path, SETTINGS)
    await writer.start()
    await writer.put([row(n) for n in range(1, 43)])
    await writer.close(timeout=5)
    await writer.close(timeout=5)
    assert writer.status is WriterStatus.CLOSED
    assert_exactly(tmp_path, [row(n) for n in range(1, 43)])
    with pytest.raises(WriterClosed):
        await writer.put(row(43))
    # The lock is released: another writer may take the directory.
    async with ParquetWriter(tmp_path, SETTINGS):
        pass


async def test_one_writer_per_data_dir(tmp_path: Path, writer: ParquetWriter) -> None:
    with pytest.raises(DataDirInUse, match="one blocktimesd per DATA_DIR"):
        await ParquetWriter(tmp_path, SETTINGS).start()


async def test_an_unusable_data_dir_fails_at_start_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StorageError, match=r"cannot write .*/file.*not a directory: move it"):
        await ParquetWriter(tmp_path / "file" / "data", SETTINGS).start()


class StartupFailure(Files):
    """Creating DATA_DIR fails with ``code``, as on a read-only or full filesystem."""

    def __init__(self, code: int) -> None:
        self.code = code

    def makedirs(self, path: Path) -> None:
        raise OSError(self.code, os.strerror(self.code), str(path))


@pytest.mark.parametrize(
    ("where", "code", "usage", "fix"),
    [
        ("file", None, True, "file or a parent is not a directory: move it"),
        ("file/data", None, True, "not a directory: move it"),
        ("data", errno.EROFS, True, "remount the filesystem read-write"),
        ("data", errno.EACCES, True, "give the daemon's user write permission"),
        ("data", errno.ENOSPC, False, "free space"),  # may clear up: a runtime failure
    ],
)
async def test_a_data_dir_that_cannot_be_taken_is_a_configuration_error(
    tmp_path: Path, where: str, code: int | None, usage: bool, fix: str
) -> None:
    (tmp_path / "file").write_text("not a directory")
    files = Files() if code is None else StartupFailure(code)
    with pytest.raises(StorageError) as caught:
        await ParquetWriter(tmp_path / where, SETTINGS, files=files).start()
    error = caught.value
    assert isinstance(error, DataDirUnusable) is usage
    assert isinstance(error, ConfigError) is usage  # the command exits 2
    assert fix in str(error)
    assert str(tmp_path / where) in str(error)
    # Nothing is kept or retried at start-up: the message does not promise it.
    assert "kept in memory" not in str(error)
    assert "resumes by itself" not in str(error)


async def test_reorgs_have_their_own_dataset(tmp_path: Path, writer: ParquetWriter) -> None:
    records = [
        ReorgRecord("consensus", T0 + i, 1 + i % 3, 100 + i, f"0x{i:x}", 101 + i, f"0xb{i:x}",
                    99 + i, f"0xa{i:x}", i == 4)
        for i in range(5)
    ]  # fmt: skip
    for record in records:
        await writer.put(record)
    await writer.flush()
    (path,) = data_files(tmp_path / "reorgs")
    assert path.parent == tmp_path / "reorgs" / "chain=consensus"
    assert path.name.startswith("part-0000000101-0000000105-")
    table = pq.read_table(path, partitioning=None)
    assert table.schema.equals(REORG_SCHEMA)
    assert [ReorgRecord(*v) for v in zip(*table.to_pydict().values(), strict=True)] == records
    assert read_rows(tmp_path) == []


@dataclass(frozen=True)
class Mismatch:
    block_number: int
    ours: str
    theirs: str


async def test_reconciliation_lines_are_appended_and_torn_lines_dropped(
    tmp_path: Path, writer: ParquetWriter
) -> None:
    path = tmp_path / "reconciliation" / "consensus.jsonl"
    path.parent.mkdir()
    path.write_bytes(b'{"old":1}\n{"torn":')  # a crash in the middle of an append
    await writer.put(Reconciliation("consensus", Mismatch(5, "0x1", "0x2")))
    await writer.put(Reconciliation("consensus", {"block_number": 6, "ok": True}))
    await writer.flush()
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert lines == [
        {"old": 1},
        {"block_number": 5, "ours": "0x1", "theirs": "0x2"},
        {"block_number": 6, "ok": True},
    ]
    with pytest.raises(TypeError):
        Reconciliation("consensus", object())  # refused in the producer, not the writer


# -- repair ------------------------------------------------------------------------------


async def test_delete_from_rewrites_the_straddling_file_and_drops_later_ones(
    tmp_path: Path, writer: ParquetWriter, recorder: Recorder
) -> None:
    old = [row(n, ts=MIDNIGHT - 6000 * (300 - n)) for n in range(1, 361)]  # crosses midnight
    await writer.put(old)
    # Files 1-100, 101-200, 201-299 (the date changes at 300); 300-360 in memory.
    await eventually(lambda: writer.buffered_rows == 61)
    assert len(data_files(tmp_path)) == 3
    before = {p.name for p in data_files(tmp_path)}
    await writer.put(DeleteFrom("consensus", 150))
    new = [row(n, ts=MIDNIGHT - 6000 * (300 - n), fork="f") for n in range(150, 171)]
    await writer.put(new)
    await writer.flush()
    assert_exactly(tmp_path, old[:149] + new)
    after = {p.name for p in data_files(tmp_path)}
    assert min(before) in after  # the file below the cut is untouched
    assert recorder.deleted == [("consensus", 360 - 149)]
    assert last_block(tmp_path, "consensus") == (170, new[-1].hash)
    assert temp_files(tmp_path) == []


async def test_delete_from_with_a_full_disk_leaves_the_dataset_intact(
    tmp_path: Path, writer: ParquetWriter, files: FlakyFiles
) -> None:
    rows = [row(n) for n in range(1, 201)]
    await writer.put(rows)
    await writer.flush()
    files.fail["write_new"] = errno.ENOSPC
    await writer.put(DeleteFrom("consensus", 50))
    await eventually(lambda: writer.status is WriterStatus.FAILING)
    await asyncio.sleep(0.05)
    assert_exactly(tmp_path, rows)  # nothing removed while the survivors cannot be written
    del files.fail["write_new"]
    await writer.flush()
    assert_exactly(tmp_path, rows[:49])
    assert temp_files(tmp_path) == []


# -- atomicity and crashes ---------------------------------------------------------------


async def test_readers_never_see_a_partial_file(
    tmp_path: Path, writer: ParquetWriter, files: FlakyFiles
) -> None:
    seen: list[int] = []

    def check(operation: str, path: Path) -> None:
        # Right after the temp file is written and right after the rename: everything a
        # glob or a pyarrow dataset finds is a complete file.
        for found in data_files(tmp_path / "block_times"):
            assert not found.name.startswith(".")
            pq.read_table(found, partitioning=None)
        dataset = ds.dataset(tmp_path / "block_times", partitioning=None)
        seen.append(dataset.count_rows())
        if operation == "write_new":
            assert path.name.startswith(".")
            assert path.exists()

    files.hook = check
    await writer.put([row(n) for n in range(1, 301)])
    await writer.flush()
    assert seen == [0, 100, 100, 200, 200, 300]


async def test_a_crash_before_the_rename_leaves_nothing_visible(
    tmp_path: Path, writer: ParquetWriter, files: FlakyFiles
) -> None:
    await writer.put([row(n) for n in range(1, 101)])
    await writer.flush()

    def power_cut(operation: str, path: Path) -> None:
        if operation == "write_new":
            raise RuntimeError("power cut")

    files.hook = power_cut
    await writer.put([row(n) for n in range(101, 151)])
    with pytest.raises(WriterClosed):
        await writer.flush()  # the writer died; nobody is left waiting
    with pytest.raises(RuntimeError, match="power cut"):
        await writer.close()
    (temp,) = temp_files(tmp_path)
    assert temp.name == temp_name(temp.name[1:-4])
    assert_exactly(tmp_path, [row(n) for n in range(1, 101)])
    assert last_block(tmp_path, "consensus") == (100, row(100).hash)
    # The next start removes the temp file; the follower resumes from block 101.
    async with ParquetWriter(tmp_path, SETTINGS) as fresh:
        assert temp_files(tmp_path) == []
        await fresh.put([row(n) for n in range(101, 151)])
    assert_exactly(tmp_path, [row(n) for n in range(1, 151)])


async def test_cancelling_mid_write_leaves_complete_files_only(tmp_path: Path) -> None:
    files = FlakyFiles()
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    entered = asyncio.Event()

    def stall(operation: str, path: Path) -> None:
        if operation == "write_new":
            loop.call_soon_threadsafe(entered.set)
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(5)

    files.hook = stall
    writer = ParquetWriter(tmp_path, SETTINGS, files=files)
    await writer.start()
    await writer.put([row(n) for n in range(1, 101)])
    await entered.wait()
    await writer.close(timeout=0.05)  # gives up while the file is half done
    assert data_files(tmp_path) == []
    release.set()
    await asyncio.sleep(0.1)  # the worker thread finishes its one atomic file
    for path in data_files(tmp_path):
        pq.read_table(path, partitioning=None)


# -- disk full, permissions ----------------------------------------------------------------


async def test_disk_full_then_recovery_loses_and_duplicates_nothing(
    tmp_path: Path,
    files: FlakyFiles,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = WriterSettings(
        max_rows=50, queue_size=4, poll_interval=0.01, retry_initial=0.01, retry_cap=0.02
    )
    caplog.set_level(logging.INFO, logger="blocktimesd.dataset.writer")
    writer = ParquetWriter(tmp_path, settings, observer=recorder, files=files)
    await writer.start()
    files.fail["write_new"] = errno.ENOSPC
    rows = [row(n) for n in range(1, 401)]
    for chunk in range(4):
        await writer.put(rows[chunk * 50 : chunk * 50 + 50])
    await eventually(lambda: writer.status is WriterStatus.FAILING)
    assert isinstance(writer.error, StorageError)
    assert writer.error.errno == errno.ENOSPC
    assert "free space" in str(writer.error)
    assert "block_times/chain=consensus" in str(writer.error)
    assert recorder.failures
    assert recorder.recoveries == 0
    assert data_files(tmp_path) == []
    assert temp_files(tmp_path) == []
    # Backpressure: the queue fills and producers wait.
    producer = asyncio.ensure_future(
        asyncio.gather(*(writer.put(rows[i : i + 50]) for i in range(200, 400, 50)))
    )
    flush = Flush()
    await eventually(lambda: writer.queued == 4)
    await asyncio.sleep(0.05)
    assert not producer.done()
    del files.fail["write_new"]
    await producer
    await writer.put(flush)
    await flush
    assert writer.status is WriterStatus.RUNNING
    assert writer.error is None
    assert recorder.recoveries == 1
    assert_exactly(tmp_path, rows)
    await writer.close()
    assert len(recorder.failures) > 1  # retried ...
    errors = [r.message for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [recorder.failures[0]]  # ... and said once
    assert "writing to" in caplog.text
    assert "again after" in caplog.text


async def test_a_failure_after_the_rename_is_not_written_twice(
    tmp_path: Path, writer: ParquetWriter, files: FlakyFiles, recorder: Recorder
) -> None:
    files.fail_once["fsync_dir"] = errno.EIO
    await writer.put([row(n) for n in range(1, 11)])
    await writer.flush()
    assert len(data_files(tmp_path)) == 1
    assert recorder.recoveries == 1
    assert_exactly(tmp_path, [row(n) for n in range(1, 11)])


@pytest.mark.parametrize(
    ("operation", "code", "fix"),
    [
        ("replace", errno.EACCES, "write permission"),
        ("write_new", errno.EROFS, "remount the filesystem read-write"),
        ("write_at", errno.EDQUOT, "raise the quota"),
        ("fsync_dir", errno.EIO, "check the disk"),
    ],
)
async def test_errors_name_the_path_and_the_fix(
    tmp_path: Path, writer: ParquetWriter, files: FlakyFiles, operation: str, code: int, fix: str
) -> None:
    files.fail[operation] = code
    await writer.put(row(1))
    await writer.put(Reconciliation("consensus", {"n": 1}))
    flush = Flush()
    await writer.put(flush)
    await eventually(lambda: writer.status is WriterStatus.FAILING)
    assert writer.error is not None
    assert fix in str(writer.error)
    assert writer.error.path is not None
    assert str(tmp_path) in writer.error.path
    del files.fail[operation]
    await flush
    assert_exactly(tmp_path, [row(1)])
    assert (tmp_path / "reconciliation" / "consensus.jsonl").read_bytes() == b'{"n":1}\n'


async def test_close_gives_up_at_its_deadline_while_the_disk_is_full(
    tmp_path: Path, files: FlakyFiles, caplog: pytest.LogCaptureFixture
) -> None:
    writer = ParquetWriter(tmp_path, SETTINGS, files=files)
    await writer.start()
    files.fail["write_new"] = errno.ENOSPC
    await writer.put([row(n) for n in range(1, 21)])
    flush = Flush()
    await writer.put(flush)
    await eventually(lambda: writer.status is WriterStatus.FAILING)
    async with asyncio.timeout(2):
        await writer.close(timeout=0.1)
    with pytest.raises(WriterClosed):
        await flush
    assert "20 rows not yet in files" in caplog.text
    assert data_files(tmp_path) == []


async def test_close_reraises_cancellation(tmp_path: Path, files: FlakyFiles) -> None:
    writer = ParquetWriter(tmp_path, SETTINGS, files=files)
    await writer.start()
    files.fail["write_new"] = errno.ENOSPC
    await writer.put(row(1))
    closing = asyncio.create_task(writer.close(timeout=60))
    await asyncio.sleep(0.05)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert writer.status is WriterStatus.CLOSED


# -- what the writer holds, for metrics and readiness ---------------------------------------


async def test_rows_held_and_the_last_success_are_reported_while_writes_fail(
    tmp_path: Path, files: FlakyFiles, recorder: Recorder
) -> None:
    settings = WriterSettings(
        max_rows=50, queue_size=4, poll_interval=0.01, retry_initial=0.01, retry_cap=0.02
    )
    writer = ParquetWriter(tmp_path, settings, observer=recorder, files=files)
    await writer.start()
    assert recorder.successes == 1  # DATA_DIR taken: the writer could write
    files.fail["write_new"] = errno.ENOSPC
    await writer.put([row(n) for n in range(1, 51)])  # a full file, which fails
    await writer.put(row(1, "auto-evm"))  # queued behind it
    await writer.put([row(n) for n in range(51, 61)])
    await eventually(lambda: writer.status is WriterStatus.FAILING)
    await asyncio.sleep(0.05)  # retried a few times
    # Queued and buffered rows alike: none of them is on disk.
    assert recorder.pending == {"consensus": 60, "auto-evm": 1}
    assert writer.pending_rows == recorder.pending
    assert recorder.successes == 1
    del files.fail["write_new"]
    await writer.flush()
    assert recorder.pending == {"consensus": 0, "auto-evm": 0}
    assert recorder.successes > 1
    await writer.put(row(61))
    await writer.put(DeleteFrom("consensus", 61))  # dropped from memory: not held any more
    await writer.flush()
    assert recorder.pending == {"consensus": 0, "auto-evm": 0}
    await writer.close()
    assert_exactly(tmp_path, [*(row(n) for n in range(1, 61)), row(1, "auto-evm")])


async def test_the_daemon_shows_a_writer_that_cannot_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    registry = CollectorRegistry()
    devnet = Devnet(ChainParams(seed=71, history=30))
    async with devnet:
        app = App(config_for(devnet, data), registry=registry)
        await app.start()
        # Before the first file (40 rows): every file write fails from now on (ENOTDIR).
        (data / "block_times").write_text("in the way")
        started = time.time()
        runner = asyncio.create_task(app.run())
        try:

            def held(chain: str) -> float:
                labels = {"chain": chain}
                return registry.get_sample_value("blocktimes_writer_rows_pending", labels) or 0.0

            for _ in range(400):
                await advance(devnet, 0.05)
                if app.writer.status is WriterStatus.FAILING and held("consensus") >= 40:
                    break
            ready, details = app._ready()
            assert not ready
            assert details["writer"]["status"] == "failing"
            assert "not a directory" in details["writer"]["error"]
            assert held("consensus") >= 40  # a file's worth of rows (max_rows_per_file) is held
            last = registry.get_sample_value("blocktimes_writer_last_success_timestamp_seconds")
            assert last is not None
            assert started - 5 <= last <= started  # taking DATA_DIR, nothing since
            # Fixed: the writer resumes by itself and the daemon is ready again.
            (data / "block_times").unlink()
            for _ in range(400):
                await advance(devnet, 0.05)
                if app._ready()[0] and held("consensus") < 40:
                    break  # ready, and the backlog is in files
            ready, details = app._ready()
            assert ready, details
            assert details["writer"] == {"status": "running", "error": None}
            again = registry.get_sample_value("blocktimes_writer_last_success_timestamp_seconds")
            assert again is not None
            assert again > last
            assert held("consensus") < 40
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


# -- the single-writer lock -------------------------------------------------------------------


async def test_a_lost_lock_stops_the_writer_before_two_write_the_same_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    first = ParquetWriter(data, SETTINGS)
    await first.start()
    await first.put([row(n) for n in range(1, 11)])
    await first.flush()
    shutil.rmtree(data)  # rm -rf DATA_DIR under a running daemon
    await first.put([row(n) for n in range(11, 21)])  # held in memory
    # Nothing stops a second daemon now: the lock file is gone with the directory.
    async with ParquetWriter(data, SETTINGS) as second:
        await second.put([row(n) for n in range(11, 21)])
        with pytest.raises(WriterClosed):
            await first.flush()  # the first writer stopped instead of writing
        with pytest.raises(LockLost, match=r"lock file .*/data/\.writer\.lock was replaced"):
            await asyncio.wait_for(first.join(), 5)
    with pytest.raises(LockLost, match="one blocktimesd runs per DATA_DIR"):
        await first.close()
    assert_exactly(data, [row(n) for n in range(11, 21)])  # once, by the second writer
    assert "10 rows not yet in files are not written" in caplog.text


async def test_a_lock_removed_with_its_directory_is_noticed_before_the_next_write(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    writer = ParquetWriter(data, SETTINGS)
    await writer.start()
    shutil.rmtree(data)
    await writer.put(Reconciliation("consensus", {"n": 1}))  # an append checks it too
    with pytest.raises(LockLost, match=r"\.writer\.lock was removed .*deleted or moved"):
        await asyncio.wait_for(writer.join(), 5)
    with pytest.raises(LockLost):
        await writer.close()
    assert not data.exists()  # nothing recreated, nothing written


async def test_the_daemon_ends_when_its_lock_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    devnet = Devnet(ChainParams(seed=73, history=30))
    async with devnet:
        app = App(config_for(devnet, data), registry=CollectorRegistry())
        await app.start()
        runner = asyncio.create_task(app.run())
        shutil.rmtree(data)  # rm -rf DATA_DIR under the running daemon
        for _ in range(400):
            await advance(devnet, 0.05)
            if runner.done():
                break
        assert runner.done(), "the daemon kept running without its lock"
        with pytest.raises(LockLost, match=r"\.writer\.lock was removed"):
            await runner  # ends run(): the command exits 1 with this message
    assert not (data / "block_times").exists()  # nothing written after the loss
    assert "rows not yet in files are not written" in caplog.text


# -- resume: file names are checked against the files -------------------------------------


async def written(data: Path, rows: list[Row]) -> list[Path]:
    async with ParquetWriter(data, SETTINGS) as writer:
        await writer.put(rows)
    return data_files(data / "block_times")


async def test_a_repair_over_a_damaged_file_stops_the_writer_before_removing_anything(
    tmp_path: Path,
) -> None:
    _, newest = await written(tmp_path, [row(n) for n in range(1, 151)])
    newest.write_bytes(newest.read_bytes()[:100])
    writer = ParquetWriter(tmp_path, SETTINGS)
    await writer.start()
    await writer.put(DeleteFrom("consensus", 120))
    with pytest.raises(InvalidDataFile, match=str(newest)):
        await asyncio.wait_for(writer.join(), 5)
    with pytest.raises(InvalidDataFile):
        await writer.close()
    assert len(data_files(tmp_path)) == 2
    assert temp_files(tmp_path) == []


# -- the daemon's exit codes for its dataset --------------------------------------------------


def test_the_daemon_exits_1_on_a_damaged_file_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    newest = asyncio.run(written(tmp_path, [row(n) for n in range(1, 151)]))[-1]
    newest.write_bytes(newest.read_bytes()[:-100])  # the footer is gone
    monkeypatch.setenv("METRICS_ADDR", "127.0.0.1:0")
    assert main(["run", "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"blocktimesd: cannot trust this file in {tmp_path}: {newest}" in err
    assert "Move it out of" in err
    assert "Traceback" not in err


def test_the_daemon_exits_2_when_data_dir_is_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").write_text("not a directory")
    monkeypatch.setenv("METRICS_ADDR", "127.0.0.1:0")
    assert main(["run", "--data", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'data'}" in err
    assert "not a directory: move it or point DATA_DIR elsewhere" in err
    assert "kept in memory" not in err


@contextlib.contextmanager
def shared_dir() -> Iterator[Path]:
    """A directory another user may enter (pytest's tmp_path is private to this one)."""
    path = Path(tempfile.mkdtemp(prefix="blocktimesd-test-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_unprivileged(*argv: str) -> subprocess.CompletedProcess[str]:
    """``blocktimesd argv`` as a user that file permissions apply to (nobody, under root)."""
    command = [sys.executable, "-m", "blocktimesd", *argv]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root ignores file permissions, and setpriv(1) is not installed")
        command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {**os.environ, "METRICS_ADDR": "127.0.0.1:0"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_the_daemon_exits_2_when_data_dir_is_not_writable() -> None:
    with shared_dir() as shared:
        data = shared / "data"
        data.mkdir(mode=0o555)
        data.chmod(0o555)
        done = run_unprivileged("run", "--data", str(data))
    assert done.returncode == 2, done.stderr
    assert f"cannot write {data}/.writer.lock: Permission denied" in done.stderr
    assert f"give the daemon's user write permission on {data}" in done.stderr
    assert "kept in memory" not in done.stderr
    assert "Traceback" not in done.stderr


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        WriterSettings(queue_size=0)
    with pytest.raises(ValueError, match="rotation needs"):
        _ = WriterSettings(max_rows=0).policy
