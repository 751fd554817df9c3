"""Fixtures: a running devnet in-process, a minimal raw JSON-RPC client, and the
Node.js packages of the cross-checks (tests/js)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams, FaultParams

JS = Path(__file__).parents[1] / "js"


class Raw:
    """Sends JSON-RPC by hand and keeps notifications apart from responses."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.notifications: list[dict[str, Any]] = []

    async def send(self, payload: Any) -> None:
        await self.ws.send(orjson.dumps(payload).decode())

    async def recv(self, wait: float = 10) -> Any:
        return orjson.loads(await asyncio.wait_for(self.ws.recv(), wait))

    async def response(self, wait: float = 10) -> Any:
        while True:
            message = await self.recv(wait)
            if isinstance(message, dict) and "method" in message and "id" not in message:
                self.notifications.append(message)
                continue
            return message

    async def call_raw(self, method: str, *params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.send(
            {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": list(params)}
        )
        reply = await self.response()
        assert reply["id"] == self.next_id
        return dict(reply)

    async def call(self, method: str, *params: Any) -> Any:
        reply = await self.call_raw(method, *params)
        assert "error" not in reply, reply
        return reply["result"]

    async def notification(self, wait: float = 10) -> dict[str, Any]:
        if self.notifications:
            return self.notifications.pop(0)
        message = await self.recv(wait)
        assert "method" in message, message
        return dict(message)


@pytest.fixture
def chain_params() -> ChainParams:
    return ChainParams(seed=42, history=120, fork_rate=0.1)


@pytest.fixture
def fault_params() -> FaultParams:
    return FaultParams()


@pytest.fixture
async def devnet(chain_params: ChainParams, fault_params: FaultParams) -> AsyncIterator[Devnet]:
    net = Devnet(chain_params, fault_params, speed=1.0)
    async with net:
        yield net


@pytest.fixture
async def consensus(devnet: Devnet) -> AsyncIterator[Raw]:
    assert devnet.urls is not None
    async with connect(devnet.urls.consensus, max_size=None) as ws:
        yield Raw(ws)


@pytest.fixture
async def domain(devnet: Devnet) -> AsyncIterator[Raw]:
    assert devnet.urls is not None
    async with connect(devnet.urls.domain, max_size=None) as ws:
        yield Raw(ws)


@pytest.fixture(scope="session")
def js_modules() -> Path:
    """tests/js/node_modules with every package of tests/js/package.json (``npm ci``
    once when one is missing).  Without Node.js the test is skipped, except in CI."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("Node.js and npm are required in CI for the JavaScript cross-checks")
        pytest.skip("Node.js/npm not installed: the JavaScript cross-checks need them")
    modules = JS / "node_modules"
    wanted = json.loads((JS / "package.json").read_text())["dependencies"]
    if not all((modules / name / "package.json").is_file() for name in wanted):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS,
            check=True,
            timeout=600,
        )
    return modules
