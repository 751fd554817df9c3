"""``blocktimesd validate`` and the SQL scripts it runs: every failure kind is found,
a clean dataset passes, and the scripts run as written through the real DuckDB CLI."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from blocktimesd.analysis.queries import SCRIPTS_DIR
from blocktimesd.analysis.validation import SCRIPTS, validate
from blocktimesd.commands.validate import add_validate_parser, run_validate
from blocktimesd.dataset.layout import file_name
from blocktimesd.dataset.records import Row
from blocktimesd.dataset.writer import ParquetWriter, WriterSettings
from blocktimesd.errors import InvalidDataFile
from tests.dataset.test_writer import run_unprivileged, shared_dir
from tests.handmade import chain_rows, domain_of, with_changes, write_file, write_rows

DELTAS = [None, 6000, 5500, 7000, 6000, 12000, 6000, 6500, 6000, 6000]


def consensus() -> list[Row]:
    return chain_rows("consensus", DELTAS, segments=[n % 4 == 0 for n in range(len(DELTAS))])


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_validate_parser(parser.add_subparsers(dest="command"), [])
    return parser.parse_args(["validate", *argv])


def failing(data_dir: Path) -> set[tuple[str, str]]:
    return {(f["chain"], f["check_name"]) for f in validate(data_dir).failures}


def shift(rows: list[Row], index: int, by: int) -> list[Row]:
    """Move row ``index``'s timestamp by ``by`` ms, its delta and the next one's along."""
    rows = list(rows)
    row = rows[index]
    delta = row.delta_since_parent_ms
    rows[index] = row._replace(
        timestamp_ms=row.timestamp_ms + by, delta_since_parent_ms=(delta or 0) + by
    )
    if index + 1 < len(rows):
        after = rows[index + 1]
        rows[index + 1] = after._replace(
            delta_since_parent_ms=(after.delta_since_parent_ms or 0) - by
        )
    return rows


async def test_clean_dataset_written_by_the_writer_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = consensus()
    async with ParquetWriter(tmp_path, WriterSettings(max_rows=4)) as writer:
        await writer.put(rows)
        await writer.put(domain_of(rows))
    result = validate(tmp_path)
    assert result.ok
    assert result.warnings == []
    statuses = {
        (r["chain"], r["check_name"]): r["status"] for t in result.checks for r in t.records()
    }
    assert set(statuses.values()) == {"ok"}
    assert ("consensus", "wrong_delta") in statuses
    assert ("auto-evm", "timestamp_disagreement") in statuses
    assert run_validate(parse("--data", str(tmp_path))) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(f"validate {tmp_path}: all checks passed")
    assert "Integrity checks" in out
    assert "Mapping checks" in out


def _duplicate(data_dir: Path, rows: list[Row]) -> None:
    write_rows(data_dir, rows)
    write_rows(data_dir, rows[4:5])  # block 5 again, in a second file


def _duplicate_hash(data_dir: Path, rows: list[Row]) -> None:
    write_rows(data_dir, with_changes(rows, 6, hash=rows[2].hash))


def _gap(data_dir: Path, rows: list[Row]) -> None:
    write_rows(data_dir, rows[:4] + rows[5:])


def _broken_link(data_dir: Path, rows: list[Row]) -> None:
    write_rows(data_dir, with_changes(rows, 5, parent_hash="0x" + "ee" * 32))


def _wrong_delta(data_dir: Path, rows: list[Row]) -> None:
    write_rows(data_dir, with_changes(rows, 5, delta_since_parent_ms=11999))


def _wrong_partition(data_dir: Path, rows: list[Row]) -> None:
    write_rows(data_dir, rows[:8])
    write_file(data_dir, "consensus", "2025-07-31", rows[8:])


def _zero_delta(data_dir: Path, rows: list[Row]) -> None:
    write_rows(data_dir, shift(rows, 3, -rows[3].delta_since_parent_ms))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_duplicate, {"duplicate_block_number", "duplicate_hash"}),
        (_duplicate_hash, {"duplicate_hash", "broken_parent_link"}),  # block 8's parent
        (_gap, {"missing_block_numbers"}),
        (_broken_link, {"broken_parent_link"}),
        (_wrong_delta, {"wrong_delta"}),
        (_wrong_partition, {"wrong_partition"}),
        (_zero_delta, {"non_positive_delta"}),
    ],
    ids=lambda value: getattr(value, "__name__", "")[1:],
)
def test_consensus_failures(
    tmp_path: Path, damage: Callable[[Path, list[Row]], None], expected: set[str]
) -> None:
    damage(tmp_path, consensus())
    assert failing(tmp_path) == {("consensus", check) for check in expected}


def _unmapped(rows: list[Row]) -> list[Row]:
    return with_changes(rows, 2, consensus_block_hash=None, consensus_block_number=None)


def _number_mismatch(rows: list[Row]) -> list[Row]:
    return with_changes(rows, 2, consensus_block_number=7)


def _late(rows: list[Row]) -> list[Row]:
    return shift(rows, 2, 1000)


def _shared(rows: list[Row]) -> list[Row]:
    source = rows[2]
    later = with_changes(rows, 3, consensus_block_hash=source.consensus_block_hash)
    return with_changes(later, 3, consensus_block_number=source.consensus_block_number)


def _orphaned_source(rows: list[Row]) -> list[Row]:
    return with_changes(rows, 2, consensus_block_hash="0x" + "0c" * 32)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_unmapped, {"null_mapping"}),
        (_number_mismatch, {"number_mismatch"}),
        (_late, {"timestamp_disagreement"}),
        (_shared, {"shared_source", "timestamp_disagreement"}),
        (_orphaned_source, {"source_missing"}),
    ],
    ids=lambda value: getattr(value, "__name__", "")[1:],
)
def test_mapping_failures(
    tmp_path: Path, damage: Callable[[list[Row]], list[Row]], expected: set[str]
) -> None:
    rows = consensus()
    write_rows(tmp_path, [*rows, *damage(domain_of(rows))])
    assert failing(tmp_path) == {("auto-evm", check) for check in expected}


def test_sources_beyond_the_consensus_rows_only_warn(tmp_path: Path) -> None:
    rows = consensus()
    write_rows(tmp_path, [*rows[:5], *domain_of(rows)])  # consensus 6.. not backfilled
    result = validate(tmp_path)
    assert result.ok
    assert [(w["check_name"], w["findings"], w["examples"]) for w in result.warnings] == [
        ("source_outside_dataset", 5, "[6, 7, 8, 9, 10]")
    ]


def test_delta_warnings(tmp_path: Path) -> None:
    rows = with_changes(consensus(), 6, delta_since_parent_ms=None)  # not recomputable
    rows = shift(rows, 8, -5700)  # 300 ms after its parent
    write_file(tmp_path, "consensus", "2025-08-01", rows)
    result = validate(tmp_path, settings={"expected_block_ms": 2000})
    assert {(f["check_name"], f["examples"]) for f in result.failures} == {("wrong_delta", "[7]")}
    assert {(w["check_name"], w["examples"]) for w in result.warnings} == {
        ("below_min_gap", "[9]"),
        ("null_delta", "[7]"),
        ("outliers", "[6, 10, 4, 8]"),  # > 6000 ms, the largest first
    }


async def test_run_validate_reports_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = consensus()
    write_rows(tmp_path, [*rows[:4], *rows[5:], *_late(domain_of(rows))])
    assert run_validate(parse("--data", str(tmp_path))) == 1
    out = capsys.readouterr().out
    assert "3 check(s) FAILED" in out
    assert "blocktimesd backfill" in out  # the disagreement's fix
    assert "  consensus: missing_block_numbers: 1 (e.g. [5..5])" in out
    assert "  auto-evm: timestamp_disagreement: 1 (e.g. [3])" in out
    assert run_validate(parse("--data", str(tmp_path), "--format", "json")) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert {f["check_name"] for f in document["failures"]} == {
        "missing_block_numbers",
        "timestamp_disagreement",
        "source_missing",  # domain block 5 names the missing consensus block 5
    }
    assert [(r["chain"], r["rows_on_disk"]) for r in document["integrity_0"]] == [
        ("auto-evm", 10),
        ("consensus", 9),
    ]
    # --chain limits the checks to that chain.
    assert run_validate(parse("--data", str(tmp_path), "--chain", "auto-evm")) == 1
    assert "consensus: missing" not in capsys.readouterr().out


def test_impossible_values_fail_naming_the_blocks_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = consensus()
    # Consensus block 5 stamped 100 ms before its parent (block 4, the last of the first
    # file); domain block 3 a second after its consensus block.
    forged = shift(rows, 4, -6100)
    paths = write_rows(tmp_path, [*forged, *_late(domain_of(rows[:3]))], per_file=4)
    assert failing(tmp_path) == {
        ("consensus", "non_positive_delta"),
        ("auto-evm", "timestamp_disagreement"),
    }
    assert run_validate(parse("--data", str(tmp_path))) == 1
    out = capsys.readouterr().out
    verdict = out[out.index(f"validate {tmp_path}: 2 check(s) FAILED") :]
    consensus_files = sorted(str(p) for p in paths if "chain=consensus" in str(p))
    for line in [  # commands and paths on lines of their own, to be copied
        "  consensus: non_positive_delta: 1 (e.g. [5])",
        # The parent's timestamp may be the forged one: its file (1..4) goes too.
        f"      {consensus_files[0]}",
        f"      {consensus_files[1]}",
        f"      blocktimesd backfill --data {tmp_path} --chain consensus --start 1 --end 8",
        "  auto-evm: timestamp_disagreement: 1 (e.g. [3])",
        f"      blocktimesd backfill --data {tmp_path} --chain auto-evm --start 1 --end 3",
    ]:
        assert line in verdict.splitlines(), line
    prose = " ".join(verdict.split())
    assert "1 block(s) stamped at or before their parent." in prose
    assert "1 domain block(s) whose timestamp differs from their consensus block's." in prose
    assert "Blocks: [5]." in prose
    assert "Blocks: [3]." in prose
    assert consensus_files[2] not in verdict  # blocks 9 and 10 are fine
    assert run_validate(parse("--data", str(tmp_path), "--format", "json")) == 1
    failures = json.loads(capsys.readouterr().out)["failures"]
    commands = {f["check_name"]: [a for a in f["advice"] if "backfill" in a] for f in failures}
    assert commands == {
        "non_positive_delta": [
            f"  blocktimesd backfill --data {tmp_path} --chain consensus --start 1 --end 8"
        ],
        "timestamp_disagreement": [
            f"  blocktimesd backfill --data {tmp_path} --chain auto-evm --start 1 --end 3"
        ],
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "{tmp}/absent"], "does not exist"),
        (["--data", "{tmp}"], "no Parquet files under"),
        (["--data", "{tmp}/data", "--chain", "nope"], "no rows of chain nope"),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write_rows(tmp_path / "data", consensus())
    args = parse(*(arg.format(tmp=tmp_path) for arg in argv))
    assert run_validate(args) == 2
    assert message in capsys.readouterr().err


def _renamed(paths: list[Path]) -> Path:
    """The first file renamed to claim far more blocks than it holds (1..5)."""
    liar = paths[0].with_name(file_name(1, 999_999_999, "0badc0de"))
    paths[0].rename(liar)
    return liar


def _truncated(paths: list[Path]) -> Path:
    paths[-1].write_bytes(paths[-1].read_bytes()[:-50])
    return paths[-1]


def _stranger(paths: list[Path]) -> Path:
    """A copy under a name the writer never gives: the daemon skips it, DuckDB reads it."""
    copy = paths[0].with_name("copy.parquet")
    copy.write_bytes(paths[0].read_bytes())
    return copy


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_renamed, "its name says blocks 1..999999999, but it holds blocks 1..5"),
        (_truncated, "it cannot be read as Parquet"),
        (_stranger, "its name is not part-<first>-<last>-<token>.parquet"),
    ],
    ids=lambda value: getattr(value, "__name__", "")[1:],
)
def test_a_file_that_cannot_be_trusted_is_named_with_the_fix(
    tmp_path: Path,
    damage: Callable[[list[Path]], Path],
    problem: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = damage(write_rows(tmp_path, consensus(), per_file=5))
    with pytest.raises(InvalidDataFile, match="Move it out of"):
        validate(tmp_path)
    assert run_validate(parse("--data", str(tmp_path))) == 1
    err = capsys.readouterr().err
    assert f"{bad}: {problem}" in err
    assert f"Move it out of {tmp_path} (or delete it), then run `blocktimesd validate`" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("unreadable", ["parent", "chain", "file"])
def test_an_unreadable_data_dir_exits_2_with_the_path(unreadable: str) -> None:
    with shared_dir() as shared:
        data = shared / "locked" / "data"
        (path,) = write_rows(data, consensus())
        locked = {
            "parent": shared / "locked",
            "chain": data / "block_times" / "chain=consensus",
            "file": path,
        }[unreadable]
        locked.chmod(0)
        done = run_unprivileged("validate", "--data", str(data))
    assert done.returncode == 2, done.stderr
    assert "Permission denied (EACCES); give the user running blocktimesd read permission" in (
        done.stderr
    )
    cannot = data if unreadable == "parent" else locked
    assert f"blocktimesd: cannot read {cannot}:" in done.stderr
    assert "Traceback" not in done.stderr


# -- the scripts through the plain DuckDB CLI --------------------------------------------


def duckdb_cli() -> str:
    beside = Path(sys.executable).with_name("duckdb")  # pip install duckdb-cli
    found = str(beside) if beside.exists() else shutil.which("duckdb")
    if found is None:
        pytest.skip("no duckdb CLI: pip install duckdb-cli (a test dependency)")
    return found


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_run_in_the_duckdb_cli(tmp_path: Path, script: str) -> None:
    rows = consensus()
    write_rows(tmp_path / "elsewhere", [*rows[:4], *rows[5:], *_late(domain_of(rows))])
    done = subprocess.run(
        [
            duckdb_cli(),
            "-csv",
            "-cmd",
            f"SET VARIABLE data_dir = '{tmp_path / 'elsewhere'}'",
            "-f",
            str(SCRIPTS_DIR / script),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    expected = {
        "validate_integrity.sql": "consensus,missing_block_numbers,FAIL,1,[5..5]",
        "validate_deltas.sql": "consensus,non_positive_delta,ok,0,",
        "validate_mapping.sql": "auto-evm,timestamp_disagreement,FAIL,1,[3]",
    }
    assert expected[script] in done.stdout.splitlines()


def test_scripts_default_to_data_in_the_working_directory(tmp_path: Path) -> None:
    write_rows(tmp_path / "data", consensus())
    done = subprocess.run(
        [duckdb_cli(), "-csv", "-f", str(SCRIPTS_DIR / "validate_integrity.sql")],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "consensus,wrong_delta,ok,0," in done.stdout.splitlines()
    chains = subprocess.run(
        [
            duckdb_cli(),
            "-csv",
            "-cmd",
            "SET VARIABLE chains = ['auto-evm']",
            "-f",
            str(SCRIPTS_DIR / "validate_integrity.sql"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=60,
    )
    assert chains.returncode == 0, chains.stderr
    assert "consensus" not in chains.stdout
