"""The few digest facts a row needs, read straight from the hex a node sends.

A backfill reads tens of thousands of headers per second; decoding every digest item
(the consensus pre-digest carries a whole solution) would cost more than the rest of
a row.  These functions look at the hex strings of ``header.digest.logs`` and slice
out only the bytes they need, with the layouts of :mod:`blocktimesd.core.decode`
(which they must agree with; the tests check both on the same headers).
"""

from __future__ import annotations

from collections.abc import Sequence

from blocktimesd.errors import DecodeError

__all__ = ["consensus_slot", "domain_consensus_hash", "runtime_updated", "segment_commitments"]

# "0x" + DigestItem kind + engine id: PreRuntime SUB_, Consensus SUB_, PreRuntime RGTR.
_SUB_PRE = "0x065355425f"
_SUB_CONSENSUS = "0x045355425f"
_RGTR_PRE = "0x0652475452"
_RUNTIME_UPDATED = "0x08"
_PAYLOAD = len(_SUB_PRE)  # hex offset of a payload's compact length


def _payload_start(log: str) -> int:
    """Hex offset of the payload of an item with an engine id (after its length)."""
    try:
        first = int(log[_PAYLOAD : _PAYLOAD + 2], 16)
    except ValueError:
        raise DecodeError(f"digest log {log[:40]!r}: no payload length") from None
    mode = first & 3
    if mode == 3:
        raise DecodeError(f"digest log {log[:40]!r}: payload length too large")
    return _PAYLOAD + 2 * (1 << mode)


def consensus_slot(logs: Sequence[str]) -> int | None:
    """The slot in the ``SUB_`` pre-digest (V0): a LE u64 after the version byte."""
    for log in logs:
        if log.startswith(_SUB_PRE):
            at = _payload_start(log)
            if log[at : at + 2] == "00":
                raw = log[at + 2 : at + 18]
                if len(raw) != 16:
                    raise DecodeError(f"SUB_ pre-digest {log[:40]!r}: too short for a slot")
                return int.from_bytes(bytes.fromhex(raw), "little")
    return None


def segment_commitments(logs: Sequence[str]) -> int:
    """``SUB_`` consensus items carrying a segment commitment (variant 4)."""
    return sum(
        1
        for log in logs
        if log.startswith(_SUB_CONSENSUS) and log[_payload_start(log) :][:2] == "04"
    )


def domain_consensus_hash(logs: Sequence[str]) -> str | None:
    """The 0x-hex consensus hash in a domain header's ``RGTR`` pre-runtime item."""
    for log in logs:
        if log.startswith(_RGTR_PRE):
            at = _payload_start(log)
            if log[_PAYLOAD : _PAYLOAD + 2] != "80" or len(log) != at + 64:
                raise DecodeError(f"RGTR digest {log[:40]!r}: payload is not 32 bytes")
            return "0x" + log[at:].lower()
    return None


def runtime_updated(logs: Sequence[str]) -> bool:
    """Whether the header carries ``RuntimeEnvironmentUpdated``."""
    return _RUNTIME_UPDATED in logs
