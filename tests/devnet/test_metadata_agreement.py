"""The devnet's hand-written runtimes agree with the real Autonomys runtimes.

Both our ``RuntimeDesc.metadata`` bytes and the real V14 metadata shipped in
``tests/data/metadata`` are decoded with scalecodec 1.2.12, then compared structurally:
pallet names and indices, and for every call, event and storage item the devnet
describes the full recursive shape of its types (kind, type path, field names, variant
names and indices, array lengths, primitives).  A difference fails with the path where
it was found, e.g. ``Domains.submit_bundle.opaque_bundle<V0>.0.sealed_header.header.receipt``.
"""

from __future__ import annotations

import dataclasses
import random
import struct
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from scalecodec.base import RuntimeConfigurationObject, ScaleBytes
from scalecodec.type_registry import load_type_registry_preset

from blocktimesd.core import codec as c
from blocktimesd.core.runtime_desc import PalletDesc, RuntimeDesc
from blocktimesd.devnet.runtimes import (
    apply_extrinsic,
    consensus_runtime,
    domain_runtime,
    event_record,
)
from blocktimesd.devnet.runtimes import consensus as cons
from blocktimesd.devnet.runtimes import domain as dom
from blocktimesd.errors import DecodeError
from tests.conftest import real_bytes

CONSENSUS_FILE = "subspace-spec6"
DOMAIN_FILE = "subspace-evm-domain-spec0"
GEMINI_FILE = "subspace-gemini-3h-spec7"


# --- decoding metadata with scalecodec -----------------------------------------------------


class Meta:
    """A decoded V14 metadata: scalecodec's value plus indexes by id and pallet name."""

    def __init__(self, data: bytes) -> None:
        # RuntimeConfiguration() is a process-wide singleton in scalecodec 1.2.12; a
        # RuntimeConfigurationObject is a fresh configuration with no shared registry.
        self.rc = RuntimeConfigurationObject()
        self.rc.update_type_registry(load_type_registry_preset("core"))
        self.obj = self.rc.create_scale_object("MetadataVersioned", data=ScaleBytes(data))
        self.obj.decode()
        assert self.obj.data.offset == len(data), "metadata has trailing bytes"
        self.rc.add_portable_registry(self.obj)
        self.magic, versioned = self.obj.value
        self.v14: dict[str, Any] = versioned["V14"]
        self.types: dict[int, dict[str, Any]] = {
            t["id"]: t["type"] for t in self.v14["types"]["types"]
        }
        self.pallets: dict[str, dict[str, Any]] = {p["name"]: p for p in self.v14["pallets"]}

    def type_by_path(self, *path: str) -> int:
        ids = [i for i, t in self.types.items() if tuple(t["path"]) == path]
        assert len(ids) == 1, f"{'::'.join(path)}: {len(ids)} types"
        return ids[0]

    def enum_id(self, pallet: str, kind: str) -> int | None:
        entry = self.pallets[pallet]["calls" if kind == "call" else "event"]
        return None if entry is None else int(entry["ty"])

    def variants(self, type_id: int) -> dict[int, dict[str, Any]]:
        return {v["index"]: v for v in self.types[type_id]["def"]["variant"]["variants"]}

    def variant_named(self, pallet: str, kind: str, name: str) -> dict[str, Any]:
        type_id = self.enum_id(pallet, kind)
        assert type_id is not None, f"{pallet} has no {kind}s"
        found = [v for v in self.variants(type_id).values() if v["name"] == name]
        assert found, f"{pallet} has no {kind} {name}"
        return dict(found[0])

    def storage(self, pallet: str, item: str) -> dict[str, Any]:
        entries = self.pallets[pallet]["storage"]["entries"]
        found = [e for e in entries if e["name"] == item]
        assert found, f"{pallet} has no storage {item}"
        return dict(found[0])

    def runtime_enum(self, kind: str) -> int:
        crate = self.types[self.v14["runtime_type"]]["path"][0]
        return self.type_by_path(crate, "RuntimeCall" if kind == "call" else "RuntimeEvent")

    def decode(self, type_string: str, data: bytes) -> Any:
        obj = self.rc.create_scale_object(type_string, data=ScaleBytes(data), metadata=self.obj)
        value = obj.decode()
        assert obj.data.offset == len(data), f"{type_string}: trailing bytes"
        return value


def raw(value: str) -> bytes:
    """Bytes that scalecodec decoded to text when valid UTF-8, else to ``0x`` hex."""
    if value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    return value.encode()


@cache
def real(name: str) -> Meta:
    return Meta(real_bytes(name))


@cache
def ours(kind: str, spec_version: int) -> Meta:
    return Meta(runtime(kind, spec_version).metadata)


def runtime(kind: str, spec_version: int) -> RuntimeDesc:
    return consensus_runtime(spec_version) if kind == "consensus" else domain_runtime(spec_version)


def resolve_call(meta: Meta, pallet: str, call: str) -> tuple[int, int]:
    """(pallet index, call index) of ``pallet.call``, by name, as a consumer must do."""
    return int(meta.pallets[pallet]["index"]), int(
        meta.variant_named(pallet, "call", call)["index"]
    )


# --- the structural comparator -------------------------------------------------------------


class ShapeMismatch(AssertionError):
    pass


def _subset_allowed(path: list[str]) -> bool:
    """Enums we may describe partially: RuntimeCall/RuntimeEvent and pallet Call/Event."""
    return bool(path) and (
        path[-1] in ("RuntimeCall", "RuntimeEvent")
        or path[-2:] in (["pallet", "Call"], ["pallet", "Event"])
    )


class Comparator:
    """Compares a type of ours with a real one, recursively; raises at the first difference.

    Variants are matched by index (name and fields must agree).  Enums allowed to be
    partial (see ``_subset_allowed``) need only have a subset of the real variants;
    every other enum must have exactly the real set.  Type parameters are compared when
    ours declares any (polkadot.js relies on them for ``BTreeMap``, ``Option`` ...).
    """

    def __init__(self, ours: Meta, real: Meta) -> None:
        self.ours, self.real = ours, real
        self.seen: set[tuple[int, int]] = set()

    def fail(self, where: str, message: str) -> None:
        raise ShapeMismatch(f"{where}: {message}")

    def compare(self, our_id: int, real_id: int, where: str) -> None:
        if (our_id, real_id) in self.seen:
            return
        self.seen.add((our_id, real_id))
        ot, rt = self.ours.types[our_id], self.real.types[real_id]
        if ot["path"] != rt["path"]:
            self.fail(where, f"type path {'::'.join(ot['path'])!r} != {'::'.join(rt['path'])!r}")
        ((okind, oval),) = ot["def"].items()
        ((rkind, rval),) = rt["def"].items()
        if okind != rkind:
            self.fail(where, f"kind {okind} != {rkind}")
        if ot["params"]:
            self._params(ot["params"], rt["params"], where)
        if okind == "composite":
            self._fields(oval["fields"], rval["fields"], where)
        elif okind == "variant":
            self._variants(oval["variants"], rval["variants"], where, _subset_allowed(ot["path"]))
        elif okind in ("sequence", "compact"):
            self.compare(oval["type"], rval["type"], f"{where}[]")
        elif okind == "array":
            if oval["len"] != rval["len"]:
                self.fail(where, f"array length {oval['len']} != {rval['len']}")
            self.compare(oval["type"], rval["type"], f"{where}[]")
        elif okind == "tuple":
            if len(oval) != len(rval):
                self.fail(where, f"tuple of {len(oval)} != {len(rval)}")
            for i, (o, r) in enumerate(zip(oval, rval, strict=True)):
                self.compare(o, r, f"{where}.{i}")
        elif oval != rval:
            self.fail(where, f"{okind} {oval} != {rval}")

    def _params(self, ours: list[dict[str, Any]], real: list[dict[str, Any]], where: str) -> None:
        if [p["name"] for p in ours] != [p["name"] for p in real]:
            self.fail(
                where, f"type params {[p['name'] for p in ours]} != {[p['name'] for p in real]}"
            )
        for o, r in zip(ours, real, strict=True):
            if (o["type"] is None) != (r["type"] is None):
                self.fail(where, f"type param {o['name']}: {o['type']} vs {r['type']}")
            if o["type"] is not None:
                self.compare(o["type"], r["type"], f"{where}<{o['name']}>")

    def _fields(self, ours: list[dict[str, Any]], real: list[dict[str, Any]], where: str) -> None:
        names = [f["name"] for f in ours]
        if names != [f["name"] for f in real]:
            self.fail(where, f"fields {names} != {[f['name'] for f in real]}")
        for i, (o, r) in enumerate(zip(ours, real, strict=True)):
            self.compare(o["type"], r["type"], f"{where}.{o['name'] or i}")

    def _variants(
        self, ours: list[dict[str, Any]], real: list[dict[str, Any]], where: str, subset: bool
    ) -> None:
        by_index = {v["index"]: v for v in real}
        our_indices = {v["index"] for v in ours}
        missing = sorted(set(by_index) - our_indices)
        if missing and not subset:
            self.fail(where, f"variants {[by_index[i]['name'] for i in missing]} missing")
        for v in ours:
            r = by_index.get(v["index"])
            if r is None:
                self.fail(where, f"variant {v['name']} (index {v['index']}) not in the real type")
                return
            if r["name"] != v["name"]:
                self.fail(where, f"variant index {v['index']} is {v['name']!r}, real {r['name']!r}")
            self._fields(v["fields"], r["fields"], f"{where}<{v['name']}>")


def check_storage(our: Meta, real_meta: Meta, pallet: str, item: str) -> None:
    o, r = our.storage(pallet, item), real_meta.storage(pallet, item)
    where = f"{pallet}.{item}"
    assert o["modifier"] == r["modifier"], f"{where}: modifier {o['modifier']} != {r['modifier']}"
    assert raw(o["default"]) == raw(r["default"]), f"{where}: default value"
    cmp = Comparator(our, real_meta)
    if "Plain" in r["type"]:
        assert "Plain" in o["type"], f"{where}: ours is a map, the real item a plain value"
        cmp.compare(o["type"]["Plain"], r["type"]["Plain"], where)
        return
    assert "Map" in o["type"], f"{where}: ours is a plain value, the real item a map"
    om, rm = o["type"]["Map"], r["type"]["Map"]
    assert om["hashers"] == rm["hashers"], f"{where}: hashers {om['hashers']} != {rm['hashers']}"
    cmp.compare(om["key"], rm["key"], f"{where}(key)")
    cmp.compare(om["value"], rm["value"], f"{where}(value)")


def check_variant(our: Meta, real_meta: Meta, pallet: str, kind: str, name: str) -> None:
    o, r = our.variant_named(pallet, kind, name), real_meta.variant_named(pallet, kind, name)
    where = f"{pallet}.{name}"
    assert o["index"] == r["index"], f"{where}: index {o['index']} != {r['index']}"
    Comparator(our, real_meta)._fields(o["fields"], r["fields"], where)


# --- what must agree -------------------------------------------------------------------------

CONSENSUS_ITEMS = [
    ("storage", "System", "Number"),
    ("storage", "System", "Events"),
    ("storage", "System", "EventCount"),
    ("storage", "System", "EventSegments"),
    ("storage", "System", "Account"),
    ("storage", "Timestamp", "Now"),
    ("storage", "Timestamp", "DidUpdate"),
    ("storage", "Domains", "SuccessfulBundles"),
    ("storage", "Domains", "ExecutionInbox"),
    ("storage", "Domains", "ConsensusBlockHash"),
    ("storage", "Domains", "HeadDomainNumber"),
    ("storage", "RuntimeConfigs", "ConfirmationDepthK"),
    ("call", "Timestamp", "set"),
    ("call", "Subspace", "store_segment_headers"),
    ("call", "Subspace", "vote"),
    ("call", "Domains", "submit_bundle"),
    ("call", "Balances", "transfer_keep_alive"),
    ("call", "Balances", "transfer_allow_death"),
    ("event", "System", "ExtrinsicSuccess"),
    ("event", "System", "ExtrinsicFailed"),
    ("event", "System", "CodeUpdated"),
    ("event", "Subspace", "SegmentHeaderStored"),
    ("event", "Subspace", "FarmerVote"),
    ("event", "Domains", "BundleStored"),
    ("event", "Balances", "Transfer"),
    ("event", "Balances", "Withdraw"),
    ("event", "TransactionPayment", "TransactionFeePaid"),
]
DOMAIN_ITEMS = [
    ("storage", "System", "Number"),
    ("storage", "System", "Events"),
    ("storage", "System", "EventCount"),
    ("storage", "System", "EventSegments"),
    ("storage", "System", "Account"),
    ("storage", "Timestamp", "Now"),
    ("storage", "Timestamp", "DidUpdate"),
    ("call", "Timestamp", "set"),
    ("call", "Ethereum", "transact"),
    ("event", "System", "ExtrinsicSuccess"),
    ("event", "System", "ExtrinsicFailed"),
    ("event", "System", "CodeUpdated"),
    ("event", "Ethereum", "Executed"),
    ("event", "Balances", "Transfer"),
]
# Pallet Call/Event enums we describe completely (every real variant).
COMPLETE_ENUMS = {
    "consensus": [
        ("System", "event"),
        ("Timestamp", "call"),
        ("Subspace", "call"),
        ("Subspace", "event"),
        ("Rewards", "event"),
        ("Balances", "event"),
        ("TransactionFees", "event"),
        ("TransactionPayment", "event"),
    ],
    "domain": [
        ("System", "event"),
        ("Timestamp", "call"),
        ("Balances", "event"),
        ("TransactionPayment", "event"),
        ("Ethereum", "call"),
        ("Ethereum", "event"),
    ],
}
REAL_FILE = {"consensus": CONSENSUS_FILE, "domain": DOMAIN_FILE}
BASE = {"consensus": cons.BASE_SPEC, "domain": dom.BASE_SPEC}
KINDS = ["consensus", "domain"]


def _item_params() -> list[Any]:
    return [
        pytest.param(kind, *item, id=f"{kind}-{item[1]}.{item[2]}")
        for kind, items in (("consensus", CONSENSUS_ITEMS), ("domain", DOMAIN_ITEMS))
        for item in items
    ]


@pytest.mark.parametrize(("kind", "what", "pallet", "item"), _item_params())
def test_required_item_agrees(kind: str, what: str, pallet: str, item: str) -> None:
    real_meta, our = real(REAL_FILE[kind]), ours(kind, BASE[kind])
    if what == "storage":
        check_storage(our, real_meta, pallet, item)
    else:
        check_variant(our, real_meta, pallet, what, item)


@pytest.mark.parametrize("kind", KINDS)
def test_pallet_names_and_indices_agree(kind: str) -> None:
    real_meta, our = real(REAL_FILE[kind]), ours(kind, BASE[kind])
    real_pallets = [(p["name"], p["index"]) for p in real_meta.v14["pallets"]]
    our_pallets = [(p["name"], p["index"]) for p in our.v14["pallets"]]
    assert sorted(our_pallets, key=lambda p: p[1]) == sorted(real_pallets, key=lambda p: p[1])


@pytest.mark.parametrize("kind", KINDS)
def test_everything_we_describe_agrees(kind: str) -> None:
    """Not only the required items: every storage item, call and event we declare."""
    real_meta, our = real(REAL_FILE[kind]), ours(kind, BASE[kind])
    for name, pallet in our.pallets.items():
        for entry in (pallet["storage"] or {}).get("entries", []):
            check_storage(our, real_meta, name, entry["name"])
        for what in ("call", "event"):
            type_id = our.enum_id(name, what)
            if type_id is not None:
                real_id = real_meta.enum_id(name, what)
                assert real_id is not None, f"{name} has no {what}s in the real runtime"
                Comparator(our, real_meta).compare(type_id, real_id, f"{name}.{what}s")


@pytest.mark.parametrize("kind", KINDS)
def test_complete_enums_have_every_real_variant(kind: str) -> None:
    real_meta, our = real(REAL_FILE[kind]), ours(kind, BASE[kind])
    for pallet, what in COMPLETE_ENUMS[kind]:
        our_id, real_id = our.enum_id(pallet, what), real_meta.enum_id(pallet, what)
        assert our_id is not None
        assert real_id is not None
        ours_v = {i: v["name"] for i, v in our.variants(our_id).items()}
        real_v = {i: v["name"] for i, v in real_meta.variants(real_id).items()}
        assert ours_v == real_v, f"{pallet} {what}s"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("what", ["call", "event"])
def test_runtime_call_and_event_enums_are_subsets(kind: str, what: str) -> None:
    real_meta, our = real(REAL_FILE[kind]), ours(kind, BASE[kind])
    our_id, real_id = our.runtime_enum(what), real_meta.runtime_enum(what)
    Comparator(our, real_meta).compare(our_id, real_id, f"Runtime{what.title()}")
    assert our.variants(our_id), "empty enum"


@pytest.mark.parametrize("kind", KINDS)
def test_extrinsic_format_agrees(kind: str) -> None:
    real_meta, our = real(REAL_FILE[kind]), ours(kind, BASE[kind])
    oe, re_ = our.v14["extrinsic"], real_meta.v14["extrinsic"]
    assert oe["version"] == re_["version"] == 4
    ids = [s["identifier"] for s in oe["signed_extensions"]]
    assert ids == [s["identifier"] for s in re_["signed_extensions"]]
    cmp = Comparator(our, real_meta)
    for o, r in zip(oe["signed_extensions"], re_["signed_extensions"], strict=True):
        cmp.compare(o["ty"], r["ty"], f"{o['identifier']}.extra")
        cmp.compare(o["additional_signed"], r["additional_signed"], f"{o['identifier']}.additional")
    # The extrinsic type with its Address, Call, Signature and Extra parameters.
    cmp.compare(oe["ty"], re_["ty"], "UncheckedExtrinsic")


@pytest.mark.parametrize("kind", KINDS)
def test_constants_agree(kind: str) -> None:
    real_meta, our = real(REAL_FILE[kind]), ours(kind, BASE[kind])
    checked = 0
    for name, pallet in our.pallets.items():
        real_consts = {k["name"]: k for k in real_meta.pallets[name]["constants"]}
        for const in pallet["constants"]:
            r = real_consts[const["name"]]
            where = f"{name}.{const['name']}"
            Comparator(our, real_meta).compare(const["type"], r["type"], where)
            assert raw(const["value"]) == raw(r["value"]), where
            checked += 1
    assert checked >= 4


def _read_runtime_version(data: bytes) -> dict[str, Any]:
    """Decode a SCALE ``RuntimeVersion`` (``Core_version``) by hand."""
    pos = 0

    def compact() -> int:
        nonlocal pos
        mode = data[pos] & 3
        assert mode < 3, "long compact not expected here"
        width = 1 << mode
        value = int.from_bytes(data[pos : pos + width], "little") >> 2
        pos += width
        return value

    def text() -> str:
        nonlocal pos
        n = compact()
        pos += n
        return data[pos - n : pos].decode()

    def u32() -> int:
        nonlocal pos
        pos += 4
        return int(struct.unpack_from("<I", data, pos - 4)[0])

    out: dict[str, Any] = {"spec_name": text(), "impl_name": text()}
    out.update(authoring_version=u32(), spec_version=u32(), impl_version=u32())
    apis = []
    for _ in range(compact()):
        api = data[pos : pos + 8]
        pos += 8
        apis.append((api, u32()))
    out.update(apis=tuple(apis), transaction_version=u32(), system_version=data[pos])
    assert pos + 1 == len(data)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_runtime_version_agrees(kind: str) -> None:
    expected = _read_runtime_version(real_bytes(REAL_FILE[kind], "runtime-version"))
    desc = runtime(kind, BASE[kind])
    got = {key: getattr(desc, key) for key in expected}
    assert got == expected
    version = desc.version_json()
    assert version["specName"] == expected["spec_name"]
    assert version["apis"][0] == ["0x" + expected["apis"][0][0].hex(), expected["apis"][0][1]]


# --- our metadata on its own ---------------------------------------------------------------

ALL_VERSIONS = [("consensus", v) for v in cons.SPEC_VERSIONS] + [
    ("domain", v) for v in dom.SPEC_VERSIONS
]


@pytest.mark.parametrize(("kind", "spec_version"), ALL_VERSIONS)
def test_our_metadata_decodes_completely(kind: str, spec_version: int) -> None:
    desc, meta = runtime(kind, spec_version), ours(kind, spec_version)
    assert meta.magic == "0x" + b"meta".hex()
    assert [(p["name"], p["index"]) for p in meta.v14["pallets"]] == [
        (p.name, p.index) for p in desc.pallets
    ]
    assert sorted(meta.types) == list(range(len(meta.types)))
    # Every type resolves to a scalecodec decoder class (add_portable_registry built them).
    for type_id in meta.types:
        assert meta.rc.get_decoder_class(f"scale_info::{type_id}") is not None, type_id
    # Every constant's value decodes with its type and nothing is left over.
    for pallet in meta.v14["pallets"]:
        for const in pallet["constants"]:
            meta.decode(f"scale_info::{const['type']}", raw(const["value"]))


def test_storage_keys_match_known_keys() -> None:
    rt = consensus_runtime(cons.BASE_SPEC)
    now = "f0c365c3cf59d671eb72da0e7a4113c49f1f0515f462cdcf84e0f1d6045dfcbb"
    bundles = "0b41d0c7f7b4485bd7be1d66066b00ad38420b1ba9feb1a2d2173b0caecad9d1"
    assert rt.storage_key("Timestamp", "Now").hex() == now
    assert rt.storage_key("Domains", "SuccessfulBundles", 0).hex() == bundles + "00000000"
    assert rt.storage_key("Domains", "SuccessfulBundles", 3).hex() == bundles + "03000000"
    assert domain_runtime(dom.BASE_SPEC).storage_key("Timestamp", "Now").hex() == now
    inbox = rt.storage_key("Domains", "ExecutionInbox", 0, 7, 9)
    assert inbox.endswith(bytes.fromhex("000000000700000009000000"))


def test_unknown_versions_are_rejected() -> None:
    with pytest.raises(ValueError, match="spec_version 5"):
        consensus_runtime(5)
    with pytest.raises(ValueError, match="spec_version 2"):
        domain_runtime(2)
    assert consensus_runtime(6) is consensus_runtime(6)


# --- value builders: round trips, and the real metadata reads our bytes ------------------------


def _consensus_calls(rng: random.Random) -> list[tuple[str, str, Any]]:
    header = cons.segment_header(3, 4567, rng)
    return [
        ("Timestamp", "set", {"now": 1_754_000_000_000}),
        ("Subspace", "store_segment_headers", {"segment_headers": [header, header]}),
        ("Subspace", "vote", {"signed_vote": cons.signed_vote(rng, 100, bytes(range(32)), 600)}),
        (
            "Domains",
            "submit_bundle",
            {"opaque_bundle": cons.opaque_bundle(rng, 0, b"\x11" * 32, 99)},
        ),
        (
            "Domains",
            "submit_bundle",
            {
                "opaque_bundle": cons.opaque_bundle(
                    rng, 0, b"\x22" * 32, 5, slot=7, operator_id=3, extrinsics=[b"\x01\x02", b""]
                )
            },
        ),
        ("Balances", "transfer_keep_alive", cons.transfer_args(b"\x05" * 32, 10**18)),
        ("Balances", "transfer_allow_death", cons.transfer_args(b"\x06" * 32, 1)),
    ]


def _consensus_events(rng: random.Random) -> list[tuple[str, str, Any]]:
    alice, bob = b"\xaa" * 32, b"\xbb" * 32
    return [
        ("System", "ExtrinsicSuccess", cons.extrinsic_success(12_345, 67, "Mandatory", False)),
        ("System", "CodeUpdated", cons.code_updated()),
        (
            "Subspace",
            "SegmentHeaderStored",
            cons.segment_header_stored(cons.segment_header(0, 0, rng)),
        ),
        ("Subspace", "FarmerVote", cons.farmer_vote(alice, bob, 10, b"\x01" * 32)),
        ("Domains", "BundleStored", cons.bundle_stored(0, b"\x02" * 32, 7)),
        ("Balances", "Transfer", cons.transfer(alice, bob, 5)),
        ("Balances", "Withdraw", cons.withdraw(alice, 9)),
        ("TransactionPayment", "TransactionFeePaid", cons.transaction_fee_paid(alice, 100, 1)),
    ]


def _domain_calls(rng: random.Random) -> list[tuple[str, str, Any]]:
    return [
        ("Timestamp", "set", {"now": 1_754_000_000_000}),
        ("Ethereum", "transact", dom.legacy_transact_args(rng, 0, b"\x33" * 20, 10**18)),
        ("Ethereum", "transact", dom.eip1559_transact_args(rng, 1, None, input_data=b"\x60\x80")),
    ]


def _domain_events(rng: random.Random) -> list[tuple[str, str, Any]]:
    eve, contract = b"\xee" * 20, b"\xcc" * 20
    return [
        ("System", "ExtrinsicSuccess", cons.extrinsic_success(1_000)),
        ("Ethereum", "Executed", dom.executed(eve, contract, rng.randbytes(32))),
        ("Ethereum", "Executed", dom.executed(eve, contract, b"\x00" * 32, dom.REVERTED, b"x")),
        ("Balances", "Transfer", cons.transfer(eve, contract, 3)),
    ]


CASES: dict[str, tuple[Callable[[random.Random], Any], Callable[[random.Random], Any]]] = {
    "consensus": (_consensus_calls, _consensus_events),
    "domain": (_domain_calls, _domain_events),
}


@pytest.mark.parametrize(("kind", "spec_version"), ALL_VERSIONS)
def test_value_builders_round_trip(kind: str, spec_version: int) -> None:
    desc = runtime(kind, spec_version)
    make_calls, make_events = CASES[kind]
    for pallet, call, args in make_calls(random.Random(1)):
        data = desc.encode_call(pallet, call, args)
        assert desc.call_codec.decode(data) == (pallet, (call, args)), f"{pallet}.{call}"
    # A builder called twice with equal seeds gives equal values.
    assert make_calls(random.Random(2)) == make_calls(random.Random(2))
    records = [
        event_record(apply_extrinsic(i), pallet, event, args)
        for i, (pallet, event, args) in enumerate(make_events(random.Random(3)))
    ]
    if kind == "consensus" and spec_version != cons.BASE_SPEC:
        records[4]["event"] = ("Domains", ("BundleStored", cons.bundle_stored(
            0, b"\x02" * 32, 7, spec_version=spec_version, extrinsics_count=4
        )))  # fmt: skip
    events = desc.storage("System", "Events").value
    assert events.decode(events.encode(records)) == records


@pytest.mark.parametrize("kind", KINDS)
def test_real_metadata_decodes_our_bytes(kind: str) -> None:
    """scalecodec with the *real* runtime's metadata reads what our codecs write."""
    desc, real_meta = runtime(kind, BASE[kind]), real(REAL_FILE[kind])
    make_calls, make_events = CASES[kind]
    for pallet, call, args in make_calls(random.Random(4)):
        decoded = real_meta.decode("Call", desc.encode_call(pallet, call, args))
        assert (decoded["call_module"], decoded["call_function"]) == (pallet, call)
    events = make_events(random.Random(5))
    records = [
        event_record(apply_extrinsic(i), pallet, event, args)
        for i, (pallet, event, args) in enumerate(events)
    ]
    data = desc.storage("System", "Events").value.encode(records)
    events_type = real_meta.storage("System", "Events")["type"]["Plain"]
    decoded_events = real_meta.decode(f"scale_info::{events_type}", data)
    assert [(e["module_id"], e["event_id"]) for e in decoded_events] == [
        (pallet, event) for pallet, event, _ in events
    ]
    assert [e["extrinsic_idx"] for e in decoded_events] == list(range(len(events)))


def test_real_metadata_reads_our_bundle_fields() -> None:
    desc, real_meta = consensus_runtime(cons.BASE_SPEC), real(CONSENSUS_FILE)
    bundle = cons.opaque_bundle(random.Random(6), 0, b"\x44" * 32, 77, slot=12, operator_id=5)
    decoded = real_meta.decode(
        "Call", desc.encode_call("Domains", "submit_bundle", {"opaque_bundle": bundle})
    )
    value = decoded["call_args"][0]["value"]["V0"]
    election = value["sealed_header"]["header"]["proof_of_election"]
    assert (election["domain_id"], election["slot_number"], election["operator_id"]) == (0, 12, 5)
    receipt = value["sealed_header"]["header"]["receipt"]["V0"]
    assert receipt["consensus_block_number"] == 77
    assert receipt["consensus_block_hash"] == "0x" + "44" * 32


# --- upgrades --------------------------------------------------------------------------------


def _decode_or_error(codec: c.Codec, data: bytes) -> Any:
    try:
        return codec.decode(data)
    except (DecodeError, KeyError, ValueError) as exc:
        return type(exc)


def test_consensus_upgrade_moves_store_segment_headers_and_extends_bundle_stored() -> None:
    old, new = consensus_runtime(cons.BASE_SPEC), consensus_runtime(cons.UPGRADED_SPEC)
    assert (old.spec_version, new.spec_version) == (6, 7)
    assert new.transaction_version > old.transaction_version
    assert resolve_call(ours("consensus", 6), "Subspace", "store_segment_headers") == (2, 0)
    assert resolve_call(ours("consensus", 7), "Subspace", "store_segment_headers") == (2, 1)
    assert resolve_call(ours("consensus", 7), "Subspace", "vote") == (2, 2)
    header = cons.segment_header(1, 10, random.Random(7))
    data = new.encode_call("Subspace", "store_segment_headers", {"segment_headers": [header]})
    assert data[:2] == b"\x02\x01"
    assert _decode_or_error(new.call_codec, data) == (
        "Subspace",
        ("store_segment_headers", {"segment_headers": [header]}),
    )
    assert _decode_or_error(old.call_codec, data) != _decode_or_error(new.call_codec, data)
    stored_new = ours("consensus", 7).variant_named("Domains", "event", "BundleStored")
    stored_old = ours("consensus", 6).variant_named("Domains", "event", "BundleStored")
    assert [f["name"] for f in stored_new["fields"]] == [
        *[f["name"] for f in stored_old["fields"]],
        "extrinsics_count",
    ]
    # Event records written by spec 7 misdecode with spec 6's codec.
    args = cons.bundle_stored(0, b"\x09" * 32, 2, spec_version=7, extrinsics_count=1)
    records = [
        event_record(apply_extrinsic(1), "Domains", "BundleStored", args),
        event_record(apply_extrinsic(2), "System", "ExtrinsicSuccess", cons.extrinsic_success(5)),
    ]
    data = new.storage("System", "Events").value.encode(records)
    assert _decode_or_error(new.storage("System", "Events").value, data) == records
    assert _decode_or_error(old.storage("System", "Events").value, data) != records


def test_domain_upgrade_moves_ethereum_indices() -> None:
    old, new = domain_runtime(dom.BASE_SPEC), domain_runtime(dom.UPGRADED_SPEC)
    assert (old.spec_version, new.spec_version) == (0, 1)
    assert resolve_call(ours("domain", 0), "Ethereum", "transact") == (80, 0)
    assert resolve_call(ours("domain", 1), "Ethereum", "transact") == (80, 1)
    assert ours("domain", 1).variant_named("Ethereum", "event", "Executed")["index"] == 1
    args = dom.legacy_transact_args(random.Random(8), 0, b"\x01" * 20)
    data = new.encode_call("Ethereum", "transact", args)
    assert data[:2] == bytes((80, 1))
    assert _decode_or_error(new.call_codec, data) == ("Ethereum", ("transact", args))
    assert _decode_or_error(old.call_codec, data) != _decode_or_error(new.call_codec, data)


def test_gemini_resolves_store_segment_headers_to_call_1() -> None:
    assert resolve_call(real(CONSENSUS_FILE), "Subspace", "store_segment_headers") == (2, 0)
    assert resolve_call(real(GEMINI_FILE), "Subspace", "store_segment_headers") == (2, 1)
    assert resolve_call(real(CONSENSUS_FILE), "Domains", "submit_bundle") == (12, 0)


# --- the comparator itself can fail ---------------------------------------------------------------


def _with_pallet(desc: RuntimeDesc, replacement: PalletDesc) -> RuntimeDesc:
    pallets = tuple(replacement if p.name == replacement.name else p for p in desc.pallets)
    return dataclasses.replace(desc, pallets=pallets)


def test_comparator_reports_the_path_of_a_difference() -> None:
    real_meta, base = real(CONSENSUS_FILE), consensus_runtime(cons.BASE_SPEC)
    domains = base.pallet("Domains")
    assert domains.events is not None
    wrong_author = c.enum(
        "pallet_domains::pallet::Event",
        (
            "BundleStored",
            0,
            c.named(domain_id=c.U32, bundle_hash=c.U8Array(32), bundle_author=c.U64),
        ),
    )
    broken = Meta(_with_pallet(base, dataclasses.replace(domains, events=wrong_author)).metadata)
    with pytest.raises(ShapeMismatch, match=r"Domains.BundleStored.domain_id: type path"):
        check_variant(broken, real_meta, "Domains", "event", "BundleStored")
    # The upgraded runtime differs from the real spec 6 where we said it would.
    with pytest.raises(ShapeMismatch, match=r"fields .*extrinsics_count"):
        check_variant(ours("consensus", 7), real_meta, "Domains", "event", "BundleStored")
    with pytest.raises(AssertionError, match="index 1 != 0"):
        check_variant(ours("consensus", 7), real_meta, "Subspace", "call", "store_segment_headers")
    # An extra variant the real enum lacks is caught even in a subset-allowed enum.
    extra = dataclasses.replace(
        domains,
        events=c.enum(
            "pallet_domains::pallet::Event",
            *[(v.name, v.index, v.fields) for v in domains.events.variants],
            ("Invented", 99, ()),
        ),
    )
    our = Meta(_with_pallet(base, extra).metadata)
    with pytest.raises(ShapeMismatch, match="Invented"):
        Comparator(our, real_meta).compare(
            our.enum_id("Domains", "event") or 0, real_meta.enum_id("Domains", "event") or 0, "x"
        )
