"""Consensus-specific types: archived segments, farmer votes and domain bundles.

Mirrors of the types in the ``subspace`` spec 6 portable registry, by real type path:
``subspace_core_primitives::{segments, solutions, pieces, pos, pot, hashes}``,
``sp_consensus_subspace::{Vote, SignedVote}`` and ``sp_domains::{bundle,
execution_receipt}``.  ``OPAQUE_BUNDLE`` is the full shape of
``Domains.submit_bundle``'s argument (``sp_domains::bundle::Bundle``), so that generic
decoders (polkadot.js, scalecodec) can read the devnet's bundles with its metadata.
"""

from __future__ import annotations

from blocktimesd.core import codec as c

from .primitives import ACCOUNT_ID32, BALANCE, BLOCK_NUMBER, BYTES, H256, WEIGHT

__all__ = [
    "BUNDLE_DIGEST",
    "CHAIN_ID",
    "DOMAIN_ID",
    "OPAQUE_BUNDLE",
    "OPERATOR_ID",
    "PUBLIC_KEY",
    "SEGMENT_HEADER",
    "SIGNED_VOTE",
    "SLOT",
    "SOLUTION",
]

_SCP = "subspace_core_primitives::"

# --- subspace_core_primitives::segments ----------------------------------------------
_SEGMENT_INDEX = c.newtype(_SCP + "segments::SegmentIndex", c.U64, "u64")
_SEGMENT_COMMITMENT = c.newtype(
    _SCP + "segments::SegmentCommitment", c.U8Array(48), "[u8; SegmentCommitment::SIZE]"
)
_BLAKE3_HASH = c.newtype(_SCP + "hashes::Blake3Hash", c.U8Array(32), "[u8; Blake3Hash::SIZE]")
_ARCHIVED_BLOCK_PROGRESS = c.enum(
    _SCP + "segments::ArchivedBlockProgress",
    ("Complete", 0, ()),
    ("Partial", 1, c.unnamed(c.U32)),
)
_LAST_ARCHIVED_BLOCK = c.struct(
    _SCP + "segments::LastArchivedBlock",
    number=BLOCK_NUMBER,
    archived_progress=_ARCHIVED_BLOCK_PROGRESS,
)
SEGMENT_HEADER = c.enum(
    _SCP + "segments::SegmentHeader",
    (
        "V0",
        0,
        c.named(
            segment_index=_SEGMENT_INDEX,
            segment_commitment=_SEGMENT_COMMITMENT,
            prev_segment_header_hash=_BLAKE3_HASH,
            last_archived_block=_LAST_ARCHIVED_BLOCK,
        ),
    ),
)

# --- votes: sp_consensus_subspace::SignedVote<u32, H256, AccountId32> -----------------
PUBLIC_KEY = c.newtype(_SCP + "PublicKey", c.U8Array(32), "[u8; PublicKey::SIZE]")
SLOT = c.newtype("sp_consensus_slots::Slot", c.U64, "u64")
_POT_OUTPUT = c.newtype(_SCP + "pot::PotOutput", c.U8Array(16), "[u8; Self::SIZE]")


def _bytes_newtype(path: str, size: int, const: str) -> c.Struct:
    return c.newtype(_SCP + path, c.U8Array(size), f"[u8; {const}]")


SOLUTION = c.struct(
    _SCP + "solutions::Solution",
    public_key=PUBLIC_KEY,
    reward_address=ACCOUNT_ID32,
    sector_index=c.U16,
    history_size=c.newtype(
        _SCP + "segments::HistorySize", c.newtype("NonZeroU64", c.U64), "NonZeroU64"
    ),
    piece_offset=c.newtype(_SCP + "pieces::PieceOffset", c.U16, "u16"),
    record_commitment=_bytes_newtype("pieces::RecordCommitment", 48, "RecordCommitment::SIZE"),
    record_witness=_bytes_newtype("pieces::RecordWitness", 48, "RecordWitness::SIZE"),
    chunk=_bytes_newtype("ScalarBytes", 32, "ScalarBytes::FULL_BYTES"),
    chunk_witness=_bytes_newtype("solutions::ChunkWitness", 48, "ChunkWitness::SIZE"),
    proof_of_space=_bytes_newtype("pos::PosProof", 160, "PosProof::SIZE"),
)
_VOTE = c.enum(
    "sp_consensus_subspace::Vote",
    (
        "V0",
        0,
        c.named(
            height=BLOCK_NUMBER,
            parent_hash=H256,
            slot=SLOT,
            solution=SOLUTION,
            proof_of_time=_POT_OUTPUT,
            future_proof_of_time=_POT_OUTPUT,
        ),
    ),
)
SIGNED_VOTE = c.struct(
    "sp_consensus_subspace::SignedVote",
    vote=_VOTE,
    signature=_bytes_newtype("solutions::RewardSignature", 64, "RewardSignature::SIZE"),
)

# --- domains: sp_domains ---------------------------------------------------------------
DOMAIN_ID = c.newtype("sp_domains::DomainId", c.U32, "u32")
OPERATOR_ID = c.U64
CHAIN_ID = c.enum("sp_domains::ChainId", ("Consensus", 0, ()), ("Domain", 1, c.unnamed(DOMAIN_ID)))

# BTreeMap<ChainId, Balance>: scale-info's composite `BTreeMap<K, V>` around
# Vec<(K, V)>; polkadot.js needs the K/V parameters to recognise it.
_CHAIN_BALANCES = c.Struct(
    ("BTreeMap",),
    (c.Field(None, c.Seq(c.Tuple((CHAIN_ID, BALANCE)))),),
    (("K", CHAIN_ID), ("V", BALANCE)),
)
_BLOCK_FEES = c.struct(
    "sp_domains::execution_receipt::BlockFees",
    consensus_storage_fee=BALANCE,
    domain_execution_fee=BALANCE,
    burned_balance=BALANCE,
    chain_rewards=_CHAIN_BALANCES,
)
_TRANSFERS = c.struct(
    "sp_domains::execution_receipt::Transfers",
    transfers_in=_CHAIN_BALANCES,
    transfers_out=_CHAIN_BALANCES,
    rejected_transfers_claimed=_CHAIN_BALANCES,
    transfers_rejected=_CHAIN_BALANCES,
)
_INVALID_BUNDLE_TYPE = c.enum(
    "sp_domains::bundle::InvalidBundleType",
    ("UndecodableTx", 0, c.unnamed(c.U32)),
    ("OutOfRangeTx", 1, c.unnamed(c.U32)),
    ("IllegalTx", 2, c.unnamed(c.U32)),
    ("InvalidXDM", 3, c.unnamed(c.U32)),
    ("InherentExtrinsic", 4, c.unnamed(c.U32)),
    ("InvalidBundleWeight", 5, ()),
)
_INBOXED_BUNDLE = c.struct(
    "sp_domains::bundle::InboxedBundle",
    bundle=c.enum(
        "sp_domains::bundle::BundleValidity",
        ("Invalid", 0, c.unnamed(_INVALID_BUNDLE_TYPE)),
        ("Valid", 1, c.unnamed(H256)),
    ),
    extrinsics_root=H256,
)
_EXECUTION_RECEIPT_V0 = c.struct(
    "sp_domains::execution_receipt::execution_receipt_v0::ExecutionReceiptV0",
    domain_block_number=BLOCK_NUMBER,
    domain_block_hash=H256,
    domain_block_extrinsic_root=H256,
    parent_domain_block_receipt_hash=H256,
    consensus_block_number=BLOCK_NUMBER,
    consensus_block_hash=H256,
    inboxed_bundles=c.Seq(_INBOXED_BUNDLE),
    final_state_root=H256,
    execution_trace=c.Seq(H256),
    execution_trace_root=H256,
    block_fees=_BLOCK_FEES,
    transfers=_TRANSFERS,
)
_EXECUTION_RECEIPT = c.enum(
    "sp_domains::execution_receipt::ExecutionReceipt",
    ("V0", 0, c.unnamed(_EXECUTION_RECEIPT_V0)),
)
_PROOF_OF_ELECTION = c.struct(
    "sp_domains::ProofOfElection",
    domain_id=DOMAIN_ID,
    slot_number=c.U64,
    proof_of_time=_POT_OUTPUT,
    # VrfPreOutput and VrfProof have hand-written TypeInfo: plain byte arrays.
    vrf_signature=c.struct(
        "sp_core::sr25519::vrf::VrfSignature", pre_output=c.U8Array(32), proof=c.U8Array(64)
    ),
    operator_id=OPERATOR_ID,
)
_BUNDLE_HEADER_V0 = c.struct(
    "sp_domains::bundle::bundle_v0::BundleHeaderV0",
    proof_of_election=_PROOF_OF_ELECTION,
    receipt=_EXECUTION_RECEIPT,
    estimated_bundle_weight=WEIGHT,
    bundle_extrinsics_root=H256,
)
_SEALED_BUNDLE_HEADER_V0 = c.struct(
    "sp_domains::bundle::bundle_v0::SealedBundleHeaderV0",
    header=_BUNDLE_HEADER_V0,
    signature=c.newtype("sp_domains::app::Signature", c.U8Array(64), "sr25519::Signature"),
)
# sp_runtime::OpaqueExtrinsic(Vec<u8>): each domain extrinsic as its encoded bytes.
_OPAQUE_EXTRINSIC = c.newtype("sp_runtime::OpaqueExtrinsic", BYTES, "Vec<u8>")
OPAQUE_BUNDLE = c.enum(
    "sp_domains::bundle::Bundle",
    (
        "V0",
        0,
        c.unnamed(
            c.struct(
                "sp_domains::bundle::bundle_v0::BundleV0",
                sealed_header=_SEALED_BUNDLE_HEADER_V0,
                extrinsics=c.Seq(_OPAQUE_EXTRINSIC),
            )
        ),
    ),
)

# sp_domains::bundle::BundleDigest<H256>: the values of Domains.ExecutionInbox.
BUNDLE_DIGEST = c.struct(
    "sp_domains::bundle::BundleDigest", header_hash=H256, extrinsics_root=H256, size=c.U32
)
