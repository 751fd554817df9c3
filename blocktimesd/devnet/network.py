"""The simulated Autonomys network: block production on both chains.

Pure and deterministic: :meth:`Network.advance` takes the simulated time and returns
what the nodes imported.  Every random choice comes from one ``random.Random``
seeded with ``ChainParams.seed`` and is drawn slot by slot, so the same seed gives
the same chains however the caller slices time.

The model (see ``docs/devnet.md``): 1 s slots with jitter; a block is authored in a
slot with probability 1/6 and stamped with the author's clock; now and then the
proof-of-time chain stalls for about a minute; a share of blocks meets a competing
block, either a sibling that loses or a branch that wins (a reorg) with a depth that
is roughly geometric, sometimes to a lower height.  A domain block is derived from
every consensus block that includes bundles, copies its timestamp and names it in an
``RGTR`` digest, so domain blocks on an orphaned consensus block are orphaned too.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from blocktimesd.core.hashing import blake2_256
from blocktimesd.core.header import Header
from blocktimesd.devnet.chain import BestChange, Block, ChainStore
from blocktimesd.devnet.content import ConsensusFacts, Content, DomainFacts
from blocktimesd.devnet.params import ChainParams

__all__ = ["CONSENSUS", "DOMAIN", "BestChanged", "BlockImported", "Event", "Network"]

CONSENSUS = "consensus"
DOMAIN = "auto-evm"
# Keeps a domain block's events within one 100-event System.EventSegments entry.
_MAX_EVM_TXS = 45


@dataclass(frozen=True, slots=True)
class BlockImported:
    chain: str
    block: Block


@dataclass(frozen=True, slots=True)
class BestChanged:
    chain: str
    change: BestChange


Event = BlockImported | BestChanged


class Network:
    def __init__(self, params: ChainParams, start_ms: int, content: Content | None = None) -> None:
        self.params = params
        self.content = content or Content(params)
        self.rng = random.Random(params.seed)
        self.next_slot_ms = start_ms
        self.slot = start_ms // 1000  # slots count from the simulated epoch, like wall seconds
        self.stall_until_ms = 0
        self.domain_active = True
        self.upgrade_at = params.upgrade_at  # moved by :meth:`schedule_upgrade`
        self.consensus = ChainStore(self._genesis(CONSENSUS))
        self.domain = ChainStore(self._genesis(DOMAIN))
        self.consensus.genesis.link = self.domain.genesis
        self.domain.genesis.link = self.consensus.genesis

    # -- time ----------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        """The start of the next slot: everything before it has been simulated."""
        return self.next_slot_ms

    def build_history(self, blocks: int) -> list[Event]:
        """Run the clock until the best consensus chain has ``blocks`` blocks."""
        events: list[Event] = []
        while self.consensus.best.number < blocks:
            events.extend(self._step())
        return events

    def advance(self, until_ms: int) -> list[Event]:
        """Simulate every slot that starts at or before ``until_ms``."""
        events: list[Event] = []
        while self.next_slot_ms <= until_ms:
            events.extend(self._step())
        return events

    def _step(self) -> list[Event]:
        p, rng = self.params, self.rng
        slot_start = self.next_slot_ms
        slot_len = rng.randint(p.slot_ms_min, p.slot_ms_max)
        self.next_slot_ms += slot_len
        self.slot += 1
        if slot_start < self.stall_until_ms:
            return []
        if p.stall_every_s > 0 and rng.random() < slot_len / 1000 / p.stall_every_s:
            self.stall_until_ms = slot_start + int(rng.uniform(p.stall_s_min, p.stall_s_max) * 1000)
            return []
        if rng.random() >= p.slot_probability:
            return []
        return self._author(slot_start)

    # -- block production ---------------------------------------------------------

    def _author(self, slot_start: int) -> list[Event]:
        p, rng = self.params, self.rng
        best = self.consensus.best
        ts = self._stamp(best, slot_start)
        if rng.random() >= p.fork_rate or best.number == 0:
            return self._import(self._consensus_block(best, self.slot, ts), make_best=True)
        if rng.random() < 0.5:
            # A competing block at the same height arrives second and loses.
            events = self._import(self._consensus_block(best, self.slot, ts), make_best=True)
            rival_slot = self.slot - rng.randint(1, 3)
            if rival_slot > self._slot_of(best):
                rival = self._consensus_block(best, rival_slot, ts - rng.randint(50, 900))
                events += self._import(rival, make_best=False)
            return events
        return self._reorg(best, slot_start)

    def _reorg(self, best: Block, slot_start: int) -> list[Event]:
        """Import a competing branch that becomes the best chain."""
        p, rng = self.params, self.rng
        depth = 1
        while depth < p.max_fork_depth and rng.random() < 0.1:
            depth += 1
        floor = max(0, best.number - p.finality_depth)
        depth = min(depth, best.number - floor)
        ancestor = self.consensus.canonical[best.number - depth]
        roll = rng.random()
        if depth >= 2 and roll < 0.1:
            length = depth - 1  # a heavier branch at a lower height
        elif roll < 0.25:
            length = depth
        else:
            length = depth + 1
        first_slot = self._slot_of(ancestor) + 1
        if self.slot - first_slot + 1 < length:
            return self._import(
                self._consensus_block(best, self.slot, self._stamp(best, slot_start)), True
            )
        return self._branch(ancestor, length, slot_start)

    def _branch(self, ancestor: Block, length: int, slot_start: int) -> list[Event]:
        """Import ``length`` blocks on ``ancestor``, the last in the current slot, as the best."""
        p, rng = self.params, self.rng
        first_slot = self._slot_of(ancestor) + 1
        slots = [*sorted(rng.sample(range(first_slot, self.slot), length - 1)), self.slot]
        events: list[Event] = []
        parent = ancestor
        for i, slot in enumerate(slots):
            slot_time = slot_start - (self.slot - slot) * (p.slot_ms_min + p.slot_ms_max) // 2
            block = self._consensus_block(parent, slot, self._stamp(parent, slot_time))
            events += self._import(block, make_best=i == len(slots) - 1)
            parent = block
        return events

    # -- forced events (control methods of the running devnet) ----------------------------

    def force_reorg(self, depth: int, length: int | None = None) -> list[Event]:
        """Make a competing branch the best chain now, whatever ``fork_rate`` says.

        The branch replaces the last ``depth`` consensus blocks with ``length`` new ones
        (``depth + 1`` by default; fewer is a reorg to a lower height), the last of them
        in the current slot; the domain blocks derived from the retracted blocks are
        orphaned with them.  Its random choices come from a generator seeded by the
        seed and the tip it replaces, so the same calls at the same simulated moments
        give the same chains, and the draws of the model itself are left untouched.
        Raises ``ValueError`` for a depth that reaches below the finalized block or a
        branch that does not fit in the slots since its common ancestor.
        """
        best = self.consensus.best
        floor = max(0, best.number - self.params.finality_depth)
        if not 1 <= depth <= best.number - floor:
            raise ValueError(
                f"depth must be between 1 and {best.number - floor} (the blocks above the "
                f"finalized block #{floor}), got {depth}"
            )
        ancestor = self.consensus.canonical[best.number - depth]
        room = self.slot - self._slot_of(ancestor)  # slots after the ancestor, current included
        if length is None:
            length = min(depth + 1, room)
        if not 1 <= length <= room:
            raise ValueError(
                f"length must be between 1 and {room} (the slots since block "
                f"#{ancestor.number}), got {length}"
            )
        saved = self.rng
        self.rng = random.Random(b"%d/%d/" % (self.params.seed, depth) + best.hash)
        try:
            # The current slot has been simulated: it started about one slot before now.
            average_slot_ms = (self.params.slot_ms_min + self.params.slot_ms_max) // 2
            return self._branch(ancestor, length, self.next_slot_ms - average_slot_ms)
        finally:
            self.rng = saved

    def schedule_upgrade(self, at: int | None = None) -> int:
        """Upgrade both runtimes at consensus height ``at`` (default: the next block).

        The devnet has one upgrade (spec 6 to 7 and 0 to 1); raises ``ValueError`` once
        it happened, or for a height that is not above the best block.
        """
        best = self.consensus.best
        if best.spec_version != self.content.consensus_base_spec or (
            0 < self.upgrade_at <= best.number
        ):
            raise ValueError("the runtimes were upgraded already; the devnet has one upgrade")
        height = best.number + 1 if at is None else at
        if height <= best.number:
            raise ValueError(f"the upgrade height must be above the best block #{best.number}")
        self.upgrade_at = height
        return height

    def _stamp(self, parent: Block, slot_start: int) -> int:
        """The author's clock shortly after the slot starts, never too close to the parent."""
        ts = slot_start + self.rng.randint(30, 400)
        if parent.timestamp_ms is not None:
            ts = max(ts, parent.timestamp_ms + self.params.min_block_gap_ms)
        return ts

    @staticmethod
    def _slot_of(block: Block) -> int:
        facts = block.facts
        return facts.slot if isinstance(facts, ConsensusFacts) else 0

    def _poisson(self, mean: float) -> int:
        if mean <= 0:
            return 0
        limit, k, prod = math.exp(-mean), 0, self.rng.random()
        while prod > limit:
            k += 1
            prod *= self.rng.random()
        return k

    def _consensus_block(self, parent: Block, slot: int, ts: int) -> Block:
        p, rng = self.params, self.rng
        number = parent.number + 1
        upgrade = self.upgrade_at > 0 and number == self.upgrade_at
        if self.domain_active and rng.random() < p.domain_idle_rate:
            self.domain_active = False
        elif not self.domain_active and rng.random() < p.domain_wake_rate:
            self.domain_active = True
        bundles = self._poisson(p.bundles_per_block) if self.domain_active else 0
        stored = parent.facts.segments_total if isinstance(parent.facts, ConsensusFacts) else 0
        if number == 1:
            burst = 1  # the genesis segment lands in block 1
        elif rng.random() < p.segment_rate:
            burst = rng.randint(1, 3)
        else:
            burst = 0
        facts = ConsensusFacts(
            slot=slot,
            bundles=bundles,
            segments=tuple(range(stored, stored + burst)),
            segments_total=stored + burst,
            votes=self._poisson(p.votes_per_block),
            transfers=self._poisson(p.transfers_per_block),
            upgrade=upgrade,
            body_spec=parent.spec_version,
        )
        seed = rng.getrandbits(63)
        spec = (
            self.content.next_consensus_spec(parent.spec_version)
            if upgrade
            else parent.spec_version
        )
        header = Header(
            parent.hash,
            number,
            blake2_256(b"state" + seed.to_bytes(8, "little")),
            blake2_256(b"extrinsics" + seed.to_bytes(8, "little")),
            self.content.consensus_digest(seed, facts),
        )
        storage = self.content.consensus_storage(number, ts, seed, facts)
        return Block(
            header, header.hash(), parent, ts, spec, seed, facts, storage, parent.persistent
        )

    def _domain_block(self, source: Block) -> Block:
        """The domain block derived from consensus block ``source``."""
        p, upgrade_at = self.params, self.upgrade_at
        parent = source.parent.link if source.parent is not None else None
        assert parent is not None, "every consensus block knows its domain tip"
        number = parent.number + 1
        base = self.content.domain_base_spec
        upgrade = upgrade_at > 0 and source.number >= upgrade_at and parent.spec_version == base
        facts = DomainFacts(
            evm_txs=min(self._poisson(p.evm_txs_per_block), _MAX_EVM_TXS),
            upgrade=upgrade,
            body_spec=parent.spec_version,
        )
        seed = self.rng.getrandbits(63)
        spec = (
            self.content.next_domain_spec(parent.spec_version) if upgrade else parent.spec_version
        )
        assert source.timestamp_ms is not None
        header = Header(
            parent.hash,
            number,
            blake2_256(b"domain-state" + seed.to_bytes(8, "little")),
            blake2_256(b"domain-extrinsics" + seed.to_bytes(8, "little")),
            self.content.domain_digest(seed, source.hash, facts),
        )
        storage = self.content.domain_storage(number, source.timestamp_ms, facts)
        return Block(
            header,
            header.hash(),
            parent,
            source.timestamp_ms,
            spec,
            seed,
            facts,
            storage,
            parent.persistent,
            link=source,
        )

    def _genesis(self, chain: str) -> Block:
        seed = self.rng.getrandbits(63)
        header = Header(
            b"\x00" * 32,
            0,
            blake2_256(chain.encode() + b"genesis-state" + seed.to_bytes(8, "little")),
            blake2_256(b""),  # the trie root of an empty body
            (),
        )
        if chain == CONSENSUS:
            spec, persistent = (
                self.content.consensus_base_spec,
                self.content.consensus_genesis_state(),
            )
            facts: ConsensusFacts | DomainFacts = ConsensusFacts(
                self.slot, 0, (), 0, 0, 0, False, spec
            )
        else:
            spec, persistent = self.content.domain_base_spec, self.content.domain_genesis_state()
            facts = DomainFacts(0, False, spec)
        return Block(header, header.hash(), None, None, spec, seed, facts, {}, persistent)

    def _import(self, block: Block, make_best: bool) -> list[Event]:
        self.consensus.add(block)
        events: list[Event] = [BlockImported(CONSENSUS, block)]
        parent = block.parent
        assert parent is not None
        if block.facts.bundles > 0:
            domain_block = self._domain_block(block)
            block.link = domain_block
            self.domain.add(domain_block)
            events.append(BlockImported(DOMAIN, domain_block))
        else:
            block.link = parent.link
        if make_best:
            events.append(BestChanged(CONSENSUS, self.consensus.set_best(block)))
            tip = block.link
            assert tip is not None
            if tip is not self.domain.best:
                events.append(BestChanged(DOMAIN, self.domain.set_best(tip)))
        return events

    # -- finality -----------------------------------------------------------------------

    def finalized(self, chain: str) -> Block:
        store = self.consensus if chain == CONSENSUS else self.domain
        depth = (
            self.params.finality_depth if chain == CONSENSUS else self.params.domain_finality_depth
        )
        return store.canonical[max(0, store.best.number - depth)]
