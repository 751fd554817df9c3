"""Portable (scale-info) types turned into codecs and into skippers.

A runtime's types are known only from its metadata, so decoders are built from it:

* :meth:`TypeBook.codec` gives a :mod:`blocktimesd.core.codec` codec that decodes a
  value of the type (used for events and the few call arguments the daemon reads);
* :meth:`TypeBook.skipper` gives a function ``(buf, pos) -> end`` that only finds where
  a value ends, folding fixed-size parts into one addition.  Extrinsic envelopes use
  it to step over addresses, signatures and signed-extension data without building
  Python values.

Both are built lazily, once per type id.  Recursive types (a call enum reaching itself
through ``Utility.batch``) get a :class:`~blocktimesd.core.codec.Lazy` codec or a
late-bound skipper for the type still being built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from blocktimesd.core import codec as c
from blocktimesd.core import scale
from blocktimesd.core.metadata import PortableType
from blocktimesd.errors import DecodeError

__all__ = ["BitSeq", "Skip", "TypeBook"]

Skip = Callable[[bytes, int], int]

_WIDTHS = {
    "bool": 1, "char": 4, "u8": 1, "u16": 2, "u32": 4, "u64": 8, "u128": 16, "u256": 32,
    "i8": 1, "i16": 2, "i32": 4, "i64": 8, "i128": 16, "i256": 32,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class BitSeq(c.Codec):
    """``BitVec<Store, Order>``: a compact bit count, then whole ``Store`` words.

    Decoded as ``(bit_count, raw_bytes)``; nothing the daemon reads uses bit sequences,
    but events and calls that contain one must still be stepped over.
    """

    store_width: int

    def encode(self, value: Any) -> bytes:
        bits, raw = value
        return scale.compact(bits) + bytes(raw)

    def decode_from(self, reader: scale.Reader) -> Any:
        bits = reader.compact()
        return bits, reader.take(_bit_bytes(bits, self.store_width))


def _bit_bytes(bits: int, width: int) -> int:
    words = (bits + 8 * width - 1) // (8 * width)
    return words * width


def _compact_end(buf: bytes, pos: int) -> int:
    return scale.decode_compact(buf, pos)[1]


class TypeBook:
    """Codecs, skippers and fixed sizes for one portable registry, cached per type id."""

    def __init__(self, types: Sequence[PortableType]) -> None:
        self.types = types
        self._codecs: dict[int, c.Codec] = {}
        self._skippers: dict[int, Skip] = {}
        self._sizes: dict[int, int | None] = {}
        self._building_codec: set[int] = set()
        self._building_skip: set[int] = set()
        self._building_size: set[int] = set()

    def describe(self, type_id: int) -> str:
        ty = self.types[type_id]
        return "::".join(ty.path) or f"{ty.kind} type {type_id}"

    def is_unit(self, type_id: int) -> bool:
        """``()`` or a struct without fields: encodes to nothing, even as ``Compact``."""
        ty = self.types[type_id]
        return (ty.kind == "tuple" and not ty.items) or (ty.kind == "composite" and not ty.fields)

    # -- codecs -------------------------------------------------------------------------

    def codec(self, type_id: int) -> c.Codec:
        found = self._codecs.get(type_id)
        if found is not None:
            return found
        if type_id in self._building_codec:
            return c.Lazy(lambda: self._codecs[type_id])
        self._building_codec.add(type_id)
        try:
            built = self._build_codec(self.types[type_id])
        finally:
            self._building_codec.discard(type_id)
        self._codecs[type_id] = built
        return built

    def _fields(self, fields: Sequence[Any]) -> tuple[c.Field, ...]:
        return tuple(c.Field(f.name, self.codec(f.type_id), f.type_name) for f in fields)

    def _build_codec(self, ty: PortableType) -> c.Codec:
        if ty.kind == "composite":
            return c.Struct(ty.path, self._fields(ty.fields))
        if ty.kind == "variant":
            if _is_option(ty):
                return c.Option(self.codec(ty.variants[1].fields[0].type_id))
            variants = tuple(
                c.Variant(v.name, v.index, self._fields(v.fields)) for v in ty.variants
            )
            try:
                return c.Enum(ty.path, variants)
            except ValueError as exc:
                raise DecodeError(f"metadata: type {ty.id}: {exc}") from None
        if ty.kind == "sequence":
            inner = ty.items[0]
            if self._is_u8(inner):
                return c.Bytes()
            return c.Seq(self.codec(inner))
        if ty.kind == "array":
            inner = ty.items[0]
            if self._is_u8(inner):
                return c.U8Array(ty.length)
            return c.Array(self.codec(inner), ty.length)
        if ty.kind == "tuple":
            return c.Tuple(tuple(self.codec(item) for item in ty.items))
        if ty.kind == "primitive":
            return c.Prim(ty.primitive, _WIDTHS.get(ty.primitive, 0))
        if ty.kind == "compact":
            inner = ty.items[0]
            return c.UNIT if self.is_unit(inner) else c.Compact(self.codec(inner))
        return BitSeq(self._store_width(ty))

    def _is_u8(self, type_id: int) -> bool:
        ty = self.types[type_id]
        return ty.kind == "primitive" and ty.primitive == "u8"

    def _store_width(self, ty: PortableType) -> int:
        store = self.types[ty.items[0]]
        width = _WIDTHS.get(store.primitive, 0) if store.kind == "primitive" else 0
        if width not in (1, 2, 4, 8):
            raise DecodeError(f"metadata: bit sequence {ty.id} has an unknown store type")
        return width

    # -- fixed sizes --------------------------------------------------------------------

    def fixed_size(self, type_id: int) -> int | None:
        """The encoded size of every value of the type, or ``None`` if it varies."""
        if type_id in self._sizes:
            return self._sizes[type_id]
        if type_id in self._building_size:
            return None  # a recursive type has no fixed size
        self._building_size.add(type_id)
        try:
            size = self._size(self.types[type_id])
        finally:
            self._building_size.discard(type_id)
        self._sizes[type_id] = size
        return size

    def _sum(self, type_ids: Sequence[int]) -> int | None:
        total = 0
        for type_id in type_ids:
            size = self.fixed_size(type_id)
            if size is None:
                return None
            total += size
        return total

    def _size(self, ty: PortableType) -> int | None:
        if ty.kind == "composite":
            return self._sum([f.type_id for f in ty.fields])
        if ty.kind == "tuple":
            return self._sum(ty.items)
        if ty.kind == "array":
            inner = self.fixed_size(ty.items[0])
            return None if inner is None else inner * ty.length
        if ty.kind == "primitive":
            return _WIDTHS.get(ty.primitive)
        if ty.kind == "compact":
            return 0 if self.is_unit(ty.items[0]) else None
        if ty.kind == "variant":
            sizes = {self._sum([f.type_id for f in v.fields]) for v in ty.variants}
            if len(sizes) == 1 and None not in sizes:
                (size,) = sizes
                return None if size is None else 1 + size
        return None

    # -- skippers -----------------------------------------------------------------------

    def skipper(self, type_id: int) -> Skip:
        """``(buf, pos) -> end`` of the value at ``pos``; may return ``end > len(buf)``
        for a truncated fixed-size tail, which callers check once at the end."""
        found = self._skippers.get(type_id)
        if found is not None:
            return found
        if type_id in self._building_skip:
            return lambda buf, pos: self._skippers[type_id](buf, pos)
        self._building_skip.add(type_id)
        try:
            built = self._build_skipper(self.types[type_id])
        finally:
            self._building_skip.discard(type_id)
        self._skippers[type_id] = built
        return built

    def sequence_skipper(self, type_ids: Sequence[int]) -> Skip:
        """Skips values of ``type_ids`` one after another (a tuple, a struct's fields)."""
        parts: list[Skip | int] = []
        for type_id in type_ids:
            size = self.fixed_size(type_id)
            if size is None:
                parts.append(self.skipper(type_id))
            elif parts and isinstance(parts[-1], int):
                parts[-1] += size
            elif size:
                parts.append(size)
        if not parts:
            return _skip_nothing
        if len(parts) == 1:
            only = parts[0]
            if isinstance(only, int):
                return _fixed(only)
            return only
        frozen = tuple(parts)

        def skip_all(buf: bytes, pos: int) -> int:
            for part in frozen:
                if isinstance(part, int):
                    pos += part
                else:
                    pos = part(buf, pos)
            return pos

        return skip_all

    def _build_skipper(self, ty: PortableType) -> Skip:
        size = self.fixed_size(ty.id)
        if size is not None:
            return _fixed(size)
        if ty.kind == "composite":
            return self.sequence_skipper([f.type_id for f in ty.fields])
        if ty.kind == "tuple":
            return self.sequence_skipper(ty.items)
        if ty.kind == "variant":
            return self._variant_skipper(ty)
        if ty.kind in ("sequence", "array"):
            return self._repeat_skipper(ty)
        if ty.kind == "compact":
            return _compact_end
        if ty.kind == "primitive":  # str; char and the integers have fixed sizes
            return _skip_bytes
        width = self._store_width(ty)

        def skip_bits(buf: bytes, pos: int) -> int:
            bits, pos = scale.decode_compact(buf, pos)
            return pos + _bit_bytes(bits, width)

        return skip_bits

    def _variant_skipper(self, ty: PortableType) -> Skip:
        table: dict[int, Skip] = {
            v.index: self.sequence_skipper([f.type_id for f in v.fields]) for v in ty.variants
        }
        name = self.describe(ty.id)

        def skip_variant(buf: bytes, pos: int) -> int:
            if pos >= len(buf):
                raise DecodeError(f"{name}: buffer ended at offset {pos}, before the variant")
            part = table.get(buf[pos])
            if part is None:
                raise DecodeError(f"{name}: unknown variant index {buf[pos]} at offset {pos}")
            return part(buf, pos + 1)

        return skip_variant

    def _repeat_skipper(self, ty: PortableType) -> Skip:
        inner = ty.items[0]
        size = self.fixed_size(inner)
        item = self.skipper(inner)
        length = ty.length
        name = self.describe(ty.id)
        if ty.kind == "array":

            def skip_array(buf: bytes, pos: int) -> int:
                for _ in range(length):
                    pos = item(buf, pos)
                return pos

            return skip_array
        if size is not None:

            def skip_fixed_seq(buf: bytes, pos: int) -> int:
                count, pos = scale.decode_compact(buf, pos)
                return pos + count * size

            return skip_fixed_seq

        def skip_seq(buf: bytes, pos: int) -> int:
            count, pos = scale.decode_compact(buf, pos)
            # A variable-size item takes at least one byte: a larger count is garbage
            # (and would otherwise loop for a very long time).
            if count > len(buf) - pos:
                raise DecodeError(f"{name}: {count} items claimed at offset {pos}")
            for _ in range(count):
                pos = item(buf, pos)
            return pos

        return skip_seq


def _is_option(ty: PortableType) -> bool:
    """``Option<T>``: decoded to ``None`` or the value, as the codec value model has it."""
    shape = [(v.name, v.index, len(v.fields)) for v in ty.variants]
    return ty.path == ("Option",) and shape == [("None", 0, 0), ("Some", 1, 1)]


def _skip_nothing(buf: bytes, pos: int) -> int:
    return pos


def _skip_bytes(buf: bytes, pos: int) -> int:
    count, pos = scale.decode_compact(buf, pos)
    return pos + count


def _fixed(size: int) -> Skip:
    def skip_fixed(buf: bytes, pos: int) -> int:
        return pos + size

    return skip_fixed
