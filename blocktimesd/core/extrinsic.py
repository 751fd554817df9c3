"""Extrinsic envelopes as they appear in Autonomys blocks.

Three envelope versions share one block since consensus spec 3 (CHAIN_FACTS):

* ``0x04`` bare v4 (inherents): ``0x04 ++ call``;
* ``0x84`` signed v4: ``0x84 ++ address ++ signature ++ extra ++ call``;
* ``0x45`` general v5: ``0x45 ++ extension_version ++ extra ++ call``.

On the wire each extrinsic is prefixed by its compact byte length (an
``OpaqueExtrinsic``); nodes send that whole encoding, hex, in ``chain_getBlock``.
"""

from __future__ import annotations

from blocktimesd.core import scale

__all__ = ["BARE_V4", "GENERAL_V5", "SIGNED_V4", "bare", "general", "signed"]

BARE_V4 = 0x04
SIGNED_V4 = 0x84
GENERAL_V5 = 0x45


def bare(call: bytes) -> bytes:
    return scale.compact_bytes(bytes((BARE_V4,)) + call)


def signed(address: bytes, signature: bytes, extra: bytes, call: bytes) -> bytes:
    return scale.compact_bytes(bytes((SIGNED_V4,)) + address + signature + extra + call)


def general(extension_version: int, extra: bytes, call: bytes) -> bytes:
    return scale.compact_bytes(bytes((GENERAL_V5, extension_version)) + extra + call)
