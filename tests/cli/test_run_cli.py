"""``blocktimesd run`` and the top level: help that tells the truth, flags that reach the
configuration, a start-up that says "connecting" until a chain follows, and subcommands
imported only when they run."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blocktimesd.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "2000")  # argparse wraps help lines to the terminal


def help_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main([*argv, "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere


def test_every_run_flag_has_help_and_its_true_default(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(["run"], capsys)
    for flag, default in [
        ("--config FILE", "(default: none"),
        ("--data DIR", "(default: $DATA_DIR, else the file's data_dir, else data)"),
        ("--consensus-rpc URL[,URL...]", "else wss://rpc.mainnet.autonomys.xyz/ws)"),
        ("--auto-evm-rpc URL[,URL...]", "else wss://auto-evm.mainnet.autonomys.xyz/ws)"),
        ("--metrics-addr HOST:PORT", "else 127.0.0.1:9615)"),
        ("--devnet-if-unreachable", "(default: off"),
        ("--devnet-speed X", "(default: 20)"),
        ("--log-level", "(default: INFO)"),
    ]:
        assert flag in text
        assert default in text.split(flag, 1)[1], flag
    assert "(default: None)" not in text


def test_the_top_level_help_names_every_command_and_the_backfill_range(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_of([], capsys)
    assert "--backfill-range START:END" in text
    for name, command in COMMANDS.items():
        assert f"{name} {command.help}" in text


def test_the_stand_ins_say_what_each_command_says_of_itself() -> None:
    """The one-line helps kept in cli.py (so that --help imports nothing) are the
    modules' own."""
    full = build_parser()
    sub = next(a for a in full._actions if a.dest == "command")
    own = {choice.dest: choice.help for choice in sub._choices_actions}  # type: ignore[attr-defined]
    assert own == {name: command.help for name, command in COMMANDS.items()}


def readme_commands() -> list[list[str]]:
    lines = (ROOT / "README.md").read_text().splitlines()
    commands = []
    for line in lines:
        line = line.split("  #", 1)[0].strip()
        if ".venv/bin/blocktimesd" in line:
            words = shlex.split(line)
            at = next(i for i, w in enumerate(words) if w.endswith(".venv/bin/blocktimesd"))
            commands.append(words[at + 1 :])
    assert len(commands) >= 5
    return commands


@pytest.mark.parametrize("argv", readme_commands(), ids=" ".join)
def test_every_readme_command_appears_in_help(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    command = next((w for w in argv if w in COMMANDS), None)
    text = help_of([command] if command else [], capsys)
    if command is None:  # plain `blocktimesd ...`: the top level, then run
        text += help_of(["run"], capsys)
        if any(w.startswith("--backfill-range") for w in argv):
            text += help_of(["backfill"], capsys)
    for word in argv:
        if word.startswith("--"):
            assert word.split("=", 1)[0] in text, f"{word} is in no help"


# What the engines need, and the engines themselves.
_ENGINES = (
    "pyarrow",
    "duckdb",
    "websockets",
    "aiohttp",
    "blocktimesd.aio.app",
    "blocktimesd.backfill",
    "blocktimesd.analysis.queries",
    "blocktimesd.analysis.report",
    "blocktimesd.analysis.validation",
    "blocktimesd.devnet.app",
)
# Neither those, nor the commands and their configuration.
_HEAVY = (
    "asyncio",
    *_ENGINES,
    "blocktimesd.config",
    "blocktimesd.commands.run",
    "blocktimesd.commands.backfill",
    "blocktimesd.commands.report",
    "blocktimesd.commands.validate",
    "blocktimesd.commands.devnet",
)


@pytest.mark.parametrize("argv", [["--version"], ["--help"]])
def test_version_imports_no_subcommand(argv: list[str]) -> None:
    code = (
        f"import sys; from blocktimesd.cli import main; main({argv!r})\n"
        f"print([m for m in {_HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_command_module_imports_its_engine_only_to_run(command: str) -> None:
    """Loading a command (to build its parser, or to rewrite --backfill-range) loads
    neither its engine nor the libraries the engines need."""
    code = (
        f"import sys; import {COMMANDS[command].module}\n"
        f"print([m for m in {_ENGINES!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "[]"


def test_the_backfill_parser_loads_no_engine() -> None:
    """Building the backfill parser (which its --help and every usage error do) loads no
    engine either."""
    code = (
        "import sys; from blocktimesd.cli import build_parser; build_parser(['backfill'])\n"
        f"print([m for m in {_ENGINES!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "[]"


def test_the_backfill_help_tells_the_engine_s_lookahead() -> None:
    from blocktimesd.backfill.engine import BackfillSettings
    from blocktimesd.commands.backfill import WINDOWS_HELD

    assert BackfillSettings().lookahead == WINDOWS_HELD


def test_the_backfill_help_tells_the_pool_s_cap() -> None:
    from blocktimesd.aio.pool import MAX_CONNECTIONS as CAP
    from blocktimesd.commands.backfill import MAX_CONNECTIONS

    assert MAX_CONNECTIONS == CAP


def test_a_bad_run_flag_is_named_as_typed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--metrics-addr", "nowhere", "--consensus-rpc", "http://x"]) == 2
    err = capsys.readouterr().err
    assert "--metrics-addr: 'nowhere' is not host:port" in err
    assert "--consensus-rpc: " in err
    assert "(command line)" not in err


def test_plain_blocktimesd_takes_run_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--metrics-addr", "nowhere"]) == 2
    assert "--metrics-addr: 'nowhere'" in capsys.readouterr().err


def test_run_says_connecting_until_a_chain_follows(tmp_path: Path) -> None:
    """Nothing answers: the daemon says it is connecting, never following, and logs each
    failed attempt once, with when the next one is."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blocktimesd",
            "run",
            "--consensus-rpc",
            "ws://127.0.0.1:9",  # the discard port: nothing listens
            "--auto-evm-rpc",
            "ws://127.0.0.1:9",
            "--metrics-addr",
            "127.0.0.1:0",
            "--data",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.endswith("_RPC_WS")},
    )
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    out, err = (b.decode() for b in process.communicate(timeout=30))
    assert process.returncode == 0, err
    assert "blocktimesd is connecting to consensus, auto-evm" in out
    assert "following" not in out
    failures = re.findall(r"consensus: cannot connect to ws://127\.0\.0\.1:9: .*", err)
    assert failures, err
    assert all(re.search(r"next attempt in \d+\.\d s", line) for line in failures)
    # One line per attempt, with backoff between them: a few, not a flood.
    assert len(failures) <= 8, failures


def test_an_unknown_command_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log-level", "DEBUG", "nope"]) == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
