"""JSON-RPC 2.0 framing, both directions, with literal messages."""

import orjson
import pytest

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
