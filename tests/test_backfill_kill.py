"""``blocktimesd backfill`` as a process, killed with ``kill -9`` at random moments and run
again, against a node that stalls, drops its connections, answers errors and forks, all
at once: the dataset it leaves is the canonical chains, each block once."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import FaultParams
from tests.test_backfill import (
    PARAMS,
    K,
    check_consensus,
    check_domain,
    check_no_duplicates,
    read_rows,
)

# Stalls (nothing answered for a second), drops, error answers and jitter at once.
FAULTS = FaultParams(
    error_rate=0.01,
    drop_connections_every_s=3.0,
    stall_every_s=4.0,
    stall_duration_s=1.0,
    latency_jitter_ms=2,
)
KILLS = 3
HISTORY = 2000  # blocks: a run takes a few seconds, so that kills land midway


async def backfill_process(
    data: Path, devnet: Devnet, tip: int, *, errors: bool = False
) -> asyncio.subprocess.Process:
    """A backfill of both chains up to ``tip - K``; its standard error piped if ``errors``
    (read to the end by the caller), else dropped."""
    assert devnet.urls is not None
    env = {
        **os.environ,
        "CONSENSUS_RPC_WS": devnet.urls.consensus,
        "AUTO_EVM_RPC_WS": devnet.urls.domain,
    }
    for name in ("DATA_DIR", "K_CONSENSUS", "K_AUTO_EVM"):
        env.pop(name, None)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "blocktimesd", "--log-level", "WARNING", "backfill",
        "--data", str(data), "--start", "1", "--end", str(tip), "--k", str(K),
        "--window", "128",
        env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE if errors else asyncio.subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2])
async def test_backfill_killed_at_random_through_stalls_drops_and_errors_is_the_chain(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    devnet = Devnet(dataclasses.replace(PARAMS, history=HISTORY), FAULTS)
    async with devnet:
        network = devnet.network
        tip = network.consensus.best.number
        killed_midway = 0  # kills that left some rows of the range durable, not all
        for _ in range(KILLS):
            proc = await backfill_process(tmp_path, devnet, tip)
            try:
                await asyncio.wait_for(proc.wait(), rng.uniform(0.5, 1.5))
            except TimeoutError:
                proc.send_signal(signal.SIGKILL)  # no shutdown, no flush
                await proc.wait()
                done = len(check_no_duplicates(tmp_path, "consensus"))
                killed_midway += 0 < done < tip - K
        proc = await backfill_process(tmp_path, devnet, tip, errors=True)
        _, err = await asyncio.wait_for(proc.communicate(), 240)
        assert proc.returncode == 0, err.decode()[-2000:]
    assert killed_midway, "no run was killed midway: the test proves nothing about kill -9"
    numbers = check_no_duplicates(tmp_path, "consensus")
    assert numbers == list(range(1, tip - K + 1))
    check_consensus(read_rows(tmp_path, "consensus"), network)
    assert len({r["spec_version"] for r in read_rows(tmp_path, "consensus")}) == 2
    domain = check_no_duplicates(tmp_path, "auto-evm")
    assert len(domain) > 300
    assert domain == list(range(1, len(domain) + 1))
    check_domain(read_rows(tmp_path, "auto-evm"), network)
