"""The devnet's JSON-RPC, checked the way a client sees it: over a real WebSocket."""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from blocktimesd.core.header import Header
from blocktimesd.core.scale import decode_compact
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams, FaultParams

from .conftest import Raw

NOW_KEY = "0xf0c365c3cf59d671eb72da0e7a4113c49f1f0515f462cdcf84e0f1d6045dfcbb"
BUNDLES_KEY = "0x0b41d0c7f7b4485bd7be1d66066b00ad38420b1ba9feb1a2d2173b0caecad9d100000000"
UNKNOWN = "0x" + "ab" * 32


async def test_system_methods(consensus: Raw, domain: Raw) -> None:
    assert await consensus.call("system_chain") == "Autonomys Devnet"
    assert await domain.call("system_chain") == "Autonomys Devnet Domain 0"
    assert await consensus.call("system_health") == {
        "peers": 8,
        "isSyncing": False,
        "shouldHavePeers": True,
    }
    props = await consensus.call("system_properties")
    assert props["tokenSymbol"] == "AI3"
    methods = (await consensus.call("rpc_methods"))["methods"]
    for name in (
        "chain_getBlockHash",
        "chain_getHeader",
        "chain_getBlock",
        "chain_getFinalizedHead",
        "state_getRuntimeVersion",
        "state_getMetadata",
        "state_getStorage",
        "state_queryStorageAt",
        "state_queryStorage",
        "chain_subscribeNewHeads",
        "chain_unsubscribeNewHeads",
        "chain_subscribeAllHeads",
        "chain_subscribeFinalizedHeads",
        "system_health",
    ):
        assert name in methods
    assert methods == sorted(methods)


async def test_block_hash_forms(consensus: Raw, devnet: Devnet) -> None:
    chain = devnet.network.consensus
    best = await consensus.call("chain_getBlockHash")
    assert (await consensus.call("chain_getHeader", best))["number"] == hex(
        chain.best.number
    ) or best in {b.hash_hex for b in chain.canonical[-3:]}
    assert await consensus.call("chain_getBlockHash", 0) == chain.genesis.hash_hex
    assert await consensus.call("chain_getBlockHash", "0x2") == chain.canonical[2].hash_hex
    assert await consensus.call("chain_getBlockHash", [1, 2, 10**6]) == [
        chain.canonical[1].hash_hex,
        chain.canonical[2].hash_hex,
        None,
    ]
    assert await consensus.call("chain_getBlockHash", 10**6) is None
    reply = await consensus.call_raw("chain_getBlockHash", -1)
    assert reply["error"]["code"] == -32602
    assert reply["error"]["message"] == "Invalid params"


async def test_every_served_header_hashes_to_its_hash(consensus: Raw, domain: Raw) -> None:
    for client in (consensus, domain):
        best = Header.from_json(await client.call("chain_getHeader")).number
        hashes = await client.call("chain_getBlockHash", list(range(best + 1)))
        await client.send(
            [
                {"jsonrpc": "2.0", "id": i, "method": "chain_getHeader", "params": [h]}
                for i, h in enumerate(hashes)
            ]
        )
        replies = await client.response()
        assert len(replies) == len(hashes)
        for reply in replies:
            header = Header.from_json(reply["result"])
            assert "0x" + header.hash().hex() == hashes[reply["id"]]
            assert header.number == reply["id"]


async def test_unknown_blocks(consensus: Raw) -> None:
    assert await consensus.call("chain_getHeader", UNKNOWN) is None
    assert await consensus.call("chain_getBlock", UNKNOWN) is None
    reply = await consensus.call_raw("state_getStorage", NOW_KEY, UNKNOWN)
    assert reply["error"] == {
        "code": 4003,
        "message": f"Client error: UnknownBlock: Header was not found in the database: {UNKNOWN}",
    }
    reply = await consensus.call_raw("state_queryStorageAt", [NOW_KEY], UNKNOWN)
    assert reply["error"]["code"] == 4001
    reply = await consensus.call_raw("chain_getHeader", "0x1234")
    assert reply["error"]["code"] == -32602
    assert "invalid length" in reply["error"]["data"]


async def test_unknown_method_and_batches(consensus: Raw) -> None:
    reply = await consensus.call_raw("chain_noSuchThing")
    assert reply["error"] == {"code": -32601, "message": "Method not found"}
    await consensus.send(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "chain_getBlockHash", "params": [0]},
            {"jsonrpc": "2.0", "id": 2, "method": "nope", "params": []},
            {"jsonrpc": "2.0", "method": "system_chain", "params": []},  # a notification: no reply
            {"jsonrpc": "2.0", "id": 3, "method": "system_chain", "params": []},
        ]
    )
    replies = await consensus.response()
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert replies[1]["error"]["code"] == -32601
    assert replies[2]["result"] == "Autonomys Devnet"
    await consensus.send([])
    assert await consensus.response() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "Invalid request"},
    }
    await consensus.ws.send("{not json")
    assert (await consensus.response())["error"]["code"] == -32700


async def test_timestamps_bodies_and_storage(consensus: Raw, devnet: Devnet) -> None:
    chain = devnet.network.consensus
    assert await consensus.call("state_getStorage", NOW_KEY, chain.genesis.hash_hex) is None
    for block in chain.canonical[1:30]:
        value = await consensus.call("state_getStorage", NOW_KEY, block.hash_hex)
        assert int.from_bytes(bytes.fromhex(value[2:]), "little") == block.timestamp_ms
        body = await consensus.call("chain_getBlock", block.hash_hex)
        assert body["justifications"] is None
        first = bytes.fromhex(body["block"]["extrinsics"][0][2:])
        length, pos = decode_compact(first)
        assert length == len(first) - pos
        assert first[pos : pos + 3] == b"\x04\x01\x00"  # bare v4, Timestamp.set
        assert decode_compact(first, pos + 3)[0] == block.timestamp_ms
        versions = {
            bytes.fromhex(x[2:])[decode_compact(bytes.fromhex(x[2:]))[1]]
            for x in body["block"]["extrinsics"]
        }
        assert versions <= {0x04, 0x84, 0x45}
        bundles = await consensus.call("state_getStorage", BUNDLES_KEY, block.hash_hex)
        if block.facts.bundles:
            assert decode_compact(bytes.fromhex(bundles[2:]))[0] == block.facts.bundles
        else:
            assert bundles is None
    at = chain.canonical[5].hash_hex
    result = await consensus.call("state_queryStorageAt", [NOW_KEY, "0x1234"], at)
    assert result[0]["block"] == at
    assert result[0]["changes"][1] == ["0x1234", None]


async def test_query_storage_is_unsafe_by_default(consensus: Raw, devnet: Devnet) -> None:
    chain = devnet.network.consensus
    reply = await consensus.call_raw("state_queryStorage", [NOW_KEY], chain.canonical[1].hash_hex)
    assert reply["error"] == {"code": 4003, "message": "RPC call is unsafe to be called externally"}
    await consensus.call("devnet_setFaults", {"unsafe_rpc": True})
    result = await consensus.call(
        "state_queryStorage", [NOW_KEY], chain.canonical[1].hash_hex, chain.canonical[20].hash_hex
    )
    assert [r["block"] for r in result] == [b.hash_hex for b in chain.canonical[1:21]]
    assert all(len(r["changes"]) == 1 for r in result)


async def test_metadata_and_versions(consensus: Raw, domain: Raw) -> None:
    for client, name in ((consensus, "subspace"), (domain, "subspace-evm-domain")):
        version = await client.call("state_getRuntimeVersion")
        assert version["specName"] == name
        assert list(version)[:4] == ["specName", "implName", "authoringVersion", "specVersion"]
        metadata = await client.call("state_getMetadata")
        assert metadata.startswith("0x6d6574610e")  # "meta", V14
        versions = await client.call("state_call", "Metadata_metadata_versions", "0x")
        assert versions == "0x040e000000"
        at_version = await client.call("state_call", "Metadata_metadata_at_version", "0x0e000000")
        assert at_version.startswith("0x01")
        assert metadata[2:] in at_version


async def test_domain_links_to_consensus(domain: Raw, consensus: Raw) -> None:
    best = Header.from_json(await domain.call("chain_getHeader"))
    assert best.number > 0
    (rgtr,) = [d for d in best.digest if d.engine == b"RGTR"]
    source = "0x" + rgtr.payload.hex()
    assert await consensus.call("chain_getHeader", source) is not None
    domain_ts = await domain.call("state_getStorage", NOW_KEY, "0x" + best.hash().hex())
    assert await consensus.call("state_getStorage", NOW_KEY, source) == domain_ts


@pytest.mark.parametrize("chain_params", [ChainParams(seed=5, history=30, fork_rate=0.3)])
async def test_subscriptions(devnet: Devnet, consensus: Raw) -> None:
    new_id = await consensus.call("chain_subscribeNewHeads")
    all_id = await consensus.call("chain_subscribeAllHeads")
    fin_id = await consensus.call("chain_subscribeFinalizedHeads")
    ver_id = await consensus.call("state_subscribeRuntimeVersion")
    for sub in (new_id, all_id, fin_id, ver_id):
        assert re.fullmatch(r"[A-Za-z0-9]{16}", sub)
    first = {}
    for _ in range(4):
        note = await consensus.notification()
        first[note["params"]["subscription"]] = note
    assert first[new_id]["method"] == "chain_newHead"
    assert first[all_id]["method"] == "chain_allHead"
    assert first[fin_id]["method"] == "chain_finalizedHead"
    assert first[ver_id]["params"]["result"]["specName"] == "subspace"
    start = int(first[new_id]["params"]["result"]["number"], 16)
    # Make blocks quickly: push the simulated clock forward.
    devnet.publish(devnet.network.advance(devnet.network.now_ms + 120_000))
    seen: dict[str, list[int]] = {new_id: [], all_id: []}
    while len(seen[new_id]) < 3:
        note = await consensus.notification()
        sub = note["params"]["subscription"]
        if sub in seen:
            seen[sub].append(int(note["params"]["result"]["number"], 16))
    assert all(n > 0 for n in seen[new_id])
    assert seen[all_id], "every imported block goes to allHeads"
    assert max(seen[new_id]) > start
    assert await consensus.call("chain_unsubscribeNewHeads", new_id) is True
    assert await consensus.call("chain_unsubscribeNewHeads", new_id) is False
    assert await consensus.call("chain_unsubscribeAllHeads", "nonexistent") is False


async def test_finalized_head_is_deep(consensus: Raw, devnet: Devnet) -> None:
    # History is far shorter than the finality depth: the node has finalized only genesis.
    assert (
        await consensus.call("chain_getFinalizedHead") == devnet.network.consensus.genesis.hash_hex
    )


async def test_injected_errors(consensus: Raw) -> None:
    reply = await consensus.call_raw("devnet_setFaults", {"no_such_fault": 1})
    assert reply["error"]["code"] == -32602
    await consensus.call("devnet_setFaults", {"error_rate": 1.0})
    reply = await consensus.call_raw("system_chain")
    assert reply["error"]["code"] == -32603
    await consensus.call("devnet_setFaults", {"error_rate": 0.0})
    assert await consensus.call("system_chain") == "Autonomys Devnet"


async def test_pruning(consensus: Raw, devnet: Devnet) -> None:
    chain = devnet.network.consensus
    old, recent = chain.canonical[2], chain.canonical[-2]
    await consensus.call("devnet_setFaults", {"prune_state": 10, "prune_bodies": 5})
    reply = await consensus.call_raw("state_getStorage", NOW_KEY, old.hash_hex)
    assert reply["error"] == {
        "code": 4003,
        "message": f"Client error: UnknownBlock: State already discarded for {old.hash_hex}",
    }
    assert await consensus.call("state_getStorage", NOW_KEY, recent.hash_hex) is not None
    assert await consensus.call("chain_getBlock", old.hash_hex) is None
    assert (
        await consensus.call("chain_getHeader", old.hash_hex) is not None
    )  # headers are never pruned
    assert await consensus.call("chain_getBlock", recent.hash_hex) is not None


async def test_stall_then_recover(consensus: Raw) -> None:
    assert await consensus.call("devnet_stall", 1.0) is True
    await asyncio.sleep(0.05)
    await consensus.send({"jsonrpc": "2.0", "id": 99, "method": "system_chain", "params": []})
    with pytest.raises(TimeoutError):
        await consensus.response(wait=0.4)
    await asyncio.sleep(1.0)
    assert await consensus.call("system_chain") == "Autonomys Devnet"


async def test_dropped_connection(consensus: Raw) -> None:
    assert await consensus.call("devnet_dropConnections") is True
    with pytest.raises(ConnectionClosedError):
        await consensus.ws.recv()


@pytest.mark.parametrize("fault_params", [FaultParams(subscription_buffer=4)])
async def test_lagging_subscriber_is_dropped_silently(devnet: Devnet) -> None:
    assert devnet.urls is not None
    host, port = devnet.urls.consensus.removeprefix("ws://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    async with connect(devnet.urls.consensus, sock=sock, max_queue=1) as ws:
        client = Raw(ws)
        sub = await client.call("chain_subscribeAllHeads")
        server = devnet.servers["consensus"]
        # Stop reading and let blocks pour in until the node gives up on us.
        for _ in range(400):
            devnet.publish(devnet.network.advance(devnet.network.now_ms + 60_000))
            await asyncio.sleep(0.005)
            if sub not in server.active_subscriptions():
                break
        assert sub not in server.active_subscriptions()
        received: list[Any] = []
        while True:
            try:
                received.append(await client.recv(wait=1.0))
            except TimeoutError:
                break
        # What was owed arrives; then nothing more, and no error is ever sent.
        assert all(m["params"]["subscription"] == sub for m in received)
        devnet.publish(devnet.network.advance(devnet.network.now_ms + 60_000))
        with pytest.raises(TimeoutError):
            await client.recv(wait=0.3)


@pytest.mark.parametrize(
    "chain_params", [ChainParams(seed=3, history=60, upgrade_at=50, fork_rate=0)]
)
async def test_runtime_upgrade_over_rpc(consensus: Raw, devnet: Devnet) -> None:
    chain = devnet.network.consensus
    before, upgrade = chain.canonical[49], chain.canonical[50]
    old = await consensus.call("state_getRuntimeVersion", before.hash_hex)
    new = await consensus.call("state_getRuntimeVersion", upgrade.hash_hex)
    assert new["specVersion"] == old["specVersion"] + 1
    assert await consensus.call("state_getMetadata", before.hash_hex) != await consensus.call(
        "state_getMetadata", upgrade.hash_hex
    )
