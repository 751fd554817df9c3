"""The few facts a row needs, read straight from the hex a node sends.

A backfill reads tens of thousands of headers per second; building a :class:`Header`
and decoding its digest items (the consensus pre-digest carries a whole solution) would
cost more than the rest of a row.  :func:`digest_facts` converts each of
``header.digest.logs`` with one ``bytes.fromhex`` and reads only the bytes it needs;
:func:`timestamp` and :func:`bundle_count` read storage values the same way, and
:func:`header_facts` computes a header's hash from the same bytes.

They accept and refuse exactly what ``Header.from_json`` and the decoders of
:mod:`blocktimesd.core.decode` accept and refuse (the tests check both on the same
random and mutated inputs): every log must be 0x-hex and one whole digest item, whose
payload length reaches exactly its end, whether or not a fact is read from it.  A log
refused here is refused again by the byte decoder, so the error reads the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from blocktimesd.core import decode
from blocktimesd.core.header import DigestItem, hex_to_bytes
from blocktimesd.core.scale import compact, decode_compact
from blocktimesd.errors import DecodeError

__all__ = [
    "DigestFacts",
    "bundle_count",
    "digest_facts",
    "header_facts",
    "timestamp",
]

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


def digest_facts(
    logs: Sequence[str], hash_into: Callable[[bytes], object] | None = None
) -> DigestFacts:
    """Every digest fact of a header, in one pass over its logs; each log's bytes also go
    to ``hash_into`` when given (see :func:`header_facts`)."""
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
            if hash_into is not None:
                hash_into(data)
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


def header_facts(obj: Any) -> tuple[int, str, str, DigestFacts]:
    """What a row needs of a header as a node sends it (``chain_getHeader``'s object): its
    number, its hash and its parent's hash (lower-case 0x-hex), and its digest facts.

    The hash is the blake2-256 of the header's SCALE encoding, as
    ``Header.from_json(obj).hash()`` gives it, put together from the hex with each log
    converted once (by :func:`digest_facts`).  Raises :class:`DecodeError` wherever
    ``Header.from_json`` does, and wherever :func:`digest_facts` refuses a log.
    """
    try:
        number_text, parent = obj["number"], obj["parentHash"]
        state_root, extrinsics_root = obj["stateRoot"], obj["extrinsicsRoot"]
        logs = obj["digest"]["logs"]
        if number_text[:2] != "0x":
            raise ValueError(f"number {number_text!r:.40} is not 0x-hex")
        number = int(number_text, 16)
        if not (
            len(parent) == len(state_root) == len(extrinsics_root) == 66
            and parent[:2] == state_root[:2] == extrinsics_root[:2] == "0x"
        ):
            raise ValueError("a hash is not 0x and 64 hex digits")
        if type(logs) is not list:
            raise ValueError("digest.logs is not a list")
        # The encoding up to the digest items: parent, Compact(number), the two roots and
        # Compact(the number of items).
        count = len(logs)
        text = (
            parent[2:]
            + compact(number).hex()
            + state_root[2:]
            + extrinsics_root[2:]
            + (_COUNT_HEX[count] if count < 64 else compact(count).hex())
        )
        head = bytes.fromhex(text)
        if 2 * len(head) != len(text):  # fromhex skips whitespace; a node's bytes have none
            raise ValueError("whitespace in a hash")
    except KeyError as exc:
        raise DecodeError(f"header: no field {exc}") from None
    except (TypeError, ValueError) as exc:
        if not isinstance(obj, dict):
            raise DecodeError(f"header: expected an object, got {type(obj).__name__}") from None
        raise DecodeError(f"header: {exc}") from None
    encoded = [head]  # then each digest item, as digest_facts converts it
    facts = digest_facts(logs, encoded.append)
    computed = "0x" + hashlib.blake2b(b"".join(encoded), digest_size=32).hexdigest()
    return number, computed, parent.lower(), facts


_COUNT_HEX = tuple(compact(n).hex() for n in range(64))  # Compact(n) of one byte


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
