"""Typed SCALE codecs that also describe themselves as V14 portable types.

A codec is a small immutable object that can ``encode`` a Python value, ``decode`` it
back, and tell the metadata builder what its type definition is.  The simulated
network describes its runtimes with these codecs, so the metadata it serves and the
bytes it serves come from one description; the daemon uses the same codecs for its
hand-written fast paths.

Value model:

* integers for ``U8``..``U128`` and ``Compact``; ``bool``; ``str``;
* ``bytes`` for ``Bytes`` (``Vec<u8>``) and ``U8Array`` (``[u8; N]``);
* ``list`` for ``Seq``, ``tuple`` for ``Tuple``; ``None``/value for ``Option``;
* ``dict`` for a ``Struct`` with named fields, ``tuple`` for unnamed fields, a bare
  value for a single unnamed field (a "newtype");
* ``(variant_name, payload)`` for an ``Enum`` (payload as for a struct, ``None`` when
  the variant has no fields).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from blocktimesd.core import scale
from blocktimesd.errors import DecodeError

__all__ = [
    "BOOL",
    "STR",
    "U8",
    "U16",
    "U32",
    "U64",
    "U128",
    "Array",
    "Bytes",
    "Codec",
    "Compact",
    "Enum",
    "Field",
    "Lazy",
    "Option",
    "Prim",
    "Seq",
    "Struct",
    "Tuple",
    "U8Array",
    "Variant",
]


class Codec:
    """Base of all codecs.  Subclasses are frozen dataclasses."""

    __slots__ = ()

    def encode(self, value: Any) -> bytes:
        raise NotImplementedError

    def decode_from(self, reader: scale.Reader) -> Any:
        raise NotImplementedError

    def decode(self, data: bytes) -> Any:
        reader = scale.Reader(data)
        value = self.decode_from(reader)
        reader.expect_end(self.describe())
        return value

    def describe(self) -> str:
        path: tuple[str, ...] = getattr(self, "path", ())
        return "::".join(path) or type(self).__name__


@dataclass(frozen=True, slots=True)
class Prim(Codec):
    """A fixed-width primitive: ``u8``..``u256``, ``i8``..``i256``, ``bool``, ``str``.

    Names starting with ``i`` are signed (two's complement), as in scale-info.
    """

    name: str
    width: int  # bytes; 0 for str

    def encode(self, value: Any) -> bytes:
        if self.name == "bool":
            return b"\x01" if value else b"\x00"
        if self.name == "str":
            return scale.compact_bytes(str(value).encode())
        return int(value).to_bytes(self.width, "little", signed=self.name[0] == "i")

    def decode_from(self, reader: scale.Reader) -> Any:
        if self.name == "bool":
            byte = reader.u8()
            if byte > 1:
                raise DecodeError(f"invalid bool byte {byte:#x} at offset {reader.pos - 1}")
            return byte == 1
        if self.name == "str":
            try:
                return reader.bytes_vec().decode()
            except UnicodeDecodeError:
                raise DecodeError(f"invalid UTF-8 in a str ending at offset {reader.pos}") from None
        return int.from_bytes(reader.take(self.width), "little", signed=self.name[0] == "i")


U8 = Prim("u8", 1)
U16 = Prim("u16", 2)
U32 = Prim("u32", 4)
U64 = Prim("u64", 8)
U128 = Prim("u128", 16)
BOOL = Prim("bool", 1)
STR = Prim("str", 0)


class Lazy(Codec):
    """A codec found later, by calling ``resolve`` on first use.

    Recursive types (a call enum that contains a ``Vec<Call>`` through
    ``Utility.batch``) cannot be built as a finite tree of frozen codecs; the builder
    hands out a ``Lazy`` for a type that is still being built.  Compared by identity.
    """

    __slots__ = ("_resolve", "_target")

    def __init__(self, resolve: Callable[[], Codec]) -> None:
        self._resolve = resolve
        self._target: Codec | None = None

    @property
    def target(self) -> Codec:
        if self._target is None:
            self._target = self._resolve()
        return self._target

    def encode(self, value: Any) -> bytes:
        return self.target.encode(value)

    def decode_from(self, reader: scale.Reader) -> Any:
        return self.target.decode_from(reader)

    def describe(self) -> str:
        return f"Lazy({self.target.describe()})" if self._target is not None else "Lazy"


@dataclass(frozen=True, slots=True)
class Compact(Codec):
    inner: Codec

    def encode(self, value: Any) -> bytes:
        return scale.compact(int(value))

    def decode_from(self, reader: scale.Reader) -> Any:
        return reader.compact()


@dataclass(frozen=True, slots=True)
class Seq(Codec):
    inner: Codec

    def encode(self, value: Any) -> bytes:
        return scale.compact(len(value)) + b"".join(self.inner.encode(v) for v in value)

    def decode_from(self, reader: scale.Reader) -> Any:
        return [self.inner.decode_from(reader) for _ in range(reader.compact())]


@dataclass(frozen=True, slots=True)
class Bytes(Codec):
    """``Vec<u8>``, as raw ``bytes``."""

    def encode(self, value: Any) -> bytes:
        return scale.compact_bytes(bytes(value))

    def decode_from(self, reader: scale.Reader) -> Any:
        return reader.bytes_vec()


@dataclass(frozen=True, slots=True)
class Array(Codec):
    inner: Codec
    length: int

    def encode(self, value: Any) -> bytes:
        if len(value) != self.length:
            raise ValueError(f"array needs {self.length} items, got {len(value)}")
        return b"".join(self.inner.encode(v) for v in value)

    def decode_from(self, reader: scale.Reader) -> Any:
        return [self.inner.decode_from(reader) for _ in range(self.length)]


@dataclass(frozen=True, slots=True)
class U8Array(Codec):
    """``[u8; N]``, as raw ``bytes``."""

    length: int

    def encode(self, value: Any) -> bytes:
        data = bytes(value)
        if len(data) != self.length:
            raise ValueError(f"[u8; {self.length}] needs {self.length} bytes, got {len(data)}")
        return data

    def decode_from(self, reader: scale.Reader) -> Any:
        return reader.take(self.length)


@dataclass(frozen=True, slots=True)
class Tuple(Codec):
    items: tuple[Codec, ...]

    def encode(self, value: Any) -> bytes:
        if len(value) != len(self.items):
            raise ValueError(f"tuple needs {len(self.items)} items, got {len(value)}")
        return b"".join(c.encode(v) for c, v in zip(self.items, value, strict=True))

    def decode_from(self, reader: scale.Reader) -> Any:
        return tuple(c.decode_from(reader) for c in self.items)


UNIT = Tuple(())


@dataclass(frozen=True, slots=True)
class Option(Codec):
    inner: Codec

    def encode(self, value: Any) -> bytes:
        if value is None:
            return b"\x00"
        return b"\x01" + self.inner.encode(value)

    def decode_from(self, reader: scale.Reader) -> Any:
        tag = reader.u8()
        if tag == 0:
            return None
        if tag == 1:
            return self.inner.decode_from(reader)
        raise DecodeError(f"invalid Option tag {tag:#x} at offset {reader.pos - 1}")


@dataclass(frozen=True, slots=True)
class Field:
    name: str | None
    codec: Codec
    type_name: str | None = None


def _encode_fields(fields: Sequence[Field], value: Any, what: str) -> bytes:
    if not fields:
        return b""
    if fields[0].name is not None:
        if not isinstance(value, dict):
            raise ValueError(f"{what}: named fields need a dict, got {type(value).__name__}")
        missing = [f.name for f in fields if f.name not in value]
        if missing:
            raise ValueError(f"{what}: missing fields {missing}")
        return b"".join(f.codec.encode(value[f.name]) for f in fields)
    if len(fields) == 1:
        return fields[0].codec.encode(value)
    return b"".join(f.codec.encode(v) for f, v in zip(fields, value, strict=True))


def _decode_fields(fields: Sequence[Field], reader: scale.Reader) -> Any:
    if not fields:
        return None
    if fields[0].name is not None:
        return {f.name: f.codec.decode_from(reader) for f in fields}
    if len(fields) == 1:
        return fields[0].codec.decode_from(reader)
    return tuple(f.codec.decode_from(reader) for f in fields)


@dataclass(frozen=True, slots=True)
class Struct(Codec):
    """A composite type: named fields, unnamed fields, or none."""

    path: tuple[str, ...]
    fields: tuple[Field, ...] = ()
    params: tuple[tuple[str, Codec | None], ...] = ()
    docs: tuple[str, ...] = ()

    def encode(self, value: Any) -> bytes:
        return _encode_fields(self.fields, value, self.describe())

    def decode_from(self, reader: scale.Reader) -> Any:
        return _decode_fields(self.fields, reader)


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    index: int
    fields: tuple[Field, ...] = ()
    docs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Enum(Codec):
    path: tuple[str, ...]
    variants: tuple[Variant, ...]
    params: tuple[tuple[str, Codec | None], ...] = ()
    _by_name: dict[str, Variant] = field(init=False, repr=False, compare=False, hash=False)
    _by_index: dict[int, Variant] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {v.name: v for v in self.variants})
        object.__setattr__(self, "_by_index", {v.index: v for v in self.variants})
        if len(self._by_index) != len(self.variants):
            raise ValueError(f"{self.describe()}: duplicate variant index")

    def variant(self, name: str) -> Variant:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.describe()} has no variant {name!r}") from None

    def encode(self, value: Any) -> bytes:
        name, payload = value
        var = self.variant(name)
        return bytes((var.index,)) + _encode_fields(
            var.fields, payload, f"{self.describe()}::{name}"
        )

    def decode_from(self, reader: scale.Reader) -> Any:
        index = reader.u8()
        var = self._by_index.get(index)
        if var is None:
            raise DecodeError(f"{self.describe()}: unknown variant index {index}")
        return var.name, _decode_fields(var.fields, reader)


def struct(path: str, params: tuple[tuple[str, Codec | None], ...] = (), **fields: Codec) -> Struct:
    """Shorthand for a struct with named fields: ``struct("a::B", x=U32, y=U64)``."""
    return Struct(tuple(path.split("::")), tuple(Field(k, v) for k, v in fields.items()), params)


def newtype(path: str, inner: Codec, type_name: str | None = None) -> Struct:
    """A struct with one unnamed field, e.g. ``AccountId32([u8; 32])``."""
    return Struct(tuple(path.split("::")), (Field(None, inner, type_name),))


def enum(path: str, *variants: tuple[str, int, tuple[Field, ...]] | Variant) -> Enum:
    vs = tuple(v if isinstance(v, Variant) else Variant(v[0], v[1], v[2]) for v in variants)
    return Enum(tuple(path.split("::")), vs)


def named(**fields: Codec) -> tuple[Field, ...]:
    """Named fields for an enum variant: ``("Set", 0, named(now=Compact(U64)))``."""
    return tuple(Field(k, v) for k, v in fields.items())


def unnamed(*codecs: Codec) -> tuple[Field, ...]:
    return tuple(Field(None, c) for c in codecs)
