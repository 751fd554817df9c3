"""Block facts read over RPC equal the simulated chain's truth, across a runtime upgrade;
the node's transient error answers are asked again in place, by the reader and the
preflight alike."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest

from blocktimesd.aio.chain import (
    IN_PLACE_ATTEMPTS,
    ChainReader,
    call_in_place,
    call_one_in_place,
)
from blocktimesd.aio.preflight import NodeExpectations, Preflight
from blocktimesd.aio.rpc import RpcClient, RpcSettings
from blocktimesd.core import decode
from blocktimesd.core.chains import ChainKind
from blocktimesd.core.header import Header
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.content import ConsensusFacts
from blocktimesd.devnet.params import ChainParams
from blocktimesd.errors import DecodeError, RetryPolicy, RpcError, UnsupportedRuntime

UPGRADE_AT = 40


class CountingObserver:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def request_done(self, method: str, outcome: str, seconds: float) -> None:
        self.calls[method] += 1

    def reconnected(self, endpoint: str) -> None:
        pass

    def connect_failed(self, endpoint: str, reason: str) -> None:
        pass

    def dropped(self, endpoint: str, reason: str) -> None:
        pass


@pytest.fixture
async def devnet() -> AsyncIterator[Devnet]:
    params = ChainParams(
        seed=17, history=90, upgrade_at=UPGRADE_AT, segment_rate=0.05, fork_rate=0.1
    )
    net = Devnet(params)
    async with net:
        yield net


def client_for(url: str, observer: CountingObserver | None = None) -> RpcClient:
    return RpcClient(RpcSettings(endpoints=(url,)), "test", observer=observer)


async def test_consensus_facts_match_the_chain(devnet: Devnet) -> None:
    assert devnet.urls is not None
    observer = CountingObserver()
    async with client_for(devnet.urls.consensus, observer) as client:
        reader = ChainReader(client, ChainKind.CONSENSUS, "consensus")
        await reader.check_runtime()
        for block in devnet.network.consensus.canonical[1:]:
            facts = await reader.facts(block.header)
            truth = block.facts
            assert isinstance(truth, ConsensusFacts)
            assert facts.hash == block.hash
            assert facts.timestamp_ms == block.timestamp_ms
            assert facts.slot == truth.slot
            assert facts.segment_headers == len(truth.segments)
            assert facts.bundle_count == truth.bundles
            assert facts.spec_version == truth.body_spec
    # Versions are asked once per runtime change, not once per block.
    assert observer.calls["state_getRuntimeVersion"] <= 4
    assert observer.calls["state_getMetadata"] == 2


@pytest.mark.parametrize(("kind", "name"), [(ChainKind.CONSENSUS, "consensus"),
                                            (ChainKind.AUTO_EVM, "auto-evm")])  # fmt: skip
async def test_facts_read_together_equal_facts_read_one_by_one(
    devnet: Devnet, kind: ChainKind, name: str
) -> None:
    """Every canonical block and fork block, read in groups of 16 across the upgrade,
    reads as it does on its own: the answers go back to their own blocks."""
    assert devnet.urls is not None
    chain = devnet.network.consensus if kind is ChainKind.CONSENSUS else devnet.network.domain
    url = devnet.urls.consensus if kind is ChainKind.CONSENSUS else devnet.urls.domain
    blocks = [b for b in chain.by_hash.values() if b.header.number > 0]
    assert len(blocks) > len(chain.canonical), "no fork blocks to read"
    blocks.sort(key=lambda b: (b.header.number, b.hash))
    async with client_for(url) as client:
        reader = ChainReader(client, kind, name)
        alone = [await reader.facts(b.header) for b in blocks]
        together = []
        for at in range(0, len(blocks), 16):
            together += await reader.facts_many([b.header for b in blocks[at : at + 16]])
    assert together == alone
    assert [f.hash for f in together] == [b.hash for b in blocks]
    assert {f.timestamp_ms for f in together} == {b.timestamp_ms for b in blocks}


async def test_domain_facts_name_their_consensus_block(devnet: Devnet) -> None:
    assert devnet.urls is not None
    async with client_for(devnet.urls.domain) as client:
        reader = ChainReader(client, ChainKind.AUTO_EVM, "auto-evm")
        await reader.check_runtime()
        for block in devnet.network.domain.canonical[1:]:
            facts = await reader.facts(block.header)
            assert block.link is not None
            assert facts.consensus_hash == block.link.hash
            assert facts.timestamp_ms == block.link.timestamp_ms
            assert facts.bundle_count is None


async def test_bodies_and_events_decode_with_the_runtime_of_their_block(devnet: Devnet) -> None:
    assert devnet.urls is not None
    chain = devnet.network.consensus.canonical
    async with client_for(devnet.urls.consensus) as client:
        reader = ChainReader(client, ChainKind.CONSENSUS, "consensus")
        old_runtime = await reader.runtime_at(chain[1].hash)
        new_runtime = await reader.runtime_at(chain[UPGRADE_AT].hash)
        assert (old_runtime.spec_version, new_runtime.spec_version) == (6, 7)
        checked = misread_segments = 0
        for block in chain[1:]:
            runtime = await reader.runtime_of(block.header)
            body = await reader.body(block.hash)
            assert body is not None
            assert decode.timestamp_from_extrinsics(runtime, body) == block.timestamp_ms
            assert decode.bundle_count_from_extrinsics(runtime, body) == block.facts.bundles
            segments = decode.segment_headers_in_block(runtime, body)
            assert segments == decode.segment_commitment_count(block.header)
            events_key = "0x" + devnet.network.content.events_key.hex()
            events_hex = await client.call("state_getStorage", events_key, block.hash_hex)
            events = runtime.decode_events(bytes.fromhex(events_hex[2:]))
            stored = [e for e in events if (e.pallet, e.name) == ("Domains", "BundleStored")]
            assert len(stored) == block.facts.bundles
            wrong = new_runtime if runtime is old_runtime else old_runtime
            if block.facts.bundles and block.number > UPGRADE_AT:
                # Spec 7 added a field to BundleStored: the old runtime cannot read the events.
                with pytest.raises(DecodeError):
                    wrong.decode_events(bytes.fromhex(events_hex[2:]))
                checked += 1
            if segments and block.number > UPGRADE_AT:
                # store_segment_headers moved to another call index: a wrong answer or none.
                try:
                    misread: int | None = decode.segment_headers_in_block(wrong, body)
                except (DecodeError, UnsupportedRuntime):
                    misread = None
                assert misread != segments
                misread_segments += 1
        assert checked > 0
        assert misread_segments > 0


async def test_missing_pallets_are_reported_at_start_up(devnet: Devnet) -> None:
    assert devnet.urls is not None
    async with client_for(devnet.urls.domain) as client:
        reader = ChainReader(client, ChainKind.CONSENSUS, "auto-evm")
        with pytest.raises(
            UnsupportedRuntime, match=r"lacks Domains\.SuccessfulBundles.*'generic'"
        ):
            await reader.check_runtime()
        generic = ChainReader(client, ChainKind.GENERIC, "auto-evm")
        await generic.check_runtime()
        best = Header.from_json(await client.call("chain_getHeader"))
        facts = await generic.facts(best)
        assert facts.timestamp_ms is not None
        assert (facts.slot, facts.bundle_count, facts.consensus_hash) == (None, None, None)


async def test_runtime_upgrade_while_following() -> None:
    params = ChainParams(seed=23, history=30, upgrade_at=34, fork_rate=0.0)
    devnet = Devnet(params)
    async with devnet as urls, client_for(urls.consensus) as client:
        reader = ChainReader(client, ChainKind.CONSENSUS, "consensus")
        heads = await client.subscribe("chain_subscribeNewHeads", "chain_unsubscribeNewHeads")
        versions = await client.subscribe(
            "state_subscribeRuntimeVersion", "state_unsubscribeRuntimeVersion"
        )
        assert (await anext(versions))["specVersion"] == 6
        devnet.publish(devnet.network.advance(devnet.network.now_ms + 120_000))
        seen: dict[int, int] = {}
        while max(seen, default=0) < 36:
            header = Header.from_json(await anext(heads))
            seen[header.number] = (await reader.facts(header)).spec_version
        assert (await anext(versions))["specVersion"] == 7
    # The upgrade block is produced by the old runtime; its children by the new one.
    assert seen[34] == 6
    assert seen[35] == 7


# -- in-place retries of the node's transient error answers ------------------------------

FAST = RetryPolicy(initial=0.001, cap=0.002)


async def test_transient_error_answers_are_asked_again_a_bounded_number_of_times(
    devnet: Devnet,
) -> None:
    assert devnet.urls is not None
    observer = CountingObserver()
    async with client_for(devnet.urls.consensus, observer) as client:
        await client.wait_ready(5)
        reader = ChainReader(client, ChainKind.CONSENSUS, "consensus")
        devnet.set_faults(error_rate=1.0)  # every answer: -32603 Internal error
        with pytest.raises(RpcError) as raised:
            await reader.call("system_chain")
        assert raised.value.code == -32603
        assert observer.calls["system_chain"] == IN_PLACE_ATTEMPTS
        calls = [("chain_getBlockHash", [n]) for n in (1, 2, 3)]
        results = await reader.call_many(calls)
        assert all(isinstance(r, RpcError) and r.code == -32603 for r in results)
        assert observer.calls["chain_getBlockHash"] == 3 * IN_PLACE_ATTEMPTS
        # An error that another attempt cannot change comes back at once.
        devnet.set_faults(error_rate=0.0)
        with pytest.raises(RpcError) as raised:
            await call_one_in_place(client, "no_suchMethod", retry=FAST)
        assert raised.value.code != -32603
        assert observer.calls["no_suchMethod"] == 1


async def test_in_place_retries_recover_most_transient_answers(devnet: Devnet) -> None:
    assert devnet.urls is not None
    chain = devnet.network.consensus.canonical[1:81]
    observer = CountingObserver()
    async with client_for(devnet.urls.consensus, observer) as client:
        await client.wait_ready(5)
        devnet.set_faults(error_rate=0.5)
        calls = [("chain_getBlockHash", [b.number]) for b in chain]
        results = await call_in_place(client, calls, retry=FAST)
    # Half fail once; 1 in 2**IN_PLACE_ATTEMPTS fails every attempt.
    failed = [at for at, r in enumerate(results) if isinstance(r, RpcError)]
    assert len(failed) < len(chain) // 4
    assert observer.calls["chain_getBlockHash"] > len(chain) * 3 // 2
    for block, result in zip(chain, results, strict=True):
        assert isinstance(result, RpcError) or result == block.hash_hex


async def test_preflight_asks_transient_error_answers_again_in_place(devnet: Devnet) -> None:
    assert devnet.urls is not None
    observer = CountingObserver()
    async with client_for(devnet.urls.consensus, observer) as client:
        await client.wait_ready(5)
        check = Preflight(NodeExpectations(chain_name="Autonomys Devnet"), "consensus")
        devnet.set_faults(error_rate=0.2)
        await check(client)  # each call fails every attempt 1 time in 625
        assert check.info is not None
        assert check.info.chain_name == "Autonomys Devnet"
        devnet.set_faults(error_rate=1.0)
        observer.calls.clear()
        with pytest.raises(RpcError):
            await check(client)
    for method in ("system_chain", "system_name", "chain_getBlockHash", "rpc_methods"):
        assert observer.calls[method] == IN_PLACE_ATTEMPTS, method
