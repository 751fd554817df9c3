"""One runtime version: names to indices, storage keys, event and envelope decoding.

Autonomys upgrades its runtimes in place, and indices move between versions (Gemini-3h
had ``Subspace.store_segment_headers`` at call 1, mainnet has it at 0).  So nothing
here is hard-coded: a :class:`Runtime` is built from the metadata of the runtime that
produced a block (the one reported at the block's *parent*, see CHAIN_FACTS) and
resolves every pallet, call, event and storage item by name.  The daemon keeps one
``Runtime`` per ``(chain, spec_version)``.

Pure: bytes in, values out; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, NamedTuple

from blocktimesd.core import codec as c
from blocktimesd.core import hashing, scale
from blocktimesd.core.metadata import Metadata, Pallet, StorageEntry, parse_metadata
from blocktimesd.core.portable import Skip, TypeBook
from blocktimesd.core.runtime_version import RuntimeVersion
from blocktimesd.errors import DecodeError, UnsupportedRuntime

__all__ = ["BARE_VERSIONS", "Envelope", "EventRecord", "Runtime", "RuntimeVersion"]

EnvelopeKind = Literal["bare", "signed", "general"]
# Extrinsic version bytes (CHAIN_FACTS, "Extrinsic formats: a trap").  0x05 is the
# bare form of the v5 format; Autonomys sends inherents as 0x04, but a node may
# legitimately serve either, and both mean "a call follows".
BARE_VERSIONS = frozenset((0x04, 0x05))
_SIGNED_V4 = 0x84
_GENERAL_V5 = 0x45


@dataclass(frozen=True, slots=True)
class Envelope:
    """Where an extrinsic's call starts and which call it is, without decoding it."""

    version_byte: int
    kind: EnvelopeKind
    pallet_index: int
    call_index: int
    call_offset: int  # offset in the extrinsic (with its length prefix) of the pallet byte

    @property
    def index(self) -> tuple[int, int]:
        return self.pallet_index, self.call_index


class EventRecord(NamedTuple):
    """One ``frame_system::EventRecord``, e.g. ``phase=("ApplyExtrinsic", 3)``,
    ``pallet="Domains"``, ``name="BundleStored"``, ``fields={"domain_id": 0, ...}``."""

    phase: tuple[str, Any]
    pallet: str
    name: str
    fields: Any
    topics: tuple[bytes, ...]


class Runtime:
    """A runtime's metadata, ready to resolve names and decode its bytes."""

    def __init__(self, metadata: Metadata, version: RuntimeVersion, chain: str) -> None:
        self.metadata = metadata
        self.version = version
        self.chain = chain
        self.types = TypeBook(metadata.types)
        self._pallets = {p.name: p for p in metadata.pallets}
        self._by_index = {p.index: p for p in metadata.pallets}
        # Names are resolved on every block: cache the answers (found ones only).
        self._variants: dict[tuple[str, str, str], c.Variant] = {}
        self._args: dict[tuple[str, str], c.Struct] = {}

    @classmethod
    def from_metadata(cls, data: bytes, version: RuntimeVersion, chain: str) -> Runtime:
        """Parse ``state_getMetadata`` bytes (``meta`` + V14).

        The metadata's own ``System.Version`` constant, when present, must name the same
        runtime as ``version``: pairing metadata with the wrong version would decode
        every block of that version wrongly and silently.
        """
        where = f"{chain} runtime {version.label}"
        try:
            runtime = cls(parse_metadata(data), version, chain)
        except UnsupportedRuntime as exc:
            raise UnsupportedRuntime(f"{where}: {exc}") from None
        except DecodeError as exc:
            raise DecodeError(f"{where}: {exc}") from None
        runtime._check_version()
        return runtime

    def _check_version(self) -> None:
        system = self._pallets.get("System")
        constants = system.constants if system is not None else ()
        found = [value for name, _, value in constants if name == "Version"]
        if not found:
            return
        try:
            own = RuntimeVersion.decode(found[0])
        except DecodeError:
            return  # an unusual Version layout: nothing to compare with
        if (own.spec_name, own.spec_version) != (self.version.spec_name, self.version.spec_version):
            raise UnsupportedRuntime(
                f"{self.chain} runtime {self.version.label}: the metadata describes "
                f"{own.label}; fetch metadata and version at the same block"
            )

    def __repr__(self) -> str:
        return f"<Runtime {self.chain} {self.version.label}>"

    @property
    def spec_version(self) -> int:
        return self.version.spec_version

    def _missing(self, what: str) -> UnsupportedRuntime:
        return UnsupportedRuntime(f"{self.chain} runtime {self.version.label} has no {what}")

    # -- names to indices ---------------------------------------------------------------

    def has_pallet(self, name: str) -> bool:
        return name in self._pallets

    def pallet(self, name: str) -> Pallet:
        try:
            return self._pallets[name]
        except KeyError:
            raise self._missing(f"pallet {name}") from None

    def _variant(self, pallet: str, name: str, kind: Literal["call", "event"]) -> c.Variant:
        found = self._variants.get((pallet, name, kind))
        if found is None:
            found = self._variants[pallet, name, kind] = self._find_variant(pallet, name, kind)
        return found

    def _find_variant(self, pallet: str, name: str, kind: Literal["call", "event"]) -> c.Variant:
        p = self.pallet(pallet)
        type_id = p.calls_type if kind == "call" else p.event_type
        if type_id is not None:
            enum = self.types.codec(type_id)
            if isinstance(enum, c.Enum):
                for variant in enum.variants:
                    if variant.name == name:
                        return variant
        raise self._missing(f"{kind} {pallet}.{name}")

    def call_index(self, pallet: str, call: str) -> tuple[int, int]:
        """``(pallet_index, call_index)``: the first two bytes of the call."""
        return self.pallet(pallet).index, self._variant(pallet, call, "call").index

    def event_index(self, pallet: str, event: str) -> tuple[int, int]:
        return self.pallet(pallet).index, self._variant(pallet, event, "event").index

    def call_name(self, pallet_index: int, call_index: int) -> tuple[str, str]:
        """The names behind a call's first two bytes (for messages and tools)."""
        p = self._by_index.get(pallet_index)
        if p is not None and p.calls_type is not None:
            enum = self.types.codec(p.calls_type)
            if isinstance(enum, c.Enum):
                for variant in enum.variants:
                    if variant.index == call_index:
                        return p.name, variant.name
        raise self._missing(f"call with index ({pallet_index}, {call_index})")

    def call_args_codec(self, pallet: str, call: str) -> c.Struct:
        """A codec for the arguments of ``pallet.call`` (the bytes after its two indices):
        decodes to a dict of the named arguments."""
        found = self._args.get((pallet, call))
        if found is None:
            variant = self._variant(pallet, call, "call")
            found = self._args[pallet, call] = c.Struct((pallet, call), variant.fields)
        return found

    def decode_call_args(self, pallet: str, call: str, ext: bytes, env: Envelope) -> Any:
        """The arguments of the call in ``ext``, which must fill the extrinsic exactly."""
        if env.index != self.call_index(pallet, call):
            raise DecodeError(f"extrinsic carries call {env.index}, not {pallet}.{call}")
        reader = scale.Reader(ext, env.call_offset + 2)
        value = self.call_args_codec(pallet, call).decode_from(reader)
        reader.expect_end(f"{pallet}.{call} arguments")
        return value

    # -- storage and constants ------------------------------------------------------------

    def storage_entry(self, pallet: str, item: str) -> StorageEntry:
        for entry in self.pallet(pallet).storage:
            if entry.name == item:
                return entry
        raise self._missing(f"storage {pallet}.{item}")

    def storage_key(self, pallet: str, item: str, *keys: Any) -> bytes:
        """The raw key of ``pallet.item`` (with ``keys`` for a map), hashed as the
        metadata says; keys are values in the codec value model (ints, bytes...)."""
        entry = self.storage_entry(pallet, item)
        p = self.pallet(pallet)
        key = hashing.storage_prefix(p.storage_prefix or p.name, item)
        if len(keys) != len(entry.hashers):
            raise UnsupportedRuntime(
                f"{self.chain} runtime {self.version.label}: storage {pallet}.{item} takes "
                f"{len(entry.hashers)} keys, {len(keys)} given"
            )
        if not keys:
            return key
        assert entry.key_type is not None
        key_codec = self.types.codec(entry.key_type)
        if len(keys) == 1:
            codecs: tuple[c.Codec, ...] = (key_codec,)
        elif isinstance(key_codec, c.Tuple) and len(key_codec.items) == len(keys):
            codecs = key_codec.items
        else:
            raise UnsupportedRuntime(f"storage {pallet}.{item}: key type does not fit its hashers")
        for hasher, codec, value in zip(entry.hashers, codecs, keys, strict=True):
            key += hashing.hash_key(hasher, codec.encode(value))
        return key

    def storage_codec(self, pallet: str, item: str) -> c.Codec:
        return self.types.codec(self.storage_entry(pallet, item).value_type)

    def decode_storage(self, pallet: str, item: str, value: bytes | None) -> Any:
        """A storage value as a node returns it; ``None`` (absent) gives the default,
        or ``None`` for an Optional item."""
        entry = self.storage_entry(pallet, item)
        if value is None:
            if entry.optional:
                return None
            value = entry.default
        return self.types.codec(entry.value_type).decode(value)

    def constant(self, pallet: str, name: str) -> Any:
        for const_name, type_id, value in self.pallet(pallet).constants:
            if const_name == name:
                return self.types.codec(type_id).decode(value)
        raise self._missing(f"constant {pallet}.{name}")

    # -- events -----------------------------------------------------------------------------

    @cached_property
    def _event_record(self) -> c.Struct:
        codec = self.storage_codec("System", "Events")
        record = codec.inner if isinstance(codec, c.Seq) else None
        names = [f.name for f in record.fields] if isinstance(record, c.Struct) else []
        if not isinstance(record, c.Struct) or names[:3] != ["phase", "event", "topics"]:
            raise UnsupportedRuntime(
                f"{self.chain} runtime {self.version.label}: System.Events is not "
                "Vec<EventRecord { phase, event, topics }>"
            )
        return record

    def decode_events(self, value: bytes) -> list[EventRecord]:
        """Decode ``System.Events``, or one ``System.EventSegments(n)`` value (the same
        ``Vec<EventRecord>``; the caller keeps the first ``System.EventCount`` records
        across segments, since old segments are not cleared)."""
        record = self._event_record
        reader = scale.Reader(value)
        count = reader.compact()
        if count > reader.remaining():  # a record takes at least 2 bytes
            raise DecodeError(f"events: {count} records claimed in {len(value)} bytes")
        out: list[EventRecord] = []
        for i in range(count):
            try:
                fields = record.decode_from(reader)
            except DecodeError as exc:
                raise DecodeError(
                    f"{self.chain} {self.version.label} events: record {i} of {count}: {exc}"
                ) from None
            pallet, (name, args) = fields["event"]
            out.append(EventRecord(fields["phase"], pallet, name, args, tuple(fields["topics"])))
        reader.expect_end(f"{self.chain} {self.version.label} events")
        return out

    # -- extrinsic envelopes ------------------------------------------------------------------

    @cached_property
    def _skip_extra(self) -> Skip:
        return self.types.sequence_skipper(
            [se.type_id for se in self.metadata.extrinsic.signed_extensions]
        )

    @cached_property
    def _skip_signed(self) -> Skip:
        ext_type = self.types.types[self.metadata.extrinsic.type_id]
        address, signature = ext_type.param("Address"), ext_type.param("Signature")
        if address is None or signature is None:
            raise UnsupportedRuntime(
                f"{self.chain} runtime {self.version.label}: the extrinsic type "
                f"{'::'.join(ext_type.path)} names no Address or Signature parameter"
            )
        skip_pair = self.types.sequence_skipper([address, signature])
        skip_extra = self._skip_extra

        def skip(buf: bytes, pos: int) -> int:
            return skip_extra(buf, skip_pair(buf, pos))

        return skip

    def envelope(self, ext: bytes) -> Envelope:
        """Read one extrinsic as served in ``chain_getBlock`` (with its compact length)
        up to its call: ``0x04`` bare, ``0x84`` signed, ``0x45`` general."""
        length, pos = scale.decode_compact(ext, 0)
        if pos + length != len(ext):
            raise DecodeError(
                f"extrinsic length prefix says {length} bytes but {len(ext) - pos} follow"
            )
        if length == 0:
            raise DecodeError("empty extrinsic: no version byte")
        version = ext[pos]
        pos += 1
        kind: EnvelopeKind
        try:
            if version in BARE_VERSIONS:
                kind = "bare"
            elif version == _SIGNED_V4:
                kind = "signed"
                pos = self._skip_signed(ext, pos)
            elif version == _GENERAL_V5:
                kind = "general"
                if pos >= len(ext):
                    raise DecodeError("ends before its extension version byte")
                if ext[pos] != 0:
                    raise UnsupportedRuntime(
                        f"{self.chain} runtime {self.version.label}: general extrinsic with "
                        f"extension version {ext[pos]}; V14 metadata describes version 0 only"
                    )
                pos = self._skip_extra(ext, pos + 1)
            else:
                raise DecodeError(f"unknown extrinsic version byte {version:#04x}")
        except UnsupportedRuntime:
            raise
        except DecodeError as exc:
            raise DecodeError(f"extrinsic (version byte {version:#04x}): {exc}") from None
        if pos + 2 > len(ext):
            raise DecodeError(
                f"{kind} extrinsic (version byte {version:#04x}) ends before its call: "
                f"call would start at offset {pos}, extrinsic is {len(ext)} bytes"
            )
        return Envelope(version, kind, ext[pos], ext[pos + 1], pos)
