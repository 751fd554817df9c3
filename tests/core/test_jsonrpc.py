"""JSON-RPC 2.0 framing, both directions, with literal messages."""

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocktimesd.core import jsonrpc
from blocktimesd.errors import ProtocolError, RpcError


@pytest.mark.parametrize(
    ("message", "expected", "is_batch"),
    [
        (
            b'{"jsonrpc":"2.0","id":1,"method":"chain_getHeader","params":[]}',
            [jsonrpc.Call(1, "chain_getHeader", [])],
            False,
        ),
        (
            b'{"jsonrpc":"2.0","id":"a","method":"m"}',
            [jsonrpc.Call("a", "m", [])],
            False,
        ),
        (b'{"jsonrpc":"2.0","method":"m","params":{}}', [jsonrpc.Call(None, "m", {}, True)], False),
        (b"not json", [jsonrpc.Invalid(None, -32700, "Parse error")], False),
        (b"[]", [jsonrpc.Invalid(None, -32600, "Invalid request")], False),
        (b'{"id":3,"method":"m"}', [jsonrpc.Invalid(3, -32600, "Invalid request")], False),
        (
            b'{"jsonrpc":"2.0","id":4,"method":"m","params":5}',
            [jsonrpc.Invalid(4, -32602, "Invalid params")],
            False,
        ),
        (
            b'[{"jsonrpc":"2.0","id":1,"method":"a"},7,{"jsonrpc":"2.0","id":2,"method":"b","params":[1]}]',
            [
                jsonrpc.Call(1, "a", []),
                jsonrpc.Invalid(None, -32600, "Invalid request"),
                jsonrpc.Call(2, "b", [1]),
            ],
            True,
        ),
    ],
)
def test_parse_incoming(message: bytes, expected: list[object], is_batch: bool) -> None:
    assert jsonrpc.parse_incoming(message) == (expected, is_batch)


def test_server_objects() -> None:
    assert jsonrpc.result(7, None) == {"jsonrpc": "2.0", "id": 7, "result": None}
    assert jsonrpc.error(1, -32601, "Method not found") == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32601, "message": "Method not found"},
    }
    assert jsonrpc.notification("chain_newHead", "abc", {"n": 1})["params"] == {
        "subscription": "abc",
        "result": {"n": 1},
    }


def test_client_requests_are_numbered() -> None:
    framing = jsonrpc.ClientFraming()
    first, payload = framing.request("system_chain", [])
    second, _ = framing.request("system_chain", [])
    assert (first, second) == (1, 2)
    assert orjson.loads(framing.encode(payload)) == {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "system_chain",
        "params": [],
    }


def test_client_receive() -> None:
    framing = jsonrpc.ClientFraming()
    key, payload = framing.batch([("state_getStorage", []), ("state_getStorage", ["0x"])])
    assert key == 1
    assert [p["id"] for p in payload] == [1, 2]
    assert framing.open_requests == 1  # one message awaits one answer
    # Answered in another order, as JSON-RPC 2.0 allows; delivered in the calls' order.
    (reply,) = framing.receive(
        b'[{"jsonrpc":"2.0","id":2,"error":{"code":4003,"message":"Client error: UnknownBlock"}},'
        b'{"jsonrpc":"2.0","id":1,"result":"0x01"}]'
    )
    assert isinstance(reply, jsonrpc.BatchResponse)
    assert reply.id == key
    assert reply.results[0] == "0x01"
    err = reply.results[1]
    assert isinstance(err, RpcError)
    assert (err.code, err.message) == (4003, "Client error: UnknownBlock")
    assert framing.open_requests == 0
    single, _ = framing.request("state_getStorage", [])
    assert framing.receive(b'{"jsonrpc":"2.0","id":3,"result":null}') == [
        jsonrpc.Response(single, None)
    ]
    (note,) = framing.receive(
        b'{"jsonrpc":"2.0","method":"chain_newHead","params":{"subscription":"Ab12","result":{"number":"0x1"}}}'
    )
    assert note == jsonrpc.Notification("chain_newHead", "Ab12", {"number": "0x1"})


@pytest.mark.parametrize(
    "message",
    [
        b'[{"jsonrpc":"2.0","id":1,"result":1}]',  # part of the batch
        b'[{"jsonrpc":"2.0","id":1,"result":1},{"jsonrpc":"2.0","id":3,"result":3}]',
        b'[{"jsonrpc":"2.0","id":1,"result":1},{"jsonrpc":"2.0","id":1,"result":1}]',
        b'[{"jsonrpc":"2.0","id":1,"result":1},{"id":2,"result":2}]',
        b'[{"jsonrpc":"2.0","id":1,"result":1},{"jsonrpc":"2.0","id":2}]',
        b'{"jsonrpc":"2.0","id":1,"result":1}',  # a single answer to a batch
    ],
)
def test_batch_answers_must_match_the_batch(message: bytes) -> None:
    framing = jsonrpc.ClientFraming()
    framing.batch([("a", []), ("b", [])])
    with pytest.raises(ProtocolError):
        framing.receive(message)


@pytest.mark.parametrize(
    "message",
    [
        b"{",
        b'{"id":1,"result":2}',
        b'{"jsonrpc":"2.0","id":1}',
        b'{"jsonrpc":"2.0","id":1,"error":"x"}',
        b'{"jsonrpc":"2.0"}',
    ],
)
def test_client_rejects_malformed(message: bytes) -> None:
    framing = jsonrpc.ClientFraming()
    framing.request("m", [])
    with pytest.raises(ProtocolError):
        framing.receive(message)


def test_replies_are_matched_to_open_requests() -> None:
    framing = jsonrpc.ClientFraming()
    first, _ = framing.batch([("a", []), ("b", [])])
    second, _ = framing.request("c", [])
    assert framing.open_requests == 2
    framing.abandon(first)
    # A late answer to an abandoned batch is dropped; the other is delivered.
    assert (
        framing.receive(
            b'[{"jsonrpc":"2.0","id":2,"result":2},{"jsonrpc":"2.0","id":1,"result":1}]'
        )
        == []
    )
    assert framing.receive(b'{"jsonrpc":"2.0","id":3,"result":3}') == [jsonrpc.Response(second, 3)]
    assert framing.open_requests == 0
    with pytest.raises(ProtocolError, match="never sent"):
        framing.receive(b'{"jsonrpc":"2.0","id":3,"result":3}')
    with pytest.raises(ProtocolError, match="one open batch"):
        framing.receive(
            b'[{"jsonrpc":"2.0","id":1,"result":1},{"jsonrpc":"2.0","id":2,"result":2}]'
        )
    third, _ = framing.request("d", [])
    assert framing.fail_all() == [third]
    assert framing.open_requests == 0


def test_an_error_without_id_is_its_own_event() -> None:
    # JSON-RPC 2.0 (5): the id is null when the node could not read the request's id,
    # so the error belongs to no request of ours.
    framing = jsonrpc.ClientFraming()
    framing.request("m", [])
    (event,) = framing.receive(
        b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}'
    )
    assert isinstance(event, jsonrpc.ErrorWithoutId)
    assert (event.error.code, event.error.message) == (-32700, "Parse error")
    assert framing.open_requests == 1  # the open request stays open


@pytest.mark.parametrize(
    "message",
    [
        b'{"jsonrpc":"2.0","id":null,"error":"boom"}',
        b'{"jsonrpc":"2.0","error":"boom"}',
        b'{"jsonrpc":"2.0","id":null,"error":{"code":true,"message":"x"}}',
        b'{"jsonrpc":"2.0","id":1,"error":{"code":1.5,"message":"x"}}',
        b'{"jsonrpc":"2.0","method":"m","params":{"subscription":[1],"result":1}}',
        b'{"jsonrpc":"2.0","method":"m","params":{"subscription":true,"result":1}}',
        b'{"jsonrpc":"2.0","id":[' + b"[" * 900 + b"]" * 900 + b"]}",
        b'{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x","data":'
        + b"[" * 990
        + b"]" * 990
        + b"}}",
        b"[" * 990 + b"]" * 990,
        b"[]",
        b'"\xed\xa0\x80"',  # a lone surrogate, encoded
        "\ud800".encode("utf-8", "surrogatepass"),
    ],
)
def test_malformed_messages_are_protocol_errors(message: bytes) -> None:
    framing = jsonrpc.ClientFraming()
    framing.request("m", [])
    with pytest.raises(ProtocolError):
        framing.receive(message)


def test_a_batch_answered_twice_for_one_id_is_refused() -> None:
    framing = jsonrpc.ClientFraming()
    framing.batch([("a", []), ("b", [])])
    with pytest.raises(ProtocolError, match="twice"):
        framing.receive(
            b'[{"jsonrpc":"2.0","id":1,"result":1},{"jsonrpc":"2.0","id":2,"result":2},'
            b'{"jsonrpc":"2.0","id":1,"result":1}]'
        )


# Any JSON value, and values shaped like JSON-RPC messages with each member possibly
# missing or of the wrong type.
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
_ids = st.none() | st.integers(min_value=-2, max_value=8) | _json
_error_objects = _json | st.fixed_dictionaries(
    {}, optional={"code": _ids, "message": _json, "data": _json}
)
_params = _json | st.fixed_dictionaries({}, optional={"subscription": _json, "result": _json})
_shaped = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.just("2.0") | _json,
        "id": _ids,
        "result": _json,
        "error": _error_objects,
        "method": st.text(max_size=8) | _json,
        "params": _params,
    },
)
_messages = (
    st.builds(lambda v: json.dumps(v).encode(), _json | _shaped | st.lists(_shaped, max_size=6))
    | st.binary(max_size=40)
    | st.text(max_size=20)
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_messages, min_size=1, max_size=6))
def test_receive_raises_nothing_but_protocol_errors(messages: list[bytes | str]) -> None:
    framing = jsonrpc.ClientFraming()
    framing.request("a", [])
    framing.batch([("b", []), ("c", []), ("d", [])])
    framing.request("e", [])
    framing.abandon(5)
    for message in messages:
        try:
            events = framing.receive(message)
        except ProtocolError:
            continue
        assert all(
            isinstance(
                e,
                jsonrpc.Response
                | jsonrpc.BatchResponse
                | jsonrpc.Notification
                | jsonrpc.ErrorWithoutId,
            )
            for e in events
        )
