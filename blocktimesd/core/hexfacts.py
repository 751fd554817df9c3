"""The few facts a row needs, read straight from the hex a node sends.

A backfill reads tens of thousands of headers per second; decoding every digest item
(the consensus pre-digest carries a whole solution) would cost more than the rest of
a row.  :func:`digest_facts` looks at the hex strings of ``header.digest.logs`` once and
slices out only the bytes it needs; :func:`timestamp` and :func:`bundle_count` read
storage values without converting them to bytes first.  The layouts are those of
:mod:`blocktimesd.core.decode`, which they must agree with (the tests check both on
the same random inputs); anything unusual goes through ``decode``, so errors read the
same on both paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from blocktimesd.core import decode
from blocktimesd.core.header import hex_to_bytes
from blocktimesd.errors import DecodeError

__all__ = ["DigestFacts", "bundle_count", "digest_facts", "timestamp"]

# "0x" + DigestItem kind + engine id: PreRuntime SUB_, Consensus SUB_, PreRuntime RGTR.
_SUB_PRE = "0x065355425f"
_SUB_CONSENSUS = "0x045355425f"
_RGTR_PRE = "0x0652475452"
_RUNTIME_UPDATED = "0x08"
_PAYLOAD = len(_SUB_PRE)  # hex offset of a payload's compact length


class DigestFacts(NamedTuple):
    slot: int | None  # consensus: the slot of the first V0 ``SUB_`` pre-digest
    segment_commitments: int  # consensus: ``SUB_`` consensus items of variant 4
    runtime_updated: bool  # the header carries ``RuntimeEnvironmentUpdated``
    consensus_hash: str | None  # domain: the 0x-hex hash in the ``RGTR`` pre-runtime item


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
# The second hex digit of a compact length's first byte holds its mode (low two bits):
# the length takes 1, 2 or 4 bytes (2, 4 or 8 hex digits); mode 3 is absent.
_WIDTH = {d: 2 << (int(d, 16) & 3) for d in _HEX_DIGITS if int(d, 16) & 3 != 3}


def _payload_start(log: str) -> int:
    """Hex offset of the payload of an item with an engine id (after its length)."""
    width = _WIDTH.get(log[_PAYLOAD + 1 : _PAYLOAD + 2])
    if width is None or log[_PAYLOAD : _PAYLOAD + 1] not in _HEX_DIGITS:
        if log[_PAYLOAD + 1 : _PAYLOAD + 2] in _HEX_DIGITS and log[_PAYLOAD] in _HEX_DIGITS:
            raise DecodeError(f"digest log {log[:40]!r}: payload length too large")
        raise DecodeError(f"digest log {log[:40]!r}: no payload length")
    return _PAYLOAD + width


def digest_facts(logs: Sequence[str]) -> DigestFacts:
    """Every digest fact of a header, in one pass over its logs."""
    try:
        return _scan(logs)
    except (AttributeError, TypeError, ValueError):
        raise DecodeError(f"digest logs {logs!r:.80}: not 0x-hex strings") from None


# What follows "0x" in a log: DigestItem kind and engine id.
_PRE, _CONSENSUS, _RGTR, _OTHER = range(4)
_KINDS = {
    _SUB_PRE[2:]: _PRE,
    _SUB_CONSENSUS[2:]: _CONSENSUS,
    _RGTR_PRE[2:]: _RGTR,
    "055355425f": _OTHER,  # the SUB_ seal
}


def _scan(logs: Sequence[str], lowered: bool = False) -> DigestFacts:
    slot: int | None = None
    segments = 0
    updated = False
    rgtr: str | None = None
    for log in logs:
        kind = _KINDS.get(log[2:_PAYLOAD])
        if kind is None:
            if log == _RUNTIME_UPDATED:
                updated = True
            elif not lowered and log[:_PAYLOAD] != log[:_PAYLOAD].lower():
                return _scan([log.lower() for log in logs], True)  # upper-case hex: allowed
        elif kind == _CONSENSUS:
            at = _payload_start(log)
            if log[at : at + 2] == "04":
                segments += 1
        elif kind == _PRE:
            if slot is None:
                at = _payload_start(log)
                if log[at : at + 2] == "00":  # V0; other versions are skipped
                    raw = log[at + 2 : at + 18]
                    if len(raw) != 16:
                        raise DecodeError(f"SUB_ pre-digest {log[:40]!r}: too short for a slot")
                    slot = int.from_bytes(bytes.fromhex(raw), "little")
        elif kind == _RGTR and rgtr is None:
            at = _payload_start(log)
            if log[_PAYLOAD : _PAYLOAD + 2] != "80" or len(log) != at + 64:
                raise DecodeError(f"RGTR digest {log[:40]!r}: payload is not 32 bytes")
            rgtr = "0x" + log[at:].lower()
    return DigestFacts._make((slot, segments, updated, rgtr))  # the C constructor


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
