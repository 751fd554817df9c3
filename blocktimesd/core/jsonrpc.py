"""JSON-RPC 2.0 framing, without I/O.

Server side (the simulated node): :func:`parse_incoming` turns one WebSocket text
message into calls, and the ``result``/``error``/``notification`` helpers build the
objects to send back.  Client side (the daemon): :class:`ClientFraming` numbers
requests and turns incoming messages into events: responses, errors and
subscription notifications.  Serialisation is ``orjson`` in both directions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from blocktimesd.errors import ProtocolError, RpcError

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "BatchResponse",
    "Call",
    "ClientFraming",
    "ErrorWithoutId",
    "Event",
    "Invalid",
    "Notification",
    "Response",
    "error",
    "notification",
    "parse_incoming",
    "result",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

JsonId = int | str | None


@dataclass(frozen=True, slots=True)
class Call:
    """A request (``id`` set) or a client notification (``is_notification``)."""

    id: JsonId
    method: str
    params: list[Any] | dict[str, Any]
    is_notification: bool = False


@dataclass(frozen=True, slots=True)
class Invalid:
    """An entry that is not a valid request; answered with this error object."""

    id: JsonId
    code: int
    message: str


def parse_incoming(data: bytes | str) -> tuple[list[Call | Invalid], bool]:
    """Parse one message from a client; return its entries and whether it was a batch."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return [Invalid(None, PARSE_ERROR, "Parse error")], False
    if isinstance(obj, list):
        if not obj:
            return [Invalid(None, INVALID_REQUEST, "Invalid request")], False
        return [_parse_entry(entry) for entry in obj], True
    return [_parse_entry(obj)], False


def _parse_entry(obj: Any) -> Call | Invalid:
    if not isinstance(obj, dict):
        return Invalid(None, INVALID_REQUEST, "Invalid request")
    req_id = obj.get("id")
    if not isinstance(req_id, int | str | None) or isinstance(req_id, bool):
        return Invalid(None, INVALID_REQUEST, "Invalid request")
    method = obj.get("method")
    if obj.get("jsonrpc") != "2.0" or not isinstance(method, str):
        return Invalid(req_id, INVALID_REQUEST, "Invalid request")
    params = obj.get("params", [])
    if params is None:
        params = []
    if not isinstance(params, list | dict):
        return Invalid(req_id, INVALID_PARAMS, "Invalid params")
    return Call(req_id, method, params, "id" not in obj)


def result(req_id: JsonId, value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "result": value}


def error(req_id: JsonId, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": req_id, "error": err}


def notification(method: str, subscription: str, value: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "method": method,
        "params": {"subscription": subscription, "result": value},
    }


# Client side ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to request ``id``: ``error`` is set when the node returned one."""

    id: int
    result: Any
    error: RpcError | None = None


@dataclass(frozen=True, slots=True)
class BatchResponse:
    """The answer to the batch whose first request is ``id``: one entry per call, in
    the order of the calls; a node error stands in place as an :class:`RpcError`."""

    id: int
    results: list[Any]


@dataclass(frozen=True, slots=True)
class Notification:
    method: str
    subscription: str
    result: Any


@dataclass(frozen=True, slots=True)
class ErrorWithoutId:
    """An error object whose id is null: the node could not read the id of a request
    (JSON-RPC 2.0, section 5), so the error belongs to none of ours.  The request it
    was meant for, if any, stays open until its deadline."""

    error: RpcError


Event = Response | BatchResponse | Notification | ErrorWithoutId

_SINGLE = 0  # in ClientFraming._open: a single request, not a batch


class ClientFraming:
    """Numbers outgoing requests, remembers which are open, and classifies replies.

    A single request is answered by one response object; a batch (:meth:`batch`, ids
    ``id .. id + n - 1``) by one array that answers every call of it, in any order
    (JSON-RPC 2.0, section 6), delivered as one :class:`BatchResponse`.  A reply to an
    id that was never sent, or an array that does not answer exactly one open batch, is
    a protocol error; a reply to one the caller gave up on (:meth:`abandon`) is dropped
    quietly.  :meth:`receive` raises :class:`ProtocolError` for anything that is not a
    well-formed JSON-RPC 2.0 message, and nothing else.
    """

    _ABANDONED_KEPT = 4096  # late replies to timed-out requests we still recognise

    def __init__(self) -> None:
        self._next_id = 1
        self._open: dict[int, int] = {}  # first id -> calls in the batch, or _SINGLE
        self._abandoned: dict[int, None] = {}  # insertion-ordered, bounded

    @property
    def open_requests(self) -> int:
        """Messages awaiting an answer (a batch counts once)."""
        return len(self._open)

    @property
    def asked(self) -> int:
        """Calls numbered so far (each call of a batch counts)."""
        return self._next_id - 1

    def request(self, method: str, params: list[Any]) -> tuple[int, dict[str, Any]]:
        req_id = self._next_id
        self._next_id += 1
        self._open[req_id] = _SINGLE
        return req_id, {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> tuple[int, list[dict[str, Any]]]:
        """Number a batch of calls; returns its key (the first id) and the payload."""
        if not calls:
            raise ValueError("a batch needs at least one call")
        first = self._next_id
        self._next_id += len(calls)
        self._open[first] = len(calls)
        payload = [
            {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}
            for req_id, (method, params) in enumerate(calls, first)
        ]
        return first, payload

    def encode(self, payload: dict[str, Any] | list[dict[str, Any]]) -> bytes:
        return orjson.dumps(payload)

    def abandon(self, key: int) -> None:
        """Forget a request or batch whose answer is no longer wanted (timed out,
        cancelled)."""
        if self._open.pop(key, None) is not None:
            self._abandoned[key] = None
            if len(self._abandoned) > self._ABANDONED_KEPT:
                del self._abandoned[next(iter(self._abandoned))]

    def fail_all(self) -> list[int]:
        """The connection is gone: every open request is lost.  Returns their keys."""
        lost = sorted(self._open)
        self._open.clear()
        return lost

    def receive(self, data: bytes | str) -> list[Event]:
        """Parse one incoming message (single or batch) into events."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:  # also bad UTF-8 and nesting beyond 1024
            raise ProtocolError(f"node sent invalid JSON: {exc}") from None
        if type(obj) is list:
            return self._array(obj)
        event = _event(obj)
        if type(event) is Response:
            if self._open.get(event.id) == _SINGLE:
                del self._open[event.id]
            elif event.id in self._abandoned:
                del self._abandoned[event.id]
                return []
            else:
                raise ProtocolError(f"node answered request {event.id}, which was never sent")
        return [event]

    def _array(self, items: list[Any]) -> list[Event]:
        if not items:
            raise ProtocolError("node sent an empty array")
        answers: dict[int, Any] = {}
        events: list[Event] = []
        for item in items:
            # The common case inline: {"jsonrpc": "2.0", "id": <int>, "result": ...}.
            if type(item) is dict and item.get("jsonrpc") == "2.0":
                req_id = item.get("id")
                if type(req_id) is int and "result" in item and "error" not in item:
                    answers[req_id] = item["result"]
                    continue
            event = _event(item)
            if type(event) is Response:
                answers[event.id] = event.error if event.error is not None else event.result
            else:
                events.append(event)
        if len(answers) + len(events) != len(items):  # each item gave one or the other
            raise ProtocolError("node answered a request twice in one array")
        if answers:
            first = min(answers)
            size = self._open.get(first)
            if size and len(answers) == size and max(answers) == first + size - 1:
                del self._open[first]
                events.append(
                    BatchResponse(first, [answers[i] for i in range(first, first + size)])
                )
            elif first in self._abandoned:
                del self._abandoned[first]
            else:
                raise ProtocolError(
                    f"node answered requests {first}..{max(answers)} ({len(answers)} answers), "
                    "which do not form one open batch"
                )
        return events


def _event(obj: Any) -> Response | Notification | ErrorWithoutId:
    if type(obj) is not dict or obj.get("jsonrpc") != "2.0":
        raise ProtocolError(f"not a JSON-RPC 2.0 message: {_describe(obj)}")
    req_id = obj.get("id")
    if req_id is not None:
        if type(req_id) is not int:
            raise ProtocolError(f"response id {_describe(req_id)} was never sent")
        if "error" in obj:
            return Response(req_id, None, _error(obj["error"]))
        if "result" not in obj:
            raise ProtocolError(f"response {req_id} has neither result nor error")
        return Response(req_id, obj["result"])
    params = obj.get("params")
    if type(obj.get("method")) is str and type(params) is dict and "subscription" in params:
        sub_id = params["subscription"]
        # Substrate numbers subscriptions with strings; older nodes used integers.
        if type(sub_id) is not str and type(sub_id) is not int:
            raise ProtocolError(f"subscription id {_describe(sub_id)} is neither text nor number")
        return Notification(obj["method"], str(sub_id), params.get("result"))
    if "error" in obj:
        return ErrorWithoutId(_error(obj["error"]))
    raise ProtocolError(f"unexpected message: {_describe(obj)}")


def _error(err: Any) -> RpcError:
    if type(err) is not dict or type(err.get("code")) is not int:
        raise ProtocolError(f"malformed error object: {_describe(err)}")
    message = err.get("message")
    try:
        return RpcError(
            err["code"], message if type(message) is str else str(message), err.get("data")
        )
    except RecursionError:  # the error's text would be nested beyond the stack
        raise ProtocolError("error object nested too deeply") from None


def _describe(value: Any) -> str:
    """What a value is, in a few words: never its whole text (which may be megabytes,
    or nested too deeply to print)."""
    if type(value) is dict:
        keys = ", ".join(sorted(str(k)[:20] for k in list(value)[:8]))
        return f"an object with keys {{{keys}{', ...' if len(value) > 8 else ''}}}"
    if type(value) is list:
        return f"an array of {len(value)} items"
    if type(value) is str:
        return repr(value[:40] + ("..." if len(value) > 40 else ""))
    return repr(value)
