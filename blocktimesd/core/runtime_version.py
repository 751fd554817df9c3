"""``RuntimeVersion``: which runtime produced a block, from JSON or from SCALE.

The daemon asks ``state_getRuntimeVersion`` at a block's parent to learn which
metadata decodes the block; a malformed answer must stop there with a clear message
rather than select the wrong decoder.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from blocktimesd.core import scale
from blocktimesd.core.header import hex_to_bytes
from blocktimesd.errors import DecodeError

__all__ = ["RuntimeVersion"]

_U32_MAX = 0xFFFF_FFFF


class RuntimeVersion(NamedTuple):
    spec_name: str
    impl_name: str
    spec_version: int
    transaction_version: int
    authoring_version: int = 0
    impl_version: int = 0
    apis: tuple[tuple[bytes, int], ...] = ()
    # The last field is ``state_version`` on older runtimes and ``system_version`` on
    # newer ones (same byte); nodes send it as ``stateVersion`` and/or ``systemVersion``.
    state_version: int | None = None
    system_version: int | None = None

    @property
    def label(self) -> str:
        """``spec_name/spec_version``, e.g. ``subspace/6``: how messages name a runtime."""
        return f"{self.spec_name}/{self.spec_version}"

    @classmethod
    def from_json(cls, obj: Any) -> RuntimeVersion:
        """Parse the result of ``state_getRuntimeVersion``; every field is checked."""
        if not isinstance(obj, dict):
            raise DecodeError(f"runtime version: expected an object, got {type(obj).__name__}")
        apis_json = obj.get("apis", [])
        if not isinstance(apis_json, list):
            raise DecodeError("runtime version.apis: expected a list")
        apis = []
        for entry in apis_json:
            if not (isinstance(entry, list | tuple) and len(entry) == 2):
                raise DecodeError(f"runtime version.apis: bad entry {entry!r:.80}")
            api_id = hex_to_bytes(entry[0], "runtime version.apis id")
            if len(api_id) != 8:
                raise DecodeError(f"runtime version.apis: id {entry[0]!r} is not 8 bytes")
            apis.append((api_id, _u32(entry[1], "apis version")))
        return cls(
            spec_name=_text(obj, "specName"),
            impl_name=_text(obj, "implName"),
            spec_version=_u32(_field(obj, "specVersion"), "specVersion"),
            transaction_version=_u32(_field(obj, "transactionVersion"), "transactionVersion"),
            authoring_version=_u32(obj.get("authoringVersion", 0), "authoringVersion"),
            impl_version=_u32(obj.get("implVersion", 0), "implVersion"),
            apis=tuple(apis),
            state_version=_optional_u8(obj, "stateVersion"),
            system_version=_optional_u8(obj, "systemVersion"),
        )

    @classmethod
    def decode(cls, data: bytes) -> RuntimeVersion:
        """SCALE ``sp_version::RuntimeVersion`` (``Core_version``, ``System.Version``)."""
        r = scale.Reader(data)
        try:
            spec_name, impl_name = r.bytes_vec().decode(), r.bytes_vec().decode()
        except UnicodeDecodeError:
            raise DecodeError("runtime version: spec or impl name is not UTF-8") from None
        authoring, spec, impl = r.u32(), r.u32(), r.u32()
        count = r.compact()
        if count * 12 > r.remaining():
            raise DecodeError(f"runtime version: {count} apis claimed in {r.remaining()} bytes")
        apis = tuple((r.take(8), r.u32()) for _ in range(count))
        tx = r.u32()
        # Then, depending on the Substrate release: nothing; ``state_version`` (later
        # renamed ``system_version``); or ``state_version, extrinsic_state_version``.
        tail = r.take(r.remaining())
        if len(tail) > 2:
            raise DecodeError(f"runtime version: {len(tail)} trailing bytes")
        if len(tail) == 2:
            return cls(spec_name, impl_name, spec, tx, authoring, impl, apis, tail[0])
        last = tail[0] if tail else None
        return cls(spec_name, impl_name, spec, tx, authoring, impl, apis, last, last)


def _field(obj: dict[str, Any], name: str) -> Any:
    if name not in obj:
        raise DecodeError(f"runtime version: missing field {name!r}")
    return obj[name]


def _text(obj: dict[str, Any], name: str) -> str:
    value = _field(obj, name)
    if not isinstance(value, str) or not value:
        raise DecodeError(f"runtime version.{name}: expected a non-empty string, got {value!r:.80}")
    return value


def _u32(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U32_MAX:
        raise DecodeError(f"runtime version.{name}: expected a u32, got {value!r:.80}")
    return value


def _optional_u8(obj: dict[str, Any], name: str) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise DecodeError(f"runtime version.{name}: expected a u8, got {value!r:.80}")
    return value
