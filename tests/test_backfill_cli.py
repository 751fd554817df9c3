"""``blocktimesd backfill`` usage errors: found before connecting to any node, exit 2,
told in the terms the user typed."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from blocktimesd.backfill.engine import ChainResult
from blocktimesd.cli import main
from blocktimesd.commands.backfill import _jobs, add_backfill_arguments, run_backfill, summary
from blocktimesd.config.load import build_config
from blocktimesd.config.model import MAINNET
from blocktimesd.core.chains import ChainKind
from blocktimesd.core.ranges import Span
from blocktimesd.dataset.layout import CHAIN_NAME_RULE
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams

NOWHERE = "ws://127.0.0.1:1"  # nothing listens: a run that connects waits 60 s, then fails


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_backfill_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATA_DIR", "K_CONSENSUS", "K_AUTO_EVM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONSENSUS_RPC_WS", NOWHERE)
    monkeypatch.setenv("AUTO_EVM_RPC_WS", NOWHERE)


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--start", "10", "--end", "5"), "--end 5 is below --start 10"),
        (
            ("--start", "2025-08-02", "--end", "2025-08-01T12:00:00Z"),
            "--end 2025-08-01T12:00:00Z is not after --start 2025-08-02",
        ),
        (
            ("--start", "2025-08-02", "--end", "2025-08-02T00:00:00Z"),
            "--end 2025-08-02T00:00:00Z is not after --start 2025-08-02",
        ),
        (
            ("--chain", "a/b", "--rpc", NOWHERE, "--start", "1", "--end", "3", "--k", "0"),
            "--chain: 'a/b' is not a usable chain name",
        ),
        (
            ("--chain", "x", "--rpc", "http://127.0.0.1:1", "--start", "1", "--end", "3"),
            "--rpc: 'http://127.0.0.1:1' is not a ws:// or wss:// URL",
        ),
        (
            f"--chain x --rpc {NOWHERE} --consensus-rpc {NOWHERE} --start 1 --end 3".split(),
            "--consensus-rpc: only an auto-evm chain",
        ),
    ],
)
async def test_usage_errors_exit_2_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    started = time.monotonic()
    code = await asyncio.wait_for(run_backfill(parse("--data", str(tmp_path), *argv)), 20)
    assert code == 2
    assert time.monotonic() - started < 5  # nothing waited for a node
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_an_ad_hoc_chain_name_follows_the_dataset_rule(tmp_path: Path) -> None:
    """The command as typed: a usage error naming the rule, no traceback."""
    argv = ["--chain", "a/b", "--rpc", NOWHERE, "--start", "1", "--end", "3", "--k", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "blocktimesd", "backfill", "--data", str(tmp_path), *argv],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert f"--chain: 'a/b' is not a usable chain name; use {CHAIN_NAME_RULE}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5:1", "--backfill-range 5:1: the end 1 is below the start 5"),
        ("2025-08-02:2025-08-01", "--backfill-range 2025-08-02:2025-08-01: the end"),
    ],
)
def test_backfill_range_errors_speak_of_backfill_range(
    capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    assert main(["--backfill-range", text]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "--start" not in err
    assert "--end" not in err


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        ("generic", "ws://127.0.0.1:9944"),
        ("consensus", MAINNET[ChainKind.CONSENSUS].endpoint),
        ("auto-evm", "ws://127.0.0.1:9944"),
    ],
)
def test_an_ad_hoc_chain_is_what_the_same_chains_table_gives(kind: str, url: str) -> None:
    config = build_config({}, {})
    (job,) = _jobs(parse("--chain", "x", "--rpc", url, "--kind", kind, "--start", "1",
                         "--end", "2"), config)  # fmt: skip
    table = build_config({"chains": [{"name": "x", "kind": kind, "endpoints": [url]}]}, {})
    assert job.chain == table.chains[0]  # depth, domains, mainnet checks: one rule
    (job,) = _jobs(parse("--chain", "x", "--rpc", url, "--kind", kind, "--start", "1",
                         "--end", "2", "--k", "0"), config)  # fmt: skip
    assert job.chain.k == 0


def test_the_consensus_of_an_ad_hoc_domain_is_what_a_chains_table_gives() -> None:
    (job,) = _jobs(parse("--chain", "evm", "--rpc", "ws://127.0.0.1:9944", "--kind", "auto-evm",
                         "--consensus-rpc", "ws://127.0.0.1:9945", "--start", "1", "--end", "2"),
                   build_config({}, {}))  # fmt: skip
    table = build_config(
        {"chains": [{"kind": "consensus", "endpoints": ["ws://127.0.0.1:9945"]}]}, {}
    )
    assert job.consensus == table.chains[0]


async def test_date_times_with_no_block_between_them_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    devnet = Devnet(ChainParams(seed=7, history=200, fork_rate=0.0, stall_every_s=0))
    async with devnet as urls:
        monkeypatch.setenv("CONSENSUS_RPC_WS", urls.consensus)
        stamp = devnet.network.consensus.canonical[120].timestamp_ms
        assert stamp is not None
        start, end = iso(stamp + 1), iso(stamp + 2)  # between blocks 120 and 121
        argv = f"--chain consensus --start {start} --end {end} --k 20".split()
        code = await run_backfill(parse("--data", str(tmp_path), *argv))
    assert code == 0
    assert not (tmp_path / "block_times").exists()
    assert "consensus: nothing to backfill" in capsys.readouterr().err


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize(
    ("argv", "message", "not_typed"),
    [
        (["--backfill-range", "5:1"], "--backfill-range 5:1: the end 1 is below the start 5",
         ["--start", "--end"]),
        (["backfill", "--backfill-range", "5:1"],
         "--backfill-range 5:1: the end 1 is below the start 5", ["--start", "--end"]),
        (["backfill", "--start", "10", "--end", "5"], "--end 5 is below --start 10",
         ["--backfill-range"]),
        (["backfill", "--backfill-range", "1:5", "--count", "3"],
         "--backfill-range 1:5 gives both ends", []),
        (["backfill", "--start", "1"], "--start 1: give its end with either --end M or --count C",
         ["--backfill-range"]),
        (["backfill", "--start", "1", "--end", "5", "--count", "3"], "not both",
         ["--backfill-range"]),
        (["backfill", "--end", "5"], "which blocks?", []),
    ],
)  # fmt: skip
def test_range_errors_exit_2_at_once_naming_what_was_typed(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
    not_typed: list[str],
) -> None:
    started = time.monotonic()
    assert main([*argv, "--data", str(tmp_path)]) == 2
    assert time.monotonic() - started < 5  # no node was asked
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    for flag in not_typed:
        assert flag not in err


def test_every_backfill_flag_has_help_and_its_true_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["backfill", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--backfill-range START:END" in text
    assert "(default: K)" not in text
    for raw in ("MAX_INFLIGHT", "BATCH_SIZE", "WINDOW", "{"):
        assert raw not in text.split("options:")[1].replace("{DEBUG,INFO,WARNING,ERROR}", "")
    parser = argparse.ArgumentParser()
    add_backfill_arguments(parser)
    unbounded = {"start", "end", "count", "backfill_range"}  # what the user must give
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help, action.dest
        if action.dest in unbounded:
            continue
        assert "(default: " in action.help, action.dest
        if action.default is not None:
            assert f"(default: {action.default})" in action.help, action.dest


def test_counts_in_the_summary_agree_with_their_nouns() -> None:
    one = summary(ChainResult("consensus", Span(5, 5), written=1, skipped=1, unresolved=1,
                              not_later=1))  # fmt: skip
    assert "1 row written, 1 block already in the dataset, 1 row without" in one
    assert "1 block stamped no later than its parent" in one
    many = summary(ChainResult("consensus", Span(1, 3000), written=2999, skipped=0,
                               not_later=2))  # fmt: skip
    assert "2,999 rows written, 0 blocks already in the dataset" in many
    assert "2 blocks stamped no later than their parent" in many
