"""Substrate block headers (``generic::Header<u32, BlakeTwo256>``) and digest items.

A header is SCALE-encoded as ``parent_hash ++ Compact(number) ++ state_root ++
extrinsics_root ++ Vec<DigestItem>``; its hash is the blake2-256 of that encoding.
Nodes send headers over JSON-RPC as objects whose ``number`` is a hex string and
whose ``digest.logs`` are the hex-encoded digest items.

A header is hashed once: :meth:`Header.from_json` hashes the bytes it decodes (when
they are the header's own encoding, as a node's always are), and :meth:`Header.hash`
keeps what it computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NewType

from blocktimesd.core import scale
from blocktimesd.core.hashing import blake2_256
from blocktimesd.errors import DecodeError

__all__ = [
    "CONSENSUS",
    "OTHER",
    "PRE_RUNTIME",
    "RUNTIME_ENVIRONMENT_UPDATED",
    "SEAL",
    "BlockHash",
    "DigestItem",
    "Header",
    "hex_to_bytes",
    "to_hex",
]

BlockHash = NewType("BlockHash", bytes)

# ``sp_runtime::generic::DigestItem`` variant indices.
OTHER = 0
CONSENSUS = 4
SEAL = 5
PRE_RUNTIME = 6
RUNTIME_ENVIRONMENT_UPDATED = 8
_WITH_ENGINE = (CONSENSUS, SEAL, PRE_RUNTIME)


def to_hex(data: bytes) -> str:
    return "0x" + data.hex()


def hex_to_bytes(text: str, what: str = "value") -> bytes:
    if not isinstance(text, str) or not text.startswith("0x"):
        raise DecodeError(f"{what}: expected a 0x-prefixed hex string, got {text!r:.80}")
    try:
        return bytes.fromhex(text[2:])
    except ValueError:
        raise DecodeError(f"{what}: invalid hex {text!r:.80}") from None


@dataclass(frozen=True, slots=True)
class DigestItem:
    kind: int
    engine: bytes = b""  # 4-byte engine id for Consensus, Seal and PreRuntime
    payload: bytes = b""

    def encode(self) -> bytes:
        if self.kind in _WITH_ENGINE:
            return bytes((self.kind,)) + self.engine + scale.compact_bytes(self.payload)
        if self.kind == OTHER:
            return b"\x00" + scale.compact_bytes(self.payload)
        if self.kind == RUNTIME_ENVIRONMENT_UPDATED:
            return b"\x08"
        raise ValueError(f"unknown digest item kind {self.kind}")

    @classmethod
    def decode_from(cls, reader: scale.Reader) -> DigestItem:
        kind = reader.u8()
        if kind in _WITH_ENGINE:
            engine = reader.take(4)
            return cls(kind, engine, reader.bytes_vec())
        if kind == OTHER:
            return cls(kind, b"", reader.bytes_vec())
        if kind == RUNTIME_ENVIRONMENT_UPDATED:
            return cls(kind)
        raise DecodeError(f"unknown digest item kind {kind} at offset {reader.pos - 1}")

    @classmethod
    def decode(cls, data: bytes) -> DigestItem:
        reader = scale.Reader(data)
        item = cls.decode_from(reader)
        reader.expect_end("digest item")
        return item


@dataclass(frozen=True, slots=True)
class Header:
    parent_hash: bytes
    number: int
    state_root: bytes
    extrinsics_root: bytes
    digest: tuple[DigestItem, ...] = ()
    # The hash, once known; not a field of the header (compared, shown or passed on).
    _hash: BlockHash | None = field(default=None, init=False, repr=False, compare=False)

    def encode(self) -> bytes:
        parts = [
            self.parent_hash,
            scale.compact(self.number),
            self.state_root,
            self.extrinsics_root,
            scale.compact(len(self.digest)),
        ]
        parts.extend(item.encode() for item in self.digest)
        return b"".join(parts)

    def hash(self) -> BlockHash:
        """The blake2-256 of the encoding, computed once per header."""
        known = self._hash
        if known is None:
            known = BlockHash(blake2_256(self.encode()))
            object.__setattr__(self, "_hash", known)
        return known

    @classmethod
    def decode(cls, data: bytes) -> Header:
        reader = scale.Reader(data)
        header = cls.decode_from(reader)
        reader.expect_end("header")
        return header

    @classmethod
    def decode_from(cls, reader: scale.Reader) -> Header:
        parent = reader.take(32)
        number = reader.compact()
        state_root = reader.take(32)
        extrinsics_root = reader.take(32)
        digest = tuple(DigestItem.decode_from(reader) for _ in range(reader.compact()))
        return cls(parent, number, state_root, extrinsics_root, digest)

    def to_json(self) -> dict[str, Any]:
        return {
            "parentHash": to_hex(self.parent_hash),
            "number": hex(self.number),
            "stateRoot": to_hex(self.state_root),
            "extrinsicsRoot": to_hex(self.extrinsics_root),
            "digest": {"logs": [to_hex(item.encode()) for item in self.digest]},
        }

    @classmethod
    def from_json(cls, obj: Any) -> Header:
        """Parse a header as a node sends it; every field is checked."""
        if not isinstance(obj, dict):
            raise DecodeError(f"header: expected an object, got {type(obj).__name__}")
        try:
            number_text = obj["number"]
            if not isinstance(number_text, str) or not number_text.startswith("0x"):
                raise DecodeError(f"header.number: expected a hex string, got {number_text!r}")
            logs = obj["digest"]["logs"]
            if not isinstance(logs, list):
                raise DecodeError("header.digest.logs: expected a list")
            parent = _hash32(obj["parentHash"], "header.parentHash")
            number = int(number_text, 16)
            state_root = _hash32(obj["stateRoot"], "header.stateRoot")
            extrinsics_root = _hash32(obj["extrinsicsRoot"], "header.extrinsicsRoot")
            items = []
            logged = []
            canonical = True
            for log in logs:
                data = hex_to_bytes(log, "digest log")
                item = _common_item(data)
                if item is None:  # another form, or not an item: the reader decides
                    item = DigestItem.decode(data)
                    canonical = canonical and len(data) == _encoded_size(item)
                items.append(item)
                logged.append(data)
            header = cls(parent, number, state_root, extrinsics_root, tuple(items))
        except (KeyError, TypeError) as exc:
            raise DecodeError(f"header: missing or malformed field {exc}") from None
        except ValueError as exc:
            raise DecodeError(f"header: {exc}") from None
        # The encoding, from the bytes at hand: each log is one whole item, which is its
        # own encoding unless a length in it is not in the shortest form (then the
        # hash is left to ``hash``, which encodes).
        if canonical and number < _LARGEST_COMPACT:
            head = (parent, scale.compact(number), state_root, extrinsics_root)
            encoded = b"".join((*head, scale.compact(len(items)), *logged))
            object.__setattr__(header, "_hash", BlockHash(blake2_256(encoded)))
        return header


_LARGEST_COMPACT = 1 << 64  # block numbers are u32; larger ones are left to ``hash``


def _common_item(data: bytes) -> DigestItem | None:
    """The item ``data`` encodes, if it is in the forms headers carry (an engine item
    whose payload length takes one or two bytes, in the shortest form, or
    ``RuntimeEnvironmentUpdated``); else ``None``."""
    size = len(data)
    if size > 5 and data[0] in _WITH_ENGINE:
        first = data[5]
        if first & 3 == 0:
            at, length = 6, first >> 2
        elif first & 3 == 1 and size > 6:
            at, length = 7, (first | data[6] << 8) >> 2
            if length < 1 << 6:
                return None
        else:
            return None
        if at + length != size:
            return None
        return DigestItem(data[0], data[1:5], data[at:])
    if size == 1 and data[0] == RUNTIME_ENVIRONMENT_UPDATED:
        return DigestItem(RUNTIME_ENVIRONMENT_UPDATED)
    return None


def _encoded_size(item: DigestItem) -> int:
    """The length of ``item.encode()``."""
    if item.kind == RUNTIME_ENVIRONMENT_UPDATED:
        return 1
    size = len(item.payload)
    head = 5 if item.kind in _WITH_ENGINE else 1
    return head + len(scale.compact(size)) + size


def _hash32(text: Any, what: str) -> bytes:
    data = hex_to_bytes(text, what)
    if len(data) != 32:
        raise DecodeError(f"{what}: expected 32 bytes, got {len(data)}")
    return data
