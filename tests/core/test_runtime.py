"""Runtime: metadata parsing, names to indices, storage keys, events and envelopes.

Every runtime here is built from the REAL metadata in ``tests/data/metadata``; the bytes it
decodes are byte literals or are encoded with the devnet's runtime descriptions (which
agree with the real metadata, see ``tests/devnet/test_metadata_agreement.py``).
"""

from __future__ import annotations

import contextlib
import random
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scalecodec.base import RuntimeConfigurationObject, ScaleBytes
from scalecodec.type_registry import load_type_registry_preset

from blocktimesd.core import codec as c
from blocktimesd.core import extrinsic, scale
from blocktimesd.core.metadata import parse_metadata
from blocktimesd.core.runtime import Envelope, EventRecord, Runtime, RuntimeVersion
from blocktimesd.devnet.content import zero_value_bytes
from blocktimesd.devnet.runtimes import apply_extrinsic, consensus_runtime, domain_runtime, frame
from blocktimesd.devnet.runtimes import consensus as cr
from blocktimesd.devnet.runtimes.primitives import (
    ACCOUNT_ID20,
    ETHEREUM_SIGNATURE,
    MULTI_ADDRESS,
    MULTI_SIGNATURE,
    mortal_era,
)
from blocktimesd.errors import DecodeError, UnsupportedRuntime

from .conftest import DOMAIN0, GEMINI, SPEC6, metadata_version, real_bytes, real_runtime

ACCOUNT = bytes(range(32))
SR25519 = bytes(range(64, 128))
TIMESTAMP_CALL = bytes.fromhex("0100") + scale.compact(1_700_000_000_000)


# --- metadata against scalecodec ----------------------------------------------------------


@cache
def scalecodec_v14(name: str) -> dict[str, Any]:
    rc = RuntimeConfigurationObject()
    rc.update_type_registry(load_type_registry_preset("core"))
    obj = rc.create_scale_object("MetadataVersioned", data=ScaleBytes(real_bytes(name)))
    obj.decode()
    return dict(obj.value[1]["V14"])


@pytest.mark.parametrize("name", [SPEC6, DOMAIN0, GEMINI])
def test_metadata_reader_agrees_with_scalecodec(name: str) -> None:
    ours = parse_metadata(real_bytes(name))
    theirs = scalecodec_v14(name)
    assert [(p.name, p.index) for p in ours.pallets] == [
        (p["name"], p["index"]) for p in theirs["pallets"]
    ]
    types = {t["id"]: t["type"] for t in theirs["types"]["types"]}
    assert len(ours.types) == len(types)
    for ty in ours.types:
        assert list(ty.path) == types[ty.id]["path"]
        (kind,) = types[ty.id]["def"]
        assert ty.kind == kind
        if kind == "variant":
            assert [(v.name, v.index, len(v.fields)) for v in ty.variants] == [
                (v["name"], v["index"], len(v["fields"]))
                for v in types[ty.id]["def"]["variant"]["variants"]
            ]
    for ours_p, theirs_p in zip(ours.pallets, theirs["pallets"], strict=True):
        entries = theirs_p["storage"]["entries"] if theirs_p["storage"] else []
        assert [s.name for s in ours_p.storage] == [e["name"] for e in entries]
        assert ours_p.calls_type == (theirs_p["calls"] or {}).get("ty")
        assert ours_p.event_type == (theirs_p["event"] or {}).get("ty")
    ext = theirs["extrinsic"]
    assert (ours.extrinsic.type_id, ours.extrinsic.version) == (ext["ty"], ext["version"])
    assert [(s.identifier, s.type_id) for s in ours.extrinsic.signed_extensions] == [
        (s["identifier"], s["ty"]) for s in ext["signed_extensions"]
    ]


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"meta\x0f\x00", UnsupportedRuntime, "consensus runtime subspace/6: metadata V15"),
        (b"meta\x0d", UnsupportedRuntime, "metadata V13 is not supported"),
        (b"atem\x0e", DecodeError, "does not start with b'meta'"),
        (b"meta", DecodeError, "ends after its magic"),
        (b"meta\x0e\x04\x00", DecodeError, "truncated compact integer at offset 7"),
        (b"meta\x0e\xfe\xff\xff\xff", DecodeError, "items claimed"),
    ],
)
def test_bad_metadata(data: bytes, error: type[Exception], message: str) -> None:
    version = RuntimeVersion("subspace", "subspace", 6, 1)
    with pytest.raises(error, match=message):
        Runtime.from_metadata(data, version, "consensus")


def test_truncated_real_metadata_is_a_decode_error() -> None:
    data = real_bytes(SPEC6)
    version = metadata_version(data)
    for cut in (5, 100, len(data) // 2, len(data) - 1):
        with pytest.raises(DecodeError):
            Runtime.from_metadata(data[:cut], version, "consensus")


def test_metadata_paired_with_another_version_is_refused() -> None:
    wrong = RuntimeVersion("subspace", "subspace", 7, 1)
    with pytest.raises(UnsupportedRuntime, match="describes subspace/6"):
        Runtime.from_metadata(real_bytes(SPEC6), wrong, "consensus")


# --- names to indices ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "pallet", "call", "index"),
    [
        (SPEC6, "Timestamp", "set", (1, 0)),
        (SPEC6, "Subspace", "store_segment_headers", (2, 0)),
        (SPEC6, "Subspace", "vote", (2, 2)),
        (SPEC6, "Domains", "submit_bundle", (12, 0)),
        (SPEC6, "Balances", "transfer_keep_alive", (5, 3)),
        (SPEC6, "Utility", "batch", (8, 0)),
        (GEMINI, "Timestamp", "set", (1, 0)),
        (GEMINI, "Subspace", "store_segment_headers", (2, 1)),
        (DOMAIN0, "Timestamp", "set", (1, 0)),
        (DOMAIN0, "Ethereum", "transact", (80, 0)),
    ],
)
def test_call_index_by_name(name: str, pallet: str, call: str, index: tuple[int, int]) -> None:
    runtime = real_runtime(name)
    assert runtime.call_index(pallet, call) == index
    assert runtime.call_name(*index) == (pallet, call)


@pytest.mark.parametrize(
    ("name", "pallet", "event", "index"),
    [
        (SPEC6, "Subspace", "SegmentHeaderStored", (2, 0)),
        (SPEC6, "Subspace", "FarmerVote", (2, 1)),
        (SPEC6, "Domains", "BundleStored", (12, 0)),
        (SPEC6, "System", "CodeUpdated", (0, 2)),
        (DOMAIN0, "Ethereum", "Executed", (80, 0)),
    ],
)
def test_event_index_by_name(name: str, pallet: str, event: str, index: tuple[int, int]) -> None:
    assert real_runtime(name).event_index(pallet, event) == index


@pytest.mark.parametrize(
    ("name", "lookup", "message"),
    [
        (SPEC6, lambda r: r.call_index("Subspace", "nope"), "subspace/6 has no call Subspace.nope"),
        (SPEC6, lambda r: r.call_index("Nope", "set"), "subspace/6 has no pallet Nope"),
        (SPEC6, lambda r: r.event_index("Timestamp", "Set"), "no event Timestamp.Set"),
        (SPEC6, lambda r: r.storage_key("Domains", "Nope"), "no storage Domains.Nope"),
        (SPEC6, lambda r: r.constant("System", "Nope"), "no constant System.Nope"),
        (SPEC6, lambda r: r.call_name(2, 99), r"no call with index \(2, 99\)"),
        (SPEC6, lambda r: r.storage_key("Timestamp", "Now", 1), "takes 0 keys, 1 given"),
        (DOMAIN0, lambda r: r.call_index("Domains", "submit_bundle"), "domain runtime subspace-"),
        (GEMINI, lambda r: r.pallet("Council"), "consensus runtime subspace/7 has no pallet"),
    ],
)
def test_unknown_items_name_chain_version_and_item(name: str, lookup: Any, message: str) -> None:
    with pytest.raises(UnsupportedRuntime, match=message):
        lookup(real_runtime(name))


def test_has_pallet(spec6: Runtime, domain0: Runtime, gemini: Runtime) -> None:
    assert spec6.has_pallet("Domains")
    assert not domain0.has_pallet("Domains")
    assert domain0.has_pallet("Ethereum")
    assert not spec6.has_pallet("Ethereum")
    assert spec6.has_pallet("Council")
    assert not gemini.has_pallet("Council")
    assert spec6.spec_version == 6
    assert spec6.version.label == "subspace/6"


def test_constants(spec6: Runtime, domain0: Runtime) -> None:
    assert spec6.constant("Timestamp", "MinimumPeriod") == 500
    assert domain0.constant("System", "EventSegmentSize") == 100
    assert spec6.constant("System", "Version")["spec_version"] == 6


# --- storage keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pallet", "item", "keys", "expected"),
    [
        (
            "Timestamp",
            "Now",
            (),
            "f0c365c3cf59d671eb72da0e7a4113c49f1f0515f462cdcf84e0f1d6045dfcbb",
        ),
        (
            "Domains",
            "SuccessfulBundles",
            (0,),
            "0b41d0c7f7b4485bd7be1d66066b00ad38420b1ba9feb1a2d2173b0caecad9d100000000",
        ),
    ],
)
def test_storage_key_literals(
    spec6: Runtime, pallet: str, item: str, keys: tuple[Any, ...], expected: str
) -> None:
    assert spec6.storage_key(pallet, item, *keys).hex() == expected


@pytest.mark.parametrize(
    ("pallet", "item", "keys"),
    [
        ("System", "Account", (ACCOUNT,)),
        ("System", "BlockHash", (1234,)),
        ("System", "Events", ()),
        ("Domains", "ConsensusBlockHash", (0, 77)),
        ("Domains", "ExecutionInbox", (0, 5, 77)),
        ("Domains", "InboxedBundleAuthor", (bytes(range(32)),)),
        ("RuntimeConfigs", "ConfirmationDepthK", ()),
    ],
)
def test_storage_keys_agree_with_devnet(
    spec6: Runtime, pallet: str, item: str, keys: tuple[Any, ...]
) -> None:
    expected = consensus_runtime(6).storage_key(pallet, item, *keys)
    assert spec6.storage_key(pallet, item, *keys) == expected


def test_domain_storage_keys_agree_with_devnet(domain0: Runtime) -> None:
    desc = domain_runtime(0)
    for item, keys in (("EventSegments", (3,)), ("EventCount", ()), ("Number", ())):
        assert domain0.storage_key("System", item, *keys) == desc.storage_key("System", item, *keys)


def test_decode_storage_defaults(spec6: Runtime) -> None:
    assert spec6.decode_storage("Domains", "SuccessfulBundles", None) == []
    assert spec6.decode_storage("Domains", "ConsensusBlockHash", None) is None  # Optional
    hashes = [bytes([i]) * 32 for i in range(3)]
    value = scale.compact(3) + b"".join(hashes)
    assert spec6.decode_storage("Domains", "SuccessfulBundles", value) == hashes


# --- runtime versions ---------------------------------------------------------------------


def test_runtime_version_from_devnet_json() -> None:
    version = RuntimeVersion.from_json(consensus_runtime(6).version_json())
    assert (version.spec_name, version.spec_version, version.transaction_version) == (
        "subspace",
        6,
        1,
    )
    assert version.system_version == 2
    assert len(version.apis) == 17


def test_runtime_version_from_real_scale() -> None:
    version = RuntimeVersion.decode(real_bytes(SPEC6, "runtime-version"))
    devnet = RuntimeVersion.from_json(consensus_runtime(6).version_json())
    assert (version.label, version.transaction_version, version.system_version) == (
        "subspace/6",
        1,
        2,
    )
    assert version.apis == devnet.apis  # the devnet mirrors the real Core_version answer
    domain = RuntimeVersion.decode(real_bytes(DOMAIN0, "runtime-version"))
    assert domain.label == "subspace-evm-domain/0"


@pytest.mark.parametrize("cut", [0, 1, 30, 60, 237])
def test_truncated_runtime_version_scale(cut: int) -> None:
    with pytest.raises(DecodeError):
        RuntimeVersion.decode(real_bytes(SPEC6, "runtime-version")[:cut])


_GOOD = {
    "specName": "subspace",
    "implName": "subspace",
    "authoringVersion": 0,
    "specVersion": 6,
    "implVersion": 0,
    "apis": [["0xdf6acb689907609b", 5]],
    "transactionVersion": 1,
    "stateVersion": 1,
}


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "expected an object"),
        ({k: v for k, v in _GOOD.items() if k != "specVersion"}, "missing field 'specVersion'"),
        ({**_GOOD, "specVersion": "6"}, "specVersion: expected a u32"),
        ({**_GOOD, "specVersion": -1}, "specVersion: expected a u32"),
        ({**_GOOD, "specVersion": True}, "specVersion: expected a u32"),
        ({**_GOOD, "specName": ""}, "specName: expected a non-empty string"),
        ({**_GOOD, "transactionVersion": 2**32}, "transactionVersion: expected a u32"),
        ({**_GOOD, "apis": {}}, "apis: expected a list"),
        ({**_GOOD, "apis": [["0xdf6acb68", 5]]}, "is not 8 bytes"),
        ({**_GOOD, "apis": [["df6acb689907609b", 5]]}, "0x-prefixed"),
        ({**_GOOD, "apis": [["0xdf6acb689907609b"]]}, "bad entry"),
        ({**_GOOD, "stateVersion": 300}, "stateVersion: expected a u8"),
    ],
)
def test_malformed_runtime_version(obj: Any, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        RuntimeVersion.from_json(obj)


def test_runtime_version_json_round_trip() -> None:
    version = RuntimeVersion.from_json(_GOOD)
    assert version.apis == ((bytes.fromhex("df6acb689907609b"), 5),)
    assert version.state_version == 1
    assert version.system_version is None


# --- events -------------------------------------------------------------------------------


def _consensus_records() -> list[dict[str, Any]]:
    rng = random.Random(5)
    header = cr.segment_header(7, 1000, rng)
    return [
        frame.event_record(
            apply_extrinsic(0),
            "System",
            "ExtrinsicSuccess",
            cr.extrinsic_success(9_000_000, 0, "Mandatory", False),
        ),
        frame.event_record(
            apply_extrinsic(1), "Subspace", "SegmentHeaderStored", {"segment_header": header}
        ),
        frame.event_record(
            apply_extrinsic(2), "Domains", "BundleStored", cr.bundle_stored(0, b"\x11" * 32, 3)
        ),
        frame.event_record(
            apply_extrinsic(3), "Balances", "Transfer", cr.transfer(ACCOUNT, b"\x22" * 32, 10**18)
        ),
        frame.event_record(frame.FINALIZATION, "System", "CodeUpdated", None, [b"\x33" * 32]),
    ]


def test_decode_consensus_events(spec6: Runtime) -> None:
    value = consensus_runtime(6).storage("System", "Events").value.encode(_consensus_records())
    events = spec6.decode_events(value)
    assert [(e.phase, e.pallet, e.name) for e in events] == [
        (("ApplyExtrinsic", 0), "System", "ExtrinsicSuccess"),
        (("ApplyExtrinsic", 1), "Subspace", "SegmentHeaderStored"),
        (("ApplyExtrinsic", 2), "Domains", "BundleStored"),
        (("ApplyExtrinsic", 3), "Balances", "Transfer"),
        (("Finalization", None), "System", "CodeUpdated"),
    ]
    assert events[2].fields == {"domain_id": 0, "bundle_hash": b"\x11" * 32, "bundle_author": 3}
    assert events[1].fields["segment_header"][1]["segment_index"] == 7
    assert events[4] == EventRecord(
        ("Finalization", None), "System", "CodeUpdated", None, (b"\x33" * 32,)
    )
    # The skipper built from the same type finds the same end.
    events_type = spec6.storage_entry("System", "Events").value_type
    assert spec6.types.skipper(events_type)(value, 0) == len(value)


def test_decode_events_literal(spec6: Runtime) -> None:
    # One record: ApplyExtrinsic(1), Domains(12).BundleStored(0) {0, 0xaa..., 5}, no topics.
    value = bytes.fromhex("0400010000000c0000000000") + b"\xaa" * 32
    value += bytes.fromhex("050000000000000000")
    (event,) = spec6.decode_events(value)
    assert event == EventRecord(
        ("ApplyExtrinsic", 1),
        "Domains",
        "BundleStored",
        {"domain_id": 0, "bundle_hash": b"\xaa" * 32, "bundle_author": 5},
        (),
    )


def test_decode_domain_event_segment(domain0: Runtime) -> None:
    desc = domain_runtime(0)
    records = [
        frame.event_record(
            apply_extrinsic(0), "System", "ExtrinsicSuccess", cr.extrinsic_success(5)
        ),
        frame.event_record(
            apply_extrinsic(1), "Balances", "Transfer", cr.transfer(b"\x01" * 20, b"\x02" * 20, 9)
        ),
    ]
    segment = desc.storage("System", "EventSegments").value.encode(records)
    events = domain0.decode_events(segment)
    assert [(e.pallet, e.name) for e in events] == [
        ("System", "ExtrinsicSuccess"),
        ("Balances", "Transfer"),
    ]
    assert events[1].fields == {"from": b"\x01" * 20, "to": b"\x02" * 20, "amount": 9}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "truncated compact"),
        ("04", "1 records claimed in 1 bytes"),
        ("040001", "record 0 of 1: need 4 bytes"),
        ("0400010000000cfe", "unknown variant index 254"),
        ("0400010000006300", "unknown variant index 99"),
        ("040301000000", "unknown variant index 3"),
        ("feffffff", "records claimed"),
        ("00ff", "1 trailing bytes"),
    ],
)
def test_malformed_events(spec6: Runtime, value: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        spec6.decode_events(bytes.fromhex(value))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_events_from_noise_fail_cleanly(data: bytes) -> None:
    runtime = real_runtime(SPEC6)
    with contextlib.suppress(DecodeError):
        runtime.decode_events(data)


# --- recursive types ----------------------------------------------------------------------


def test_recursive_call_type(spec6: Runtime) -> None:
    """``Utility.batch(Vec<RuntimeCall>)`` reaches RuntimeCall from inside itself."""
    ext_type = spec6.types.types[spec6.metadata.extrinsic.type_id]
    call_type = ext_type.param("Call")
    assert call_type is not None
    batch = bytes.fromhex("0800") + scale.compact(2) + TIMESTAMP_CALL + TIMESTAMP_CALL
    value = spec6.types.codec(call_type).decode(batch)
    now = {"now": 1_700_000_000_000}
    assert value == ("Utility", ("batch", {"calls": [("Timestamp", ("set", now))] * 2}))
    assert spec6.types.skipper(call_type)(batch, 0) == len(batch)
    assert spec6.types.fixed_size(call_type) is None


# --- envelopes ----------------------------------------------------------------------------

# Signed-extension extra of subspace spec 6: immortal era, nonce 1, tip 0.
IMMORTAL_EXTRA = bytes.fromhex("000400")
MORTAL_EXTRA = bytes.fromhex("b5000d01130000e8890423c78a")  # era, nonce 67, tip 10**19


def _signed(address: bytes, signature: bytes, extra: bytes, call: bytes) -> bytes:
    return extrinsic.signed(address, signature, extra, call)


@pytest.mark.parametrize(
    ("ext", "expected"),
    [
        (extrinsic.bare(TIMESTAMP_CALL), Envelope(0x04, "bare", 1, 0, 2)),
        (scale.compact_bytes(b"\x05" + TIMESTAMP_CALL), Envelope(0x05, "bare", 1, 0, 2)),
        (
            _signed(b"\x00" + ACCOUNT, b"\x01" + SR25519, IMMORTAL_EXTRA, b"\x05\x03"),
            Envelope(0x84, "signed", 5, 3, 3 + 33 + 65 + 3),
        ),
        (
            _signed(b"\x00" + ACCOUNT, b"\x02" + bytes(65), MORTAL_EXTRA, b"\x05\x00"),
            Envelope(0x84, "signed", 5, 0, 3 + 33 + 66 + 13),
        ),
        (
            _signed(b"\x01", b"\x00" + SR25519, IMMORTAL_EXTRA, b"\x08\x00\x00"),
            Envelope(0x84, "signed", 8, 0, 3 + 1 + 65 + 3),
        ),
        (
            _signed(b"\x02\x0c\xaa\xbb\xcc", b"\x01" + SR25519, IMMORTAL_EXTRA, b"\x05\x03"),
            Envelope(0x84, "signed", 5, 3, 3 + 5 + 65 + 3),
        ),
        (
            _signed(b"\x04" + bytes(20), b"\x01" + SR25519, IMMORTAL_EXTRA, b"\x05\x03"),
            Envelope(0x84, "signed", 5, 3, 3 + 21 + 65 + 3),
        ),
        (
            extrinsic.general(0, bytes(3), b"\x0c\x00" + bytes(40)),
            Envelope(0x45, "general", 12, 0, 6),
        ),
        (
            extrinsic.general(0, bytes.fromhex("4e9c0800"), b"\x02\x02"),
            Envelope(0x45, "general", 2, 2, 7),
        ),
    ],
)
def test_envelope_table(spec6: Runtime, ext: bytes, expected: Envelope) -> None:
    assert spec6.envelope(ext) == expected


@pytest.mark.parametrize(
    ("ext", "message"),
    [
        ("", "truncated compact"),
        ("00", "empty extrinsic"),
        ("0485", "unknown extrinsic version byte 0x85"),
        ("0c0e0100", "unknown extrinsic version byte 0x0e"),
        ("0404", "ends before its call"),
        ("080401", "ends before its call"),
        ("0c040100ff", "length prefix says 3 bytes but 4 follow"),
        ("0445", "before its extension version"),
        ("144501000000", "extension version 1"),
        ("0c8400aa", "MultiSignature: buffer ended at offset 35"),
        ("0c8409aa", "unknown variant index 9"),
        ("084500", "Era: buffer ended"),
        ("1045000003", "truncated compact"),
    ],
)
def test_malformed_envelopes(spec6: Runtime, ext: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        spec6.envelope(bytes.fromhex(ext))


def test_domain_signed_envelope(domain0: Runtime) -> None:
    """Auto-EVM: 20-byte accounts and 65-byte Ethereum signatures, its own extensions."""
    desc = domain_runtime(0)
    extra = b"".join(zero_value_bytes(se.extra) for se in desc.signed_extensions)
    call = desc.encode_call("Timestamp", "set", {"now": 5})
    ext = extrinsic.signed(
        ACCOUNT_ID20.encode(b"\x07" * 20), ETHEREUM_SIGNATURE.encode(b"\x08" * 65), extra, call
    )
    assert domain0.envelope(ext) == Envelope(0x84, "signed", 1, 0, len(ext) - len(call))


def test_gemini_signed_envelope(gemini: Runtime) -> None:
    """Gemini-3h had other signed extensions; the metadata says how to skip them."""
    ext = _signed(b"\x00" + ACCOUNT, b"\x01" + SR25519, IMMORTAL_EXTRA, b"\x02\x01\x00")
    assert gemini.envelope(ext).index == (2, 1)


# A property test: envelopes built from random parts with the devnet's codecs.

_ADDRESSES = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda a: ("Id", a)),
    st.just(("Index", ())),
    st.binary(max_size=80).map(lambda a: ("Raw", a)),
    st.binary(min_size=32, max_size=32).map(lambda a: ("Address32", a)),
    st.binary(min_size=20, max_size=20).map(lambda a: ("Address20", a)),
)
_SIGNATURES = st.one_of(
    st.tuples(st.sampled_from(["Ed25519", "Sr25519"]), st.binary(min_size=64, max_size=64)),
    st.tuples(st.just("Ecdsa"), st.binary(min_size=65, max_size=65)),
)


def _address_bytes(address: tuple[str, Any]) -> bytes:
    if address[0] == "Index":  # Compact<()> encodes to nothing
        return b"\x01"
    return MULTI_ADDRESS.encode(address)


def _extra(era: tuple[int, int] | None, nonce: int, tip: int) -> bytes:
    desc = consensus_runtime(6)
    parts = []
    for se in desc.signed_extensions:
        if se.identifier == "CheckMortality":
            parts.append(se.extra.encode(mortal_era(*era) if era else ("Immortal", None)))
        elif se.identifier == "CheckNonce":
            parts.append(se.extra.encode(nonce))
        elif se.identifier == "ChargeTransactionPayment":
            parts.append(se.extra.encode(tip))
        else:
            parts.append(zero_value_bytes(se.extra))
    return b"".join(parts)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["bare", "signed", "general"]),
    address=_ADDRESSES,
    signature=_SIGNATURES,
    era=st.none() | st.tuples(st.integers(4, 65536), st.integers(0, 2**32 - 1)),
    nonce=st.integers(0, 2**32 - 1),
    tip=st.integers(0, 2**128 - 1),
    call=st.binary(min_size=2, max_size=300),
)
def test_envelope_property(
    kind: str,
    address: tuple[str, Any],
    signature: tuple[str, bytes],
    era: tuple[int, int] | None,
    nonce: int,
    tip: int,
    call: bytes,
) -> None:
    runtime = real_runtime(SPEC6)
    if kind == "bare":
        ext = extrinsic.bare(call)
    elif kind == "signed":
        ext = extrinsic.signed(
            _address_bytes(address),
            MULTI_SIGNATURE.encode(signature),
            _extra(era, nonce, tip),
            call,
        )
    else:
        ext = extrinsic.general(0, _extra(era, nonce, tip), call)
    env = runtime.envelope(ext)
    assert (env.kind, env.pallet_index, env.call_index) == (kind, call[0], call[1])
    assert ext[env.call_offset :] == call


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_envelope_of_noise_fails_cleanly(data: bytes) -> None:
    runtime = real_runtime(SPEC6)
    for ext in (data, scale.compact_bytes(data)):
        try:
            env = runtime.envelope(ext)
        except DecodeError:
            continue
        assert env.call_offset + 2 <= len(ext)
        assert (ext[env.call_offset], ext[env.call_offset + 1]) == env.index


def test_codec_value_model_for_real_types(spec6: Runtime) -> None:
    """Option maps to ``None``/value; ``[u8; N]`` and ``Vec<u8>`` to bytes."""
    entry = spec6.storage_entry("Domains", "ConsensusBlockHash")
    assert isinstance(spec6.types.codec(entry.value_type), c.Struct)  # H256 newtype
    options = [t for t in spec6.metadata.types if t.path == ("Option",)]
    assert options
    assert all(isinstance(spec6.types.codec(t.id), c.Option) for t in options)
