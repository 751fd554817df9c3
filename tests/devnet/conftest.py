"""Fixtures: a running devnet in-process and a minimal raw JSON-RPC client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams, FaultParams


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
