"""A runtime described in code, and its V14 metadata.

A :class:`RuntimeDesc` lists pallets with their calls, events and storage as codecs
(:mod:`blocktimesd.core.codec`).  From it come the SCALE ``RuntimeMetadataPrefixed``
bytes (V14) that a node serves from ``state_getMetadata``, and encoders for calls,
event records and storage keys that agree with that metadata by construction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from blocktimesd.core import codec as c
from blocktimesd.core import hashing, scale

__all__ = [
    "PalletDesc",
    "RuntimeDesc",
    "SignedExtensionDesc",
    "StorageDesc",
    "TypeRegistry",
]

_PRIMITIVES = {"bool": 0, "char": 1, "str": 2, "u8": 3, "u16": 4, "u32": 5, "u64": 6, "u128": 7}
_HASHER_INDEX = {name: i for i, name in enumerate(hashing.HASHERS)}


@dataclass(frozen=True, slots=True)
class StorageDesc:
    name: str
    value: c.Codec
    key: c.Codec | None = None  # None: a plain value; a Tuple for a multi-key map
    hashers: tuple[str, ...] = ()
    default: bytes | None = None  # None: modifier Optional
    docs: tuple[str, ...] = ()

    def key_hashers(self) -> tuple[tuple[str, c.Codec], ...]:
        if self.key is None:
            return ()
        if len(self.hashers) == 1:
            return ((self.hashers[0], self.key),)
        assert isinstance(self.key, c.Tuple), "multi-hasher maps take a Tuple key"
        return tuple(zip(self.hashers, self.key.items, strict=True))


@dataclass(frozen=True, slots=True)
class PalletDesc:
    name: str
    index: int
    calls: c.Enum | None = None
    events: c.Enum | None = None
    storage: tuple[StorageDesc, ...] = ()
    constants: tuple[tuple[str, c.Codec, bytes], ...] = ()
    errors: c.Enum | None = None


@dataclass(frozen=True, slots=True)
class SignedExtensionDesc:
    identifier: str
    extra: c.Codec
    additional_signed: c.Codec


class TypeRegistry:
    """Assigns portable type ids the way ``scale-info`` does: first use, pre-order."""

    def __init__(self) -> None:
        self._ids: dict[c.Codec, int] = {}
        self._entries: list[bytes] = []

    def __len__(self) -> int:
        return len(self._entries)

    def register(self, codec: c.Codec) -> int:
        if codec in self._ids:
            return self._ids[codec]
        type_id = len(self._entries)
        self._ids[codec] = type_id
        self._entries.append(b"")  # reserved: children take the following ids
        self._entries[type_id] = self._encode_type(codec)
        return type_id

    def encode(self) -> bytes:
        out = [scale.compact(len(self._entries))]
        for type_id, entry in enumerate(self._entries):
            out.append(scale.compact(type_id))
            out.append(entry)
        return b"".join(out)

    def _ref(self, codec: c.Codec) -> bytes:
        return scale.compact(self.register(codec))

    def _fields(self, fields: Iterable[c.Field]) -> bytes:
        items = list(fields)
        out = [scale.compact(len(items))]
        for f in items:
            out.append(_option_str(f.name))
            out.append(self._ref(f.codec))
            out.append(_option_str(f.type_name))
            out.append(_strings(()))
        return b"".join(out)

    def _encode_type(self, codec: c.Codec) -> bytes:
        path: tuple[str, ...] = ()
        params: tuple[tuple[str, c.Codec | None], ...] = ()
        docs: tuple[str, ...] = ()
        if isinstance(codec, c.Struct):
            path, params, docs = codec.path, codec.params, codec.docs
            body = b"\x00" + self._fields(codec.fields)
        elif isinstance(codec, c.Enum):
            path, params = codec.path, codec.params
            parts = [scale.compact(len(codec.variants))]
            for v in codec.variants:
                parts.append(_str(v.name) + self._fields(v.fields) + bytes((v.index,)))
                parts.append(_strings(v.docs))
            body = b"\x01" + b"".join(parts)
        elif isinstance(codec, c.Seq):
            body = b"\x02" + self._ref(codec.inner)
        elif isinstance(codec, c.Bytes):
            body = b"\x02" + self._ref(c.U8)
        elif isinstance(codec, c.Array):
            body = b"\x03" + scale.u32(codec.length) + self._ref(codec.inner)
        elif isinstance(codec, c.U8Array):
            body = b"\x03" + scale.u32(codec.length) + self._ref(c.U8)
        elif isinstance(codec, c.Tuple):
            body = b"\x04" + scale.compact(len(codec.items))
            body += b"".join(self._ref(item) for item in codec.items)
        elif isinstance(codec, c.Prim):
            body = b"\x05" + bytes((_PRIMITIVES[codec.name],))
        elif isinstance(codec, c.Compact):
            body = b"\x06" + self._ref(codec.inner)
        elif isinstance(codec, c.Option):
            # Option<T> is a generic enum in scale-info, with T as its parameter.
            as_enum = c.Enum(
                ("Option",),
                (c.Variant("None", 0), c.Variant("Some", 1, c.unnamed(codec.inner))),
                (("T", codec.inner),),
            )
            return self._encode_type(as_enum)
        else:
            raise TypeError(f"cannot describe {codec!r} as a portable type")
        head = _strings(path) + scale.compact(len(params))
        for name, ty in params:
            head += _str(name) + (b"\x00" if ty is None else b"\x01" + self._ref(ty))
        return head + body + _strings(docs)


def _str(text: str) -> bytes:
    return scale.compact_bytes(text.encode())


def _strings(texts: Iterable[str]) -> bytes:
    items = list(texts)
    return scale.compact(len(items)) + b"".join(_str(t) for t in items)


def _callable_call_for(pallet: str) -> str:
    """The type name FRAME gives a RuntimeCall variant's field."""
    return (
        "self::sp_api_hidden_includes_construct_runtime::hidden_include::dispatch\n"
        f"::CallableCallFor<{pallet}, Runtime>"
    )


def _option_str(text: str | None) -> bytes:
    return b"\x00" if text is None else b"\x01" + _str(text)


@dataclass(frozen=True)
class RuntimeDesc:
    """One runtime version: its pallets, extrinsic format and version numbers."""

    spec_name: str
    spec_version: int
    transaction_version: int
    runtime_path: str  # e.g. "subspace_runtime::Runtime"
    pallets: tuple[PalletDesc, ...]
    signed_extensions: tuple[SignedExtensionDesc, ...]
    address: c.Codec
    signature: c.Codec
    extrinsic_version: int = 4
    impl_name: str = ""
    impl_version: int = 0
    authoring_version: int = 0
    state_version: int = 1
    apis: tuple[tuple[bytes, int], ...] = ()
    # RuntimeVersion's last field (``system_version``: 2 = state V1 and extrinsics root V1);
    # when set, ``version_json`` reports it as ``systemVersion`` like current nodes do.
    system_version: int | None = None
    # Frontier runtimes wrap the generic UncheckedExtrinsic in a composite of their own
    # (``fp_self_contained::unchecked_extrinsic::UncheckedExtrinsic``); its path, if any.
    extrinsic_wrapper: str | None = None
    _pallet_by_name: dict[str, PalletDesc] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pallet_by_name", {p.name: p for p in self.pallets})

    def pallet(self, name: str) -> PalletDesc:
        try:
            return self._pallet_by_name[name]
        except KeyError:
            raise KeyError(
                f"runtime {self.spec_name}/{self.spec_version} has no pallet {name}"
            ) from None

    @cached_property
    def _crate(self) -> str:
        return self.runtime_path.split("::")[0]

    @cached_property
    def call_codec(self) -> c.Enum:
        return c.Enum(
            (self._crate, "RuntimeCall"),
            tuple(
                c.Variant(p.name, p.index, (c.Field(None, p.calls, _callable_call_for(p.name)),))
                for p in self.pallets
                if p.calls is not None
            ),
        )

    @cached_property
    def event_codec(self) -> c.Enum:
        return c.Enum(
            (self._crate, "RuntimeEvent"),
            tuple(
                c.Variant(p.name, p.index, c.unnamed(p.events))
                for p in self.pallets
                if p.events is not None
            ),
        )

    def encode_call(self, pallet: str, call: str, args: Any = None) -> bytes:
        return self.call_codec.encode((pallet, (call, args)))

    def storage(self, pallet: str, item: str) -> StorageDesc:
        for entry in self.pallet(pallet).storage:
            if entry.name == item:
                return entry
        raise KeyError(
            f"runtime {self.spec_name}/{self.spec_version} has no storage {pallet}.{item}"
        )

    def storage_key(self, pallet: str, item: str, *keys: Any) -> bytes:
        entry = self.storage(pallet, item)
        parts = entry.key_hashers()
        if len(keys) != len(parts):
            raise ValueError(f"{pallet}.{item} takes {len(parts)} keys, got {len(keys)}")
        key = hashing.storage_prefix(pallet, item)
        for (hasher, codec), value in zip(parts, keys, strict=True):
            key += hashing.hash_key(hasher, codec.encode(value))
        return key

    def version_json(self) -> dict[str, Any]:
        """The JSON a node returns from ``state_getRuntimeVersion``."""
        return {
            "specName": self.spec_name,
            "implName": self.impl_name or self.spec_name,
            "authoringVersion": self.authoring_version,
            "specVersion": self.spec_version,
            "implVersion": self.impl_version,
            "apis": [["0x" + api_id.hex(), ver] for api_id, ver in self.apis],
            "transactionVersion": self.transaction_version,
            "stateVersion": self.state_version,
        } | ({} if self.system_version is None else {"systemVersion": self.system_version})

    @cached_property
    def metadata(self) -> bytes:
        """SCALE ``RuntimeMetadataPrefixed`` (``meta`` + V14)."""
        reg = TypeRegistry()
        pallets = [scale.compact(len(self.pallets))]
        for p in self.pallets:
            out = _str(p.name)
            if p.storage:
                out += b"\x01" + _str(p.name) + scale.compact(len(p.storage))
                for s in p.storage:
                    out += _str(s.name) + (b"\x00" if s.default is None else b"\x01")
                    if s.key is None:
                        out += b"\x00" + scale.compact(reg.register(s.value))
                    else:
                        out += b"\x01" + scale.compact(len(s.hashers))
                        out += bytes(_HASHER_INDEX[h] for h in s.hashers)
                        out += scale.compact(reg.register(s.key))
                        out += scale.compact(reg.register(s.value))
                    # An Optional item's default is an encoded `None` (0x00), as FRAME emits.
                    default = b"\x00" if s.default is None else s.default
                    out += scale.compact_bytes(default) + _strings(s.docs)
            else:
                out += b"\x00"
            for enum_ty in (p.calls, p.events):
                ref = None if enum_ty is None else scale.compact(reg.register(enum_ty))
                out += b"\x00" if ref is None else b"\x01" + ref
            out += scale.compact(len(p.constants))
            for name, ty, value in p.constants:
                out += _str(name) + scale.compact(reg.register(ty)) + scale.compact_bytes(value)
                out += _strings(())
            out += b"\x00" if p.errors is None else b"\x01" + scale.compact(reg.register(p.errors))
            out += bytes((p.index,))
            pallets.append(out)
        # Registered after the pallets, so that pallet types take the low ids as in real runtimes.
        extrinsic_ty = reg.register(self._extrinsic_codec)
        ext = scale.compact(extrinsic_ty) + bytes((self.extrinsic_version,))
        ext += scale.compact(len(self.signed_extensions))
        for se in self.signed_extensions:
            ext += _str(se.identifier) + scale.compact(reg.register(se.extra))
            ext += scale.compact(reg.register(se.additional_signed))
        runtime_ty = reg.register(c.Struct(tuple(self.runtime_path.split("::"))))
        return b"meta\x0e" + reg.encode() + b"".join(pallets) + ext + scale.compact(runtime_ty)

    @cached_property
    def _extrinsic_codec(self) -> c.Struct:
        extra = c.Tuple(tuple(se.extra for se in self.signed_extensions))
        generic = c.Struct(
            ("sp_runtime", "generic", "unchecked_extrinsic", "UncheckedExtrinsic"),
            (c.Field(None, c.Bytes()),),
            (
                ("Address", self.address),
                ("Call", self.call_codec),
                ("Signature", self.signature),
                ("Extra", extra),
            ),
        )
        if self.extrinsic_wrapper is None:
            return generic
        return c.Struct(
            tuple(self.extrinsic_wrapper.split("::")),
            (
                c.Field(
                    None,
                    generic,
                    "generic::UncheckedExtrinsic<Address, Call, Signature, Extension>",
                ),
            ),
            (
                ("Address", self.address),
                ("Call", self.call_codec),
                ("Signature", self.signature),
                ("Extension", extra),
            ),
        )
