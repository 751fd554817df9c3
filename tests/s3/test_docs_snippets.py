"""The reading snippets of ``docs/runbook/object-storage.md``, run as written against
moto's S3 over a dataset the writer put there.

A snippet is a fenced block whose info string is ``python snippet=<name>``.  It is run
with two changes only: its example location ``my-bucket/blocktimes`` becomes the test's
bucket and prefix, and pyarrow's ``S3FileSystem`` is pointed at moto's endpoint (the
snippets name a region, as a reader of AWS would).  The Spark snippet is not run: there
is no Spark here.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped, unused-ignore]
import pyarrow.fs  # type: ignore[import-untyped, unused-ignore]
import pytest

from blocktimesd.dataset import objects
from blocktimesd.dataset.layout import utc_date
from blocktimesd.dataset.objects import ObjectPath
from blocktimesd.dataset.records import Row
from blocktimesd.dataset.writer import ParquetWriter, WriterSettings
from tests.handmade import T0, chain_rows

DOC = Path(__file__).resolve().parents[2] / "docs" / "runbook" / "object-storage.md"
EXAMPLE = "my-bucket/blocktimes"  # the location the snippets read
PREFIX = "ops/blocktimes"
_SNIPPET = re.compile(r"^```python snippet=(\S+)\n(.*?)^```$", re.DOTALL | re.MULTILINE)

# Two chains, each with blocks on both sides of midnight (two date partitions).
ROWS = [
    *chain_rows("consensus", [None, *([6000] * 29)], start_ms=T0 - 15 * 6000),
    *chain_rows("auto-evm", [None, *([6000] * 19)], start_ms=T0 - 5 * 6000),
]


def snippet(name: str) -> str:
    """The code of the document's snippet ``name`` (exactly one must exist)."""
    found: list[str] = [code for tag, code in _SNIPPET.findall(DOC.read_text()) if tag == name]
    assert len(found) == 1, f"{DOC} has {len(found)} snippets named {name}"
    return found[0]


def run(name: str, location: str) -> dict[str, Any]:
    """Run snippet ``name`` reading ``location`` instead of the example; its variables."""
    code = snippet(name)
    assert EXAMPLE in code, f"snippet {name} no longer reads {EXAMPLE}"
    namespace: dict[str, Any] = {"__name__": f"snippet_{name}"}
    exec(compile(code.replace(EXAMPLE, location), f"{DOC}:{name}", "exec"), namespace)
    return namespace


async def write(data_dir: ObjectPath) -> None:
    async with ParquetWriter(data_dir, WriterSettings(max_rows=8)) as writer:
        await writer.put(ROWS)
        await writer.flush()


@pytest.fixture
async def dataset(
    s3_bucket: str, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """``bucket/prefix`` of a dataset of :data:`ROWS` written by the writer, with a temp
    object beside the data files; pyarrow's ``S3FileSystem`` made to reach moto."""
    objects.reset_filesystem()
    await write(ObjectPath(f"{s3_bucket}/{PREFIX}"))
    temp = f"{PREFIX}/block_times/chain=consensus/date={utc_date(T0)}/.part-x.parquet.tmp"
    client: Any = boto3.client("s3")
    client.put_object(Bucket=s3_bucket, Key=temp, Body=b"not parquet")
    client.close()

    scheme, _, address = s3_env["AWS_ENDPOINT_URL"].partition("://")
    real = pyarrow.fs.S3FileSystem

    def to_moto(**options: Any) -> Any:
        options.update(region="us-east-1", endpoint_override=address, scheme=scheme)
        return real(**options)

    monkeypatch.setattr(pyarrow.fs, "S3FileSystem", to_moto)
    yield f"{s3_bucket}/{PREFIX}"
    objects.reset_filesystem()


def per_partition(rows: list[Row]) -> Counter[tuple[str, str]]:
    return Counter((row.chain, utc_date(row.timestamp_ms)) for row in rows)


def test_the_pyarrow_snippet_reads_one_chain_with_its_partition_columns(dataset: str) -> None:
    table = run("pyarrow", dataset)["table"]
    found = sorted(
        zip(
            table["block_number"].to_pylist(),
            table["chain"].to_pylist(),
            table["date"].to_pylist(),
            strict=True,
        )
    )
    expected = sorted(
        (row.block_number, row.chain, utc_date(row.timestamp_ms))
        for row in ROWS
        if row.chain == "consensus"
    )
    assert [(number, chain, str(date)) for number, chain, date in found] == expected
    assert len({date for _, _, date in found}) == 2


def test_the_offline_duckdb_snippet_counts_every_partition(dataset: str) -> None:
    rows = run("duckdb-offline", dataset)["rows"]
    assert Counter({(chain, str(date)): blocks for chain, date, blocks in rows}) == per_partition(
        ROWS
    )
