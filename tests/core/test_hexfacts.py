"""The backfill's hex fast paths agree with the byte decoders of ``core.decode``.

Random digests and storage values go through both; wherever the decoder raises, the
fast path must raise a DecodeError too, and never answer something else.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocktimesd.core import decode, hexfacts, scale
from blocktimesd.core.header import (
    CONSENSUS,
    OTHER,
    PRE_RUNTIME,
    RUNTIME_ENVIRONMENT_UPDATED,
    SEAL,
    DigestItem,
    Header,
    to_hex,
)
from blocktimesd.errors import DecodeError

SUB = b"SUB_"
_ENGINES = st.sampled_from([SUB, b"RGTR", b"fron", b"BABE"])
_PAYLOADS = st.one_of(st.binary(max_size=80), st.binary(min_size=60, max_size=400))
_ITEMS = st.one_of(
    st.builds(DigestItem, st.sampled_from([CONSENSUS, SEAL, PRE_RUNTIME]), _ENGINES, _PAYLOADS),
    st.builds(DigestItem, st.just(PRE_RUNTIME), st.just(SUB), _PAYLOADS.map(lambda b: b"\x00" + b)),
    st.builds(DigestItem, st.just(CONSENSUS), st.just(SUB), _PAYLOADS.map(lambda b: b"\x04" + b)),
    st.builds(
        DigestItem, st.just(PRE_RUNTIME), st.just(b"RGTR"), st.binary(min_size=32, max_size=32)
    ),
    st.builds(DigestItem, st.just(OTHER), st.just(b""), st.binary(max_size=40)),
    st.just(DigestItem(RUNTIME_ENVIRONMENT_UPDATED)),
)


def _decoded(items: list[DigestItem]) -> tuple[object, ...]:
    """What ``core.decode`` says of a header with these items; an exception stands in
    for each fact it refuses."""
    header = Header(b"\x01" * 32, 7, b"\x02" * 32, b"\x03" * 32, tuple(items))
    out: list[object] = []
    for fact in (
        decode.consensus_slot,
        decode.segment_commitment_count,
        lambda h: RUNTIME_ENVIRONMENT_UPDATED in (i.kind for i in h.digest),
        decode.domain_consensus_hash,
    ):
        try:
            out.append(fact(header))
        except DecodeError as exc:
            out.append(exc)
    return tuple(out)


@settings(max_examples=400)
@given(st.lists(_ITEMS, max_size=8))
def test_digest_facts_agree_with_the_decoder(items: list[DigestItem]) -> None:
    logs = [to_hex(item.encode()) for item in items]
    expected = _decoded(items)
    if any(isinstance(e, DecodeError) for e in expected):
        with pytest.raises(DecodeError):
            hexfacts.digest_facts(logs)
        return
    slot, segments, updated, rgtr = expected
    assert hexfacts.digest_facts(logs) == (
        slot,
        segments,
        updated,
        None if rgtr is None else to_hex(rgtr),  # type: ignore[arg-type]
    )
    # Nodes may send upper-case hex; the facts are the same.
    upper = ["0x" + log[2:].upper() for log in logs]
    assert hexfacts.digest_facts(upper) == hexfacts.digest_facts(logs)


@pytest.mark.parametrize(
    ("logs", "message"),
    [
        (["0x065355425fzz00"], "no payload length"),
        (["0x065355425f03"], "payload length too large"),
        (["0x065355425f"], "no payload length"),
        (["0x065355425f1000aabb"], "too short for a slot"),
        (["0x0652475452" + "7c" + "00" * 31], "payload is not 32 bytes"),
        ([7], "not 0x-hex strings"),
        (["0x065355425f2400" + "zz" * 8], "not 0x-hex strings"),
    ],
)
def test_malformed_digest_logs(logs: list[object], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        hexfacts.digest_facts(logs)  # type: ignore[arg-type]


def test_items_of_other_engines_are_passed_over() -> None:
    assert hexfacts.digest_facts(["0x0442414245", "12", "0x0a", ""]) == (None, 0, False, None)


def _both(fast: object, slow: object) -> None:
    """``fast`` and ``slow`` are zero-argument calls; they agree, or both refuse."""
    try:
        expected = slow()  # type: ignore[operator]
    except DecodeError:
        with pytest.raises(DecodeError):
            fast()  # type: ignore[operator]
        return
    assert fast() == expected  # type: ignore[operator]


@given(st.one_of(st.none(), st.binary(max_size=12)), st.booleans())
def test_timestamp_agrees_with_the_decoder(value: bytes | None, upper: bool) -> None:
    text = None if value is None else to_hex(value)
    if text is not None and upper:
        text = "0x" + text[2:].upper()
    _both(lambda: hexfacts.timestamp(text), lambda: decode.timestamp_from_storage(value))


@given(st.integers(0, 300), st.binary(max_size=3), st.booleans())
def test_bundle_count_agrees_with_the_decoder(count: int, junk: bytes, cut: bool) -> None:
    value = scale.compact(count) + bytes(32 * count) + junk
    if cut:
        value = value[:-1]
    _both(
        lambda: hexfacts.bundle_count(to_hex(value)),
        lambda: decode.bundle_count_from_storage(value),
    )


@pytest.mark.parametrize(
    "text", ["0x04" + "zz" * 32, "04" + "00" * 32, "0x0", "0x", "0x00112233 4455 66"]
)
def test_storage_values_that_are_not_hex(text: str) -> None:
    for fact in (hexfacts.timestamp, hexfacts.bundle_count):
        with pytest.raises(DecodeError):
            fact(text)


@given(st.binary(max_size=60))
def test_noise_fails_cleanly(data: bytes) -> None:
    for fact in (hexfacts.timestamp, hexfacts.bundle_count):
        with contextlib.suppress(DecodeError):
            fact(to_hex(data))
    with contextlib.suppress(DecodeError):
        hexfacts.digest_facts([to_hex(data)])
