"""The few facts a row needs, read straight from the hex a node sends.

A backfill reads tens of thousands of headers per second; building a :class:`Header`
and decoding its digest items (the consensus pre-digest carries a whole solution) would
cost more than the rest of a row.  :func:`digest_facts` converts each of
``header.digest.logs`` with one ``bytes.fromhex`` and reads only the bytes it needs;
:func:`timestamp` and :func:`bundle_count` read storage values the same way.

They accept and refuse exactly what ``Header.from_json`` and the decoders of
:mod:`blocktimesd.core.decode` accept and refuse (the tests check both on the same
random and mutated inputs): every log must be 0x-hex and one whole digest item, whose
payload length reaches exactly its end, whether or not a fact is read from it.  A log
refused here is refused again by the byte decoder, so the error reads the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from blocktimesd.core import decode
from blocktimesd.core.header import DigestItem, hex_to_bytes
from blocktimesd.core.scale import decode_compact
from blocktimesd.errors import DecodeError

__all__ = ["DigestFacts", "bundle_count", "digest_facts", "timestamp"]

# DigestItem kinds: Other (payload), Consensus, Seal, PreRuntime (engine id, payload),
# RuntimeEnvironmentUpdated (nothing); and the engines whose items carry the facts.
_OTHER, _CONSENSUS, _PRE_RUNTIME, _RUNTIME_UPDATED = 0, 4, 6, 8
_SUB = b"SUB_"
_RGTR = b"RGTR"


class DigestFacts(NamedTuple):
    slot: int | None  # consensus: the slot of the first V0 ``SUB_`` pre-digest
    segment_commitments: int  # consensus: ``SUB_`` consensus items of variant 4
    runtime_updated: bool  # the header carries ``RuntimeEnvironmentUpdated``
    consensus_hash: str | None  # domain: the 0x-hex hash in the ``RGTR`` pre-runtime item


def digest_facts(logs: Sequence[str]) -> DigestFacts:
    """Every digest fact of a header, in one pass over its logs."""
    slot: int | None = None
    segments = 0
    updated = False
    rgtr: str | None = None
    fromhex = bytes.fromhex
    log: Any = logs
    try:
        for log in logs:
            if log[:2] != "0x":
                raise _refused(log)
            data = fromhex(log[2:])  # validates the hex, as hex_to_bytes does
            kind = data[0]
            if 3 < kind < 7:  # Consensus, Seal, PreRuntime
                # The payload's compact length must reach exactly the end of the item.
                size = data[5]
                if size & 3 == 0:
                    size >>= 2
                    at = 6
                elif size & 3 == 1:  # the pre-digest and the seal
                    size = (size | data[6] << 8) >> 2
                    at = 7
                else:
                    size, at = _compact(data, 5, log)
                if at + size != len(data):
                    raise _refused(log)
                if kind == _CONSENSUS:
                    # the variant first: most Consensus items are not commitments
                    if size and data[at] == 4 and data[1:5] == _SUB:  # SegmentCommitment
                        segments += 1
                elif kind == _PRE_RUNTIME:
                    engine = data[1:5]
                    if engine == _SUB:
                        if slot is None and size and data[at] == 0:  # V0; others skipped
                            if size < 9:
                                raise DecodeError(
                                    f"SUB_ pre-digest {log:.40}: {size} bytes, too short for a slot"
                                )
                            slot = int.from_bytes(data[at + 1 : at + 9], "little")
                    elif engine == _RGTR and rgtr is None:
                        if size != 32:
                            raise DecodeError(f"RGTR digest {log:.40}: payload is not 32 bytes")
                        rgtr = "0x" + data[at:].hex()
            elif kind == _RUNTIME_UPDATED:
                if len(data) != 1:
                    raise _refused(log)
                updated = True
            elif kind == _OTHER:
                size, at = _compact(data, 1, log)
                if at + size != len(data):
                    raise _refused(log)
            else:
                raise _refused(log)
    except (IndexError, TypeError, ValueError):  # cut short, not a string, not hex
        raise _refused(log) from None
    return DigestFacts._make((slot, segments, updated, rgtr))  # the C constructor


def _compact(data: bytes, pos: int, log: str) -> tuple[int, int]:
    """A payload length in a rarer form (4 or more bytes; Other items)."""
    try:
        return decode_compact(data, pos)
    except DecodeError:
        raise _refused(log) from None


def _refused(log: Any) -> DecodeError:
    """The byte decoder's own error for a log refused here (rare: off the fast path)."""
    data: bytes | None = None
    try:
        data = hex_to_bytes(log, "digest log")
        DigestItem.decode(data)
    except DecodeError as exc:
        return exc if data is None else DecodeError(f"digest log {log!r:.40}: {exc}")
    # Not reached while the checks above agree with the byte decoder (the tests check).
    return DecodeError(f"digest log {log!r:.40}: not one digest item")


def timestamp(text: str | None) -> int | None:
    """``Timestamp.Now`` from its 0x-hex storage value (``None`` if absent)."""
    if type(text) is str and len(text) == 18 and text[:2] == "0x":
        try:
            data = bytes.fromhex(text[2:])
        except ValueError:
            data = b""
        if len(data) == 8:  # fromhex skips spaces: "0x" + 16 characters may be fewer bytes
            return int.from_bytes(data, "little")
    return decode.timestamp_from_storage(_bytes(text, "Timestamp.Now"))


def bundle_count(text: str | None) -> int:
    """``Domains.SuccessfulBundles(domain)`` (``Vec<H256>``) from its 0x-hex storage value:
    the number of hashes; absent means none."""
    data = _fast_bytes(text)
    if data and data[0] & 3 == 0 and len(data) == 1 + 32 * (data[0] >> 2):
        return data[0] >> 2  # fewer than 64 hashes: a one-byte length
    return decode.bundle_count_from_storage(_bytes(text, "Domains.SuccessfulBundles"))


def _fast_bytes(text: str | None) -> bytes | None:
    if type(text) is str and text[:2] == "0x":
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            return None
    return None


def _bytes(text: str | None, what: str) -> bytes | None:
    return None if text is None else hex_to_bytes(text, what)
