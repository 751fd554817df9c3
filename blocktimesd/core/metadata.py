"""A reader for SCALE ``RuntimeMetadataPrefixed`` V14: types, pallets, extrinsic format.

Why not scalecodec: it decodes these files correctly, but takes about 0.8 s for the
consensus runtime's 150 KB (``bench/decode_cost.py`` prints both figures), which would
block the daemon's event loop at every runtime upgrade, and it returns loosely typed
dicts.  The V14 layout is small and frozen, so this module reads it into immutable
records in a few tens of milliseconds; ``tests/core/test_runtime.py`` checks the
result against scalecodec on the real metadata files.  The records are named tuples,
which cost a tenth of a frozen dataclass to define (every start imports this module);
the two with an ``index`` field, which would hide a tuple's method, are dataclasses.

Only what the daemon uses is kept (no docs); everything is read, so that a malformed
file fails here with a clear message rather than later with a wrong answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeVar

from blocktimesd.core import scale
from blocktimesd.errors import DecodeError, UnsupportedRuntime

__all__ = [
    "HASHER_NAMES",
    "PRIMITIVE_NAMES",
    "ExtrinsicInfo",
    "Metadata",
    "Pallet",
    "PortableField",
    "PortableType",
    "PortableVariant",
    "SignedExtension",
    "StorageEntry",
    "parse_metadata",
]

_T = TypeVar("_T")

MAGIC = b"meta"
PRIMITIVE_NAMES = (
    "bool", "char", "str", "u8", "u16", "u32", "u64", "u128", "u256",
    "i8", "i16", "i32", "i64", "i128", "i256",
)  # fmt: skip
# ``StorageHasher`` in index order (the same order as ``hashing.HASHERS``).
HASHER_NAMES = (
    "Blake2_128", "Blake2_256", "Blake2_128Concat", "Twox128", "Twox256", "Twox64Concat",
    "Identity",
)  # fmt: skip

TypeKind = Literal[
    "composite", "variant", "sequence", "array", "tuple", "primitive", "compact", "bitsequence"
]
_KINDS: tuple[TypeKind, ...] = (
    "composite", "variant", "sequence", "array", "tuple", "primitive", "compact", "bitsequence",
)  # fmt: skip


class PortableField(NamedTuple):
    name: str | None
    type_id: int
    type_name: str | None


@dataclass(frozen=True, slots=True)
class PortableVariant:
    name: str
    fields: tuple[PortableField, ...]
    index: int


class PortableType(NamedTuple):
    """One entry of the portable registry.

    ``kind`` selects which of the other attributes are meaningful: ``fields``
    (composite), ``variants`` (variant), ``items`` (tuple; for sequence, array and
    compact the single element type; for bitsequence the store and order types),
    ``length`` (array), ``primitive`` (primitive).
    """

    id: int
    path: tuple[str, ...]
    params: tuple[tuple[str, int | None], ...]
    kind: TypeKind
    fields: tuple[PortableField, ...] = ()
    variants: tuple[PortableVariant, ...] = ()
    items: tuple[int, ...] = ()
    length: int = 0
    primitive: str = ""

    def param(self, name: str) -> int | None:
        for param_name, type_id in self.params:
            if param_name == name:
                return type_id
        return None


class StorageEntry(NamedTuple):
    name: str
    optional: bool  # modifier Optional (absent = None) rather than Default
    value_type: int
    hashers: tuple[str, ...] = ()  # empty: a plain value
    key_type: int | None = None
    default: bytes = b""


@dataclass(frozen=True, slots=True)
class Pallet:
    name: str
    index: int
    storage_prefix: str | None
    storage: tuple[StorageEntry, ...]
    calls_type: int | None
    event_type: int | None
    constants: tuple[tuple[str, int, bytes], ...]  # name, type id, encoded value
    error_type: int | None


class SignedExtension(NamedTuple):
    identifier: str
    type_id: int  # the ``extra`` carried in the extrinsic
    additional_signed: int  # signed but not carried


class ExtrinsicInfo(NamedTuple):
    type_id: int
    version: int
    signed_extensions: tuple[SignedExtension, ...]


class Metadata(NamedTuple):
    types: tuple[PortableType, ...]  # indexed by type id
    pallets: tuple[Pallet, ...]
    extrinsic: ExtrinsicInfo
    runtime_type: int


def parse_metadata(data: bytes) -> Metadata:
    """Read ``meta`` + V14 metadata; other versions raise :class:`UnsupportedRuntime`."""
    if data[:4] != MAGIC:
        raise DecodeError(f"metadata does not start with b'meta': {data[:4]!r}")
    if len(data) < 5:
        raise DecodeError("metadata ends after its magic bytes")
    if data[4] != 14:
        raise UnsupportedRuntime(f"metadata V{data[4]} is not supported (need V14)")
    r = _MetaReader(data, 5)
    types = r.vec(r.portable_type)
    for position, ty in enumerate(types):
        if ty.id != position:
            raise DecodeError(f"portable type at position {position} has id {ty.id}")
    pallets = r.vec(r.pallet)
    extrinsic = ExtrinsicInfo(r.compact(), r.u8(), tuple(r.vec(r.signed_extension)))
    runtime_type = r.compact()
    r.expect_end("metadata V14")
    meta = Metadata(tuple(types), tuple(pallets), extrinsic, runtime_type)
    _check_refs(meta)
    return meta


def _check_refs(meta: Metadata) -> None:
    """Every type id the metadata mentions exists, so later look-ups cannot fail."""
    count = len(meta.types)

    def check(type_id: int | None, where: str) -> None:
        if type_id is not None and not 0 <= type_id < count:
            raise DecodeError(f"metadata: {where} refers to type {type_id}, only {count} exist")

    for ty in meta.types:
        where = f"type {ty.id}"
        for f in ty.fields:
            check(f.type_id, where)
        for v in ty.variants:
            for f in v.fields:
                check(f.type_id, where)
        for item in ty.items:
            check(item, where)
        for _, param in ty.params:
            check(param, where)
    for p in meta.pallets:
        for type_id in (p.calls_type, p.event_type, p.error_type):
            check(type_id, f"pallet {p.name}")
        for s in p.storage:
            check(s.value_type, f"{p.name}.{s.name}")
            check(s.key_type, f"{p.name}.{s.name}")
        for name, type_id, _ in p.constants:
            check(type_id, f"{p.name}.{name}")
    check(meta.extrinsic.type_id, "extrinsic")
    for se in meta.extrinsic.signed_extensions:
        check(se.type_id, se.identifier)
        check(se.additional_signed, se.identifier)
    check(meta.runtime_type, "runtime type")


class _MetaReader(scale.Reader):
    """``scale.Reader`` plus the composite pieces of the V14 layout."""

    __slots__ = ()

    def text(self) -> str:
        raw = self.bytes_vec()
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise DecodeError(f"metadata: invalid UTF-8 string before offset {self.pos}") from None

    def texts(self) -> list[str]:
        return self.vec(self.text)

    def vec(self, item: Callable[[], _T]) -> list[_T]:
        count = self.compact()
        if count > self.remaining():  # every item takes at least one byte
            raise DecodeError(f"metadata: {count} items claimed at offset {self.pos}")
        return [item() for _ in range(count)]

    def option(self, item: Callable[[], _T]) -> _T | None:
        tag = self.u8()
        if tag == 0:
            return None
        if tag == 1:
            return item()
        raise DecodeError(f"metadata: invalid Option tag {tag:#x} at offset {self.pos - 1}")

    def field(self) -> PortableField:
        name = self.option(self.text)
        type_id = self.compact()
        type_name = self.option(self.text)
        self.texts()  # docs
        return PortableField(name, type_id, type_name)

    def variant(self) -> PortableVariant:
        name = self.text()
        fields = tuple(self.vec(self.field))
        index = self.u8()
        self.texts()
        return PortableVariant(name, fields, index)

    def param(self) -> tuple[str, int | None]:
        return self.text(), self.option(self.compact)

    def portable_type(self) -> PortableType:
        type_id = self.compact()
        path = tuple(self.texts())
        params = tuple(self.vec(self.param))
        tag = self.u8()
        if tag >= len(_KINDS):
            raise DecodeError(f"metadata: type {type_id} has unknown TypeDef tag {tag}")
        kind = _KINDS[tag]
        ty: PortableType
        if kind == "composite":
            ty = PortableType(type_id, path, params, kind, fields=tuple(self.vec(self.field)))
        elif kind == "variant":
            ty = PortableType(type_id, path, params, kind, variants=tuple(self.vec(self.variant)))
        elif kind in ("sequence", "compact"):
            ty = PortableType(type_id, path, params, kind, items=(self.compact(),))
        elif kind == "array":
            length = self.u32()
            ty = PortableType(type_id, path, params, kind, items=(self.compact(),), length=length)
        elif kind == "tuple":
            ty = PortableType(type_id, path, params, kind, items=tuple(self.vec(self.compact)))
        elif kind == "primitive":
            prim = self.u8()
            if prim >= len(PRIMITIVE_NAMES):
                raise DecodeError(f"metadata: type {type_id} has unknown primitive {prim}")
            ty = PortableType(type_id, path, params, kind, primitive=PRIMITIVE_NAMES[prim])
        else:  # bitsequence
            ty = PortableType(type_id, path, params, kind, items=(self.compact(), self.compact()))
        self.texts()
        return ty

    def hasher(self) -> str:
        index = self.u8()
        if index >= len(HASHER_NAMES):
            raise DecodeError(f"metadata: unknown storage hasher {index}")
        return HASHER_NAMES[index]

    def storage_entry(self) -> StorageEntry:
        name = self.text()
        modifier = self.u8()
        if modifier > 1:
            raise DecodeError(f"metadata: storage {name} has unknown modifier {modifier}")
        kind = self.u8()
        if kind == 0:
            entry = StorageEntry(name, modifier == 0, self.compact())
        elif kind == 1:
            hashers = tuple(self.vec(self.hasher))
            key = self.compact()
            entry = StorageEntry(name, modifier == 0, self.compact(), hashers, key)
        else:
            raise DecodeError(f"metadata: storage {name} has unknown entry type {kind}")
        default = self.bytes_vec()
        self.texts()
        return StorageEntry(
            entry.name, entry.optional, entry.value_type, entry.hashers, entry.key_type, default
        )

    def storage(self) -> tuple[str, list[StorageEntry]]:
        return self.text(), self.vec(self.storage_entry)

    def constant(self) -> tuple[str, int, bytes]:
        name, type_id, value = self.text(), self.compact(), self.bytes_vec()
        self.texts()
        return name, type_id, value

    def pallet(self) -> Pallet:
        name = self.text()
        storage = self.option(self.storage)
        calls = self.option(self.compact)
        event = self.option(self.compact)
        constants = tuple(self.vec(self.constant))
        error = self.option(self.compact)
        index = self.u8()
        prefix, entries = storage if storage is not None else (None, [])
        return Pallet(name, index, prefix, tuple(entries), calls, event, constants, error)

    def signed_extension(self) -> SignedExtension:
        return SignedExtension(self.text(), self.compact(), self.compact())
