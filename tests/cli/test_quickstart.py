"""The quick start's fallback, run twice as a newcomer would: the simulated network's
rows go to a dataset of their own, and a second run starts as well as the first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def run_for(seconds: float, data: Path) -> tuple[int, str]:
    env = {
        **os.environ,
        "CONSENSUS_RPC_WS": "ws://127.0.0.1:9",  # nothing listens on the discard port
        "AUTO_EVM_RPC_WS": "ws://127.0.0.1:9",
        "METRICS_ADDR": "127.0.0.1:0",
        "K_CONSENSUS": "2",
        "K_AUTO_EVM": "2",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blocktimesd",
            "run",
            "--devnet-if-unreachable",
            "--data",
            str(data),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    time.sleep(seconds)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    return process.returncode, out.decode()


def test_the_fallback_runs_twice_into_datasets_of_its_own(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for _ in range(2):
        code, out = run_for(6.0, data)
        assert code == 0, out
        assert "following the built-in simulated Autonomys network" in out
        # "connecting" first; "following" only once the chains really follow.
        connecting = out.index("blocktimesd is connecting to consensus, auto-evm")
        assert out.index("blocktimesd is following consensus, auto-evm") > connecting
    assert not (data / "block_times").exists(), "simulated rows in the real chains' dataset"
    datasets = sorted((data / "devnet").iterdir())
    assert len(datasets) == 2, datasets  # one per simulated chain (genesis)
    for dataset in datasets:
        assert (dataset / "chains" / "consensus.json").exists()
