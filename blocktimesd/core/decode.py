"""The block facts the daemon records, each read the cheapest correct way.

Header facts (slot, segment commitments, the domain's consensus link) come from
digest items, whose layouts CHAIN_FACTS fixes, so they are read by hand.  Body facts
depend on the runtime that encoded the block, so they take a :class:`Runtime` and
resolve indices by name; they look at envelopes and call indices only, and decode a
call's arguments (with the metadata-built codec) only where the fact is in them.
``bench/decode_cost.py`` measures each path against scalecodec and the generic codecs.

Extrinsics are passed as ``chain_getBlock`` serves them: each with its compact
length prefix.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from blocktimesd.core import codec as c
from blocktimesd.core import scale
from blocktimesd.core.extrinsic import GENERAL_V5, SIGNED_V4
from blocktimesd.core.header import CONSENSUS, PRE_RUNTIME, Header
from blocktimesd.core.runtime import Envelope, Runtime
from blocktimesd.errors import DecodeError

__all__ = [
    "RGTR_ENGINE",
    "SUBSPACE_ENGINE",
    "bundle_count_from_extrinsics",
    "bundle_count_from_storage",
    "consensus_slot",
    "domain_consensus_hash",
    "segment_commitment_count",
    "segment_headers_in_block",
    "timestamp_from_extrinsics",
    "timestamp_from_storage",
]

SUBSPACE_ENGINE = b"SUB_"
RGTR_ENGINE = b"RGTR"
# First payload bytes: PreDigest::V0, and ConsensusLog::SegmentCommitment (variant 4).
_PRE_DIGEST_V0 = b"\x00"
_SEGMENT_COMMITMENT = b"\x04"
_NOT_BARE = frozenset((SIGNED_V4, GENERAL_V5))


# -- header -----------------------------------------------------------------------------


def consensus_slot(header: Header) -> int | None:
    """The slot of a consensus block: the LE u64 at offset 1 of the first PreRuntime
    ``SUB_`` item whose payload is a ``PreDigest::V0`` (starts with 0x00).

    ``None`` when the header has no such item (genesis, or a domain header).
    """
    for item in header.digest:
        if item.kind == PRE_RUNTIME and item.engine == SUBSPACE_ENGINE:
            payload = item.payload
            if payload[:1] == _PRE_DIGEST_V0:
                if len(payload) < 9:
                    raise DecodeError(
                        f"SUB_ pre-digest of block {header.number} is {len(payload)} bytes, "
                        "too short for a slot"
                    )
                return int.from_bytes(payload[1:9], "little")
    return None


def segment_commitment_count(header: Header) -> int:
    """Consensus ``SUB_`` items that carry a segment commitment: one per segment header
    stored in the block (cross-checks :func:`segment_headers_in_block`)."""
    return sum(
        1
        for item in header.digest
        if item.kind == CONSENSUS
        and item.engine == SUBSPACE_ENGINE
        and item.payload[:1] == _SEGMENT_COMMITMENT
    )


def domain_consensus_hash(header: Header) -> bytes | None:
    """The consensus block a domain block was derived from: its ``RGTR`` pre-runtime
    item (a 32-byte hash).  ``None`` for headers without one (genesis)."""
    for item in header.digest:
        if item.kind == PRE_RUNTIME and item.engine == RGTR_ENGINE:
            if len(item.payload) != 32:
                raise DecodeError(
                    f"RGTR digest of block {header.number} is {len(item.payload)} bytes, not 32"
                )
            return item.payload
    return None


# -- body --------------------------------------------------------------------------------


def _bare(runtime: Runtime, extrinsics: Sequence[bytes]) -> Iterator[tuple[bytes, Envelope]]:
    """The bare extrinsics (inherents) and their envelopes.

    Signed and general extrinsics are passed over on their version byte alone: the
    inherents' facts do not need their envelopes, and skipping signatures and
    extensions is most of the cost of reading a body (see the benchmark).  Unknown
    version bytes still go to :meth:`Runtime.envelope`, which rejects them.
    """
    for ext in extrinsics:
        _, pos = scale.decode_compact(ext)
        if pos < len(ext) and ext[pos] in _NOT_BARE:
            continue
        yield ext, runtime.envelope(ext)


# -- timestamp --------------------------------------------------------------------------


def timestamp_from_storage(value: bytes | None) -> int | None:
    """``Timestamp.Now`` (u64 ms) as ``state_getStorage`` returns it; ``None`` if absent."""
    if value is None:
        return None
    if len(value) != 8:
        raise DecodeError(f"Timestamp.Now: expected 8 bytes (u64), got {len(value)}")
    return int.from_bytes(value, "little")


def timestamp_from_extrinsics(runtime: Runtime, extrinsics: Sequence[bytes]) -> int:
    """``now`` of the block's bare ``Timestamp.set`` inherent (normally the first
    extrinsic, so the scan usually stops there)."""
    wanted = runtime.call_index("Timestamp", "set")
    args = runtime.call_args_codec("Timestamp", "set")
    fast = _single_compact(args, "now")
    for ext, env in _bare(runtime, extrinsics):
        if env.index != wanted:
            continue
        if fast:
            now, end = scale.decode_compact(ext, env.call_offset + 2)
            if end != len(ext):
                raise DecodeError(f"Timestamp.set: {len(ext) - end} trailing bytes")
            return now
        value = runtime.decode_call_args("Timestamp", "set", ext, env)
        decoded = value.get("now") if isinstance(value, dict) else None
        if not isinstance(decoded, int):
            raise DecodeError(f"Timestamp.set in {runtime!r}: no integer argument 'now'")
        return decoded
    raise DecodeError(f"block has no Timestamp.set inherent ({len(extrinsics)} extrinsics)")


def _single_compact(args: c.Struct, name: str) -> bool:
    """Whether the arguments are exactly ``{ name: Compact<_> }`` (the hand-read case)."""
    return (
        len(args.fields) == 1
        and args.fields[0].name == name
        and isinstance(args.fields[0].codec, c.Compact)
    )


# -- bundles ----------------------------------------------------------------------------


def bundle_count_from_storage(value: bytes | None) -> int:
    """``Domains.SuccessfulBundles(domain)`` at a block (``Vec<H256>``): that block's
    bundles of the domain.  Absent means none."""
    if value is None:
        return 0
    count, pos = scale.decode_compact(value)
    if pos + 32 * count != len(value):
        raise DecodeError(
            f"Domains.SuccessfulBundles: {count} hashes need {pos + 32 * count} bytes, "
            f"got {len(value)}"
        )
    return count


def bundle_count_from_extrinsics(runtime: Runtime, extrinsics: Sequence[bytes]) -> int:
    """``Domains.submit_bundle`` calls in a body, whatever their envelope (v5 general
    on current runtimes).  Counts bundles of every domain; the storage count is per
    domain, so the two agree when one domain is active (mainnet: Auto-EVM only)."""
    wanted = runtime.call_index("Domains", "submit_bundle")
    return sum(1 for ext in extrinsics if runtime.envelope(ext).index == wanted)


# -- segment headers --------------------------------------------------------------------


def segment_headers_in_block(runtime: Runtime, extrinsics: Sequence[bytes]) -> int:
    """Segment headers stored by the block's ``Subspace.store_segment_headers`` inherent
    (0 without one).  The call's arguments are decoded in full, with the codec built
    from this runtime's metadata, so a block read with the wrong runtime fails loudly
    instead of returning a plausible count."""
    wanted = runtime.call_index("Subspace", "store_segment_headers")
    total = 0
    for ext, env in _bare(runtime, extrinsics):
        if env.index == wanted:
            args = runtime.decode_call_args("Subspace", "store_segment_headers", ext, env)
            headers = args.get("segment_headers") if isinstance(args, dict) else None
            if not isinstance(headers, list):
                raise DecodeError(
                    f"Subspace.store_segment_headers in {runtime!r}: no list 'segment_headers'"
                )
            total += len(headers)
    return total
