"""What ``blocktimesd`` sets up before pyarrow is imported: the Arrow memory pool (an
operator's own choice wins), and no numpy for the commands that only write Parquet."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blocktimesd import cli
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams
from tests.chaos.walk import read_rows

PROBE = (
    "import sys\n"
    "from blocktimesd import cli\n"
    "cli._arrow_memory()\n"
    "import pyarrow\n"
    "print(pyarrow.default_memory_pool().backend_name)\n"
)


@pytest.mark.skipif(sys.platform != "linux", reason="jemalloc is chosen on Linux only")
def test_jemalloc_unless_the_environment_names_a_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    chosen = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert chosen.stdout.strip() == "jemalloc", chosen.stderr
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
    kept = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert kept.stdout.strip() == "system", kept.stderr


def test_main_chooses_before_any_command_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "")  # restored (unset) afterwards
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL")
    monkeypatch.setattr(sys, "platform", "linux")
    assert cli.main(["--version"]) == 0
    assert os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "jemalloc"


def imported(importtime_log: str) -> set[str]:
    """The modules named in a ``python -X importtime`` log."""
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in importtime_log.splitlines()
        if line.startswith("import time:")
    }


async def test_a_backfill_process_writes_its_rows_without_numpy(tmp_path: Path) -> None:
    devnet = Devnet(ChainParams(seed=11, history=80, fork_rate=0.0, stall_every_s=0))
    async with devnet as urls:
        argv = f"--chain consensus --kind consensus --rpc {urls.consensus} --start 1 --end 40"
        backfill = await asyncio.create_subprocess_exec(
            sys.executable, "-X", "importtime", "-m", "blocktimesd", "backfill",
            *argv.split(), "--k", "10", "--data", str(tmp_path),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, err = await backfill.communicate()
        canonical = devnet.network.consensus.canonical
    log = err.decode()
    assert backfill.returncode == 0, log[-2000:]
    modules = imported(log)
    assert "pyarrow.parquet" in modules
    assert "numpy" not in modules
    rows = read_rows(tmp_path, "consensus")
    assert [(r["block_number"], r["hash"]) for r in rows] == [
        (n, canonical[n].hash_hex) for n in range(1, 41)
    ]


def test_numpy_stays_for_the_commands_that_use_it_and_for_callers_of_main() -> None:
    probe = (
        "import sys\n"
        "from blocktimesd import cli\n"
        # A caller's own process, and a command that keeps numpy out of its own: the
        # backfill runs (it finds the usage error) and numpy is still there for the caller.
        "code = cli.main(['backfill', '--chain', 'x', '--rpc', 'ws://127.0.0.1:1', "
        "'--start', '10', '--end', '5'])\n"
        "assert code == 2, code\n"
        "import pyarrow, numpy\n"
        "print(pyarrow.array([1, 2]).to_numpy().sum())\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "3", done.stderr
    assert not any(command.numpy for command in (cli.COMMANDS["run"], cli.COMMANDS["backfill"]))
    assert all(cli.COMMANDS[name].numpy for name in ("report", "validate"))
