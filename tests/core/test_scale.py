"""SCALE primitives against byte literals from the SCALE specification."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocktimesd.core import scale
from blocktimesd.errors import DecodeError


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "04"),
        (63, "fc"),
        (64, "0101"),
        (16383, "fdff"),
        (16384, "02000100"),
        (1073741823, "feffffff"),
        (1073741824, "0300000040"),
        (2**32 - 1, "03ffffffff"),
        (2**64 - 1, "13ffffffffffffffff"),
        (1_700_000_000_000, "0b0068e5cf8b01"),
    ],
)
def test_compact_table(value: int, encoded: str) -> None:
    assert scale.compact(value).hex() == encoded
    assert scale.decode_compact(bytes.fromhex(encoded)) == (value, len(encoded) // 2)


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_compact_round_trip(value: int) -> None:
    data = scale.compact(value) + b"\xaa"
    assert scale.decode_compact(data) == (value, len(data) - 1)


@pytest.mark.parametrize("data", ["", "01", "02", "020001", "03ffffff"])
def test_truncated_compact_is_a_decode_error(data: str) -> None:
    with pytest.raises(DecodeError, match="truncated compact"):
        scale.decode_compact(bytes.fromhex(data))


def test_negative_compact_rejected() -> None:
    with pytest.raises(ValueError, match="unsigned"):
        scale.compact(-1)


def test_reader_bounds() -> None:
    reader = scale.Reader(bytes.fromhex("2a00000008beef"))
    assert reader.u32() == 42
    assert reader.bytes_vec() == b"\xbe\xef"
    assert reader.at_end()
    with pytest.raises(DecodeError, match="need 1 byte"):
        reader.u8()
    with pytest.raises(DecodeError, match="need 8 bytes"):
        scale.Reader(b"\x00" * 7).u64()


def test_fixed_width() -> None:
    assert scale.u16(0x1234).hex() == "3412"
    assert scale.u64(1).hex() == "0100000000000000"
    assert scale.u128(2**127).hex() == "00" * 15 + "80"
