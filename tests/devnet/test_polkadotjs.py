"""polkadot.js, an independent implementation, reads the devnet and agrees with it.

It connects to both nodes, decodes metadata, headers, blocks (all three extrinsic
envelopes) and events, and reads ``Timestamp.Now`` with ``api.at(hash)``, across a
runtime upgrade.  Node.js and npm are needed (the ``js_modules`` fixture).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.chain import Block
from blocktimesd.devnet.content import ConsensusFacts, DomainFacts
from blocktimesd.devnet.network import CONSENSUS, DOMAIN
from blocktimesd.devnet.params import ChainParams

from .conftest import JS

UPGRADE_AT = 30


async def run_pjs(url: str, kind: str, numbers: list[int]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(JS / "pjs_check.mjs"),
        url,
        kind,
        *map(str, numbers),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, err.decode()[-3000:]
    result: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    return result


def expected_consensus_calls(facts: ConsensusFacts) -> list[str]:
    calls = ["timestamp.set"]
    if facts.segments:
        calls.append("subspace.storeSegmentHeaders")
    calls += ["subspace.vote"] * facts.votes
    calls += ["domains.submitBundle"] * facts.bundles
    calls += ["balances.transferKeepAlive"] * facts.transfers
    return calls


def expected_consensus_events(facts: ConsensusFacts) -> list[str]:
    events = ["system.ExtrinsicSuccess"]
    if facts.segments:
        events += ["subspace.SegmentHeaderStored"] * len(facts.segments)
        events.append("system.ExtrinsicSuccess")
    events += ["subspace.FarmerVote", "system.ExtrinsicSuccess"] * facts.votes
    events += ["domains.BundleStored", "system.ExtrinsicSuccess"] * facts.bundles
    per_transfer = [
        "balances.Withdraw",
        "balances.Transfer",
        "transactionPayment.TransactionFeePaid",
        "system.ExtrinsicSuccess",
    ]
    events += per_transfer * facts.transfers
    if facts.upgrade:
        events.append("system.CodeUpdated")
    return events


def expected_domain(facts: DomainFacts) -> tuple[list[str], list[str]]:
    calls = ["timestamp.set"] + ["ethereum.transact"] * facts.evm_txs
    events = ["system.ExtrinsicSuccess"]
    events += ["ethereum.Executed", "system.ExtrinsicSuccess"] * facts.evm_txs
    if facts.upgrade:
        events.append("system.CodeUpdated")
    return calls, events


def check_common(seen: dict[str, Any], block: Block) -> None:
    assert seen["hash"] == block.hash_hex
    assert seen["headerHash"] == block.hash_hex
    assert seen["timestamp"] == block.timestamp_ms
    assert seen["bodySpecVersion"] == block.facts.body_spec
    assert seen["extrinsics"][0]["args"] == str(block.timestamp_ms)


@pytest.mark.usefixtures("js_modules")
async def test_polkadotjs_agrees_with_the_devnet() -> None:
    params = ChainParams(seed=21, history=45, upgrade_at=UPGRADE_AT, fork_rate=0.1)
    devnet = Devnet(params, speed=0.001)  # a nearly frozen clock: the chains stay put
    async with devnet as urls:
        network = devnet.network
        consensus = network.consensus.canonical
        domain = network.domain.canonical
        numbers = list(range(1, len(consensus)))
        domain_numbers = list(range(1, len(domain)))
        seen_c, seen_d = await asyncio.gather(
            run_pjs(urls.consensus, CONSENSUS, numbers),
            run_pjs(urls.domain, DOMAIN, domain_numbers),
        )

    assert seen_c["chain"] == "Autonomys Devnet"
    assert seen_c["genesis"] == network.consensus.genesis.hash_hex
    runtime = network.content.consensus_runtime(consensus[-1].spec_version)
    assert seen_c["specVersion"] == runtime.spec_version
    assert seen_c["pallets"] == [[p.name, p.index] for p in runtime.pallets]
    versions_seen: set[int] = set()
    for seen, block in zip(seen_c["blocks"], consensus[1:], strict=True):
        facts = block.facts
        assert isinstance(facts, ConsensusFacts)
        check_common(seen, block)
        assert [x["call"] for x in seen["extrinsics"]] == expected_consensus_calls(facts)
        assert seen["events"] == expected_consensus_events(facts)
        assert seen["bundleHashes"] == [
            "0x" + h.hex() for h in network.content.bundle_hashes(block.seed, facts.bundles)
        ]
        assert seen["digest"][0] == "PreRuntime"
        assert seen["digest"][-1] == "Seal"
        versions_seen |= {x["version"] for x in seen["extrinsics"]}
        assert [x["signed"] for x in seen["extrinsics"]].count(True) == facts.transfers
    assert {4, 69} <= versions_seen  # v4 bare/signed and v5 General (0x45)
    assert {b["bodySpecVersion"] for b in seen_c["blocks"]} == {6, 7}

    assert seen_d["chain"] == "Autonomys Devnet Domain 0"
    assert seen_d["genesis"] == network.domain.genesis.hash_hex
    for seen, block in zip(seen_d["blocks"], domain[1:], strict=True):
        facts = block.facts
        assert isinstance(facts, DomainFacts)
        check_common(seen, block)
        calls, events = expected_domain(facts)
        assert [x["call"] for x in seen["extrinsics"]] == calls
        assert seen["events"] == events
        assert seen["digest"][:2] == ["PreRuntime", "Consensus"]
