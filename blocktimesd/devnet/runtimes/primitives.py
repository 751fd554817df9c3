"""Basic Substrate and Frontier types shared by both simulated runtimes.

Each codec mirrors a type of the real runtimes' portable registries (V14 metadata of
``subspace`` spec 6 and ``subspace-evm-domain`` spec 0); the docstring or comment names
the real type path.  Values follow :mod:`blocktimesd.core.codec`'s value model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random

from blocktimesd.core import codec as c

__all__ = [
    "ACCOUNT_ID20",
    "ACCOUNT_ID32",
    "BALANCE",
    "BLOCK_NUMBER",
    "BYTES",
    "COMPACT_BALANCE",
    "COMPACT_U32",
    "COMPACT_U64",
    "DIGEST",
    "ERA",
    "ETHEREUM_SIGNATURE",
    "H160",
    "H256",
    "MULTI_ADDRESS",
    "MULTI_SIGNATURE",
    "U256",
    "UNIT",
    "WEIGHT",
    "api_id",
    "immortal_era",
    "mortal_era",
    "random_bytes",
    "u256",
]

UNIT = c.UNIT
BYTES = c.Bytes()
BLOCK_NUMBER = c.U32
BALANCE = c.U128
COMPACT_U32 = c.Compact(c.U32)
COMPACT_U64 = c.Compact(c.U64)
COMPACT_BALANCE = c.Compact(c.U128)

# sp_core::crypto::AccountId32([u8; 32]): consensus accounts.
ACCOUNT_ID32 = c.newtype("sp_core::crypto::AccountId32", c.U8Array(32), "[u8; 32]")
# fp_account::AccountId20([u8; 20]): Auto-EVM accounts.
ACCOUNT_ID20 = c.newtype("fp_account::AccountId20", c.U8Array(20), "[u8; 20]")
# primitive_types::H256([u8; 32]) and H160([u8; 20]).
H256 = c.newtype("primitive_types::H256", c.U8Array(32), "[u8; 32]")
H160 = c.newtype("primitive_types::H160", c.U8Array(20), "[u8; 20]")
# primitive_types::U256([u64; 4]): four little-endian limbs, least significant first.
U256 = c.newtype("primitive_types::U256", c.Array(c.U64, 4), "[u64; 4]")

# sp_weights::weight_v2::Weight { ref_time: Compact<u64>, proof_size: Compact<u64> }
WEIGHT = c.Struct(
    ("sp_weights", "weight_v2", "Weight"),
    (c.Field("ref_time", COMPACT_U64, "u64"), c.Field("proof_size", COMPACT_U64, "u64")),
)

# sp_runtime::multiaddress::MultiAddress<AccountId32, ()>: Index is Compact<()> because
# the runtime's AccountIndex is `()`.
MULTI_ADDRESS = c.enum(
    "sp_runtime::multiaddress::MultiAddress",
    ("Id", 0, (c.Field(None, ACCOUNT_ID32, "AccountId"),)),
    ("Index", 1, (c.Field(None, c.Compact(UNIT), "AccountIndex"),)),
    ("Raw", 2, (c.Field(None, BYTES, "Vec<u8>"),)),
    ("Address32", 3, (c.Field(None, c.U8Array(32), "[u8; 32]"),)),
    ("Address20", 4, (c.Field(None, c.U8Array(20), "[u8; 20]"),)),
)
# polkadot.js reads the AccountId type from these parameters.
MULTI_ADDRESS = dataclasses.replace(
    MULTI_ADDRESS, params=(("AccountId", ACCOUNT_ID32), ("AccountIndex", UNIT))
)

# sp_runtime::MultiSignature: Ed25519 / Sr25519 ([u8; 64]) or Ecdsa ([u8; 65]).
MULTI_SIGNATURE = c.enum(
    "sp_runtime::MultiSignature",
    ("Ed25519", 0, (c.Field(None, c.U8Array(64), "ed25519::Signature"),)),
    ("Sr25519", 1, (c.Field(None, c.U8Array(64), "sr25519::Signature"),)),
    ("Ecdsa", 2, (c.Field(None, c.U8Array(65), "ecdsa::Signature"),)),
)

# fp_account::EthereumSignature(ecdsa::Signature): 65 bytes, the EVM domain's signature.
ETHEREUM_SIGNATURE = c.newtype("fp_account::EthereumSignature", c.U8Array(65), "ecdsa::Signature")

# sp_runtime::generic::era::Era: scale-info describes it as 256 variants, Immortal (0)
# and MortalN (N = 1..255) carrying the second byte, which is exactly its 1- or 2-byte
# encoding.
ERA = c.enum(
    "sp_runtime::generic::era::Era",
    ("Immortal", 0, ()),
    *((f"Mortal{n}", n, c.unnamed(c.U8)) for n in range(1, 256)),
)

# sp_runtime::generic::digest::{Digest, DigestItem}: variants in declaration order.
_DIGEST_ITEM = c.enum(
    "sp_runtime::generic::digest::DigestItem",
    ("PreRuntime", 6, c.unnamed(c.U8Array(4), BYTES)),
    ("Consensus", 4, c.unnamed(c.U8Array(4), BYTES)),
    ("Seal", 5, c.unnamed(c.U8Array(4), BYTES)),
    ("Other", 0, c.unnamed(BYTES)),
    ("RuntimeEnvironmentUpdated", 8, ()),
)
DIGEST = c.struct("sp_runtime::generic::digest::Digest", logs=c.Seq(_DIGEST_ITEM))


def immortal_era() -> tuple[str, None]:
    return ("Immortal", None)


def mortal_era(period: int, current: int) -> tuple[str, int]:
    """The ``Era`` value of a mortal transaction (``sp_runtime::generic::Era::mortal``).

    ``period`` is rounded up to a power of two in 4..65536; the encoded u16 is
    ``min(15, max(1, log2(period) - 1)) | (phase / quantize_factor) << 4``, stored little
    endian; its low byte selects the variant and the high byte is the payload.
    """
    period = max(4, min(1 << 16, 1 << (max(period, 1) - 1).bit_length()))
    phase = current % period
    quantize = max(period >> 12, 1)
    encoded = min(15, max(1, period.bit_length() - 2)) | ((phase // quantize) << 4)
    low, high = encoded & 0xFF, encoded >> 8
    if low == 0:  # unreachable: the period bits are never zero
        raise ValueError("invalid era")
    return (f"Mortal{low}", high)


def u256(value: int) -> list[int]:
    """The ``U256`` value (four u64 limbs) of a non-negative integer."""
    if not 0 <= value < 1 << 256:
        raise ValueError(f"U256 out of range: {value}")
    return [(value >> (64 * i)) & 0xFFFF_FFFF_FFFF_FFFF for i in range(4)]


def random_bytes(rng: random.Random, n: int) -> bytes:
    """``n`` filler bytes drawn from ``rng`` (deterministic for a seeded ``rng``)."""
    return rng.randbytes(n)


def api_id(name: str) -> bytes:
    """A runtime API's 8-byte id: ``blake2b-64`` of its trait name (``sp_api``)."""
    return hashlib.blake2b(name.encode(), digest_size=8).digest()
