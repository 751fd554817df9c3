"""Block facts: header digests, timestamps, bundles and segment headers.

Byte literals where a layout is fixed by CHAIN_FACTS; devnet blocks (encoded with the
devnet's runtime descriptions) decoded with runtimes built from the REAL metadata;
and the devnet's runtime upgrade, where the wrong runtime must not give the right
answer by accident.
"""

from __future__ import annotations

import contextlib
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocktimesd.core import decode, extrinsic, scale
from blocktimesd.core.header import (
    CONSENSUS,
    OTHER,
    PRE_RUNTIME,
    RUNTIME_ENVIRONMENT_UPDATED,
    SEAL,
    DigestItem,
    Header,
)
from blocktimesd.core.runtime import Runtime, RuntimeVersion
from blocktimesd.devnet.chain import Block
from blocktimesd.devnet.network import Network
from blocktimesd.devnet.params import ChainParams
from blocktimesd.errors import BlocktimesError, DecodeError, UnsupportedRuntime

from .conftest import DOMAIN0, SPEC6, real_runtime

START_MS = 1_754_000_000_000
SUB = b"SUB_"
SLOT = 1_754_000_123


def header(*items: DigestItem, number: int = 7) -> Header:
    return Header(b"\x01" * 32, number, b"\x02" * 32, b"\x03" * 32, items)


def pre_sub(payload: bytes) -> DigestItem:
    return DigestItem(PRE_RUNTIME, SUB, payload)


def cons_sub(payload: bytes) -> DigestItem:
    return DigestItem(CONSENSUS, SUB, payload)


SEAL_ITEM = DigestItem(SEAL, SUB, b"\x01\x01" + bytes(64))
COMMITMENT = cons_sub(b"\x04" + scale.u64(9) + bytes(48))


# --- header digests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "slot"),
    [
        ((pre_sub(b"\x00" + scale.u64(SLOT) + bytes(100)), SEAL_ITEM), SLOT),
        ((pre_sub(b"\x00" + scale.u64(2**64 - 1)),), 2**64 - 1),
        # The first V0 pre-digest wins; a payload of another version is skipped.
        ((pre_sub(b"\x01" + scale.u64(5)), pre_sub(b"\x00" + scale.u64(6))), 6),
        ((DigestItem(PRE_RUNTIME, b"RGTR", bytes(32)),), None),
        ((cons_sub(b"\x00" + scale.u64(SLOT)),), None),
        ((), None),
    ],
)
def test_consensus_slot(items: tuple[DigestItem, ...], slot: int | None) -> None:
    assert decode.consensus_slot(header(*items)) == slot


def test_consensus_slot_from_literal_header() -> None:
    # parent, number 5, roots, 1 digest item: 06 'SUB_' len=9*4 00 <slot>
    raw = bytes(32) + b"\x14" + bytes(64) + b"\x04" + b"\x06SUB_\x24\x00" + scale.u64(SLOT)
    assert decode.consensus_slot(Header.decode(raw)) == SLOT


def test_short_pre_digest_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="too short for a slot"):
        decode.consensus_slot(header(pre_sub(b"\x00\x01\x02")))


@pytest.mark.parametrize(
    ("items", "count"),
    [
        ((), 0),
        ((cons_sub(b"\x00" + scale.u32(1)), cons_sub(b"\x01" + scale.u64(1))), 0),
        ((COMMITMENT,), 1),
        ((COMMITMENT, cons_sub(b"\x01"), COMMITMENT, COMMITMENT), 3),
        ((DigestItem(CONSENSUS, b"fron", b"\x04"), DigestItem(PRE_RUNTIME, SUB, b"\x04")), 0),
    ],
)
def test_segment_commitment_count(items: tuple[DigestItem, ...], count: int) -> None:
    assert decode.segment_commitment_count(header(*items)) == count


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ((DigestItem(PRE_RUNTIME, b"RGTR", b"\xab" * 32),), b"\xab" * 32),
        ((DigestItem(CONSENSUS, b"fron", b"\x03" + bytes(32)),), None),
        (
            (DigestItem(CONSENSUS, b"RGTR", bytes(32)), DigestItem(RUNTIME_ENVIRONMENT_UPDATED)),
            None,
        ),
    ],
)
def test_domain_consensus_hash(items: tuple[DigestItem, ...], expected: bytes | None) -> None:
    assert decode.domain_consensus_hash(header(*items)) == expected


def test_domain_consensus_hash_literal() -> None:
    # CHAIN_FACTS: `06 52475452 80 <32-byte hash>`
    item = DigestItem.decode(bytes.fromhex("065247545280") + b"\xcd" * 32)
    assert decode.domain_consensus_hash(header(item)) == b"\xcd" * 32
    with pytest.raises(DecodeError, match="RGTR digest of block 7 is 31 bytes"):
        decode.domain_consensus_hash(header(DigestItem(PRE_RUNTIME, b"RGTR", bytes(31))))


# A property test of the digest path: random digests, encoded and decoded as a header,
# against a direct model of the rules.

_ENGINES = st.sampled_from([SUB, b"RGTR", b"fron", b"BABE"])
_ITEMS = st.one_of(
    st.builds(DigestItem, st.sampled_from([CONSENSUS, SEAL, PRE_RUNTIME]), _ENGINES, st.binary()),
    st.builds(
        DigestItem,
        st.just(PRE_RUNTIME),
        st.just(SUB),
        st.binary(min_size=8).map(lambda b: b"\x00" + b),
    ),
    st.builds(DigestItem, st.just(CONSENSUS), st.just(SUB), st.binary().map(lambda b: b"\x04" + b)),
    st.builds(DigestItem, st.just(OTHER), st.just(b""), st.binary()),
    st.just(DigestItem(RUNTIME_ENVIRONMENT_UPDATED)),
)


@settings(max_examples=300)
@given(st.lists(_ITEMS, max_size=8))
def test_digest_facts_property(items: list[DigestItem]) -> None:
    decoded = Header.decode(header(*items).encode())
    pre = [i.payload for i in items if i.kind == PRE_RUNTIME and i.engine == SUB]
    v0 = [p for p in pre if p[:1] == b"\x00"]
    if v0 and len(v0[0]) < 9:
        with pytest.raises(DecodeError):
            decode.consensus_slot(decoded)
    else:
        assert decode.consensus_slot(decoded) == (
            int.from_bytes(v0[0][1:9], "little") if v0 else None
        )
    assert decode.segment_commitment_count(decoded) == sum(
        1 for i in items if i.kind == CONSENSUS and i.engine == SUB and i.payload[:1] == b"\x04"
    )
    rgtr = [i.payload for i in items if i.kind == PRE_RUNTIME and i.engine == b"RGTR"]
    if rgtr and len(rgtr[0]) != 32:
        with pytest.raises(DecodeError):
            decode.domain_consensus_hash(decoded)
    else:
        assert decode.domain_consensus_hash(decoded) == (rgtr[0] if rgtr else None)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_header_noise_fails_cleanly(data: bytes) -> None:
    try:
        parsed = Header.decode(bytes(32) + b"\x04" + bytes(64) + data)
    except DecodeError:
        return
    for fact in (decode.consensus_slot, decode.segment_commitment_count):
        with contextlib.suppress(DecodeError):
            fact(parsed)


# --- storage values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("0068e5cf8b010000", 1_700_000_000_000), ("0000000000000000", 0)],
)
def test_timestamp_from_storage(value: str | None, expected: int | None) -> None:
    data = None if value is None else bytes.fromhex(value)
    assert decode.timestamp_from_storage(data) == expected


@pytest.mark.parametrize("value", ["", "00", "0068e5cf8b0100", "0068e5cf8b01000000"])
def test_timestamp_from_storage_needs_8_bytes(value: str) -> None:
    with pytest.raises(DecodeError, match="expected 8 bytes"):
        decode.timestamp_from_storage(bytes.fromhex(value))


@pytest.mark.parametrize(
    ("value", "count"),
    [(None, 0), (b"\x00", 0), (b"\x04" + bytes(32), 1), (b"\x0c" + bytes(96), 3)],
)
def test_bundle_count_from_storage(value: bytes | None, count: int) -> None:
    assert decode.bundle_count_from_storage(value) == count


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"", "truncated compact"),
        (b"\x04" + bytes(31), "1 hashes need 33 bytes, got 32"),
        (b"\x04" + bytes(33), "1 hashes need 33 bytes, got 34"),
        (b"\x01", "truncated compact"),
    ],
)
def test_malformed_successful_bundles(value: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode.bundle_count_from_storage(value)


@given(st.integers(0, 2000), st.binary(max_size=3))
def test_bundle_count_property(count: int, junk: bytes) -> None:
    value = scale.compact(count) + bytes(32 * count)
    assert decode.bundle_count_from_storage(value) == count
    if junk:
        with pytest.raises(DecodeError):
            decode.bundle_count_from_storage(value + junk)


@given(st.binary(max_size=100))
def test_bundle_count_noise_fails_cleanly(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        assert decode.bundle_count_from_storage(data) >= 0


# --- body facts from byte literals ----------------------------------------------------------

TS = 1_700_000_000_000
TIMESTAMP_SET = extrinsic.bare(bytes.fromhex("0100") + scale.compact(TS))
VOTE = extrinsic.general(0, bytes(3), bytes.fromhex("0202") + bytes(10))
BUNDLE = extrinsic.general(0, bytes(3), bytes.fromhex("0c00") + bytes(10))
NO_SEGMENTS_SPEC6 = extrinsic.bare(bytes.fromhex("020000"))
NO_SEGMENTS_GEMINI = extrinsic.bare(bytes.fromhex("020100"))


def test_timestamp_from_extrinsics_literal() -> None:
    runtime = real_runtime(SPEC6)
    assert TIMESTAMP_SET.hex() == "280401000b0068e5cf8b01"
    assert decode.timestamp_from_extrinsics(runtime, [TIMESTAMP_SET, VOTE]) == TS
    assert decode.timestamp_from_extrinsics(runtime, [VOTE, TIMESTAMP_SET]) == TS


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "no Timestamp.set inherent"),
        ([VOTE, BUNDLE], r"no Timestamp.set inherent \(2 extrinsics\)"),
        ([extrinsic.bare(bytes.fromhex("0100") + scale.compact(TS) + b"\x00")], "1 trailing"),
        ([extrinsic.bare(bytes.fromhex("0100") + b"\x03")], "truncated compact"),
        ([b"\x08\x09\x01"], "unknown extrinsic version byte 0x09"),
    ],
)
def test_timestamp_from_bad_extrinsics(body: list[bytes], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode.timestamp_from_extrinsics(real_runtime(SPEC6), body)


def test_bundle_count_from_extrinsics_literal() -> None:
    runtime = real_runtime(SPEC6)
    body = [TIMESTAMP_SET, VOTE, BUNDLE, BUNDLE, extrinsic.bare(bytes.fromhex("0c00"))]
    assert decode.bundle_count_from_extrinsics(runtime, body) == 3
    assert decode.bundle_count_from_extrinsics(runtime, [TIMESTAMP_SET]) == 0


def test_segment_headers_resolved_by_name() -> None:
    """``02 00`` is store_segment_headers on spec 6, ``02 01`` on Gemini-3h spec 7."""
    spec6, gemini = real_runtime(SPEC6), real_runtime("subspace-gemini-3h-spec7")
    assert decode.segment_headers_in_block(spec6, [TIMESTAMP_SET, NO_SEGMENTS_SPEC6]) == 0
    assert decode.segment_headers_in_block(gemini, [TIMESTAMP_SET, NO_SEGMENTS_GEMINI]) == 0
    with pytest.raises(DecodeError, match="store_segment_headers arguments: 1 trailing"):
        decode.segment_headers_in_block(spec6, [extrinsic.bare(bytes.fromhex("020000ff"))])


def test_domain_runtime_has_no_bundles() -> None:
    with pytest.raises(UnsupportedRuntime, match="domain runtime subspace-evm-domain/0 has no"):
        decode.bundle_count_from_extrinsics(real_runtime(DOMAIN0), [TIMESTAMP_SET])


# --- devnet blocks, decoded with the real metadata ------------------------------------------


@cache
def network(upgrade_at: int = 0) -> Network:
    params = ChainParams(seed=2024, segment_rate=0.05, upgrade_at=upgrade_at)
    net = Network(params, START_MS)
    net.build_history(250)
    return net


def body(net: Network, block: Block) -> list[bytes]:
    return net.content.body("consensus", block)


def storage(net: Network, block: Block, key: bytes) -> bytes | None:
    return net.consensus.storage_value(block, key, net.content.lazy_storage)


def test_devnet_consensus_blocks() -> None:
    runtime = real_runtime(SPEC6)
    net = network()
    seen = {"bundles": 0, "segments": 0, "signed": 0}
    for block in net.consensus.canonical[1:]:
        facts, extrinsics = block.facts, body(net, block)
        assert decode.consensus_slot(block.header) == facts.slot
        assert decode.timestamp_from_extrinsics(runtime, extrinsics) == block.timestamp_ms
        assert (
            decode.timestamp_from_storage(storage(net, block, net.content.now_key))
            == block.timestamp_ms
        )
        from_storage = decode.bundle_count_from_storage(
            storage(net, block, net.content.bundles_key)
        )
        from_body = decode.bundle_count_from_extrinsics(runtime, extrinsics)
        assert from_storage == from_body == facts.bundles
        events = runtime.decode_events(storage(net, block, net.content.events_key) or b"")
        assert sum(1 for e in events if e.name == "BundleStored") == from_body
        segments = decode.segment_headers_in_block(runtime, extrinsics)
        assert segments == decode.segment_commitment_count(block.header) == len(facts.segments)
        seen["bundles"] += from_body
        seen["segments"] += segments
        seen["signed"] += sum(1 for x in extrinsics if runtime.envelope(x).kind == "signed")
    assert all(seen.values()), seen  # the sample exercises every path


def test_devnet_domain_blocks() -> None:
    runtime = real_runtime(DOMAIN0)
    net = network()
    content = net.content
    checked = 0
    for block in net.domain.canonical[1:]:
        source = decode.domain_consensus_hash(block.header)
        assert source is not None
        assert block.link is not None
        assert source == block.link.hash
        extrinsics = content.body("auto-evm", block)
        ts = decode.timestamp_from_extrinsics(runtime, extrinsics)
        assert ts == block.link.timestamp_ms  # copied from the consensus block
        count_value = net.domain.storage_value(block, content.domain_event_count_key)
        count = int.from_bytes(count_value or bytes(4), "little")
        segment = net.domain.storage_value(block, content.domain_segment_key, content.lazy_storage)
        events = runtime.decode_events(segment or b"\x00")[:count]
        assert len(events) == count
        assert sum(1 for e in events if e.name == "Executed") == block.facts.evm_txs
        checked += 1
    assert checked > 10


# --- across the devnet's runtime upgrade ----------------------------------------------------


def devnet_runtime(net: Network, spec_version: int) -> Runtime:
    desc = net.content.consensus_runtime(spec_version)
    version = RuntimeVersion.from_json(desc.version_json())
    return Runtime.from_metadata(desc.metadata, version, "consensus")


def _facts_with(runtime: Runtime, net: Network, block: Block) -> dict[str, Any]:
    extrinsics = body(net, block)
    events = runtime.decode_events(storage(net, block, net.content.events_key) or b"")
    return {
        "segments": decode.segment_headers_in_block(runtime, extrinsics),
        "bundles": decode.bundle_count_from_extrinsics(runtime, extrinsics),
        "stored": [e.fields for e in events if e.name == "BundleStored"],
    }


def test_upgrade_needs_the_parents_runtime() -> None:
    upgrade_at = 60
    net = network(upgrade_at)
    old, new = real_runtime(SPEC6), devnet_runtime(net, 7)
    assert (
        old.call_index("Subspace", "store_segment_headers"),
        new.call_index("Subspace", "store_segment_headers"),
    ) == ((2, 0), (2, 1))
    after = [b for b in net.consensus.canonical[1:] if b.facts.body_spec == 7]
    assert after
    assert after[0].number == upgrade_at + 1
    upgrade_block = net.consensus.canonical[upgrade_at]
    assert upgrade_block.spec_version == 7
    assert upgrade_block.facts.body_spec == 6
    assert _facts_with(old, net, upgrade_block)["segments"] == len(upgrade_block.facts.segments)

    wrong_answers = 0
    for block in after:
        facts = block.facts
        right = _facts_with(new, net, block)
        assert right["segments"] == len(facts.segments)
        assert right["bundles"] == facts.bundles == len(right["stored"])
        assert all("extrinsics_count" in f for f in right["stored"])
        try:
            wrong = _facts_with(old, net, block)
        except DecodeError:
            wrong_answers += 1
            continue
        if facts.segments or facts.bundles:
            assert wrong != right
            wrong_answers += 1
    assert wrong_answers > 10


def test_wrong_runtime_on_segment_headers_block() -> None:
    """The spec-6 runtime reads a spec-7 ``02 01`` call as another call: the count it
    gives is wrong (0), while the spec-7 runtime finds every header."""
    net = network(60)
    old, new = real_runtime(SPEC6), devnet_runtime(net, 7)
    blocks = [b for b in net.consensus.canonical if b.facts.body_spec == 7 and b.facts.segments]
    assert blocks, "the sample has segment headers after the upgrade"
    for block in blocks:
        extrinsics = body(net, block)
        assert decode.segment_headers_in_block(new, extrinsics) == len(block.facts.segments)
        with contextlib.suppress(BlocktimesError):
            assert decode.segment_headers_in_block(old, extrinsics) != len(block.facts.segments)


def test_inherent_facts_pass_over_signed_and_general_extrinsics() -> None:
    """Timestamp and segment headers look at bare extrinsics only, so a general
    extrinsic the runtime cannot read does not stop them; the bundle count, which
    needs every envelope, reports it."""
    runtime = real_runtime(SPEC6)
    unreadable = extrinsic.general(0, b"\x07", b"\x0c\x00")  # Era variant 7 needs a byte
    body = [TIMESTAMP_SET, unreadable, NO_SEGMENTS_SPEC6]
    assert decode.timestamp_from_extrinsics(runtime, body) == TS
    assert decode.segment_headers_in_block(runtime, body) == 0
    with pytest.raises(DecodeError, match="version byte 0x45"):
        decode.bundle_count_from_extrinsics(runtime, body)
