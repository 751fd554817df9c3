"""blocktimesd's own client and decoders against a real Substrate runtime (chopsticks).

The client fetches metadata, runtime version, heads (by subscription), blocks and
``Timestamp.Now``; blocks made with ``dev_newBlock`` must be exactly one aura slot
apart, as read from the runtime itself, and ``dev_timeTravel`` must move them.
"""

from __future__ import annotations

import itertools

import pytest

from blocktimesd.aio.chain import ChainReader
from blocktimesd.aio.preflight import NodeExpectations, Preflight
from blocktimesd.aio.rpc import RpcClient, RpcSettings
from blocktimesd.core import decode
from blocktimesd.core.chains import ChainKind
from blocktimesd.core.header import Header, hex_to_bytes

pytestmark = pytest.mark.chopsticks


async def slot_duration_ms(client: RpcClient, at: str) -> int:
    raw = hex_to_bytes(await client.call("state_call", "AuraApi_slot_duration", "0x", at), "slot")
    return int.from_bytes(raw, "little")


async def test_block_times_on_a_real_runtime(private_chopsticks_url: str) -> None:
    check = Preflight(NodeExpectations(chain_name="asset-hub-rococo"), "rococo-ah")
    settings = RpcSettings(endpoints=(private_chopsticks_url,), request_timeout=60)
    async with RpcClient(settings, "rococo-ah", on_connect=check) as client:
        await client.wait_ready(60)
        assert check.info is not None
        assert check.info.spec_name == "statemine"
        reader = ChainReader(client, ChainKind.GENERIC, "rococo-ah")
        runtime = await reader.check_runtime()
        assert runtime.has_pallet("Timestamp")
        assert not runtime.has_pallet("Domains")

        heads = await client.subscribe("chain_subscribeNewHeads", "chain_unsubscribeNewHeads")
        first = Header.from_json(await anext(heads))
        slot = await slot_duration_ms(client, "0x" + first.hash().hex())
        assert slot == 12_000

        await client.call("dev_newBlock", {"count": 3})
        made = [Header.from_json(await anext(heads)) for _ in range(3)]
        assert [h.number for h in made] == [first.number + 1, first.number + 2, first.number + 3]
        chain = [first, *made]
        facts = [await reader.facts(h) for h in chain]
        for parent, child in itertools.pairwise(facts):
            assert child.parent_hash == parent.hash
            assert child.timestamp_ms is not None
            assert parent.timestamp_ms is not None
            assert child.timestamp_ms - parent.timestamp_ms == slot
            assert child.spec_version == runtime.spec_version

        # The body's Timestamp.set inherent agrees with the storage value.
        body = await reader.body(facts[-1].hash)
        assert body is not None
        body_runtime = await reader.runtime_of(made[-1])
        assert decode.timestamp_from_extrinsics(body_runtime, body) == facts[-1].timestamp_ms

        # Time travel rewrites the head's timestamp; the next block is one slot later.
        last = facts[-1].timestamp_ms
        assert last is not None
        target = last + 3_600_000
        assert await client.call("dev_timeTravel", target) == target
        await client.call("dev_newBlock")
        after = Header.from_json(await anext(heads))
        travelled = await reader.facts(after)
        assert travelled.timestamp_ms == target + slot
        assert travelled.timestamp_ms - last == 3_600_000 + slot
        await heads.close()
