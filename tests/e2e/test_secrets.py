"""Endpoint credentials never leave the daemon: not in its output at DEBUG, not in
``/readyz`` or ``/metrics``, not in its files, not in its errors.

The daemon runs as an operator runs it, a separate process of the command line, against
the simulated network, with endpoints that carry a user, a password and an API key."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from blocktimesd.aio.app import App
from blocktimesd.aio.preflight import NodeExpectations, Preflight
from blocktimesd.aio.rpc import RpcClient, RpcSettings
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams, FaultParams
from blocktimesd.errors import WrongChain
from tests.daemon import K_CONSENSUS, K_DOMAIN, advance, config_for

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("alice", "S3cretPw", "LIVEKEY1", "bob", "Hunter2x", "DEADKEY1", "carol", "Pa55word",
           "LIVEKEY2", "Basic ")  # fmt: skip


def free_port() -> int:
    """A port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_credentials(url: str, userinfo: str, path: str) -> str:
    return url.replace("ws://", f"ws://{userinfo}@") + path


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {where}"


class Daemon:
    """``blocktimesd run --log-level DEBUG`` in its own process; all it prints is kept."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(proc.stdout, self.stdout)),
            asyncio.create_task(self._read(proc.stderr, self.stderr)),
        ]

    @staticmethod
    async def _read(stream: asyncio.StreamReader, into: list[str]) -> None:
        async for line in stream:
            into.append(line.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    async def metrics_base(self, devnet: Devnet) -> str:
        for _ in range(300):
            found = re.search(r"metrics at (http://[^/\s]+)/metrics", self.output)
            if found:
                return found.group(1)
            assert self.proc.returncode is None, self.output
            await advance(devnet, 0.1)
        raise AssertionError(f"the daemon did not start:\n{self.output}")

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(self.proc.wait(), 30)
        await asyncio.gather(*self._readers)
        return code


@contextlib.asynccontextmanager
async def daemon(env: dict[str, str]) -> AsyncIterator[Daemon]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "blocktimesd", "run", "--log-level", "DEBUG",
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    running = Daemon(proc)
    try:
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_credentials_in_endpoints_are_never_shown(tmp_path: Path) -> None:
    devnet = Devnet(ChainParams(seed=5, history=40, fork_rate=0.2))
    async with devnet as urls:
        dead = f"ws://bob:Hunter2x@127.0.0.1:{free_port()}/rpc?apikey=DEADKEY1"
        consensus = with_credentials(urls.consensus, "alice:S3cretPw", "/rpc?apikey=LIVEKEY1")
        domain = with_credentials(urls.domain, "carol:Pa55word", "/evm?token=LIVEKEY2&v=1")
        env = {
            # The first consensus endpoint refuses: a WARNING per attempt, then failover.
            "CONSENSUS_RPC_WS": f"{dead},{consensus}",
            "AUTO_EVM_RPC_WS": domain,
            "K_CONSENSUS": str(K_CONSENSUS),
            "K_AUTO_EVM": str(K_DOMAIN),
            "DATA_DIR": str(tmp_path / "data"),
            "METRICS_ADDR": "127.0.0.1:0",
            "MAX_ROWS_PER_FILE": "20",
        }
        async with daemon(env) as running, aiohttp.ClientSession() as session:
            base = await running.metrics_base(devnet)
            ready: dict[str, Any] = {}
            for _ in range(300):
                await advance(devnet, 0.1)
                assert running.proc.returncode is None, running.output
                async with session.get(f"{base}/readyz") as resp:
                    body = await resp.text()
                    assert_no_secret("/readyz", body)
                    if resp.status == 200:
                        ready = await resp.json()
                        break
            assert ready, running.output
            devnet.drop_connections()  # reconnects, each logged with its endpoint
            await advance(devnet, 2.0)
            assert running.proc.returncode is None, running.output
            async with session.get(f"{base}/metrics") as resp:
                metrics = await resp.text()
            code = await running.stop()
        assert code == 0, running.output
    output = running.output
    assert_no_secret("/metrics", metrics)
    assert_no_secret("the daemon's output", output)
    # Still recognisable: scheme, host, port and path are kept.
    shown = consensus.replace("alice:S3cretPw", "***").replace("LIVEKEY1", "***")
    assert ready["details"]["consensus"]["endpoint"] == shown
    assert f"connected to {shown}" in output
    assert "cannot connect to ws://***@127.0.0.1:" in output
    assert "blocktimes_rpc_reconnects_total" in metrics
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert_no_secret(str(path), path.read_bytes().decode("latin-1"))


async def test_an_unusable_node_is_reported_once_by_name_without_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Devnet(ChainParams(seed=6, history=10)) as urls:
        url = with_credentials(urls.consensus, "alice:S3cretPw", "/rpc?apikey=LIVEKEY1")
        client = RpcClient(
            RpcSettings((url,), connect_timeout=5),
            "consensus",
            on_connect=Preflight(NodeExpectations(chain_name="Another Chain"), "consensus"),
        )
        async with client:
            with pytest.raises(WrongChain) as info:
                await client.wait_ready(30)
    assert_no_secret("the error", str(info.value))
    assert str(info.value).startswith("consensus: ws://***@127.0.0.1:")
    # What the daemon logs; the simulated node's own logs are not the daemon's.
    ours = [r for r in caplog.records if r.name.startswith("blocktimesd.aio")]
    text = "\n".join(r.getMessage() for r in ours)
    assert "serves chain 'Autonomys Devnet'" in text
    assert "consensus: consensus:" not in text
    assert_no_secret("the log", text)


async def test_retries_name_the_chain_once_and_no_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Latency keeps calls in flight, so dropped connections fail them: the followers retry.
    devnet = Devnet(ChainParams(seed=7, history=80), FaultParams(latency_ms=40))
    async with devnet as urls:
        config = config_for(devnet, tmp_path)
        consensus = with_credentials(urls.consensus, "alice:S3cretPw", "/rpc?apikey=LIVEKEY1")
        domain = with_credentials(urls.domain, "carol:Pa55word", "/evm?token=LIVEKEY2")
        chains = (
            dataclasses.replace(config.chains[0], endpoints=(consensus,)),
            dataclasses.replace(config.chains[1], endpoints=(domain,)),
        )
        app = App(dataclasses.replace(config, chains=chains), registry=CollectorRegistry())
        runner = asyncio.create_task(app.run())
        for _ in range(8):
            await advance(devnet, 0.4)
            devnet.drop_connections()
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    # The daemon's records; the simulated nodes' own (devnet, websockets.server) are not.
    ours = [r for r in caplog.records if r.name.startswith("blocktimesd.aio")]
    text = "\n".join(r.getMessage() for r in ours)
    assert "retrying in" in text
    assert "consensus: consensus:" not in text
    assert "auto-evm: auto-evm:" not in text
    assert_no_secret("the log", text)
