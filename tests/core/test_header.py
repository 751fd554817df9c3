"""Headers: SCALE and JSON forms, hashes, digest items."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocktimesd.core.hashing import blake2_256
from blocktimesd.core.header import (
    CONSENSUS,
    PRE_RUNTIME,
    RUNTIME_ENVIRONMENT_UPDATED,
    SEAL,
    DigestItem,
    Header,
    _common_item,
)
from blocktimesd.errors import DecodeError

# The RGTR item exactly as CHAIN_FACTS gives it: 06 52475452 80 <32-byte hash>.
RGTR_HASH = bytes(range(32))
RGTR_BYTES = bytes.fromhex("065247545280") + RGTR_HASH


def test_rgtr_digest_bytes() -> None:
    item = DigestItem(PRE_RUNTIME, b"RGTR", RGTR_HASH)
    assert item.encode() == RGTR_BYTES
    assert DigestItem.decode(RGTR_BYTES) == item


def test_frontier_digest_bytes() -> None:
    raw = bytes.fromhex("0466726f6e8403") + b"\x11" * 32
    item = DigestItem.decode(raw)
    assert (item.kind, item.engine, item.payload[:1]) == (CONSENSUS, b"fron", b"\x03")
    assert item.encode() == raw


def test_header_encoding_and_hash() -> None:
    header = Header(
        parent_hash=b"\x01" * 32,
        number=70,
        state_root=b"\x02" * 32,
        extrinsics_root=b"\x03" * 32,
        digest=(DigestItem(RUNTIME_ENVIRONMENT_UPDATED), DigestItem(SEAL, b"SUB_", b"\x01\x01")),
    )
    raw = header.encode()
    # parent ++ compact(70) ++ roots ++ 2 digest items
    assert raw[:32] == b"\x01" * 32
    assert raw[32:34] == bytes.fromhex("1901")
    assert raw[98:] == bytes.fromhex("0808055355425f080101")
    assert header.hash() == blake2_256(raw)
    assert Header.decode(raw) == header


def test_header_json_round_trip() -> None:
    header = Header(
        b"\xaa" * 32,
        0x1A,
        b"\xbb" * 32,
        b"\xcc" * 32,
        (DigestItem(PRE_RUNTIME, b"RGTR", RGTR_HASH),),
    )
    obj = header.to_json()
    assert obj["number"] == "0x1a"
    assert obj["digest"]["logs"] == ["0x" + RGTR_BYTES.hex()]
    assert Header.from_json(obj) == header


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o.pop("parentHash"), "missing or malformed"),
        (lambda o: o.update(number=26), "header.number"),
        (lambda o: o.update(stateRoot="0x1234"), "expected 32 bytes"),
        (lambda o: o.update(extrinsicsRoot="zz"), "0x-prefixed"),
        (lambda o: o["digest"].update(logs=["0x09"]), "unknown digest item kind 9"),
        (lambda o: o["digest"].update(logs="0x"), "digest.logs"),
    ],
)
def test_malformed_json_header(mutate, message) -> None:  # type: ignore[no-untyped-def]
    obj = Header(b"\x00" * 32, 1, b"\x00" * 32, b"\x00" * 32).to_json()
    mutate(obj)
    with pytest.raises(DecodeError, match=message):
        Header.from_json(obj)


def test_trailing_bytes_rejected() -> None:
    raw = Header(b"\x00" * 32, 1, b"\x00" * 32, b"\x00" * 32).encode()
    with pytest.raises(DecodeError, match="trailing"):
        Header.decode(raw + b"\x00")


digest_items = st.one_of(
    st.builds(
        DigestItem,
        st.sampled_from([CONSENSUS, SEAL, PRE_RUNTIME]),
        st.binary(min_size=4, max_size=4),
        st.binary(max_size=300),
    ),
    st.builds(DigestItem, st.just(0), st.just(b""), st.binary(max_size=100)),
    st.just(DigestItem(RUNTIME_ENVIRONMENT_UPDATED)),
)


@given(
    st.binary(min_size=32, max_size=32),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.lists(digest_items, max_size=6),
)
def test_header_round_trip_property(parent: bytes, number: int, items: list[DigestItem]) -> None:
    header = Header(parent, number, b"\x05" * 32, b"\x06" * 32, tuple(items))
    assert Header.decode(header.encode()) == header
    assert Header.from_json(header.to_json()) == header


@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.lists(digest_items, max_size=6),
    st.lists(st.integers(0, 5), max_size=6),
)
def test_a_parsed_header_hashes_as_its_encoding_even_with_long_form_lengths(
    number: int, items: list[DigestItem], widen: list[int]
) -> None:
    """``from_json`` hashes the bytes it was sent; a log whose payload length is in a
    longer form than needed decodes to the same item, and the header's hash is still
    that of its encoding."""
    header = Header(b"\x01" * 32, number, b"\x05" * 32, b"\x06" * 32, tuple(items))
    obj = header.to_json()
    logs = obj["digest"]["logs"]
    for at in widen:
        item = items[at] if at < len(items) else DigestItem(RUNTIME_ENVIRONMENT_UPDATED)
        if item.kind != RUNTIME_ENVIRONMENT_UPDATED:
            head = 5 if item.kind in (CONSENSUS, SEAL, PRE_RUNTIME) else 1
            size = len(item.payload)
            # the length as a four-byte compact (mode 2), whatever its size
            long_form = ((size << 2) | 2).to_bytes(4, "little")
            logs[at] = "0x" + (item.encode()[:head] + long_form + item.payload).hex()
    parsed = Header.from_json(obj)
    assert parsed == header
    assert parsed.hash() == blake2_256(header.encode()) == header.hash()


def test_a_header_is_hashed_once() -> None:
    header = Header.from_json(Header(b"\x01" * 32, 7, b"\x02" * 32, b"\x03" * 32).to_json())
    first = header.hash()
    assert header.hash() is first
    built = Header(b"\x01" * 32, 7, b"\x02" * 32, b"\x03" * 32)
    assert built.hash() is built.hash()
    assert built.hash() == first


@given(
    st.one_of(
        digest_items.map(lambda item: item.encode()),
        st.binary(max_size=80),
        st.tuples(digest_items, st.binary(max_size=3)).map(lambda t: t[0].encode() + t[1]),
        digest_items.map(lambda item: item.encode()[:-1]),
    )
)
def test_the_common_item_reader_agrees_with_the_decoder(data: bytes) -> None:
    """Where the quick reader gives an item, the decoder gives the same one from the
    same bytes, which are its encoding; elsewhere the decoder decides."""
    item = _common_item(data)
    if item is not None:
        assert DigestItem.decode(data) == item
        assert item.encode() == data
