"""The dataset in S3 (moto's server over HTTP, through the fault proxy): the writer's
files, resume reads, repair, reconciliation lines and the one-writer lease, each
checked against the rows put, read back with a plain S3 listing written here."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Iterator
from typing import Any

import boto3  # type: ignore[import-untyped, unused-ignore]
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from blocktimesd.cli import main
from blocktimesd.core.ranges import Span
from blocktimesd.dataset import objects
from blocktimesd.dataset.layout import parse_file_name
from blocktimesd.dataset.object_files import ObjectFiles
from blocktimesd.dataset.objects import ObjectPath, data_location
from blocktimesd.dataset.records import COLUMNS, Row
from blocktimesd.dataset.repair import Repair
from blocktimesd.dataset.repair import apply as repair_apply
from blocktimesd.dataset.scan import (
    dataset_chains,
    durable_runs,
    durable_tail,
    last_durable_row,
    temp_files,
)
from blocktimesd.dataset.writer import DeleteFrom, ParquetWriter, Reconciliation, WriterSettings
from blocktimesd.errors import DataDirInUse
from tests.handmade import chain_rows
from tests.s3server import FaultProxy

PREFIX = "data/set"


@pytest.fixture
def s3(s3_bucket: str) -> Iterator[ObjectPath]:
    """``s3://<fresh bucket>/data/set``, with the process's S3 filesystem made anew from
    the test's AWS environment."""
    objects.reset_filesystem()
    yield ObjectPath(f"{s3_bucket}/{PREFIX}")
    objects.reset_filesystem()


def keys(s3: ObjectPath) -> list[str]:
    """Every key under the dataset, listed with boto3 (not the code under test)."""
    client: Any = boto3.client("s3")
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=s3.bucket, Prefix=s3.object_key + "/"
    )
    found = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return sorted(key.removeprefix(s3.object_key + "/") for key in found)


def stored_rows(s3: ObjectPath, chain: str) -> list[Row]:
    """The rows of ``chain``'s data files, downloaded with boto3 and read with pyarrow."""
    client: Any = boto3.client("s3")
    rows: list[Row] = []
    for key in keys(s3):
        if key.startswith(f"block_times/chain={chain}/") and key.endswith(".parquet"):
            body = client.get_object(Bucket=s3.bucket, Key=f"{s3.object_key}/{key}")["Body"]
            table = pq.read_table(pa.BufferReader(body.read()))
            columns = [table[c].to_pylist() for c in COLUMNS]
            rows.extend(Row(*values) for values in zip(*columns, strict=True))
    return sorted(rows, key=lambda row: row.block_number)


def settings(**changes: Any) -> WriterSettings:
    return WriterSettings(**{"max_rows": 40, "retry_initial": 0.05, "retry_cap": 0.2, **changes})


ROWS = chain_rows("consensus", [None, *([6000] * 149)])  # blocks 1-150, one day


async def write(s3: ObjectPath, rows: list[Row], **changes: Any) -> None:
    async with ParquetWriter(s3, settings(**changes)) as writer:
        for at in range(0, len(rows), 7):
            await writer.put(rows[at : at + 7])
        await writer.flush()


async def test_rows_come_back_exactly_once_from_s3(s3: ObjectPath) -> None:
    await write(s3, ROWS)
    assert stored_rows(s3, "consensus") == ROWS
    names = [key for key in keys(s3) if key.startswith("block_times/")]
    spans = [parse_file_name(key.rsplit("/", 1)[1]) for key in names]
    assert all(span is not None for span in spans)  # no temp object, no stranger
    assert sorted((s.first, s.last) for s in spans if s) == [
        (1, 40), (41, 80), (81, 120), (121, 150),
    ]  # fmt: skip
    assert ".blocktimesd.lease" not in keys(s3)  # released at close
    # What resume reads, from listings and footers.
    assert last_durable_row(s3, "consensus") == ROWS[-1]
    assert durable_tail(s3, "consensus", 45) == ROWS[-45:]
    assert durable_runs(s3, "consensus", Span(30, 200)) == [Span(30, 150)]
    assert dataset_chains(s3) == ["consensus"]
    assert temp_files(s3) == []


async def test_faults_of_the_store_lose_and_duplicate_nothing(
    s3: ObjectPath, s3_faulty: FaultProxy
) -> None:
    objects.reset_filesystem()
    s3_faulty.set_faults(slowdown=0.1, internal=0.05, reset=0.05, lost=0.05, seed=7)
    await write(s3, ROWS, checkpoint_s=0.01)
    s3_faulty.set_faults()
    assert sum(s3_faulty.counts.values()) > 0
    assert stored_rows(s3, "consensus") == ROWS
    assert last_durable_row(s3, "consensus") == ROWS[-1]


async def test_repair_removes_rows_from_a_block_on(s3: ObjectPath) -> None:
    await write(s3, ROWS)
    async with ParquetWriter(s3, settings()) as writer:
        await writer.put(DeleteFrom("consensus", 57))
        await writer.flush()
    assert stored_rows(s3, "consensus") == ROWS[:56]
    assert last_durable_row(s3, "consensus") == ROWS[55]
    assert temp_files(s3) == []
    assert not [key for key in keys(s3) if key.endswith(".tmp")]


async def test_reconciliation_lines_accumulate_in_one_object(s3: ObjectPath) -> None:
    for run in range(2):
        async with ParquetWriter(s3, settings()) as writer:
            for n in range(3):
                await writer.put(Reconciliation("auto-evm", {"run": run, "n": n}))
            await writer.flush()
    client: Any = boto3.client("s3")
    body = client.get_object(
        Bucket=s3.bucket, Key=f"{s3.object_key}/reconciliation/auto-evm.jsonl"
    )["Body"].read()
    assert [orjson.loads(line) for line in body.splitlines()] == [
        {"run": run, "n": n} for run in range(2) for n in range(3)
    ]


async def test_one_writer_per_prefix(s3: ObjectPath) -> None:
    async with ParquetWriter(s3, settings()):
        with pytest.raises(DataDirInUse) as caught:
            await ParquetWriter(s3, settings()).start()
        assert "--break-lease" in str(caught.value)
        assert ".blocktimesd.lease" in keys(s3)
    # Released: another writer may take it now.
    async with ParquetWriter(s3, settings()) as writer:
        await writer.put(ROWS[:3])
    assert stored_rows(s3, "consensus") == ROWS[:3]


def test_an_s3_url_is_an_object_path() -> None:
    where = data_location("s3://bucket-1/a/b/")
    assert isinstance(where, ObjectPath)
    assert (where.bucket, where.object_key, str(where)) == ("bucket-1", "a/b", "s3://bucket-1/a/b")
    with pytest.raises(TypeError):
        os.stat(where / "x")  # never a local file


async def test_an_interrupted_writer_leaves_a_prefix(s3: ObjectPath) -> None:
    """A writer cancelled mid-run (as a killed process would be, but for its lease)
    leaves rows 1..N for some N: what resume starts from."""
    writer = ParquetWriter(s3, settings(max_rows=10))
    await writer.start()
    for at in range(0, 100, 5):
        await writer.put(ROWS[at : at + 5])
    await asyncio.sleep(0.3)
    task = writer._task
    assert task is not None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    writer._lock.release()
    stored = stored_rows(s3, "consensus")
    assert stored == ROWS[: len(stored)]
    last = last_durable_row(s3, "consensus")
    assert last == (stored[-1] if stored else None)


@pytest.mark.parametrize(
    "argv",
    [
        ["validate"],
        ["report"],
        ["backfill", "--chain", "c", "--rpc", "ws://127.0.0.1:9", "--kind", "consensus",
         "--start", "1", "--end", "3", "--k", "0"],
    ],
    ids=["validate", "report", "backfill"],
)  # fmt: skip
def test_a_missing_bucket_is_a_usage_error_naming_it(
    s3_env: dict[str, str], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    objects.reset_filesystem()
    assert main([*argv, "--data", "s3://no-such-bucket-here/p"]) == 2
    err = capsys.readouterr().err
    assert "no-such-bucket-here" in err
    assert "Traceback" not in err


class FailAt(ObjectFiles):
    """Fails the ``at``-th call of ``operation`` (counting from 1), as a crash there."""

    def __init__(self, operation: str, at: int) -> None:
        super().__init__()
        self.operation, self.at, self.calls = operation, at, 0

    def _maybe_fail(self, operation: str) -> None:
        if operation == self.operation:
            self.calls += 1
            if self.calls == self.at:
                raise OSError(errno.EIO, "injected", operation)

    def unlink(self, path: Any) -> None:
        self._maybe_fail("unlink")
        super().unlink(path)

    def replace(self, source: Any, target: Any) -> None:
        self._maybe_fail("replace")
        super().replace(source, target)

    def write_new(self, path: Any, data: bytes) -> None:
        self._maybe_fail("write_new")
        super().write_new(path, data)


@pytest.mark.parametrize(
    ("operation", "at"),
    [("write_new", 1), ("unlink", 1), ("unlink", 2), ("replace", 1)],
)
async def test_a_repair_stopped_at_any_step_leaves_a_prefix(
    s3: ObjectPath, operation: str, at: int
) -> None:
    rows = ROWS[:120]
    await write(s3, rows)  # files 1-40, 41-80, 81-120
    repair = Repair("consensus", 60, buffered=0)
    failing = FailAt(operation, at)
    with pytest.raises(OSError, match="injected"):
        repair_apply(repair, s3, failing, row_group_rows=1000)
    visible = stored_rows(s3, "consensus")
    assert visible == rows[: len(visible)]  # a prefix, whatever the step
    assert len(visible) >= 40  # the file below the repair is never touched
    repair_apply(repair, s3, failing, row_group_rows=1000)  # the retry
    assert stored_rows(s3, "consensus") == rows[:59]
    assert not [key for key in keys(s3) if key.endswith(".tmp")]
