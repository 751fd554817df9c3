"""The backfill's hex fast paths agree with the byte decoders of ``core.decode``.

The byte path that :func:`hexfacts.digest_facts` mirrors is the follower's:
``Header.from_json`` (each log through ``hex_to_bytes`` and ``DigestItem.decode``), then
``decode.consensus_slot``, ``segment_commitment_count`` and ``domain_consensus_hash``.
Wherever that path raises, the fast path must raise a DecodeError too, and never answer
something else.  Inputs: random digest items, and realistic devnet digests with their
length prefixes, item boundaries and hex characters mutated.
"""

from __future__ import annotations

import contextlib
import random
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocktimesd.core import decode, hexfacts, scale
from blocktimesd.core.hashing import blake2_256
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
from blocktimesd.devnet.content import ConsensusFacts, Content, DomainFacts
from blocktimesd.devnet.network import Network
from blocktimesd.devnet.params import ChainParams
from blocktimesd.errors import DecodeError

SUB = b"SUB_"
SLOT = 0x0102030405060708  # its LE bytes read 08 07 ... 01


def byte_path(logs: list[object]) -> tuple[object, ...] | DecodeError:
    """The facts as the follower reads them (the hash as 0x-hex), or its DecodeError."""
    hash32 = to_hex(bytes(32))
    obj = {
        "parentHash": hash32,
        "number": "0x7",
        "stateRoot": hash32,
        "extrinsicsRoot": hash32,
        "digest": {"logs": logs},
    }
    try:
        header = Header.from_json(obj)
        rgtr = decode.domain_consensus_hash(header)
        return (
            decode.consensus_slot(header),
            decode.segment_commitment_count(header),
            any(item.kind == RUNTIME_ENVIRONMENT_UPDATED for item in header.digest),
            None if rgtr is None else to_hex(rgtr),
        )
    except DecodeError as exc:
        return exc


def fast_path(logs: list[object]) -> tuple[object, ...] | DecodeError:
    try:
        return tuple(hexfacts.digest_facts(logs))  # type: ignore[arg-type]
    except DecodeError as exc:
        return exc


def assert_agree(logs: list[object]) -> None:
    expected = byte_path(logs)
    if isinstance(expected, DecodeError):
        with pytest.raises(DecodeError):
            hexfacts.digest_facts(logs)  # type: ignore[arg-type]
    else:
        assert hexfacts.digest_facts(logs) == expected  # type: ignore[arg-type]


# -- random digest items ---------------------------------------------------------------------

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


@settings(max_examples=400)
@given(st.lists(_ITEMS, max_size=8))
def test_digest_facts_agree_with_the_decoder(items: list[DigestItem]) -> None:
    logs: list[object] = [to_hex(item.encode()) for item in items]
    assert_agree(logs)
    # Nodes may send upper-case hex; the facts are the same.
    assert_agree(["0x" + str(log)[2:].upper() for log in logs])


# -- realistic digests, mutated ---------------------------------------------------------------


@cache
def _content() -> Content:
    return Content(ChainParams(seed=1))


def consensus_logs(seed: int, slot: int, segments: int, upgrade: bool) -> list[object]:
    """A devnet consensus digest: PreRuntime SUB_ (slot and solution), the Consensus
    items of every block, ``segments`` segment commitments, an upgrade, the Seal."""
    content = _content()
    facts = ConsensusFacts(
        slot=slot,
        bundles=0,
        segments=tuple(range(11, 11 + segments)),
        segments_total=11 + segments,
        votes=0,
        transfers=0,
        upgrade=upgrade,
        body_spec=content.consensus_base_spec,
    )
    return [to_hex(item.encode()) for item in content.consensus_digest(seed, facts)]


def domain_logs(seed: int, upgrade: bool) -> list[object]:
    """A devnet domain digest: PreRuntime RGTR, Frontier's Consensus item, an upgrade."""
    content = _content()
    facts = DomainFacts(evm_txs=0, upgrade=upgrade, body_spec=content.domain_base_spec)
    source = blake2_256(scale.u64(seed))
    return [to_hex(item.encode()) for item in content.domain_digest(seed, source, facts)]


_REALISTIC = st.one_of(
    st.builds(
        consensus_logs,
        st.integers(0, 2**32),
        st.integers(0, 2**64 - 1),
        st.integers(0, 3),
        st.booleans(),
    ),
    st.builds(domain_logs, st.integers(0, 2**32), st.booleans()),
)

# A mutation: (operation, which log, where in it, a value); the ints are taken modulo
# whatever they index, so any draw is a valid mutation.
Mutation = tuple[str, int, int, int]

_LENGTH_OPS = ("length", "length-wide", "length-mode")
_BOUNDARY_OPS = ("truncate", "extend", "split", "join", "drop", "duplicate", "head-byte", "byte")
_HEX_OPS = (
    "non-hex",
    "drop-char",
    "add-char",
    "no-prefix",
    "prefix",
    "upper",
    "upper-char",
    "space",
    "not-str",
    "empty",
)
OPERATIONS = _LENGTH_OPS + _BOUNDARY_OPS + _HEX_OPS
_DELTAS = (-64, -9, -2, -1, 1, 2, 9, 64)
_NOT_HEX = ("g", "z", "G", "x", "-", " ", "\n", "\u00e9", "\x00", "0x")
_PREFIXES = ("0X", "", "x", "0x0x", " 0x", "0x ")
_SPACES = (" ", "  ", "\t", "\n")


def _bytes_of(log: object) -> bytes | None:
    if isinstance(log, str) and log.startswith("0x"):
        with contextlib.suppress(ValueError):
            return bytes.fromhex(log[2:])
    return None


def _length_at(data: bytes) -> int | None:
    """Offset of a digest item's compact payload length (None: it has none)."""
    if data[:1] in (b"\x04", b"\x05", b"\x06"):
        return 5 if len(data) > 5 else None
    if data[:1] == b"\x00":
        return 1 if len(data) > 1 else None
    return None


def _wide(size: int, mode: int) -> bytes:
    """``size`` as a compact integer in a wider mode than needed (SCALE decoders here
    accept such encodings, so both paths must)."""
    if mode == 1 and size < 1 << 14:
        return scale.u16(size << 2 | 1)
    if mode <= 2 and size < 1 << 30:
        return scale.u32(size << 2 | 2)
    if size < 1 << 32:
        return b"\x03" + size.to_bytes(4, "little")
    return scale.compact(size)


def mutate(logs: list[object], mutation: Mutation) -> list[object]:
    """A copy of ``logs`` with one mutation applied (unchanged where the mutation finds
    nothing to work on, e.g. a length prefix in a log an earlier mutation broke)."""
    op, which, at, value = mutation
    logs = list(logs)
    if not logs:
        return logs
    if op in _LENGTH_OPS:
        with_length = [i for i, log in enumerate(logs) if _length_at(_bytes_of(log) or b"")]
        if not with_length:
            return logs
        i = with_length[which % len(with_length)]
        data = _bytes_of(logs[i]) or b""
        pos = _length_at(data) or 0
        try:
            size, end = scale.decode_compact(data, pos)
        except DecodeError:  # an earlier mutation cut it
            return logs
        if op == "length":
            prefix = scale.compact(max(0, size + _DELTAS[value % len(_DELTAS)]))
        elif op == "length-wide":
            prefix = _wide(size, 1 + value % 3)
        else:
            prefix = bytes((data[pos] & ~3 | value % 4,)) + data[pos + 1 : end]
        logs[i] = to_hex(data[:pos] + prefix + data[end:])
        return logs
    i = which % len(logs)
    log = logs[i]
    if op in _BOUNDARY_OPS:
        data = _bytes_of(log)
        if data is None:
            return logs
        if op == "truncate":
            logs[i] = to_hex(data[: max(0, len(data) - 1 - at % max(1, len(data)))])
        elif op == "extend":
            logs[i] = to_hex(data + bytes((value,)) * (1 + at % 9))
        elif op == "split":
            cut = at % (len(data) + 1)
            logs[i : i + 1] = [to_hex(data[:cut]), to_hex(data[cut:])]
        elif op == "join":
            following = _bytes_of(logs[i + 1]) if i + 1 < len(logs) else None
            if following is not None:
                logs[i : i + 2] = [to_hex(data + following)]
        elif op == "drop":
            del logs[i]
        elif op == "duplicate":
            logs.insert(i, log)
        elif data:
            # kind, engine id, length, variant and slot bytes; or any byte
            pos = at % min(len(data), 16) if op == "head-byte" else at % len(data)
            logs[i] = to_hex(data[:pos] + bytes((value,)) + data[pos + 1 :])
        return logs
    if not isinstance(log, str):
        return logs
    pos = 2 + at % max(1, len(log) - 2)
    if op == "non-hex":
        logs[i] = log[:pos] + _NOT_HEX[value % len(_NOT_HEX)] + log[pos + 1 :]
    elif op == "drop-char":
        logs[i] = log[:pos] + log[pos + 1 :]
    elif op == "add-char":
        logs[i] = log[:pos] + "0123456789abcdef"[value % 16] + log[pos:]
    elif op == "no-prefix":
        logs[i] = log[2:]
    elif op == "prefix":
        logs[i] = _PREFIXES[value % len(_PREFIXES)] + log[2:]
    elif op == "upper":
        logs[i] = log[:2] + log[2:].upper()
    elif op == "upper-char":
        logs[i] = log[:pos] + log[pos : pos + 1].upper() + log[pos + 1 :]
    elif op == "space":
        # between two bytes: bytes.fromhex accepts whitespace there
        pos = 2 + 2 * (at % max(1, (len(log) - 2) // 2 + 1))
        logs[i] = log[:pos] + _SPACES[value % len(_SPACES)] + log[pos:]
    elif op == "not-str":
        logs[i] = (None, 7, log.encode(), [log])[value % 4]
    else:
        logs[i] = ("0x", "")[value % 2]
    return logs


_MUTATIONS = st.tuples(
    st.sampled_from(OPERATIONS),
    st.integers(0, 15),
    st.integers(0, 4000),
    st.integers(0, 255),
)


@settings(max_examples=1000)
@given(_REALISTIC, st.lists(_MUTATIONS, min_size=1, max_size=3))
def test_mutated_realistic_digests_agree_with_the_byte_path(
    logs: list[object], mutations: list[Mutation]
) -> None:
    for mutation in mutations:
        logs = mutate(logs, mutation)
    assert_agree(logs)


@given(_REALISTIC)
def test_realistic_digests_as_the_byte_path_reads_them(logs: list[object]) -> None:
    facts = byte_path(logs)
    assert not isinstance(facts, DecodeError)
    assert fast_path(logs) == facts
    assert fast_path(["0x" + str(log)[2:].upper() for log in logs]) == facts


def _sample(rng: random.Random) -> list[object]:
    if rng.random() < 0.7:
        return consensus_logs(
            rng.getrandbits(32), rng.getrandbits(64), rng.randrange(4), rng.random() < 0.2
        )
    return domain_logs(rng.getrandbits(32), rng.random() < 0.3)


def disagreements(count: int, seed: int = 0) -> list[tuple[str, list[object], object, object]]:
    """Single mutations of realistic digests, drawn from ``seed``, where the two paths
    disagree: (what went wrong, logs, byte path, fast path)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        mutation = (
            rng.choice(OPERATIONS),
            rng.randrange(16),
            rng.randrange(4000),
            rng.randrange(256),
        )
        logs = mutate(_sample(rng), mutation)
        expected, got = byte_path(logs), fast_path(logs)
        if isinstance(expected, DecodeError) and not isinstance(got, DecodeError):
            out.append(("facts where the byte path raised", logs, expected, got))
        elif isinstance(got, DecodeError) and not isinstance(expected, DecodeError):
            out.append(("a DecodeError where the byte path answered", logs, expected, got))
        elif got != expected and not isinstance(expected, DecodeError):
            out.append(("different facts", logs, expected, got))
    return out


def test_fixed_sample_of_single_mutations() -> None:
    """1,200 single mutations from a fixed seed: a count to compare across changes."""
    wrong = disagreements(1200)
    kinds = sorted({kind for kind, *_ in wrong})
    summary = {kind: sum(1 for k, *_ in wrong if k == kind) for kind in kinds}
    assert not wrong, (
        f"{len(wrong)} of 1200 single mutations disagree: {summary}; first: {wrong[0]}"
    )


# -- known cases ------------------------------------------------------------------------------

_SLOT_HEX = scale.u64(SLOT).hex()
_SEAL = "0x055355425f0901" + "0101" + "ab" * 64
_HASH = "cd" * 32


@pytest.mark.parametrize(
    "logs",
    [
        # PreRuntime SUB_ declaring 100 payload bytes, carrying 9
        ["0x065355425f9101" + "00" + _SLOT_HEX],
        # no 0x
        ["065355425f2400" + _SLOT_HEX],
        # SegmentCommitment declaring 57 bytes, carrying 10
        ["0x065355425f2400" + _SLOT_HEX, "0x045355425fe404" + "0b" + "00" * 8],
        # a non-hex character inside the RGTR hash
        ["0x065247545280" + "cd" * 15 + "cz" + "cd" * 16],
        # odd-length seal, non-hex seal
        ["0x065355425f2400" + _SLOT_HEX, _SEAL[:-1]],
        ["0x065355425f2400" + _SLOT_HEX, _SEAL[:-2] + "zz"],
    ],
)
def test_known_wrong_answers_are_decode_errors(logs: list[object]) -> None:
    assert isinstance(byte_path(logs), DecodeError)
    with pytest.raises(DecodeError):
        hexfacts.digest_facts(logs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("logs", "message"),
    [
        (["0x065355425fzz00"], "digest log: invalid hex"),
        (["0x065355425f03"], "truncated compact integer"),
        (["0x065355425f"], "truncated compact integer at offset 5"),
        (["0x065355425f0c00aabb"], "3 bytes, too short for a slot"),
        (["0x065355425f2400" + _SLOT_HEX + "00"], "1 trailing bytes"),
        (["0x065355425f2800" + _SLOT_HEX], "need 10 bytes at offset 6, only 9 left"),
        (["0x0652475452" + "7c" + "00" * 31], "payload is not 32 bytes"),
        (["0x0652475452" + "80" + "00" * 31], "need 32 bytes at offset 6, only 31 left"),
        ([7], "expected a 0x-prefixed hex string, got 7"),
        ([None], "expected a 0x-prefixed hex string"),
        ([b"0x08"], "expected a 0x-prefixed hex string"),
        (["0X08"], "expected a 0x-prefixed hex string"),
        (["0x065355425f2400" + "zz" * 8], "invalid hex"),
        (["0x065355425f24 00" + _SLOT_HEX[1:]], "invalid hex"),
        (["0x"], "need 1 byte at offset 0"),
        ([""], "expected a 0x-prefixed hex string"),
        (["0x0a"], "unknown digest item kind 10"),
        (["0x0800"], "1 trailing bytes"),
        (["0x0442414245"], "truncated compact integer at offset 5"),
        (["0x065355425f25"], "truncated compact integer at offset 5"),
        (["0x065355425f26000000" + "00" * 8], "need 9 bytes at offset 9, only 8 left"),
        (["0x00"], "truncated compact integer at offset 1"),
        (["0x0008aa"], "need 2 bytes at offset 2, only 1 left"),
    ],
)
def test_malformed_digest_logs(logs: list[object], message: str) -> None:
    assert isinstance(byte_path(logs), DecodeError)
    with pytest.raises(DecodeError, match=message):
        hexfacts.digest_facts(logs)  # type: ignore[arg-type]


def test_digest_logs_that_are_not_a_list_of_strings() -> None:
    with pytest.raises(DecodeError, match="expected a 0x-prefixed hex string"):
        hexfacts.digest_facts(7)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("logs", "facts"),
    [
        ([], (None, 0, False, None)),
        (["0x065355425f2400" + _SLOT_HEX, _SEAL], (SLOT, 0, False, None)),
        # payload length in a wider compact mode than needed
        (["0x065355425f2500" + "00" + _SLOT_HEX], (SLOT, 0, False, None)),
        (["0x065355425f26000000" + "00" + _SLOT_HEX], (SLOT, 0, False, None)),
        (["0x065355425f0309000000" + "00" + _SLOT_HEX], (SLOT, 0, False, None)),
        # whitespace between bytes, upper case: bytes.fromhex reads both
        (["0x065355425f24 00" + _SLOT_HEX.upper() + "\n", "0x08"], (SLOT, 0, True, None)),
        # a cut-down SegmentCommitment that declares its own length still counts
        (["0x045355425f2c04" + "00" * 10], (None, 1, False, None)),
        (["0x065247545280" + _HASH.upper()], (None, 0, False, "0x" + _HASH)),
        # items of other engines, and Other, are passed over
        (
            [
                "0x0442414245" + "0801" + "02",
                "0x0542414245" + "00",
                "0x0642414245" + "0400",
                "0x0000",
            ],
            (None, 0, False, None),
        ),
    ],
)
def test_well_formed_digest_logs(logs: list[object], facts: tuple[object, ...]) -> None:
    assert byte_path(logs) == facts
    assert hexfacts.digest_facts(logs) == facts  # type: ignore[arg-type]


# -- storage values ---------------------------------------------------------------------------


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
    assert_agree([to_hex(data)])


# -- the hash of a header ----------------------------------------------------------------------

_HASH32 = st.binary(min_size=32, max_size=32)


@settings(max_examples=300)
@given(
    st.builds(
        Header,
        _HASH32,
        st.one_of(st.integers(0, 70), st.integers(0, 2**32 - 1)),
        _HASH32,
        _HASH32,
        st.lists(_ITEMS, max_size=6).map(tuple),
    ),
    st.booleans(),
)
def test_header_facts_hash_as_the_header_does(header: Header, upper: bool) -> None:
    obj = header.to_json()
    if upper:  # nodes may send upper-case hex; the hash is the same
        obj["parentHash"] = "0x" + obj["parentHash"][2:].upper()
        obj["digest"] = {"logs": ["0x" + log[2:].upper() for log in obj["digest"]["logs"]]}
    logs = obj["digest"]["logs"]
    if isinstance(fast_path(logs), DecodeError):
        with pytest.raises(DecodeError):  # logs whose facts cannot be read are refused
            hexfacts.header_facts(obj)
        return
    number, computed, parent, facts = hexfacts.header_facts(obj)
    assert computed == to_hex(header.hash()) == to_hex(blake2_256(header.encode()))
    assert (number, parent) == (header.number, to_hex(header.parent_hash))
    assert facts == hexfacts.digest_facts(logs)


def test_header_facts_of_simulated_blocks() -> None:
    network = Network(ChainParams(seed=5, history=40, upgrade_at=20), 0)
    network.build_history(40)
    for store in (network.consensus, network.domain):
        for block in store.canonical[1:]:
            obj = block.header.to_json()
            number, computed, parent, facts = hexfacts.header_facts(obj)
            assert (number, computed) == (block.number, block.hash_hex)
            assert block.parent is not None
            assert parent == block.parent.hash_hex
            assert facts == hexfacts.digest_facts(obj["digest"]["logs"])


_GOOD = Header(bytes(32), 7, bytes(32), bytes(32)).to_json()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"parentHash": "0x" + "ab" * 31}, "a hash is not 0x and 64 hex digits"),
        ({"parentHash": "ab" * 33}, "a hash is not 0x and 64 hex digits"),
        ({"stateRoot": "0x" + "zz" * 32}, "non-hexadecimal"),
        ({"extrinsicsRoot": None}, "object of type 'NoneType' has no len"),
        ({"extrinsicsRoot": "0x" + "ab" * 31 + " a"}, "non-hexadecimal"),
        ({"extrinsicsRoot": "0x" + "ab" * 31 + "  "}, "whitespace"),
        ({"number": "7"}, "number '7' is not 0x-hex"),
        ({"number": "0xzz"}, "invalid literal"),
        ({"number": 7}, "not subscriptable"),
        ({"number": "-0x1"}, "is not 0x-hex"),
        ({"digest": {"logs": "0x08"}}, "digest.logs is not a list"),
        ({"digest": {}}, "no field 'logs'"),
        ({"digest": None}, "not subscriptable"),
        ({"digest": {"logs": ["08"]}}, "digest log"),
        ({"digest": {"logs": ["0x0"]}}, "digest log"),
        ({"digest": {"logs": [8]}}, "digest log"),
    ],
)
def test_header_facts_refuse_what_is_not_a_header(change: dict[str, object], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        hexfacts.header_facts({**_GOOD, **change})
    with pytest.raises(DecodeError):  # as the byte path does
        Header.from_json({**_GOOD, **change})


@pytest.mark.parametrize("obj", [42, None, "0x00", [_GOOD], {}])
def test_header_facts_of_what_is_not_an_object(obj: object) -> None:
    with pytest.raises(DecodeError, match="header: "):
        hexfacts.header_facts(obj)
