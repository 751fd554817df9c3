"""The command line as a user runs it: a real process, real signals, exit codes."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from blocktimesd import __version__
from blocktimesd.argtypes import non_negative, positive
from blocktimesd.cli import main

DEVNET_FLAGS = [
    "--host",
    "--consensus-port",
    "--domain-port",
    "--seed",
    "--speed",
    "--history",
    "--fork-rate",
    "--latency-ms",
    "--latency-jitter-ms",
    "--drop-connections-every",
    "--stall-every",
    "--error-rate",
    "--prune-state",
    "--prune-bodies",
    "--unsafe-rpc",
    "--upgrade-at",
    "--drop-subscriptions-every",
    "--notification-delay-ms",
]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"blocktimesd {__version__}"


def test_devnet_help_documents_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devnet", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in DEVNET_FLAGS:
        assert flag in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["devnet", "--fork-rate", "2"], "a probability is between 0 and 1"),
        (["devnet", "--latency-ms", "-5"], "must not be negative"),
        (["devnet", "--consensus-port", "70000"], "not a TCP port"),
        (["devnet", "--nope"], "unrecognized arguments"),
        (["run", "--bogus"], "unrecognized arguments"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_speed_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devnet", "--speed", "0", "--consensus-port", "0", "--domain-port", "0"]) == 2
    assert "--speed must be positive" in capsys.readouterr().err


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "blocktimesd", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


# The process's own command, run as the console script runs it, with an exit hook that
# shows whether the interpreter's teardown ran; "thread" keeps a thread alive at the end.
EXIT_PROBE = """
import atexit, sys, threading
from blocktimesd import cli
atexit.register(print, "teardown ran")
if sys.argv[1] == "thread":
    threading.Thread(target=threading.Event().wait, args=(3,)).start()
sys.argv = ["blocktimesd", *sys.argv[2:]]
sys.exit(cli.main())
"""


@pytest.mark.parametrize(
    ("thread", "args", "code", "printed"),
    [
        ("none", ["--version"], 0, f"blocktimesd {__version__}"),
        ("none", ["backfill", "--start", "1"], 2, "give its end with either --end M or --count C"),
        ("thread", ["--version"], 0, f"blocktimesd {__version__}"),
    ],
)
def test_the_process_ends_with_its_code_and_output_skipping_teardown_when_alone(
    thread: str, args: list[str], code: int, printed: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", EXIT_PROBE, thread, *args], capture_output=True, text=True
    )
    assert done.returncode == code, done.stderr
    assert printed in done.stdout + done.stderr  # written to a pipe, so flushed on the way out
    # Alone, the process ends at once; another thread alive means the usual exit.
    assert ("teardown ran" in done.stdout) == (thread == "thread")


async def test_devnet_prints_urls_serves_and_stops_on_sigterm() -> None:
    args = ["--consensus-port", "0", "--domain-port", "0", "--speed", "20", "--history", "30"]
    with spawn("devnet", *args, "--log-level", "WARNING") as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline().split() for _ in range(2)]
            assert [name for name, _ in lines] == ["consensus", "auto-evm"]
            for _, url in lines:
                assert url.startswith("ws://127.0.0.1:")
                async with connect(url) as ws:
                    await ws.send('{"jsonrpc":"2.0","id":1,"method":"system_health","params":[]}')
                    reply = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                    assert reply["result"]["isSyncing"] is False
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()


def test_port_in_use_is_a_usage_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = spawn(
            "devnet", "--consensus-port", str(port), "--domain-port", "0", "--history", "5"
        )
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1 ports {port}/0" in err
    assert "choose other ports" in err


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        (positive(int), "0", "must be positive"),
        (positive(float), "nan", "must be positive"),
        (positive(int), "1.5", "not a whole number"),
        (non_negative(float), "-0.5", "must not be negative"),
        (non_negative(float), "x", "not a number"),
    ],
)
def test_number_options_refuse_with_the_reason(kind: Any, text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        kind(text)
    assert positive(int)("3") == 3
    assert non_negative(float)("0") == 0.0
