"""The simulated consensus runtime (``spec_name`` "subspace") and its value builders.

Spec 6 (the base) follows the real ``subspace`` spec 6 runtime (mainnet, August 2025):
every pallet name and index, and the exact shapes of the calls, events and storage
items the devnet serves (see ``tests/devnet/test_metadata_agreement.py``, which checks
them against the real metadata in ``tests/data/metadata``).  Pallets the devnet does not
use are listed without calls, events or storage.

Spec 7 is a simulated upgrade (``transaction_version`` 2) that changes what a
consumer reads, so that one caching metadata across the upgrade decodes wrongly:

* ``Subspace.store_segment_headers`` moves from call index 0 to 1 and
  ``enable_solution_range_adjustment`` from 1 to 0 (the order Gemini-3h's runtime had
  ``store_segment_headers`` at 1); call bytes ``02 00`` / ``02 01`` swap meaning;
* ``Domains.BundleStored`` gains a trailing field ``extrinsics_count: u32``, so a
  spec-6 decoder misreads every event record after it.

Value builders return Python values for the codecs here (deterministic given their
arguments and the ``random.Random`` they take for filler bytes).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import cache
from typing import Any

from blocktimesd.core import codec as c
from blocktimesd.core.runtime_desc import PalletDesc, RuntimeDesc, SignedExtensionDesc, StorageDesc

from . import frame
from .primitives import (
    ACCOUNT_ID32,
    BLOCK_NUMBER,
    H256,
    MULTI_ADDRESS,
    MULTI_SIGNATURE,
    api_id,
    random_bytes,
)
from .subspace_types import (
    BUNDLE_DIGEST,
    DOMAIN_ID,
    OPAQUE_BUNDLE,
    OPERATOR_ID,
    PUBLIC_KEY,
    SEGMENT_HEADER,
    SIGNED_VOTE,
)

__all__ = [
    "BASE_SPEC",
    "SPEC_VERSIONS",
    "UPGRADED_SPEC",
    "bundle_stored",
    "code_updated",
    "consensus_runtime",
    "extrinsic_success",
    "farmer_vote",
    "opaque_bundle",
    "segment_header",
    "segment_header_stored",
    "signed_vote",
    "transaction_fee_paid",
    "transfer",
    "transfer_args",
    "withdraw",
]

BASE_SPEC = 6
UPGRADED_SPEC = 7
SPEC_VERSIONS = (BASE_SPEC, UPGRADED_SPEC)

RUNTIME = c.Struct(("subspace_runtime", "Runtime"))

# Runtime APIs of subspace spec 6, in the order of its `Core_version` answer: trait name
# and version (the 8-byte API ids are derived from the names, see `api_id`).
_APIS = (
    ("Core", 5),
    ("Metadata", 2),
    ("BlockBuilder", 6),
    ("TaggedTransactionQueue", 3),
    ("OffchainWorkerApi", 2),
    ("ObjectsApi", 1),
    ("SubspaceApi", 2),
    ("DomainsApi", 6),
    ("BundleProducerElectionApi", 1),
    ("SessionKeys", 1),
    ("AccountNonceApi", 1),
    ("TransactionPaymentApi", 4),
    ("MessengerApi", 3),
    ("RelayerApi", 3),
    ("FraudProofApi", 2),
    ("MmrApi", 2),
    ("GenesisBuilder", 1),
)


# --- pallets --------------------------------------------------------------------------

# Every pallet of subspace spec 6, by index (CHAIN_FACTS: "Consensus pallet indices").
_PALLET_NAMES = {
    0: "System", 1: "Timestamp", 2: "Subspace", 4: "Rewards", 5: "Balances",
    6: "TransactionFees", 7: "TransactionPayment", 8: "Utility", 12: "Domains",
    14: "RuntimeConfigs", 30: "Mmr", 31: "SubspaceMmr", 60: "Messenger",
    61: "Transporter", 81: "Scheduler", 82: "Council", 83: "Democracy", 84: "Preimage",
    90: "Multisig", 100: "Sudo",
}  # fmt: skip


def _subspace_calls(spec_version: int) -> c.Enum:
    """``pallet_subspace::pallet::Call`` (all 6 calls)."""
    store, adjust = (0, 1) if spec_version == BASE_SPEC else (1, 0)
    option_u64 = c.Option(c.U64)
    return c.enum(
        "pallet_subspace::pallet::Call",
        ("store_segment_headers", store, c.named(segment_headers=c.Seq(SEGMENT_HEADER))),
        (
            "enable_solution_range_adjustment",
            adjust,
            c.named(solution_range_override=option_u64, voting_solution_range_override=option_u64),
        ),
        ("vote", 2, c.named(signed_vote=SIGNED_VOTE)),
        (
            "enable_rewards_at",
            3,
            c.named(
                enable_rewards_at=c.enum(
                    "pallet_subspace::pallet::EnableRewardsAt",
                    ("Height", 0, c.unnamed(BLOCK_NUMBER)),
                    ("SolutionRange", 1, c.unnamed(c.U64)),
                    ("Manually", 2, ()),
                )
            ),
        ),
        ("enable_authoring_by_anyone", 4, ()),
        ("set_pot_slot_iterations", 5, c.named(slot_iterations=c.newtype("NonZeroU32", c.U32))),
    )


# pallet_subspace::pallet::Event (both events).
_SUBSPACE_EVENTS = c.enum(
    "pallet_subspace::pallet::Event",
    ("SegmentHeaderStored", 0, c.named(segment_header=SEGMENT_HEADER)),
    (
        "FarmerVote",
        1,
        c.named(
            public_key=PUBLIC_KEY,
            reward_address=ACCOUNT_ID32,
            height=BLOCK_NUMBER,
            parent_hash=H256,
        ),
    ),
)

# pallet_rewards::pallet::Event and pallet_transaction_fees::pallet::Event (complete).
_REWARDS_EVENTS = c.enum(
    "pallet_rewards::pallet::Event",
    ("BlockReward", 0, c.named(block_author=ACCOUNT_ID32, reward=c.U128)),
    ("VoteReward", 1, c.named(voter=ACCOUNT_ID32, reward=c.U128)),
)
_TRANSACTION_FEES_EVENTS = c.enum(
    "pallet_transaction_fees::pallet::Event",
    ("BlockFees", 0, c.named(who=ACCOUNT_ID32, storage=c.U128, compute=c.U128, tips=c.U128)),
    ("BurnedBlockFees", 1, c.named(storage=c.U128, compute=c.U128, tips=c.U128)),
)


def _domains_pallet(spec_version: int) -> PalletDesc:
    """``pallet_domains`` (index 12): ``submit_bundle``, ``BundleStored`` and the storage
    the daemon reads; all keys use the Identity hasher."""
    stored = c.named(domain_id=DOMAIN_ID, bundle_hash=H256, bundle_author=OPERATOR_ID)
    if spec_version != BASE_SPEC:
        stored += c.named(extrinsics_count=c.U32)
    return PalletDesc(
        "Domains",
        12,
        calls=c.enum(
            "pallet_domains::pallet::Call",
            ("submit_bundle", 0, c.named(opaque_bundle=OPAQUE_BUNDLE)),
        ),
        events=c.enum("pallet_domains::pallet::Event", ("BundleStored", 0, stored)),
        storage=(
            StorageDesc(
                "SuccessfulBundles",
                c.Seq(H256),
                key=DOMAIN_ID,
                hashers=("Identity",),
                default=b"\x00",
            ),
            StorageDesc(
                "ConsensusBlockHash",
                H256,
                key=c.Tuple((DOMAIN_ID, BLOCK_NUMBER)),
                hashers=("Identity", "Identity"),
            ),
            StorageDesc(
                "ExecutionInbox",
                c.Seq(BUNDLE_DIGEST),
                key=c.Tuple((DOMAIN_ID, BLOCK_NUMBER, BLOCK_NUMBER)),
                hashers=("Identity", "Identity", "Identity"),
                default=b"\x00",
            ),
            StorageDesc("InboxedBundleAuthor", OPERATOR_ID, key=H256, hashers=("Identity",)),
            StorageDesc(
                "HeadDomainNumber",
                BLOCK_NUMBER,
                key=DOMAIN_ID,
                hashers=("Identity",),
                default=bytes(4),
            ),
        ),
    )


def _pallets(spec_version: int) -> tuple[PalletDesc, ...]:
    system_events = frame.system_events(ACCOUNT_ID32)
    others = (
        frame.timestamp_pallet(),
        PalletDesc("Subspace", 2, calls=_subspace_calls(spec_version), events=_SUBSPACE_EVENTS),
        PalletDesc("Rewards", 4, events=_REWARDS_EVENTS),
        frame.balances_pallet(5, ACCOUNT_ID32, MULTI_ADDRESS, existential_deposit=10**13),
        PalletDesc("TransactionFees", 6, events=_TRANSACTION_FEES_EVENTS),
        frame.transaction_payment_pallet(7, ACCOUNT_ID32),
        _domains_pallet(spec_version),
        PalletDesc(
            "RuntimeConfigs", 14, storage=(frame.plain("ConfirmationDepthK", BLOCK_NUMBER, 0),)
        ),
    )
    runtime_event = frame.runtime_event(
        "subspace_runtime", (PalletDesc("System", 0, events=system_events), *others)
    )
    system = frame.system_pallet(
        ACCOUNT_ID32,
        system_events,
        runtime_event,
        block_hash_count=250,
        ss58_prefix=6094,
        event_segment_size=0,
    )
    by_index = {p.index: p for p in (system, *others)}
    assert all(_PALLET_NAMES[i] == p.name for i, p in by_index.items())
    return tuple(by_index.get(i, PalletDesc(name, i)) for i, name in sorted(_PALLET_NAMES.items()))


def _signed_extensions() -> tuple[SignedExtensionDesc, ...]:
    """subspace spec 6 signed extensions, in order (CHAIN_FACTS: spec >= 3)."""
    return (
        *frame.frame_system_extensions(),
        frame.signed_extension(
            "CheckWeight", "frame_system::extensions::check_weight::CheckWeight"
        ),
        frame.charge_transaction_payment(),
        frame.unit_extension(
            "BalanceTransferCheckExtension",
            "subspace_runtime_primitives::extension::BalanceTransferCheckExtension",
            RUNTIME,
        ),
        frame.unit_extension(
            "SubspaceExtension", "pallet_subspace::extensions::SubspaceExtension", RUNTIME
        ),
        frame.unit_extension(
            "DomainsExtension", "pallet_domains::extensions::DomainsExtension", RUNTIME
        ),
        frame.unit_extension(
            "MessengerExtension", "pallet_messenger::extensions::MessengerExtension", RUNTIME
        ),
    )


@cache
def consensus_runtime(spec_version: int) -> RuntimeDesc:
    """The consensus runtime at ``spec_version`` (6: base, 7: simulated upgrade)."""
    if spec_version not in SPEC_VERSIONS:
        raise ValueError(
            f"unknown consensus spec_version {spec_version}; the devnet knows {SPEC_VERSIONS}"
        )
    desc = RuntimeDesc(
        spec_name="subspace",
        impl_name="subspace",
        spec_version=spec_version,
        transaction_version=1 if spec_version == BASE_SPEC else 2,
        authoring_version=0,
        impl_version=0,
        state_version=1,
        system_version=2,
        apis=tuple((api_id(name), version) for name, version in _APIS),
        runtime_path="subspace_runtime::Runtime",
        pallets=_pallets(spec_version),
        signed_extensions=_signed_extensions(),
        address=MULTI_ADDRESS,
        signature=MULTI_SIGNATURE,
    )
    return frame.checked(frame.with_version(desc))


# --- value builders --------------------------------------------------------------------


def segment_header(
    segment_index: int,
    last_archived_block_number: int,
    rng: random.Random,
    prev_segment_header_hash: bytes | None = None,
) -> tuple[str, dict[str, Any]]:
    """A ``SegmentHeader::V0`` whose last archived block is partially archived."""
    prev = prev_segment_header_hash if prev_segment_header_hash is not None else bytes(32)
    return (
        "V0",
        {
            "segment_index": segment_index,
            "segment_commitment": random_bytes(rng, 48),
            "prev_segment_header_hash": prev,
            "last_archived_block": {
                "number": last_archived_block_number,
                "archived_progress": ("Partial", rng.randrange(1, 1 << 24)),
            },
        },
    )


def signed_vote(
    rng: random.Random,
    height: int,
    parent_hash: bytes,
    slot: int,
    reward_address: bytes | None = None,
) -> dict[str, Any]:
    """The ``signed_vote`` argument of ``Subspace.vote`` (filler proofs from ``rng``)."""
    public_key = random_bytes(rng, 32)
    solution = {
        "public_key": public_key,
        "reward_address": reward_address if reward_address is not None else public_key,
        "sector_index": rng.randrange(1 << 16),
        "history_size": rng.randrange(1, 1 << 20),
        "piece_offset": rng.randrange(1000),
        "record_commitment": random_bytes(rng, 48),
        "record_witness": random_bytes(rng, 48),
        "chunk": random_bytes(rng, 32),
        "chunk_witness": random_bytes(rng, 48),
        "proof_of_space": random_bytes(rng, 160),
    }
    vote = {
        "height": height,
        "parent_hash": parent_hash,
        "slot": slot,
        "solution": solution,
        "proof_of_time": random_bytes(rng, 16),
        "future_proof_of_time": random_bytes(rng, 16),
    }
    return {"vote": ("V0", vote), "signature": random_bytes(rng, 64)}


def opaque_bundle(
    rng: random.Random,
    domain_id: int,
    consensus_hash: bytes,
    consensus_number: int = 0,
    *,
    slot: int = 0,
    operator_id: int = 0,
    domain_number: int = 0,
    extrinsics: Sequence[bytes] = (),
) -> tuple[str, dict[str, Any]]:
    """A ``Bundle::V0`` with an execution receipt for ``domain_number`` and the given
    (opaque, already encoded) domain extrinsics."""
    no_fees: list[tuple[Any, int]] = []
    receipt = {
        "domain_block_number": domain_number,
        "domain_block_hash": random_bytes(rng, 32),
        "domain_block_extrinsic_root": random_bytes(rng, 32),
        "parent_domain_block_receipt_hash": random_bytes(rng, 32),
        "consensus_block_number": consensus_number,
        "consensus_block_hash": consensus_hash,
        "inboxed_bundles": [],
        "final_state_root": random_bytes(rng, 32),
        "execution_trace": [],
        "execution_trace_root": bytes(32),
        "block_fees": {
            "consensus_storage_fee": 0,
            "domain_execution_fee": 0,
            "burned_balance": 0,
            "chain_rewards": no_fees,
        },
        "transfers": {
            "transfers_in": no_fees,
            "transfers_out": no_fees,
            "rejected_transfers_claimed": no_fees,
            "transfers_rejected": no_fees,
        },
    }
    header = {
        "proof_of_election": {
            "domain_id": domain_id,
            "slot_number": slot,
            "proof_of_time": random_bytes(rng, 16),
            "vrf_signature": {"pre_output": random_bytes(rng, 32), "proof": random_bytes(rng, 64)},
            "operator_id": operator_id,
        },
        "receipt": ("V0", receipt),
        "estimated_bundle_weight": {"ref_time": 1_000_000 * len(extrinsics), "proof_size": 0},
        "bundle_extrinsics_root": random_bytes(rng, 32),
    }
    return (
        "V0",
        {
            "sealed_header": {"header": header, "signature": random_bytes(rng, 64)},
            "extrinsics": list(extrinsics),
        },
    )


def transfer_args(dest: bytes, value: int) -> dict[str, Any]:
    """Arguments of ``Balances.transfer_keep_alive`` / ``transfer_allow_death``."""
    return {"dest": ("Id", dest), "value": value}


def bundle_stored(
    domain_id: int,
    bundle_hash: bytes,
    bundle_author: int,
    *,
    spec_version: int = BASE_SPEC,
    extrinsics_count: int = 0,
) -> dict[str, Any]:
    """``Domains.BundleStored``; spec 7 adds ``extrinsics_count``."""
    value: dict[str, Any] = {
        "domain_id": domain_id,
        "bundle_hash": bundle_hash,
        "bundle_author": bundle_author,
    }
    if spec_version != BASE_SPEC:
        value["extrinsics_count"] = extrinsics_count
    return value


def segment_header_stored(header: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"segment_header": header}


def farmer_vote(
    public_key: bytes, reward_address: bytes, height: int, parent_hash: bytes
) -> dict[str, Any]:
    return {
        "public_key": public_key,
        "reward_address": reward_address,
        "height": height,
        "parent_hash": parent_hash,
    }


def extrinsic_success(
    ref_time: int, proof_size: int = 0, dispatch_class: str = "Normal", pays_fee: bool = True
) -> dict[str, Any]:
    """``System.ExtrinsicSuccess`` (both runtimes)."""
    return {
        "dispatch_info": {
            "weight": {"ref_time": ref_time, "proof_size": proof_size},
            "class": (dispatch_class, None),
            "pays_fee": ("Yes" if pays_fee else "No", None),
        }
    }


def code_updated() -> Any:
    """``System.CodeUpdated`` has no fields: its value is ``None``."""
    return None


def transfer(from_: bytes, to: bytes, amount: int) -> dict[str, Any]:
    """``Balances.Transfer`` (both runtimes; 32- or 20-byte accounts)."""
    return {"from": from_, "to": to, "amount": amount}


def withdraw(who: bytes, amount: int) -> dict[str, Any]:
    """``Balances.Withdraw``."""
    return {"who": who, "amount": amount}


def transaction_fee_paid(who: bytes, actual_fee: int, tip: int = 0) -> dict[str, Any]:
    """``TransactionPayment.TransactionFeePaid``."""
    return {"who": who, "actual_fee": actual_fee, "tip": tip}
