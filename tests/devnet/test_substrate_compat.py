"""What real client libraries need of a node beyond the methods blocktimesd calls, and
the RPC server's resource limits, checked over a real WebSocket.

Every alias Substrate registers is served and listed; ``System.Version`` holds the
runtime's own ``RuntimeVersion`` (dedot reads it); ``:code`` and
``state_getStorageHash`` tell runtimes apart (polkadot-api hashes the code); and the
limits of a jsonrpsee 0.24 server hold (``RpcLimits``).
"""

from __future__ import annotations

import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from blocktimesd.core import hashing
from blocktimesd.core.runtime_desc import RuntimeDesc
from blocktimesd.core.runtime_version import RuntimeVersion
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.node import ALIASES
from blocktimesd.devnet.params import ChainParams, FaultParams, RpcLimits
from blocktimesd.devnet.runtimes import consensus_runtime, domain_runtime
from blocktimesd.devnet.runtimes.frame import RUNTIME_VERSION, code_bytes, version_bytes
from blocktimesd.devnet.server import TOO_MANY_CONNECTIONS

from .conftest import Raw

CODE_KEY = "0x3a636f6465"  # ":code"
NOW_KEY = "0xf0c365c3cf59d671eb72da0e7a4113c49f1f0515f462cdcf84e0f1d6045dfcbb"
ABSENT_KEY = "0x" + "00" * 32

# The aliases sc-rpc-api registers for the methods the devnet serves (its `aliases` and
# `unsubscribe_aliases` attributes), by the method they stand for.
SUBSTRATE_ALIASES = {
    "chain_getHead": "chain_getBlockHash",
    "chain_getFinalisedHead": "chain_getFinalizedHead",
    "chain_subscribeNewHead": "chain_subscribeNewHeads",
    "subscribe_newHead": "chain_subscribeNewHeads",
    "chain_unsubscribeNewHead": "chain_unsubscribeNewHeads",
    "unsubscribe_newHead": "chain_unsubscribeNewHeads",
    "chain_subscribeFinalisedHeads": "chain_subscribeFinalizedHeads",
    "chain_unsubscribeFinalisedHeads": "chain_unsubscribeFinalizedHeads",
    "chain_subscribeRuntimeVersion": "state_subscribeRuntimeVersion",
    "chain_unsubscribeRuntimeVersion": "state_unsubscribeRuntimeVersion",
    "chain_getRuntimeVersion": "state_getRuntimeVersion",
    "state_getStorageAt": "state_getStorage",
    "state_getStorageHashAt": "state_getStorageHash",
    "state_getStorageSizeAt": "state_getStorageSize",
    "state_callAt": "state_call",
}


# -- aliases -----------------------------------------------------------------------------


def test_the_aliases_are_substrates() -> None:
    assert ALIASES == SUBSTRATE_ALIASES


async def test_every_alias_is_listed_and_served(consensus: Raw, devnet: Devnet) -> None:
    methods = set((await consensus.call("rpc_methods"))["methods"])
    assert set(SUBSTRATE_ALIASES) | set(SUBSTRATE_ALIASES.values()) <= methods
    best = devnet.network.consensus.best
    head = await consensus.call("chain_getHead")
    assert head in {b.hash_hex for b in devnet.network.consensus.canonical[best.number - 2 :]}
    assert (
        await consensus.call("chain_getHead", 3) == devnet.network.consensus.canonical[3].hash_hex
    )
    assert await consensus.call("chain_getFinalisedHead") == await consensus.call(
        "chain_getFinalizedHead"
    )
    block = devnet.network.consensus.canonical[5]
    assert await consensus.call("state_getStorageHashAt", NOW_KEY, block.hash_hex) == (
        await consensus.call("state_getStorageHash", NOW_KEY, block.hash_hex)
    )
    assert await consensus.call("state_callAt", "Core_version", "0x", block.hash_hex) == (
        await consensus.call("state_call", "Core_version", "0x", block.hash_hex)
    )


# -- System.Version ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "desc",
    [consensus_runtime(6), consensus_runtime(7), domain_runtime(0), domain_runtime(1)],
    ids=lambda d: f"{d.spec_name}-{d.spec_version}",
)
def test_system_version_constant_is_the_runtime_version(desc: RuntimeDesc) -> None:
    constants = {name: (codec, value) for name, codec, value in desc.pallet("System").constants}
    codec, value = constants["Version"]
    assert codec == RUNTIME_VERSION
    assert value == version_bytes(desc)
    version = RuntimeVersion.decode(value)
    assert (version.spec_name, version.spec_version) == (desc.spec_name, desc.spec_version)
    assert version.transaction_version == desc.transaction_version
    assert list(constants)[:2] == ["BlockHashCount", "Version"]  # frame_system's order


async def test_core_version_is_the_version_constant(consensus: Raw, domain: Raw) -> None:
    for client, desc in ((consensus, consensus_runtime(6)), (domain, domain_runtime(0))):
        answer = await client.call("state_call", "Core_version", "0x")
        assert answer == "0x" + version_bytes(desc).hex()
        # sp_core::Bytes parameters are hex with or without 0x, as impl-serde reads them.
        assert await client.call("state_call", "Core_version", "") == answer


# -- :code, storage hashes and sizes -------------------------------------------------------


@pytest.mark.parametrize(
    "chain_params", [ChainParams(seed=3, history=60, upgrade_at=50, fork_rate=0)]
)
async def test_code_changes_with_the_runtime(consensus: Raw, domain: Raw, devnet: Devnet) -> None:
    chain = devnet.network.consensus
    before, upgrade = chain.canonical[49], chain.canonical[50]
    old = await consensus.call("state_getStorage", CODE_KEY, before.hash_hex)
    new = await consensus.call("state_getStorage", CODE_KEY, upgrade.hash_hex)
    assert old == "0x" + code_bytes(consensus_runtime(6)).hex()
    assert new == "0x" + code_bytes(consensus_runtime(7)).hex()
    assert bytes.fromhex(old[2:]).startswith(b"\x00asm")
    assert await consensus.call("state_getStorage", CODE_KEY, chain.canonical[10].hash_hex) == old
    assert await domain.call("state_getStorage", CODE_KEY) == (
        "0x" + code_bytes(domain_runtime(devnet.network.domain.best.spec_version)).hex()
    )
    changes = await consensus.call("state_queryStorageAt", [CODE_KEY], upgrade.hash_hex)
    assert changes[0]["changes"] == [[CODE_KEY, new]]


async def test_storage_hash_and_size(consensus: Raw, devnet: Devnet) -> None:
    block = devnet.network.consensus.canonical[7]
    for key in (NOW_KEY, CODE_KEY):
        value = bytes.fromhex((await consensus.call("state_getStorage", key, block.hash_hex))[2:])
        assert await consensus.call("state_getStorageHash", key, block.hash_hex) == (
            "0x" + hashing.blake2_256(value).hex()
        )
        assert await consensus.call("state_getStorageSize", key, block.hash_hex) == len(value)
    assert await consensus.call("state_getStorageHash", ABSENT_KEY, block.hash_hex) is None
    assert await consensus.call("state_getStorageSize", ABSENT_KEY) is None
    best_value = await consensus.call("state_getStorage", NOW_KEY)
    best_hash = await consensus.call("state_getStorageHash", NOW_KEY)
    assert best_hash == "0x" + hashing.blake2_256(bytes.fromhex(best_value[2:])).hex()
    reply = await consensus.call_raw("state_getStorageHash", NOW_KEY, "0x" + "ab" * 32)
    assert reply["error"]["code"] == 4003
    assert "UnknownBlock" in reply["error"]["message"]


# -- limits ---------------------------------------------------------------------------------


def test_default_limits_are_a_substrate_nodes() -> None:
    limits = RpcLimits()
    assert (limits.max_connections, limits.messages_per_connection) == (100, 64)
    assert limits.max_subscriptions_per_connection == 1024
    with pytest.raises(ValueError, match="messages_per_connection"):
        RpcLimits(messages_per_connection=0)


async def test_connections_over_the_limit_are_refused_with_http_429() -> None:
    async with Devnet(ChainParams(history=5), limits=RpcLimits(max_connections=2)) as urls:
        async with connect(urls.consensus) as first, connect(urls.consensus) as second:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(urls.consensus):
                    pass
            assert refused.value.response.status_code == 429
            assert refused.value.response.body.decode() == TOO_MANY_CONNECTIONS
            for ws in (first, second):  # the open ones are untouched
                await ws.send('{"jsonrpc":"2.0","id":1,"method":"system_chain","params":[]}')
                assert "Autonomys Devnet" in str(await ws.recv())
        async with connect(urls.consensus) as again:  # a slot is free again
            await again.send('{"jsonrpc":"2.0","id":1,"method":"system_name","params":[]}')
            assert "blocktimesd-devnet" in str(await again.recv())


async def test_messages_over_the_limit_wait_unanswered_not_refused() -> None:
    """With 2 messages in progress per connection and 200 ms per call, 6 messages take
    at least 3 rounds: the rest wait in the socket, and none gets an error."""
    faults = FaultParams(latency_ms=200)
    limits = RpcLimits(messages_per_connection=2)
    async with (
        Devnet(ChainParams(history=5), faults, limits=limits) as urls,
        connect(urls.consensus) as ws,
    ):
        client = Raw(ws)
        started = time.monotonic()
        for i in range(6):
            await client.send({"jsonrpc": "2.0", "id": i, "method": "system_name", "params": []})
        replies = [await client.response() for _ in range(6)]
        elapsed = time.monotonic() - started
    assert sorted(r["id"] for r in replies) == list(range(6))
    assert all(r["result"] == "blocktimesd-devnet" for r in replies)
    assert elapsed >= 0.55


async def test_subscriptions_over_the_limit_get_jsonrpsees_error() -> None:
    limits = RpcLimits(max_subscriptions_per_connection=2)
    async with Devnet(ChainParams(history=5), limits=limits) as urls, connect(urls.consensus) as ws:
        client = Raw(ws)
        first = await client.call("chain_subscribeNewHeads")
        await client.call("chain_subscribeNewHeads")
        reply = await client.call_raw("chain_subscribeAllHeads")
        assert reply["error"] == {
            "code": -32006,
            "message": "Too many subscriptions on the connection",
            "data": "Exceeded max limit of 2",
        }
        assert await client.call("chain_unsubscribeNewHeads", first) is True
        assert isinstance(await client.call("chain_subscribeAllHeads"), str)
