"""What is inside simulated blocks: digests, extrinsics, events and storage values.

Everything is encoded with the runtime descriptions in :mod:`blocktimesd.devnet.runtimes`,
so the bytes agree with the metadata the nodes serve.  Headers and the cheap storage
values are built when a block is made; bodies and events are derived from the
block's seed on demand (and cached), which keeps a long history small in memory.

Runtime versions follow Substrate: block B's body and events are encoded by the
runtime of B's parent (``facts.body_spec``); B's state reports B's own version.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from blocktimesd.core import codec as c
from blocktimesd.core import extrinsic, scale
from blocktimesd.core.hashing import blake2_256
from blocktimesd.core.header import (
    CONSENSUS,
    PRE_RUNTIME,
    RUNTIME_ENVIRONMENT_UPDATED,
    SEAL,
    DigestItem,
)
from blocktimesd.core.runtime_desc import RuntimeDesc
from blocktimesd.devnet.chain import Block
from blocktimesd.devnet.params import ChainParams
from blocktimesd.devnet.runtimes import consensus as cr
from blocktimesd.devnet.runtimes import domain as dr
from blocktimesd.devnet.runtimes import frame
from blocktimesd.devnet.runtimes.primitives import (
    MULTI_ADDRESS,
    MULTI_SIGNATURE,
    mortal_era,
    random_bytes,
)
from blocktimesd.devnet.runtimes.subspace_types import SOLUTION

__all__ = ["RGTR_ENGINE", "SUBSPACE_ENGINE", "ConsensusFacts", "Content", "DomainFacts"]

SUBSPACE_ENGINE = b"SUB_"
RGTR_ENGINE = b"RGTR"
FRONTIER_ENGINE = b"fron"
DOMAIN_ID = 0
_BODY_CACHE = 4096  # blocks whose bodies and events stay encoded

# sp_consensus_subspace::digests::PreDigest (V0, with PoT info), see CHAIN_FACTS.
_POT_OUTPUT = c.U8Array(16)
PRE_DIGEST = c.enum(
    "sp_consensus_subspace::digests::PreDigest",
    (
        "V0",
        0,
        c.named(
            slot=c.U64,
            solution=SOLUTION,
            pot_info=c.enum(
                "sp_consensus_subspace::digests::PreDigestPotInfo",
                ("V0", 0, c.named(proof_of_time=_POT_OUTPUT, future_proof_of_time=_POT_OUTPUT)),
            ),
        ),
    ),
)
# sp_consensus_subspace::ConsensusLog variants used on every block, and per segment.
_POT_SLOT_ITERATIONS = 0
_SOLUTION_RANGE = 1
_SEGMENT_COMMITMENT = 4


@dataclass(frozen=True, slots=True)
class ConsensusFacts:
    slot: int
    bundles: int
    segments: tuple[int, ...]  # indices of the segment headers stored in this block
    segments_total: int  # segment headers stored up to and including this block
    votes: int
    transfers: int
    upgrade: bool  # this block carries a runtime upgrade
    body_spec: int  # runtime that encoded the body and events (the parent's)


@dataclass(frozen=True, slots=True)
class DomainFacts:
    evm_txs: int
    upgrade: bool
    body_spec: int
    bundles: int = 0  # always 0: domain blocks carry no bundles; kept for a uniform check


def _account(rng: random.Random) -> bytes:
    return random_bytes(rng, 32)


class Content:
    """Builds block contents for the network model."""

    consensus_base_spec = cr.BASE_SPEC
    domain_base_spec = dr.BASE_SPEC

    def __init__(self, params: ChainParams) -> None:
        self.params = params
        self._bodies: OrderedDict[int, tuple[list[bytes], bytes]] = OrderedDict()
        self._keys = cr.consensus_runtime(cr.BASE_SPEC)
        dk = dr.domain_runtime(dr.BASE_SPEC)
        self.now_key = self._keys.storage_key("Timestamp", "Now")
        self.number_key = self._keys.storage_key("System", "Number")
        self.events_key = self._keys.storage_key("System", "Events")
        self.bundles_key = self._keys.storage_key("Domains", "SuccessfulBundles", DOMAIN_ID)
        self.depth_key = self._keys.storage_key("RuntimeConfigs", "ConfirmationDepthK")
        self.domain_event_count_key = dk.storage_key("System", "EventCount")
        self.domain_segment_key = dk.storage_key("System", "EventSegments", 0)
        self.domain_now_key = dk.storage_key("Timestamp", "Now")
        self.domain_number_key = dk.storage_key("System", "Number")

    # -- runtimes ------------------------------------------------------------------------

    @staticmethod
    def consensus_runtime(spec_version: int) -> RuntimeDesc:
        return cr.consensus_runtime(spec_version)

    @staticmethod
    def domain_runtime(spec_version: int) -> RuntimeDesc:
        return dr.domain_runtime(spec_version)

    @staticmethod
    def next_consensus_spec(spec_version: int) -> int:
        return cr.UPGRADED_SPEC if spec_version == cr.BASE_SPEC else spec_version

    @staticmethod
    def next_domain_spec(spec_version: int) -> int:
        return dr.UPGRADED_SPEC if spec_version == dr.BASE_SPEC else spec_version

    def consensus_genesis_state(self) -> dict[bytes, bytes]:
        return {self.depth_key: scale.u32(self.params.confirmation_depth_k)}

    def domain_genesis_state(self) -> dict[bytes, bytes]:
        return {}

    # -- consensus ----------------------------------------------------------------------

    def consensus_digest(self, seed: int, facts: ConsensusFacts) -> tuple[DigestItem, ...]:
        rng = random.Random(seed ^ 0x5355425F)
        solution = cr.signed_vote(rng, 0, bytes(32), facts.slot)["vote"][1]["solution"]
        pre = PRE_DIGEST.encode(
            (
                "V0",
                {
                    "slot": facts.slot,
                    "solution": solution,
                    "pot_info": (
                        "V0",
                        {
                            "proof_of_time": random_bytes(rng, 16),
                            "future_proof_of_time": random_bytes(rng, 16),
                        },
                    ),
                },
            )
        )
        items = [
            DigestItem(PRE_RUNTIME, SUBSPACE_ENGINE, pre),
            DigestItem(
                CONSENSUS, SUBSPACE_ENGINE, bytes((_POT_SLOT_ITERATIONS,)) + scale.u32(183_000_000)
            ),
            DigestItem(
                CONSENSUS, SUBSPACE_ENGINE, bytes((_SOLUTION_RANGE,)) + scale.u64(0x3FF_FFFF_FFFF)
            ),
        ]
        for index in facts.segments:
            commitment = blake2_256(b"commitment" + scale.u64(index)) + bytes(16)
            items.append(
                DigestItem(
                    CONSENSUS,
                    SUBSPACE_ENGINE,
                    bytes((_SEGMENT_COMMITMENT,)) + scale.u64(index) + commitment,
                )
            )
        if facts.upgrade:
            items.append(DigestItem(RUNTIME_ENVIRONMENT_UPDATED))
        items.append(DigestItem(SEAL, SUBSPACE_ENGINE, b"\x01\x01" + random_bytes(rng, 64)))
        return tuple(items)

    def consensus_storage(
        self, number: int, ts: int, seed: int, facts: ConsensusFacts
    ) -> dict[bytes, bytes | None]:
        storage: dict[bytes, bytes | None] = {
            self.now_key: scale.u64(ts),
            self.number_key: scale.u32(number),
        }
        if facts.bundles:
            storage[self.bundles_key] = scale.compact(facts.bundles) + b"".join(
                self.bundle_hashes(seed, facts.bundles)
            )
        return storage

    @staticmethod
    def bundle_hashes(seed: int, count: int) -> list[bytes]:
        return [blake2_256(b"bundle" + scale.u64(seed) + scale.u32(i)) for i in range(count)]

    def _consensus_body(self, block: Block) -> tuple[list[bytes], bytes]:
        facts: ConsensusFacts = block.facts
        parent = block.parent
        assert parent is not None
        assert block.timestamp_ms is not None
        rt = cr.consensus_runtime(facts.body_spec)
        rng = random.Random(block.seed)
        extrinsics: list[bytes] = []
        records: list[dict[str, Any]] = []

        def success(weight: int, klass: str = "Normal", pays: bool = True) -> None:
            phase = frame.apply_extrinsic(len(extrinsics) - 1)
            records.append(
                frame.event_record(
                    phase,
                    "System",
                    "ExtrinsicSuccess",
                    cr.extrinsic_success(weight, 0, klass, pays),
                )
            )

        extrinsics.append(
            extrinsic.bare(rt.encode_call("Timestamp", "set", {"now": block.timestamp_ms}))
        )
        success(9_000_000, "Mandatory", False)

        if facts.segments:
            k = self.params.confirmation_depth_k
            headers = [
                cr.segment_header(index, max(0, block.number - 1 - k), rng)
                for index in facts.segments
            ]
            extrinsics.append(
                extrinsic.bare(
                    rt.encode_call(
                        "Subspace", "store_segment_headers", {"segment_headers": headers}
                    )
                )
            )
            phase = frame.apply_extrinsic(len(extrinsics) - 1)
            for header in headers:
                records.append(
                    frame.event_record(
                        phase, "Subspace", "SegmentHeaderStored", cr.segment_header_stored(header)
                    )
                )
            success(50_000_000, "Mandatory", False)

        general_extra = self._general_extra(rt)
        for _ in range(facts.votes):
            vote = cr.signed_vote(
                rng, block.number - 1, parent.hash, facts.slot - rng.randint(0, 5)
            )
            extrinsics.append(
                extrinsic.general(
                    0, general_extra, rt.encode_call("Subspace", "vote", {"signed_vote": vote})
                )
            )
            solution = vote["vote"][1]["solution"]
            records.append(
                frame.event_record(
                    frame.apply_extrinsic(len(extrinsics) - 1),
                    "Subspace",
                    "FarmerVote",
                    cr.farmer_vote(
                        solution["public_key"],
                        solution["reward_address"],
                        block.number - 1,
                        parent.hash,
                    ),
                )
            )
            success(40_000_000, "Operational", False)

        for index, bundle_hash in enumerate(self.bundle_hashes(block.seed, facts.bundles)):
            operator = rng.randrange(32)
            bundle = cr.opaque_bundle(
                rng,
                DOMAIN_ID,
                parent.hash,
                parent.number,
                slot=facts.slot,
                operator_id=operator,
                domain_number=max(0, block.number - 2),
            )
            extrinsics.append(
                extrinsic.general(
                    0,
                    general_extra,
                    rt.encode_call("Domains", "submit_bundle", {"opaque_bundle": bundle}),
                )
            )
            records.append(
                frame.event_record(
                    frame.apply_extrinsic(len(extrinsics) - 1),
                    "Domains",
                    "BundleStored",
                    cr.bundle_stored(
                        DOMAIN_ID,
                        bundle_hash,
                        operator,
                        spec_version=facts.body_spec,
                        extrinsics_count=index,
                    ),
                )
            )
            success(300_000_000, "Operational", False)

        for nonce in range(facts.transfers):
            sender, dest = _account(rng), _account(rng)
            amount = rng.randrange(10**15, 10**20)
            fee = rng.randrange(10**14, 10**16)
            call = rt.encode_call("Balances", "transfer_keep_alive", cr.transfer_args(dest, amount))
            extrinsics.append(
                extrinsic.signed(
                    MULTI_ADDRESS.encode(("Id", sender)),
                    MULTI_SIGNATURE.encode(("Sr25519", random_bytes(rng, 64))),
                    self._signed_extra(rt, block.number, nonce),
                    call,
                )
            )
            phase = frame.apply_extrinsic(len(extrinsics) - 1)
            records.append(
                frame.event_record(phase, "Balances", "Withdraw", cr.withdraw(sender, fee))
            )
            records.append(
                frame.event_record(phase, "Balances", "Transfer", cr.transfer(sender, dest, amount))
            )
            records.append(
                frame.event_record(
                    phase,
                    "TransactionPayment",
                    "TransactionFeePaid",
                    cr.transaction_fee_paid(sender, fee),
                )
            )
            success(200_000_000)

        if facts.upgrade:
            records.append(
                frame.event_record(frame.FINALIZATION, "System", "CodeUpdated", cr.code_updated())
            )
        events = rt.storage("System", "Events").value.encode(records)
        return extrinsics, events

    @staticmethod
    def _general_extra(rt: RuntimeDesc) -> bytes:
        """``extra`` of a v5 General extrinsic: immortal era, nonce 0, tip 0 (CHAIN_FACTS)."""
        return b"".join(zero_value_bytes(se.extra) for se in rt.signed_extensions)

    @staticmethod
    def _signed_extra(rt: RuntimeDesc, number: int, nonce: int) -> bytes:
        parts = []
        for se in rt.signed_extensions:
            if se.identifier == "CheckMortality":
                parts.append(se.extra.encode(mortal_era(64, number)))
            elif se.identifier == "CheckNonce":
                parts.append(se.extra.encode(nonce))
            else:
                parts.append(zero_value_bytes(se.extra))
        return b"".join(parts)

    # -- domain ---------------------------------------------------------------------------

    def domain_digest(
        self, seed: int, consensus_hash: bytes, facts: DomainFacts
    ) -> tuple[DigestItem, ...]:
        items = [
            DigestItem(PRE_RUNTIME, RGTR_ENGINE, consensus_hash),
            DigestItem(CONSENSUS, FRONTIER_ENGINE, b"\x03" + blake2_256(b"eth" + scale.u64(seed))),
        ]
        if facts.upgrade:
            items.append(DigestItem(RUNTIME_ENVIRONMENT_UPDATED))
        return tuple(items)

    def domain_storage(self, number: int, ts: int, facts: DomainFacts) -> dict[bytes, bytes | None]:
        return {
            self.domain_now_key: scale.u64(ts),
            self.domain_number_key: scale.u32(number),
            self.domain_event_count_key: scale.u32(self._domain_event_count(facts)),
        }

    @staticmethod
    def _domain_event_count(facts: DomainFacts) -> int:
        # One ExtrinsicSuccess per extrinsic, one Executed per EVM transaction.
        return 1 + 2 * facts.evm_txs + (1 if facts.upgrade else 0)

    def _domain_body(self, block: Block) -> tuple[list[bytes], bytes]:
        facts: DomainFacts = block.facts
        assert block.timestamp_ms is not None
        rt = dr.domain_runtime(facts.body_spec)
        rng = random.Random(block.seed)
        extrinsics = [
            extrinsic.bare(rt.encode_call("Timestamp", "set", {"now": block.timestamp_ms}))
        ]
        records = [
            frame.event_record(
                frame.apply_extrinsic(0),
                "System",
                "ExtrinsicSuccess",
                cr.extrinsic_success(5_000_000, 0, "Mandatory", False),
            )
        ]
        for nonce in range(facts.evm_txs):
            args, executed = _evm_transaction(rng, nonce)
            extrinsics.append(extrinsic.bare(rt.encode_call("Ethereum", "transact", args)))
            phase = frame.apply_extrinsic(len(extrinsics) - 1)
            records.append(frame.event_record(phase, "Ethereum", "Executed", executed))
            records.append(
                frame.event_record(
                    phase, "System", "ExtrinsicSuccess", cr.extrinsic_success(60_000_000)
                )
            )
        if facts.upgrade:
            records.append(
                frame.event_record(frame.FINALIZATION, "System", "CodeUpdated", cr.code_updated())
            )
        assert len(records) == self._domain_event_count(facts)
        segment = rt.storage("System", "EventSegments").value.encode(records)
        return extrinsics, segment

    # -- lazy parts -----------------------------------------------------------------------

    def _cached(self, block: Block) -> tuple[list[bytes], bytes]:
        entry = self._bodies.get(block.seed)
        if entry is None:
            entry = (
                self._consensus_body(block)
                if isinstance(block.facts, ConsensusFacts)
                else self._domain_body(block)
            )
            self._bodies[block.seed] = entry
            if len(self._bodies) > _BODY_CACHE:
                self._bodies.popitem(last=False)
        else:
            self._bodies.move_to_end(block.seed)
        return entry

    def body(self, chain: str, block: Block) -> list[bytes]:
        if block.parent is None:
            return []
        return self._cached(block)[0]

    def lazy_storage(self, block: Block, key: bytes) -> bytes | None:
        """Values too costly to build for every block up front: the events."""
        if block.parent is None:
            return None
        if isinstance(block.facts, ConsensusFacts):
            return self._cached(block)[1] if key == self.events_key else None
        return self._cached(block)[1] if key == self.domain_segment_key else None


def _evm_transaction(rng: random.Random, nonce: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A transfer or contract call as ``Ethereum.transact`` arguments, and its event."""
    sender, to = random_bytes(rng, 20), random_bytes(rng, 20)
    value = rng.randrange(10**18)
    if rng.random() < 0.5:
        args = dr.legacy_transact_args(rng, nonce, to, value)
    else:
        args = dr.eip1559_transact_args(rng, nonce, to, value, input_data=random_bytes(rng, 68))
    tx_hash = blake2_256(b"tx" + random_bytes(rng, 32))
    return args, dr.executed(sender, to, tx_hash)


def zero_value_bytes(codec: c.Codec) -> bytes:
    """The encoding of a type's zero value: 0, empty, first variant, immortal era."""
    if isinstance(codec, c.Prim):
        return b"" if codec.name == "str" else bytes(max(codec.width, 1))
    if isinstance(codec, c.Compact | c.Seq | c.Bytes | c.Option):
        return b"\x00"
    if isinstance(codec, c.U8Array):
        return bytes(codec.length)
    if isinstance(codec, c.Array):
        return zero_value_bytes(codec.inner) * codec.length
    if isinstance(codec, c.Tuple):
        return b"".join(zero_value_bytes(item) for item in codec.items)
    if isinstance(codec, c.Struct):
        return b"".join(zero_value_bytes(f.codec) for f in codec.fields)
    if isinstance(codec, c.Enum):
        first = min(codec.variants, key=lambda v: v.index)
        return bytes((first.index,)) + b"".join(zero_value_bytes(f.codec) for f in first.fields)
    raise TypeError(f"no zero value for {codec!r}")
