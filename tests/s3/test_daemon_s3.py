"""The daemon writing to S3 (``blocktimesd run`` with ``DATA_DIR=s3://...``), killed with
SIGKILL at random moments and started again, the store and the nodes failing a share
of requests meanwhile: its lease, left behind by a process of this host that is gone,
is taken over at each start without ``--break-lease``, and the dataset is still the
simulator's canonical chains, every block exactly once, with no gap."""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from blocktimesd.dataset.lease import LEASE_NAME
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams, FaultParams
from tests.daemon import K_CONSENSUS, K_DOMAIN
from tests.s3.test_cli_s3 import (
    PREFIX,
    blocktimesd,
    check_exactly_once,
    command_env,
    moto_client,
    s3_objects,
    s3_rows,
)
from tests.s3server import FaultProxy
from tests.test_backfill import check_consensus, check_domain

PARAMS = ChainParams(seed=23, history=80, fork_rate=0.2, stall_every_s=0)
SPEED = 40.0  # a block every ~0.15 s
# The nodes misbehave too, several ways at once: error answers, dropped connections,
# jitter.  (Subscriptions dropped silently are noticed only after head_poll_s, longer
# than these runs: tests/chaos has them.)
NODE_FAULTS = FaultParams(error_rate=0.005, drop_connections_every_s=2.0, latency_jitter_ms=2)
KILLS = 3
LEASE_KEY = f"{PREFIX}/{LEASE_NAME}"
START_TIMEOUT_S = 30.0


def daemon_env(devnet: Devnet, where: str) -> dict[str, str]:
    return {
        **command_env(devnet),
        "DATA_DIR": where,
        "K_CONSENSUS": str(K_CONSENSUS),
        "K_AUTO_EVM": str(K_DOMAIN),
        "MAX_ROWS_PER_FILE": "7",  # an object every few blocks
        "METRICS_ADDR": "127.0.0.1:0",
    }


async def start(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """``blocktimesd run`` (no ``--break-lease``), logging at INFO to ``log``."""
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "blocktimesd", "--log-level", "INFO", "run",
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env,
        )  # fmt: skip


def lease_pid(client: Any, bucket: str) -> int | None:
    """The pid the lease object names, or None if there is none."""
    try:
        body = client.get_object(Bucket=bucket, Key=LEASE_KEY)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return int(orjson.loads(body)["pid"])


async def until_it_holds_the_lease(
    client: Any, bucket: str, daemon: asyncio.subprocess.Process, log: Path
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while lease_pid(client, bucket) != daemon.pid:
        if daemon.returncode is not None or loop.time() > deadline:
            said = log.read_bytes().decode()  # noqa: ASYNC240 (a small file, and the test ends)
            raise AssertionError(f"the daemon did not take the lease:\n{said}")
        await asyncio.sleep(0.1)


async def test_kill_9_and_restart_takes_the_lease_over_and_loses_nothing(
    tmp_path: Path, s3_bucket: str, s3_faulty: FaultProxy, moto_endpoint: str
) -> None:
    rng = random.Random(17)
    client = moto_client(moto_endpoint)
    where = f"s3://{s3_bucket}/{PREFIX}"
    me = socket.gethostname()
    devnet = Devnet(PARAMS, NODE_FAULTS, speed=SPEED)
    async with devnet:
        env = daemon_env(devnet, where)
        s3_faulty.set_faults(slowdown=0.05, internal=0.02, reset=0.02, lost=0.02, seed=9)
        killed: list[int] = []
        for run in range(KILLS + 1):
            log = tmp_path / f"run-{run}.log"
            daemon = await start(env, log)
            try:
                await until_it_holds_the_lease(client, s3_bucket, daemon, log)
                said = log.read_text()
                if killed:
                    assert f"took over the writer lease {where}/{LEASE_NAME} of host {me} " \
                           f"pid {killed[-1]}" in said, said  # fmt: skip
                else:
                    # A backfill meanwhile is refused, naming the daemon.
                    code, _, err = await blocktimesd(
                        env, "backfill", "--data", where, "--chain", "consensus",
                        "--start", "1", "--count", "5",
                    )  # fmt: skip
                    assert code == 1, err
                    assert f"host {me}, pid {daemon.pid}" in err, err
                if run < KILLS:
                    await asyncio.sleep(rng.uniform(2.0, 5.0))
                    daemon.send_signal(signal.SIGKILL)
                    await daemon.wait()
                    killed.append(daemon.pid)
                    assert lease_pid(client, s3_bucket) == daemon.pid  # left behind
                else:
                    await asyncio.sleep(5.0)
                    daemon.send_signal(signal.SIGTERM)
                    assert await asyncio.wait_for(daemon.wait(), 30) == 0, log.read_text()
            finally:
                if daemon.returncode is None:
                    daemon.kill()
                    await daemon.wait()
        s3_faulty.set_faults()
    assert sum(s3_faulty.counts.values()) > 0
    assert len(killed) == KILLS

    network = devnet.network
    found = s3_objects(client, s3_bucket)
    assert LEASE_NAME not in found  # released at the clean stop
    consensus = s3_rows(client, s3_bucket, "consensus")
    numbers = [r["block_number"] for r in consensus]
    assert len(numbers) > 50
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "gap or duplicate"
    assert numbers[-1] <= network.consensus.best.number - K_CONSENSUS
    check_consensus(consensus, network)
    domain = s3_rows(client, s3_bucket, "auto-evm")
    numbers = [r["block_number"] for r in domain]
    assert len(numbers) > 20
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "domain gap or duplicate"
    check_domain(domain, network)
    for chain, rows in (("consensus", consensus), ("auto-evm", domain)):
        check_exactly_once(found, rows, chain)


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATA_DIR", "K_CONSENSUS", "K_AUTO_EVM", "CONSENSUS_RPC_WS", "AUTO_EVM_RPC_WS"):
        monkeypatch.delenv(name, raising=False)
