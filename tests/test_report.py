"""``blocktimesd report`` on hand-made datasets: exact aggregates, then the formats."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from blocktimesd.analysis.report import SECTIONS, ReportParams, build_report
from blocktimesd.cli import build_parser, main
from blocktimesd.commands.report import add_report_parser, parse_time, run_report
from tests.dataset.test_writer import run_unprivileged, shared_dir
from tests.handmade import HOUR, T0, block_hash, chain_rows, domain_of, with_changes, write_rows


def report(data_dir: Path, **changes: Any) -> dict[str, list[dict[str, Any]]]:
    params = replace(ReportParams(data_dir), **changes)
    return {table.name: table.records() for table in build_report(params)}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_report_parser(parser.add_subparsers(dest="command"), [])
    return parser.parse_args(["report", *argv])


# Ten deltas of 1..10 s: nearest-rank p50 is the 5th, p90 the 9th, p99 the 10th.
TEN = [None, *(1000 * k for k in range(1, 11))]


@pytest.fixture
def ten(tmp_path: Path) -> Path:
    write_rows(tmp_path, chain_rows("consensus", TEN))
    return tmp_path


def test_distribution_on_known_values(ten: Path) -> None:
    out = report(ten, expected_block_ms=2000, outlier_factor=3, stall_ms=8000)
    [summary] = out["summary"]
    deltas = [1000 * k for k in range(1, 11)]
    assert summary == {
        "chain": "consensus",
        "blocks": 11,
        "first_block": 1,
        "last_block": 11,
        "first_time": "2025-08-01T00:00:00Z",
        "last_time": "2025-08-01T00:00:55Z",
        "deltas": 10,
        "mean_ms": 5500.0,
        "p50_ms": 5000,
        "p90_ms": 9000,
        "p99_ms": 10000,
        "max_ms": 10000,
        "stddev_ms": round(statistics.stdev(deltas), 3),
        "outliers": 4,  # > 6000 ms
        "stalls": 2,  # > 8000 ms
        "missing_blocks": 0,
        "non_positive_deltas": 0,
        "timestamp_disagreements": 0,
    }
    [window] = out["windows"]
    assert window["window_start"] == "2025-08-01T00:00:00Z"
    assert (window["p50_ms"], window["p90_ms"], window["p99_ms"]) == (5000, 9000, 10000)
    assert window["rolling_mean_ms"] == 5500.0


def test_outliers_and_stalls_list_the_rows_with_their_hashes(ten: Path) -> None:
    out = report(ten, expected_block_ms=2000, outlier_factor=3, stall_ms=8000, top=2)
    assert [(r["block_number"], r["delta_ms"], r["hash"]) for r in out["outliers"]] == [
        (11, 10000, block_hash("consensus", 11)),
        (10, 9000, block_hash("consensus", 10)),
    ]
    assert out["outliers"][0]["time"] == "2025-08-01T00:00:55.000Z"
    assert [(r["block_number"], r["parent_time"], r["delta_ms"]) for r in out["stalls"]] == [
        (10, "2025-08-01T00:00:36.000Z", 9000),
        (11, "2025-08-01T00:00:45.000Z", 10000),
    ]


def test_no_outliers_no_stalls(ten: Path) -> None:
    out = report(ten)  # 6000 x 3 = 18 s, stalls 60 s: none here
    assert out["outliers"] == out["stalls"] == []
    assert (out["summary"][0]["outliers"], out["summary"][0]["stalls"]) == (0, 0)


def test_windows_and_rolling_mean(tmp_path: Path) -> None:
    # Blocks at 0:00, 0:30, 1:00, 1:10, then 4:10 (hours 2 and 3 have no blocks).
    deltas = [None, HOUR // 2, HOUR // 2, HOUR // 6, 3 * HOUR]
    write_rows(tmp_path, chain_rows("consensus", deltas))
    out = report(tmp_path, rolling=2)
    got = [
        (w["window_start"][11:16], w["blocks"], w["mean_ms"], w["rolling_mean_ms"])
        for w in out["windows"]
    ]
    assert got == [
        ("00:00", 2, 1_800_000.0, 1_800_000.0),
        ("01:00", 2, 1_200_000.0, 1_400_000.0),  # (30 + 30 + 10 min) / 3
        ("04:00", 1, 10_800_000.0, 10_800_000.0),  # hour 3 has no blocks, hour 2 neither
    ]
    daily = report(tmp_path, window="day")["windows"]
    assert [(w["window_start"], w["blocks"], w["deltas"]) for w in daily] == [
        ("2025-08-01T00:00:00Z", 5, 4)
    ]


def test_segment_split(tmp_path: Path) -> None:
    deltas = [None, 6000, 7000, 20000, 5000]
    segments = [True, False, True, True, False]
    write_rows(tmp_path, chain_rows("consensus", deltas, segments=segments))
    write_rows(tmp_path, domain_of(chain_rows("consensus", deltas)))
    rows = report(tmp_path)["segments"]
    got = [
        (r["segment_headers"], r["blocks"], r["deltas"], r["mean_ms"], r["max_ms"]) for r in rows
    ]
    assert got == [(False, 2, 2, 5500.0, 6000), (True, 3, 2, 13500.0, 20000)]
    assert {r["chain"] for r in rows} == {"consensus"}


@pytest.mark.parametrize("per_file", [1, 3, 1000])
def test_gaps(tmp_path: Path, per_file: int) -> None:
    rows = [
        r for r in chain_rows("consensus", [None, *[6000] * 11]) if r.block_number not in (4, 5, 9)
    ]
    write_rows(tmp_path, rows, per_file=per_file)
    out = report(tmp_path)
    assert out["summary"][0]["missing_blocks"] == 3
    assert [(g["first_missing"], g["last_missing"], g["missing"]) for g in out["gaps"]] == [
        (4, 5, 2),
        (9, 9, 1),
    ]
    assert out["gaps"][0]["after_time"] == "2025-08-01T00:00:12.000Z"  # block 3
    assert out["gaps"][0]["before_time"] == "2025-08-01T00:00:30.000Z"  # block 6


def test_gaps_with_duplicates_and_overlapping_files(tmp_path: Path) -> None:
    rows = chain_rows("consensus", [None, *[6000] * 9])
    write_rows(tmp_path, [r for r in rows if r.block_number != 7], per_file=4)
    write_rows(tmp_path, rows[2:4])  # blocks 3 and 4 again, in a file overlapping others
    out = report(tmp_path)
    assert [(g["first_missing"], g["last_missing"]) for g in out["gaps"]] == [(7, 7)]
    assert out["summary"][0]["blocks"] == 11


def test_cross_chain_latency_zero_when_healthy(tmp_path: Path) -> None:
    consensus = chain_rows("consensus", [None, 6000, 12000, 6000])
    write_rows(tmp_path, [*consensus, *domain_of(consensus)])
    out = report(tmp_path)
    assert out["cross_chain"] == [
        {
            "chain": "auto-evm",
            "blocks": 4,
            "mapped": 4,
            "unmapped": 0,
            "matched": 4,
            "source_not_on_disk": 0,
            "number_mismatch": 0,
            "min_ms": 0,
            "mean_ms": 0.0,
            "p50_ms": 0,
            "p99_ms": 0,
            "max_ms": 0,
            "nonzero": 0,
        }
    ]
    assert out["latency"] == []


def test_cross_chain_latency_findings(tmp_path: Path) -> None:
    consensus = chain_rows("consensus", [None, *[6000] * 5])
    domain = domain_of(consensus)
    domain = with_changes(domain, 1, timestamp_ms=domain[1].timestamp_ms + 1500)
    domain = with_changes(domain, 2, timestamp_ms=domain[2].timestamp_ms - 250)
    domain = with_changes(domain, 3, consensus_block_hash=None, consensus_block_number=None)
    domain = with_changes(domain, 4, consensus_block_hash="0x" + "ab" * 32)
    domain = with_changes(domain, 5, consensus_block_number=99)
    write_rows(tmp_path, [*consensus, *domain])
    out = report(tmp_path)
    [xc] = out["cross_chain"]
    assert (xc["blocks"], xc["mapped"], xc["unmapped"], xc["matched"]) == (6, 5, 1, 4)
    assert (xc["source_not_on_disk"], xc["number_mismatch"], xc["nonzero"]) == (1, 1, 2)
    disagreements = {s["chain"]: s["timestamp_disagreements"] for s in out["summary"]}
    assert disagreements == {"auto-evm": 2, "consensus": 0}
    assert (xc["min_ms"], xc["max_ms"], xc["p50_ms"]) == (-250, 1500, 0)
    assert [
        (r["block_number"], r["consensus_block_number"], r["latency_ms"]) for r in out["latency"]
    ] == [
        (2, 2, 1500),
        (3, 3, -250),
    ]


def impossible(tmp_path: Path) -> Path:
    """Consensus blocks 3 and 4 stamped at and before their parents; domain block 2
    1.5 s after its consensus block (domain 1 and 2 map consensus 1 and 2)."""
    consensus = chain_rows("consensus", [None, 6000, 0, -1000, 6000])
    domain = domain_of(consensus[:2])
    domain = with_changes(domain, 1, timestamp_ms=domain[1].timestamp_ms + 1500)
    write_rows(tmp_path, [*consensus, *domain])
    return tmp_path


def test_summary_counts_impossible_values(tmp_path: Path) -> None:
    out = report(impossible(tmp_path), sections=("summary",))
    counts = {
        s["chain"]: (s["non_positive_deltas"], s["timestamp_disagreements"]) for s in out["summary"]
    }
    assert counts == {"auto-evm": (0, 1), "consensus": (2, 0)}


def test_since_until_and_chain_select_rows(tmp_path: Path) -> None:
    consensus = chain_rows("consensus", [None, *[HOUR] * 5])  # one block an hour
    write_rows(tmp_path, [*consensus, *domain_of(consensus)])
    out = report(tmp_path, since_ms=T0 + HOUR, until_ms=T0 + 4 * HOUR, chains=("consensus",))
    assert [(s["chain"], s["first_block"], s["last_block"]) for s in out["summary"]] == [
        ("consensus", 2, 4)
    ]
    assert out["cross_chain"] == []
    domain_only = report(tmp_path, since_ms=T0 + 5 * HOUR, chains=("auto-evm",))
    # The consensus rows are read for the join whatever the selection says.
    assert domain_only["cross_chain"][0]["matched"] == 1


def test_empty_selection(ten: Path) -> None:
    out = report(ten, since_ms=T0 + 10 * HOUR)
    assert all(out[name] == [] for name in SECTIONS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-08-01T00:00:00Z", T0),
        ("2025-08-01", T0),
        ("2025-08-01T01:00:00", T0 + HOUR),
        ("2025-08-01T02:00:00+01:00", T0 + HOUR),
        ("2025-08-01T00:00:00.250Z", T0 + 250),
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text) == expected


def test_parse_time_rejects_garbage() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a UTC date-time"):
        parse_time("yesterday")


# -- the command: formats, exit codes ----------------------------------------------------


@pytest.fixture
def both(tmp_path: Path) -> Path:
    consensus = chain_rows("consensus", [None, 6000, 70000, 5000], segments=[0, 1, 0, 0])
    write_rows(tmp_path, [*consensus, *domain_of(consensus)])
    return tmp_path


def test_table_format(both: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_report(parse("--data", str(both))) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"blocktimesd report: {both} (all chains;")
    for title in ("Per chain: deltas", "Stalls: deltas > 60 s", "Cross-chain latency"):
        assert title in out
    assert "IMPOSSIBLE" not in out
    lines = out.splitlines()
    header = (
        lines.index("Per chain: deltas (ms), outliers, stalls, missing blocks, impossible values")
        + 2
    )
    # Aligned: the dashes under each column are as wide as the column.
    widths = [len(dashes) for dashes in lines[header + 1].split("  ")]
    names = lines[header].split()
    assert len(names) == len(widths) == 18
    assert all(len(name) <= width for name, width in zip(names, widths, strict=True))


def test_json_format(both: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_report(parse("--data", str(both), "--format", "json", "--window", "day")) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(SECTIONS) <= set(document)
    assert document["report"]["window"] == "day"
    assert document["report"]["data_dir"] == str(both)
    assert {s["chain"]: s["stalls"] for s in document["summary"]} == {"auto-evm": 1, "consensus": 1}
    assert document["stalls"][0]["delta_ms"] == 70000
    assert (document["report"]["first_time"], document["report"]["last_time"]) == (
        "2025-08-01T00:00:00.000Z",
        "2025-08-01T00:01:21.000Z",
    )


def test_impossible_values_in_the_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(impossible(tmp_path))
    assert run_report(parse("--data", data, "--format", "json")) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert {s["chain"]: s["non_positive_deltas"] for s in summary} == {
        "auto-evm": 0,
        "consensus": 2,
    }
    assert {s["chain"]: s["timestamp_disagreements"] for s in summary} == {
        "auto-evm": 1,
        "consensus": 0,
    }
    assert run_report(parse("--data", data, "--format", "csv", "--section", "summary")) == 0
    rows = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert [(r["chain"], r["non_positive_deltas"], r["timestamp_disagreements"]) for r in rows] == [
        ("auto-evm", "0", "1"),
        ("consensus", "2", "0"),
    ]
    assert run_report(parse("--data", data)) == 0
    heading = capsys.readouterr().out.splitlines()[1]
    assert heading.startswith(
        "IMPOSSIBLE VALUES (auto-evm: 1 timestamp disagreement(s); consensus: 2 non-positive "
        "delta(s)): "
    )
    assert "`blocktimesd validate` names the blocks and the fix" in heading


@pytest.mark.parametrize(
    ("argv", "span"),
    [
        ([], "all data, 2025-08-01T00:00:00.000Z .. 2025-08-01T00:01:21.000Z;"),
        (
            ["--since", "2025-08-01T00:00:05Z"],
            " 2025-08-01T00:00:05.000Z .. 2025-08-01T00:01:21.000Z;",
        ),
        (
            ["--until", "2025-08-02"],
            " 2025-08-01T00:00:00.000Z .. before 2025-08-02T00:00:00.000Z;",
        ),
        (["--since", "2025-08-02"], " no rows from 2025-08-02T00:00:00.000Z;"),
    ],
)
def test_heading_names_the_span_of_the_data(
    both: Path, argv: list[str], span: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_report(parse("--data", str(both), *argv)) == 0
    heading = capsys.readouterr().out.splitlines()[0]
    assert span in heading
    assert "start .." not in heading
    assert ".. end" not in heading


def option_helps(command: str, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """``blocktimesd <command> --help``: each option's help text, whitespace normalized."""
    assert main([command, "--help"]) == 0
    options = capsys.readouterr().out.split("\noptions:\n", 1)[1]
    helps = {}
    for entry in re.split(r"\n(?=  -)", options):
        invocation, *text = re.split(r"\s{2,}", entry.strip(), maxsplit=1)
        helps[re.findall(r"--[a-z-]+", invocation)[0]] = " ".join(" ".join(text).split())
    return helps


@pytest.mark.parametrize("command", ["report", "validate"])
def test_every_option_has_help_and_states_its_true_default_once(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    helps = option_helps(command, capsys)
    defaults = build_parser().parse_args([command])
    assert {"--data", "--chain", "--format", "--top"} <= set(helps)
    for option, text in helps.items():
        if option == "--help":
            continue
        assert text.count("(default") == 1, (option, text)
        assert "(default: None)" not in text, option
        default = getattr(defaults, option.removeprefix("--").replace("-", "_"), None)
        if default is not None:
            assert text.endswith(f"(default: {default})"), (option, text)


def test_csv_format(both: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_report(parse("--data", str(both), "--format", "csv")) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["chain"], r["window_start"], r["blocks"]) for r in rows] == [
        ("auto-evm", "2025-08-01T00:00:00Z", "4"),
        ("consensus", "2025-08-01T00:00:00Z", "4"),
    ]
    assert run_report(parse("--data", str(both), "--format", "csv", "--section", "segments")) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["segment_headers"], r["deltas"], r["stddev_ms"]) for r in rows] == [
        ("false", "2", "45961.941"),  # 70000 and 5000
        ("true", "1", ""),
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--chain", "nope"], "no rows of chain nope"),
        (["--format", "csv", "--section", "gaps", "--section", "stalls"], "exactly one --section"),
        (["--since", "2025-08-02", "--until", "2025-08-01"], "--since must be before --until"),
    ],
)
def test_usage_errors(
    both: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_report(parse("--data", str(both), *argv)) == 2
    assert message in capsys.readouterr().err


def test_missing_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_report(parse("--data", str(tmp_path / "absent"))) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_report(parse("--data", str(tmp_path))) == 2
    assert "no Parquet files under" in capsys.readouterr().err


def test_a_damaged_file_is_named_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    *_, newest = write_rows(tmp_path, chain_rows("consensus", TEN), per_file=4)
    newest.write_bytes(newest.read_bytes()[:-50])
    assert run_report(parse("--data", str(tmp_path))) == 1
    err = capsys.readouterr().err
    assert f"cannot trust this file in {tmp_path}: {newest}: it cannot be read as Parquet" in err
    assert "Move it out of" in err


@pytest.mark.parametrize("unreadable", ["parent", "file"])
def test_an_unreadable_data_dir_exits_2_with_the_path(unreadable: str) -> None:
    with shared_dir() as shared:
        data = shared / "locked" / "data"
        (path,) = write_rows(data, chain_rows("consensus", TEN))
        locked = shared / "locked" if unreadable == "parent" else path
        locked.chmod(0)
        done = run_unprivileged("report", "--data", str(data))
    assert done.returncode == 2, done.stderr
    assert f"blocktimesd: cannot read {data if unreadable == 'parent' else path}:" in done.stderr
    assert "Permission denied (EACCES); give the user running blocktimesd read permission" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


def test_data_dir_from_environment(
    both: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATA_DIR", str(both))
    assert run_report(parse("--section", "summary", "--format", "json")) == 0
    assert len(json.loads(capsys.readouterr().out)["summary"]) == 2
