"""SCALE primitives: fixed-width integers, compact integers and length prefixes.

Everything here is pure and works on ``bytes``; the reader keeps an offset so that
decoders can walk a buffer without slicing it first.  Both the daemon's decoders and
the simulated network's encoders are built on these functions.
"""

from __future__ import annotations

import struct

from blocktimesd.errors import DecodeError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

__all__ = [
    "Reader",
    "compact",
    "compact_bytes",
    "decode_compact",
    "u8",
    "u16",
    "u32",
    "u64",
    "u128",
]


def u8(value: int) -> bytes:
    return bytes((value,))


def u16(value: int) -> bytes:
    return _U16.pack(value)


def u32(value: int) -> bytes:
    return _U32.pack(value)


def u64(value: int) -> bytes:
    return _U64.pack(value)


def u128(value: int) -> bytes:
    return value.to_bytes(16, "little")


def compact(value: int) -> bytes:
    """Encode a non-negative integer in SCALE compact form."""
    if value < 0:
        raise ValueError(f"compact integers are unsigned, got {value}")
    if value < 1 << 6:
        return bytes((value << 2,))
    if value < 1 << 14:
        return _U16.pack((value << 2) | 0b01)
    if value < 1 << 30:
        return _U32.pack((value << 2) | 0b10)
    length = (value.bit_length() + 7) // 8
    if length > 67:
        raise ValueError(f"integer too large for compact encoding: {value}")
    return bytes(((length - 4) << 2 | 0b11,)) + value.to_bytes(length, "little")


def compact_bytes(data: bytes) -> bytes:
    """``Vec<u8>``: a compact length followed by the bytes."""
    return compact(len(data)) + data


def decode_compact(buf: bytes, pos: int = 0) -> tuple[int, int]:
    """Decode a compact integer at ``pos``; return ``(value, next_pos)``."""
    try:
        first = buf[pos]
        mode = first & 0b11
        if mode == 0:
            return first >> 2, pos + 1
        if mode == 1:
            if pos + 2 > len(buf):
                raise IndexError
            return _U16.unpack_from(buf, pos)[0] >> 2, pos + 2
        if mode == 2:
            if pos + 4 > len(buf):
                raise IndexError
            return _U32.unpack_from(buf, pos)[0] >> 2, pos + 4
        length = (first >> 2) + 4
        end = pos + 1 + length
        if end > len(buf):
            raise IndexError
        return int.from_bytes(buf[pos + 1 : end], "little"), end
    except (IndexError, struct.error):
        raise DecodeError(f"truncated compact integer at offset {pos}") from None


class Reader:
    """A cursor over a SCALE buffer.  Every read checks bounds."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def at_end(self) -> bool:
        return self.pos >= len(self.buf)

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise DecodeError(
                f"need {n} bytes at offset {self.pos}, only {len(self.buf) - self.pos} left"
            )
        data = self.buf[self.pos : end]
        self.pos = end
        return bytes(data)

    def u8(self) -> int:
        if self.pos >= len(self.buf):
            raise DecodeError(f"need 1 byte at offset {self.pos}, buffer ended")
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "little")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "little")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "little")

    def u128(self) -> int:
        return int.from_bytes(self.take(16), "little")

    def compact(self) -> int:
        value, self.pos = decode_compact(self.buf, self.pos)
        return value

    def bytes_vec(self) -> bytes:
        """``Vec<u8>``."""
        return self.take(self.compact())

    def expect_end(self, what: str) -> None:
        if self.pos != len(self.buf):
            raise DecodeError(f"{what}: {len(self.buf) - self.pos} trailing bytes")
