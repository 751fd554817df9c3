"""Injected faults and the control methods, as a client sees them over a real WebSocket."""

from __future__ import annotations

import argparse
import asyncio
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from blocktimesd.commands.devnet import add_devnet_parser, params_from_args
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams, FaultParams

from .conftest import Raw

NO_FORKS = ChainParams(seed=21, history=60, fork_rate=0.0, stall_every_s=0)


def make_blocks(devnet: Devnet, seconds: int = 60) -> None:
    devnet.publish(devnet.network.advance(devnet.network.now_ms + seconds * 1000))


async def heads_until_quiet(client: Raw, wait: float) -> list[int]:
    numbers: list[int] = []
    while True:
        try:
            note = await client.notification(wait=wait)
        except TimeoutError:
            return numbers
        numbers.append(int(note["params"]["result"]["number"], 16))


@pytest.mark.parametrize("chain_params", [NO_FORKS])
async def test_subscriptions_dropped_silently_every_few_seconds(
    devnet: Devnet, consensus: Raw
) -> None:
    sub = await consensus.call("chain_subscribeNewHeads")
    await consensus.notification()  # the current head
    await consensus.call("devnet_setFaults", {"drop_subscriptions_every_s": 0.2})
    server = devnet.servers["consensus"]
    for _ in range(50):
        await asyncio.sleep(0.05)
        if sub not in server.active_subscriptions():
            break
    assert sub not in server.active_subscriptions()
    make_blocks(devnet)
    # No notification, no error, no close: the connection still answers calls.
    assert await heads_until_quiet(consensus, wait=0.3) == []
    assert await consensus.call("system_chain") == "Autonomys Devnet"
    info = await consensus.call("devnet_info")
    assert info["injected"]["droppedSubscriptions"] >= 1


@pytest.mark.parametrize("chain_params", [NO_FORKS])
@pytest.mark.parametrize("fault_params", [FaultParams(notification_delay_ms=400)])
async def test_lagging_notifications_arrive_late_and_together(
    devnet: Devnet, consensus: Raw
) -> None:
    await consensus.call("chain_subscribeAllHeads")
    await consensus.notification()  # the current head (late too)
    start = time.monotonic()
    for _ in range(3):
        make_blocks(devnet, 20)
        await asyncio.sleep(0.05)
    published = devnet.network.consensus.best.number
    first = await consensus.notification(wait=5)
    late = time.monotonic() - start
    numbers = [int(first["params"]["result"]["number"], 16)]
    numbers += await heads_until_quiet(consensus, wait=0.1)
    assert late >= 0.3
    assert numbers == sorted(numbers)
    assert numbers[-1] == published, "everything due arrives in the burst"
    assert (await consensus.call("devnet_info"))["injected"]["delayedNotifications"] >= 2


@pytest.mark.parametrize("chain_params", [ChainParams(seed=22, history=100, fork_rate=0.0)])
async def test_forced_reorg_deeper_than_any_confirmation_depth(
    devnet: Devnet, consensus: Raw, domain: Raw
) -> None:
    chain = devnet.network.consensus
    old = [b.hash_hex for b in chain.canonical]
    sub = await consensus.call("chain_subscribeNewHeads")
    await consensus.notification()
    result = await consensus.call("devnet_reorg", 25)
    best = chain.best.number
    assert result["consensusRetracted"] == 25
    assert result["consensusBest"] == best
    assert result["domainRetracted"] > 0
    note = await consensus.notification()
    assert note["params"]["subscription"] == sub
    assert note["params"]["result"]["number"] == hex(best)
    hashes = await consensus.call("chain_getBlockHash", list(range(len(old))))
    fork = len(old) - 1 - 25
    assert hashes[: fork + 1] == old[: fork + 1]
    assert all(h != o for h, o in zip(hashes[fork + 1 :], old[fork + 1 :], strict=False))
    # The node still knows the orphaned blocks by hash, as a real node does.
    assert await consensus.call("chain_getHeader", old[-1]) is not None
    reply = await consensus.call_raw("devnet_reorg", {"depth": 10_000})
    assert reply["error"]["code"] == -32602
    assert "depth must be between 1 and" in reply["error"]["data"]
    reply = await consensus.call_raw("devnet_reorg")
    assert reply["error"]["code"] == -32602
    lower = await consensus.call("devnet_reorg", {"depth": 12, "length": 8})
    assert lower["consensusBest"] == best - 4


@pytest.mark.parametrize("chain_params", [NO_FORKS])
async def test_runtime_upgrade_while_following(devnet: Devnet, consensus: Raw, domain: Raw) -> None:
    before = await consensus.call("state_getRuntimeVersion")
    domain_before = await domain.call("state_getRuntimeVersion")
    await consensus.call("state_subscribeRuntimeVersion")
    await consensus.notification()  # the current version
    height = await consensus.call("devnet_upgrade")
    assert height == devnet.network.consensus.best.number + 1
    while devnet.network.consensus.best.number < height + 2:
        make_blocks(devnet, 10)
    note = await consensus.notification()
    assert note["params"]["result"]["specVersion"] == before["specVersion"] + 1
    upgrade = await consensus.call("chain_getBlockHash", height)
    assert (await consensus.call("state_getRuntimeVersion", upgrade))["specVersion"] == (
        before["specVersion"] + 1
    )
    assert (await domain.call("state_getRuntimeVersion"))["specVersion"] == (
        domain_before["specVersion"] + 1
    )
    reply = await consensus.call_raw("devnet_upgrade")
    assert reply["error"]["code"] == -32602
    assert "upgraded already" in reply["error"]["data"]


async def test_outage_refuses_connections_then_serves_again(
    devnet: Devnet, consensus: Raw, domain: Raw
) -> None:
    assert devnet.urls is not None
    url = devnet.urls.consensus
    assert await domain.call("devnet_outage", "consensus", 0.8) is True
    with pytest.raises(ConnectionClosedError):
        await consensus.ws.recv()
    with pytest.raises(ConnectionRefusedError):
        await connect(url, open_timeout=2)
    # The other chain keeps serving.
    assert await domain.call("system_chain") == "Autonomys Devnet Domain 0"
    await asyncio.sleep(1.2)
    async with connect(url) as ws:
        assert await Raw(ws).call("system_chain") == "Autonomys Devnet"
    info = await domain.call("devnet_info")
    assert info["injected"]["outages"] == 1
    reply = await domain.call_raw("devnet_outage", "nowhere", 1)
    assert reply["error"]["code"] == -32602


async def test_heal_ends_an_outage_and_a_stall_early(devnet: Devnet, domain: Raw) -> None:
    assert devnet.urls is not None
    await domain.call("devnet_outage", {"chain": "consensus", "seconds": 600})
    await asyncio.sleep(0.2)
    with pytest.raises(ConnectionRefusedError):
        await connect(devnet.urls.consensus, open_timeout=2)
    await domain.call("devnet_stall", 600)
    await asyncio.sleep(0.05)
    await domain.send({"jsonrpc": "2.0", "id": 99, "method": "system_chain", "params": []})
    # Control methods are answered during a stall; everything else waits.
    info = await domain.call("devnet_info")
    assert info["injected"]["stalls"] == 1
    assert await domain.call("devnet_heal") is True
    await asyncio.sleep(0.3)
    async with connect(devnet.urls.consensus) as ws:
        assert await Raw(ws).call("system_chain") == "Autonomys Devnet"
    assert await domain.call("system_chain") == "Autonomys Devnet Domain 0"


def test_new_fault_flags() -> None:
    parser = argparse.ArgumentParser()
    add_devnet_parser(parser.add_subparsers(dest="command"), [])
    args = parser.parse_args(
        ["devnet", "--drop-subscriptions-every", "2.5", "--notification-delay-ms", "300"]
    )
    _, faults = params_from_args(args)
    assert faults.drop_subscriptions_every_s == 2.5
    assert faults.notification_delay_ms == 300


async def test_stopping_during_an_outage() -> None:
    devnet = Devnet(ChainParams(seed=23, history=10))
    async with devnet as urls:
        devnet.outage("auto-evm", 600)
        await asyncio.sleep(0.2)
        assert devnet.servers["auto-evm"].is_down()
        async with connect(urls.consensus) as ws:
            assert await Raw(ws).call("system_chain") == "Autonomys Devnet"
    assert not devnet.servers["auto-evm"].is_down()
