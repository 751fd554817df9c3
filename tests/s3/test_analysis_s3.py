"""``report`` and ``validate`` over a dataset in S3, read in place by DuckDB.

The same files are written to a local folder and uploaded byte for byte to moto's S3;
every table, figure aggregate and verdict must be equal for both homes (paths in the
text aside, which name the place the files live), with and without faults on the
way (throttling, server errors, connection resets).  A query of one chain opens only
that chain's objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fsspec.implementations.arrow import ArrowFile  # type: ignore[import-untyped]
from pyarrow.fs import FileSelector

from blocktimesd.analysis import s3
from blocktimesd.analysis.queries import Table, connect, rows_globs
from blocktimesd.analysis.report import ReportParams, build_report
from blocktimesd.analysis.report_html.queries import extras
from blocktimesd.analysis.validation import validate, verdict
from blocktimesd.dataset import objects
from blocktimesd.dataset.layout import ROWS
from blocktimesd.dataset.objects import DataPath, ObjectPath
from tests.handmade import HOUR, T0, write_rows
from tests.s3server import FaultProxy
from tests.test_report_html import simulate
from tests.test_validate import consensus, shift

PREFIX = "fleet/blocktimes"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated half day of both chains, with a stall, a gap and reorgs, and an
    impossible value in a third chain (so validate fails and names files)."""
    data_dir = tmp_path_factory.mktemp("local")
    simulate(data_dir, days=0.5)
    bad = [r._replace(chain="lab") for r in shift(consensus(), 4, -7000)]
    write_rows(data_dir, bad, per_file=3)
    return data_dir


def upload(local: Path, remote: ObjectPath) -> int:
    """Copy every file under ``local`` to ``remote``, byte for byte; how many."""
    fs = objects.filesystem()
    files = sorted(p for p in local.rglob("*") if p.is_file())
    for path in files:
        with fs.open_output_stream((remote / path.relative_to(local).as_posix()).key) as out:
            out.write(path.read_bytes())
    return len(files)


@pytest.fixture
def remote(s3_bucket: str, local: Path) -> Iterator[ObjectPath]:
    """``local``'s files in a fresh bucket, under a prefix."""
    objects.reset_filesystem()
    data_dir = ObjectPath(s3_bucket) / PREFIX
    upload(local, data_dir)
    yield data_dir
    objects.reset_filesystem()


@pytest.fixture
def faulty(remote: ObjectPath, s3_faulty: FaultProxy) -> Iterator[FaultProxy]:
    """The S3 reached through the fault proxy (faults still off), for ``remote``."""
    objects.reset_filesystem()
    yield s3_faulty
    objects.reset_filesystem()


def tables(found: list[Table] | tuple[Table, ...]) -> dict[str, list[dict[str, Any]]]:
    return {table.name: table.records() for table in found}


def report(data_dir: DataPath, **changes: Any) -> dict[str, list[dict[str, Any]]]:
    return tables(build_report(replace(ReportParams(data_dir), **changes)))


RANGES = [
    {},
    {"chains": ("auto-evm",)},
    {"chains": ("consensus", "lab"), "window": "day"},
    {"since_ms": T0 + 2 * HOUR, "until_ms": T0 + 5 * HOUR, "top": 3},
]


@pytest.mark.parametrize("changes", RANGES)
def test_report_equals_the_local_one(local: Path, remote: ObjectPath, changes: Any) -> None:
    here = report(local, **changes)
    assert here["summary"], "rows to compare"
    assert report(remote, **changes) == here


def test_html_aggregates_equal_the_local_ones(local: Path, remote: ObjectPath) -> None:
    def aggregates(data_dir: DataPath) -> Any:
        params = ReportParams(data_dir)
        con = connect()  # build_report makes it able to read data_dir
        build_report(params, con)
        return extras(con, params)

    here = aggregates(local)
    assert here.reorgs.files == 1
    assert here.reorgs.by_depth
    assert aggregates(remote) == here


def test_validate_equals_the_local_one(local: Path, remote: ObjectPath) -> None:
    here = validate(local)
    assert {(f["chain"], f["check_name"]) for f in here.failures} >= {
        ("lab", "non_positive_delta"),
        ("consensus", "missing_block_numbers"),
    }
    there = validate(remote)
    assert tables(there.tables) == tables(here.tables)
    # The advice names the files that hold the impossible values, where they live.
    text = verdict(remote, there)
    assert f"{remote}/{ROWS}/chain=lab/date=" in text
    # Equal but for where the files are (longer paths wrap the prose otherwise).
    assert text.split() == verdict(local, here).replace(str(local), str(remote)).split()


def test_scripts_take_the_url_as_data_dir(remote: ObjectPath) -> None:
    for chains in ((), ("lab",)):
        checks = validate(remote, chains).checks
        assert {r["chain"] for t in checks for r in t.records()} == set(
            chains or ("auto-evm", "consensus", "lab")
        )


FAULTS = [
    {"slowdown": 0.15, "internal": 0.05},
    {"reset": 0.1, "lost": 0.05},
]


@pytest.mark.parametrize("faults", FAULTS)
def test_equal_through_faults(
    local: Path, remote: ObjectPath, faulty: FaultProxy, faults: dict[str, float]
) -> None:
    faulty.set_faults(**faults, seed=3)
    there = report(remote)
    checked = validate(remote)
    injected = faulty.counts
    faulty.set_faults()
    assert sum(injected.values()) > 0, injected
    assert there == report(local)
    assert tables(checked.tables) == tables(validate(local).tables)


class _Counted(ArrowFile):  # type: ignore[misc]
    """A file of :class:`_Counting` that adds what is read to its filesystem's count."""

    def read(self, length: int = -1) -> bytes:
        data: bytes = self.stream.read(length)
        self.fs.read_bytes += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        length: int = self.stream.readinto(buffer)
        self.fs.read_bytes += length
        return length


class _Counting(s3.ObjectFilesystem):  # type: ignore[misc]
    """The S3 filesystem DuckDB is given, counting the objects opened and bytes read."""

    def __init__(self, fs: Any) -> None:
        super().__init__(fs)
        self.opened: list[str] = []
        self.read_bytes = 0

    def _open(self, path: str, *args: Any, **kwargs: Any) -> Any:
        handle = super()._open(path, *args, **kwargs)
        self.opened.append(path)
        handle.__class__ = _Counted
        return handle


def counting(
    monkeypatch: pytest.MonkeyPatch, data_dir: ObjectPath
) -> tuple[duckdb.DuckDBPyConnection, _Counting]:
    """A connection to ``data_dir`` whose S3 filesystem counts (what it was given)."""
    made: list[_Counting] = []

    def make(fs: Any) -> _Counting:
        made.append(_Counting(fs))
        return made[-1]

    monkeypatch.setattr(s3, "ObjectFilesystem", make)
    con = connect(data_dir)
    return con, made[0]


def object_sizes(data_dir: ObjectPath, chain: str) -> dict[str, int]:
    """The size of each data file of ``chain``, by its ``bucket/key``."""
    fs = objects.filesystem()
    infos = fs.get_file_info(FileSelector((data_dir / ROWS / f"chain={chain}").key, recursive=True))
    return {info.path: info.size for info in infos if info.path.endswith(".parquet")}


def test_reads_only_the_chains_asked_for(
    remote: ObjectPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    con, files = counting(monkeypatch, remote)
    sizes = object_sizes(remote, "auto-evm")
    [glob] = rows_globs(remote, ["auto-evm"])
    [(found,)] = con.execute(
        f"SELECT max(timestamp_ms) FROM read_parquet('{glob}', hive_partitioning = false)"
    ).fetchall()
    assert found is not None
    assert files.read_bytes > 0
    assert set(files.opened) == set(sizes)  # none of the other chains'


def test_hive_partitions_of_the_urls(remote: ObjectPath) -> None:
    con = connect(remote)
    [glob] = rows_globs(remote)
    found = con.execute(f"""
        SELECT "date", count(DISTINCT chain) FROM read_parquet('{glob}', hive_partitioning = true)
        GROUP BY ALL ORDER BY ALL""").fetchall()
    assert found == [(date(2025, 8, 1), 3)]


def test_an_unreadable_object_is_a_duckdb_error(remote: ObjectPath) -> None:
    fs = objects.filesystem()
    broken = remote / ROWS / "chain=lab" / "date=2025-08-01" / "part-90-99-ffff.parquet"
    with fs.open_output_stream(broken.key) as out:
        out.write(b"not parquet")
    # A report of another chain's windows opens none of lab's files.
    assert report(remote, chains=("consensus",), sections=("windows",))["windows"]
    with pytest.raises(duckdb.Error):
        report(remote)
