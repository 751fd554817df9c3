"""The chain model: realistic dynamics, forks, the domain link, determinism."""

from __future__ import annotations

import itertools
import statistics
from dataclasses import replace

import pytest

from blocktimesd.core.hashing import blake2_256
from blocktimesd.core.header import CONSENSUS, PRE_RUNTIME, RUNTIME_ENVIRONMENT_UPDATED
from blocktimesd.devnet.chain import Block
from blocktimesd.devnet.content import ConsensusFacts
from blocktimesd.devnet.network import BestChanged, Event, Network
from blocktimesd.devnet.params import ChainParams

START_MS = 1_750_000_000_000


def build(params: ChainParams, blocks: int) -> tuple[Network, list[Event]]:
    net = Network(params, START_MS)
    return net, net.build_history(blocks)


def canonical_deltas(net: Network) -> list[int]:
    chain = net.consensus.canonical
    return [
        b.timestamp_ms - a.timestamp_ms  # type: ignore[operator]
        for a, b in itertools.pairwise(chain[1:])
    ]


def test_same_seed_same_chains_however_time_is_sliced() -> None:
    params = ChainParams(seed=7, fork_rate=0.2)
    one, _ = build(params, 300)
    other = Network(params, START_MS)
    while other.consensus.best.number < 300:
        other.advance(other.now_ms + 2345)  # slices that do not align with slots
    # ``advance`` may run a little further; compare the common prefix.
    assert [b.hash for b in one.consensus.canonical] == [
        b.hash for b in other.consensus.canonical[:301]
    ]
    assert one.domain.canonical[-1].hash in other.domain.by_hash


def test_different_seeds_differ() -> None:
    a, _ = build(ChainParams(seed=1), 20)
    b, _ = build(ChainParams(seed=2), 20)
    assert a.consensus.best.hash != b.consensus.best.hash


def test_canonical_chain_is_linked_hashed_and_timed() -> None:
    net, _ = build(ChainParams(seed=3, fork_rate=0.3), 1500)
    chain = net.consensus.canonical
    for number, block in enumerate(chain):
        assert block.number == number
        assert block.hash == blake2_256(block.header.encode())
        if number:
            assert block.header.parent_hash == chain[number - 1].hash
    deltas = canonical_deltas(net)
    assert min(deltas) >= 500
    # 6 s on average (1 s slots, probability 1/6), with minute-long stalls now and then.
    assert 5_000 < statistics.mean(deltas) < 7_500
    assert max(deltas) > 20_000


def test_slots_increase_and_sit_in_the_pre_digest() -> None:
    net, _ = build(ChainParams(seed=4), 200)
    slots = [b.facts.slot for b in net.consensus.canonical[1:]]
    assert slots == sorted(set(slots))
    for block in net.consensus.canonical[1:]:
        first = block.header.digest[0]
        assert (first.kind, first.engine, first.payload[0]) == (PRE_RUNTIME, b"SUB_", 0)
        assert int.from_bytes(first.payload[1:9], "little") == block.facts.slot


def reorgs(events: list[Event]) -> list[tuple[int, int, int]]:
    """(depth, old best number, new best number) of every best change that retracts."""
    out = []
    for event in events:
        if isinstance(event, BestChanged) and event.chain == "consensus" and event.change.retracted:
            change = event.change
            old_tip = change.retracted[0].number
            out.append((len(change.retracted), old_tip, change.block.number))
    return out


def test_forks_reorg_with_geometric_depth_and_sometimes_to_a_lower_height() -> None:
    net, events = build(ChainParams(seed=5, fork_rate=0.5, stall_every_s=0), 4000)
    found = reorgs(events)
    depths = [d for d, _, _ in found]
    assert len(found) > 200
    by_depth = [depths.count(d) for d in range(1, 4)]
    assert by_depth[0] > 5 * by_depth[1] > 0  # each extra block roughly 10x rarer
    assert any(new < old for _, old, new in found), "no reorg to a lower height"
    orphans = [b for b in net.consensus.by_hash.values() if not net.consensus.is_canonical(b)]
    assert orphans, "forks must leave orphaned blocks behind"


def domain_source(block: Block) -> bytes:
    (rgtr,) = [d for d in block.header.digest if d.engine == b"RGTR"]
    assert rgtr.kind == PRE_RUNTIME
    return rgtr.payload


def test_domain_blocks_follow_their_consensus_blocks() -> None:
    net, _ = build(ChainParams(seed=6, fork_rate=0.4), 2000)
    consensus, domain = net.consensus, net.domain
    with_bundles = [b for b in consensus.canonical[1:] if b.facts.bundles > 0]
    assert len(domain.canonical) - 1 == len(with_bundles)
    for number, (d, c) in enumerate(zip(domain.canonical[1:], with_bundles, strict=True), start=1):
        assert d.number == number
        assert domain_source(d) == c.hash
        assert d.timestamp_ms == c.timestamp_ms
        assert d.header.parent_hash == domain.canonical[number - 1].hash
    # Domain blocks built on orphaned consensus blocks are orphaned with them.
    for d in domain.by_hash.values():
        if d.parent is None:
            continue
        source = consensus.get(domain_source(d))
        assert source is not None
        assert domain.is_canonical(d) == consensus.is_canonical(source)


def test_domain_has_idle_stretches() -> None:
    net, _ = build(ChainParams(seed=8, domain_idle_rate=1 / 100, domain_wake_rate=1 / 50), 3000)
    longest = run = 0
    for block in net.consensus.canonical[1:]:
        run = run + 1 if block.facts.bundles == 0 else 0
        longest = max(longest, run)
    assert longest >= 40


def segment_commitments(block: Block) -> int:
    return sum(
        1
        for d in block.header.digest
        if d.kind == CONSENSUS and d.engine == b"SUB_" and d.payload[0] == 4
    )


def test_segment_headers_land_in_block_one_and_in_rare_bursts() -> None:
    net, _ = build(ChainParams(seed=9, segment_rate=1 / 100), 3000)
    chain = net.consensus.canonical
    assert segment_commitments(chain[1]) == 1
    counts = [segment_commitments(b) for b in chain[2:]]
    carrying = [c for c in counts if c]
    assert 5 < len(carrying) < 100
    assert all(1 <= c <= 3 for c in carrying)
    assert all(segment_commitments(b) == len(b.facts.segments) for b in chain)


@pytest.mark.parametrize("upgrade_at", [1, 40])
def test_runtime_upgrade(upgrade_at: int) -> None:
    net, _ = build(ChainParams(seed=10, upgrade_at=upgrade_at, fork_rate=0), upgrade_at + 5)
    content = net.content
    chain = net.consensus.canonical
    upgrade = chain[upgrade_at]
    assert [d.kind for d in upgrade.header.digest].count(RUNTIME_ENVIRONMENT_UPDATED) == 1
    assert chain[upgrade_at - 1].spec_version == content.consensus_base_spec
    assert upgrade.spec_version == content.next_consensus_spec(content.consensus_base_spec)
    # The upgrade block itself is still built by the old runtime; its children by the new one.
    assert upgrade.facts.body_spec == content.consensus_base_spec
    assert chain[upgrade_at + 1].facts.body_spec == upgrade.spec_version
    assert not any(
        d.kind == RUNTIME_ENVIRONMENT_UPDATED
        for b in chain
        if b is not upgrade
        for d in b.header.digest
    )


def test_no_forks_at_fork_rate_zero() -> None:
    _, events = build(replace(ChainParams(seed=11), fork_rate=0.0), 500)
    assert reorgs(events) == []


def test_genesis_has_no_timestamp() -> None:
    net, _ = build(ChainParams(seed=12), 3)
    genesis = net.consensus.genesis
    assert genesis.timestamp_ms is None
    assert net.consensus.storage_value(genesis, net.content.now_key) is None
    assert isinstance(net.consensus.canonical[1].facts, ConsensusFacts)


def test_forced_reorg_replaces_the_last_blocks_with_a_longer_branch() -> None:
    net, _ = build(ChainParams(seed=13, fork_rate=0.0), 120)
    old = list(net.consensus.canonical)
    old_domain = list(net.domain.canonical)
    events = net.force_reorg(30)
    assert reorgs(events) == [(30, 120, 121)]
    chain = net.consensus.canonical
    assert chain[:91] == old[:91]
    assert all(b.hash != o.hash for b, o in zip(chain[91:], old[91:], strict=False))
    for a, b in itertools.pairwise(chain[90:]):
        assert b.header.parent_hash == a.hash
        assert b.facts.slot > a.facts.slot
        assert b.timestamp_ms >= a.timestamp_ms + 500  # type: ignore[operator]
    # A domain block is canonical exactly when its consensus source is: the ones derived
    # from the retracted consensus blocks are orphaned with them.
    assert any(not net.domain.is_canonical(d) for d in old_domain)
    for d in net.domain.by_hash.values():
        if d.parent is not None:
            source = net.consensus.get(domain_source(d))
            assert source is not None
            assert net.domain.is_canonical(d) == net.consensus.is_canonical(source)
    # The chain goes on from the new tip.
    net.advance(net.now_ms + 60_000)
    assert net.consensus.best.number > 121


def test_forced_reorg_to_a_lower_height() -> None:
    net, _ = build(ChainParams(seed=14, fork_rate=0.0), 80)
    events = net.force_reorg(20, length=12)
    assert reorgs(events) == [(20, 80, 72)]
    assert net.consensus.best.number == 72


def test_forced_reorg_is_deterministic_and_leaves_the_model_draws_alone() -> None:
    params = ChainParams(seed=15, fork_rate=0.1)
    one, _ = build(params, 100)
    two, _ = build(params, 100)
    one.force_reorg(10)
    two.force_reorg(10)
    assert one.consensus.best.hash == two.consensus.best.hash
    plain, _ = build(params, 100)
    # The model draws the same numbers after a forced reorg as without it.
    assert one.rng.getstate() == plain.rng.getstate()


@pytest.mark.parametrize(
    ("depth", "length", "message"),
    [(0, None, "depth must be between 1 and 50"), (51, None, "depth must be between 1 and 50"),
     (5, 0, "length must be between 1"), (5, 10_000, "length must be between 1")],
)  # fmt: skip
def test_forced_reorg_refuses_impossible_branches(
    depth: int, length: int | None, message: str
) -> None:
    net, _ = build(ChainParams(seed=16, fork_rate=0.0), 50)
    with pytest.raises(ValueError, match=message):
        net.force_reorg(depth, length)


def test_upgrade_scheduled_while_running() -> None:
    net, _ = build(ChainParams(seed=17, fork_rate=0.0), 40)
    content = net.content
    assert net.schedule_upgrade() == 41
    with pytest.raises(ValueError, match="above the best block"):
        net.schedule_upgrade(40)
    assert net.schedule_upgrade(43) == 43  # not happened yet: it can move
    net.build_history(50)
    chain = net.consensus.canonical
    assert chain[42].spec_version == content.consensus_base_spec
    assert chain[43].spec_version == content.next_consensus_spec(content.consensus_base_spec)
    assert [d.kind for d in chain[43].header.digest].count(RUNTIME_ENVIRONMENT_UPDATED) == 1
    assert net.domain.best.spec_version == content.next_domain_spec(content.domain_base_spec)
    with pytest.raises(ValueError, match="upgraded already"):
        net.schedule_upgrade()
