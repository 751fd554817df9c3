"""The JSON-RPC client against nodes that misbehave: malformed messages, messages that
never end, silence, nodes that stop reading, wrong schemes, and connections that drop
during the preflight.  Each node is a real WebSocket server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidURI

from blocktimesd.aio.metrics import Metrics
from blocktimesd.aio.rpc import RpcClient, RpcSettings
from blocktimesd.aio.wsconn import explain
from blocktimesd.errors import ConnectionLost, MalformedAnswer, NodeUnusable, RpcTimeout

from .test_rpc_client import dead_url

TLS_PEM = Path(__file__).parent / "data" / "localhost-tls.pem"

# Called with each request on a misbehaving connection; True when it dealt with the
# request itself (no normal answer follows).
Misbehaviour = Callable[[ServerConnection, dict[str, Any]], Awaitable[bool]]


def answer(request: dict[str, Any]) -> str:
    return orjson.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "Hostile"}).decode()


class Node:
    """A node that answers every request with ``"Hostile"``; connection ``i`` misbehaves
    as ``misbehaviours[i]`` says (later ones behave, unless ``always``); with
    ``close_on_open``, every connection is closed as soon as it is open."""

    def __init__(
        self,
        *misbehaviours: Misbehaviour,
        always: Misbehaviour | None = None,
        tls: bool = False,
        close_on_open: bool = False,
    ) -> None:
        self.misbehaviours = misbehaviours
        self.always = always
        self.tls = tls
        self.close_on_open = close_on_open
        self.connections = 0
        self.url = ""
        self._server: Server | None = None

    async def __aenter__(self) -> Node:
        context = None
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(TLS_PEM)
        self._server = await serve(
            self._serve, "127.0.0.1", 0, ping_interval=None, close_timeout=0.5, ssl=context
        )
        self.url = f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, ws: ServerConnection) -> None:
        index = self.connections
        self.connections += 1
        if self.close_on_open:
            await ws.close()
            return
        misbehave = self.always
        if index < len(self.misbehaviours):
            misbehave = self.misbehaviours[index]
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                request = orjson.loads(message)
                if misbehave is not None and await misbehave(ws, request):
                    continue
                await ws.send(answer(request))


# -- misbehaviours -------------------------------------------------------------------------


def send_instead(text: str) -> Misbehaviour:
    async def misbehave(ws: ServerConnection, request: dict[str, Any]) -> bool:
        await ws.send(text)
        return True

    return misbehave


def send_before(text: str) -> Misbehaviour:
    async def misbehave(ws: ServerConnection, request: dict[str, Any]) -> bool:
        await ws.send(text)
        return False

    return misbehave


def once(misbehaviour: Misbehaviour) -> Misbehaviour:
    """``misbehaviour`` for the first request only."""
    done = False

    async def misbehave(ws: ServerConnection, request: dict[str, Any]) -> bool:
        nonlocal done
        if done:
            return False
        done = True
        return await misbehaviour(ws, request)

    return misbehave


async def answer_twice(ws: ServerConnection, request: dict[str, Any]) -> bool:
    await ws.send(answer(request))
    await ws.send(answer(request))
    return True


async def abort(ws: ServerConnection, request: dict[str, Any]) -> bool:
    ws.transport.abort()
    return True


async def silence(ws: ServerConnection, request: dict[str, Any]) -> bool:
    return True


async def stop_reading(ws: ServerConnection, request: dict[str, Any]) -> bool:
    ws.transport.pause_reading()  # no more requests, pings or pongs are read
    return True


async def trickle_a_frame(ws: ServerConnection, request: dict[str, Any]) -> bool:
    # A text frame of 1,000 bytes, sent a byte at a time: the frame never ends in time,
    # and no pong can pass it.
    ws.transport.write(bytes([0x81, 126, 0x03, 0xE8]))
    for _ in range(1000):
        await asyncio.sleep(0.05)
        if ws.transport.is_closing():
            break
        ws.transport.write(b"x")
    return True


async def trickle_fragments(ws: ServerConnection, request: dict[str, Any]) -> bool:
    # One message in fragments of a byte each: the node answers pings between them
    # (RFC 6455, 5.4), so keepalive sees a live peer while the message never ends.
    async def fragments() -> AsyncIterator[str]:
        for _ in range(1000):
            await asyncio.sleep(0.05)
            yield "x"

    await ws.send(fragments())
    return True


# -- helpers -------------------------------------------------------------------------------


class Recorder:
    """An RpcObserver that keeps what it is told."""

    def __init__(self) -> None:
        self.connect_failures: list[tuple[str, str]] = []
        self.drops: list[tuple[str, str]] = []
        self.reconnects: list[str] = []

    def request_done(self, method: str, outcome: str, seconds: float) -> None:
        pass

    def reconnected(self, endpoint: str) -> None:
        self.reconnects.append(endpoint)

    def connect_failed(self, endpoint: str, reason: str) -> None:
        self.connect_failures.append((endpoint, reason))

    def dropped(self, endpoint: str, reason: str) -> None:
        self.drops.append((endpoint, reason))


def settings(*endpoints: str, **changes: Any) -> RpcSettings:
    base: dict[str, Any] = {"backoff_initial": 0.05, "backoff_cap": 0.2}
    base.update(changes)
    return RpcSettings(endpoints, **base)


async def ask(client: RpcClient) -> None:
    """A preflight of one call."""
    assert await client.call("system_chain") == "Hostile"


async def ask_twice(client: RpcClient) -> None:
    await ask(client)
    await ask(client)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not true within {timeout} s")


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """The client's log lines at ``level``."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == level and r.name.startswith("blocktimesd")
    ]


# -- one malformed message never stops a chain -----------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"jsonrpc":"2.0","id":null,"error":"boom"}',
        '{"jsonrpc":"2.0","id":1,"error":{"code":"x"}}',
        '{"jsonrpc":"2.0","method":"m","params":{"subscription":{},"result":1}}',
        "[]",
        "[" * 1000 + "]" * 1000,
    ],
)
async def test_a_malformed_message_drops_the_connection_not_the_client(text: str) -> None:
    async with Node(send_instead(text)) as node, RpcClient(settings(node.url), "c") as client:
        with pytest.raises(ConnectionLost):
            await client.call("system_chain")
        await client.wait_ready(5)
        assert await client.call("system_chain") == "Hostile"
        assert node.connections == 2
        assert client.supervisor_alive


async def test_a_subscription_answered_without_an_id_is_a_node_fault() -> None:
    reply = once(send_instead('{"jsonrpc":"2.0","id":1,"result":{"not":"an id"}}'))
    async with Node(reply) as node, RpcClient(settings(node.url), "c") as client:
        with pytest.raises(MalformedAnswer, match="answered a subscription with dict"):
            await client.subscribe("chain_subscribeNewHeads", "chain_unsubscribeNewHeads")
        assert await client.call("system_chain") == "Hostile"


async def test_an_invalid_host_name_is_an_unusable_endpoint() -> None:
    bad = "ws://" + "a" * 64 + ".example:9944"
    async with Node() as node, RpcClient(settings(bad, node.url), "c") as client:
        await client.wait_ready(5)
        assert client.endpoint == node.url
    async with RpcClient(settings(bad), "c") as client:
        with pytest.raises(NodeUnusable, match="invalid host name"):
            await client.wait_ready(5)
        assert not client.supervisor_alive
        assert isinstance(client.failure, NodeUnusable)


async def test_an_unexpected_error_is_logged_counted_and_survived(
    caplog: pytest.LogCaptureFixture,
) -> None:
    surprises = [RuntimeError("surprise")]

    async def preflight(client: RpcClient) -> None:
        if surprises:
            raise surprises.pop()

    recorder = Recorder()
    async with Node() as node:
        url = node.url.replace("ws://", "ws://alice:S3cret@")
        client = RpcClient(settings(url), "consensus", on_connect=preflight, observer=recorder)
        async with client:
            await client.wait_ready(5)
            assert await client.call("system_chain") == "Hostile"
            assert client.supervisor_alive
    (error,) = records(caplog, logging.ERROR)
    assert "consensus" in error
    assert "ws://***@127.0.0.1" in error
    assert "surprise" in error
    assert "S3cret" not in caplog.text
    assert [reason for _, reason in recorder.connect_failures] == ["internal"]


# -- a stuck connection is dropped ---------------------------------------------------------------


@pytest.mark.parametrize("misbehaviour", [trickle_a_frame, trickle_fragments])
async def test_a_message_that_never_ends_drops_the_connection(
    misbehaviour: Misbehaviour, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    changes = {"message_timeout": 0.5, "ping_interval": 0.2, "ping_timeout": 0.5}
    async with (
        Node(misbehaviour) as node,
        RpcClient(settings(node.url, **changes), "c", observer=recorder) as client,
    ):
        async with asyncio.timeout(10):  # the message would take 50 s
            with pytest.raises(ConnectionLost):
                await client.call("system_chain")
            await client.wait_ready()
            assert await client.call("system_chain") == "Hostile"
    assert node.connections == 2
    if misbehaviour is trickle_fragments:  # keepalive saw pongs all along
        assert recorder.drops == [(node.url, "stalled")]
        assert any("has been arriving for" in m for m in records(caplog, logging.WARNING))


async def test_keepalive_drops_a_node_that_stopped_answering_pings() -> None:
    changes = {"ping_interval": 0.2, "ping_timeout": 0.2, "close_timeout": 0.2}
    async with (
        Node(stop_reading) as node,
        RpcClient(settings(node.url, **changes), "c") as client,
    ):
        async with asyncio.timeout(10):
            with pytest.raises(ConnectionLost):
                await client.call("system_chain")
            await client.wait_ready()
            assert await client.call("system_chain") == "Hostile"


async def test_a_node_that_stops_reading_is_dropped() -> None:
    recorder = Recorder()
    changes = {"message_timeout": 0.5, "ping_interval": None, "request_timeout": 30.0}
    big = "x" * (1 << 19)  # under the node's 1 MiB limit
    async with (
        Node(stop_reading) as node,
        RpcClient(settings(node.url, **changes), "c", observer=recorder) as client,
    ):
        async with asyncio.timeout(10):
            await client.wait_ready()
            with pytest.raises(ConnectionLost):
                await client.call_many([("system_chain", [big])] * 64)
            await client.wait_ready()
            assert await client.call("system_chain") == "Hostile"
    assert recorder.drops == [(node.url, "stalled")]


async def test_timeouts_with_nothing_received_drop_the_connection() -> None:
    recorder = Recorder()
    changes = {"request_timeout": 0.2, "timeouts_to_drop": 3}
    async with (
        Node(silence) as node,
        RpcClient(settings(node.url, **changes), "c", observer=recorder) as client,
    ):
        for _ in range(3):
            with pytest.raises(RpcTimeout):
                await client.call("system_chain")
        await client.wait_ready(5)
        assert await client.call("system_chain") == "Hostile"
    assert node.connections == 2
    assert recorder.drops == [(node.url, "timeouts")]


# -- the preflight notices a lost connection at once -----------------------------------------------


@pytest.mark.parametrize(
    "misbehaviour", [send_instead("{"), answer_twice, abort], ids=["json", "twice", "drop"]
)
async def test_trouble_during_the_preflight_is_noticed_at_once(
    misbehaviour: Misbehaviour,
) -> None:
    # The preflight's calls wait 30 s for an answer; the reconnection must not.
    async with (
        Node(misbehaviour) as node,
        RpcClient(settings(node.url), "c", on_connect=ask_twice) as client,
    ):
        await client.wait_ready(5)
        assert await client.call("system_chain") == "Hostile"
    assert node.connections == 2


# -- fail over -----------------------------------------------------------------------------------


async def test_fail_over_moves_to_the_next_endpoint(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    async with Node() as first, Node() as second:
        shown = first.url.replace("ws://", "ws://***@")
        url = first.url.replace("ws://", "ws://bob:pw@")
        endpoints = (url, second.url)
        async with RpcClient(settings(*endpoints), "consensus", observer=recorder) as client:
            await client.wait_ready(5)
            assert client.endpoint == url
            client.fail_over("3 headers with a wrong hash")
            assert not client.ready  # at once: no call goes to the faulty node any more
            await until(lambda: client.endpoint == second.url)
            assert await client.call("system_chain") == "Hostile"
    assert recorder.drops == [(url, "fail over")]
    (line,) = [m for m in records(caplog, logging.WARNING) if "fail" in m]
    assert "consensus" in line
    assert shown in line
    assert "3 headers with a wrong hash" in line
    assert ":pw@" not in caplog.text


async def test_fail_over_with_one_endpoint_reconnects_after_a_backoff() -> None:
    async with Node() as node, RpcClient(settings(node.url), "c") as client:
        await client.wait_ready(5)
        client.fail_over("wrong answers")
        await client.wait_ready(5)
        assert await client.call("system_chain") == "Hostile"
        assert node.connections == 2


# -- what the operator reads ---------------------------------------------------------------------


async def test_wss_to_a_plain_server_says_so(caplog: pytest.LogCaptureFixture) -> None:
    async with Node() as node:
        url = node.url.replace("ws://", "wss://")
        async with RpcClient(settings(url), "c") as client:
            await until(lambda: "cannot connect" in caplog.text)
            with pytest.raises(ConnectionLost, match="does not speak TLS: use ws://"):
                await client.wait_ready(0.01)
    assert any(
        m.startswith(f"c: cannot connect to {url}: the server does not speak TLS: use ws://")
        for m in records(caplog, logging.WARNING)
    )


async def test_ws_to_a_tls_server_says_so(caplog: pytest.LogCaptureFixture) -> None:
    async with Node(tls=True) as node, RpcClient(settings(node.url), "c") as client:
        await until(lambda: "cannot connect" in caplog.text)
        with pytest.raises(ConnectionLost, match="the server speaks TLS: use wss://"):
            await client.wait_ready(0.01)
    assert any("the server speaks TLS: use wss://" in m for m in records(caplog, logging.WARNING))


async def test_an_error_without_id_is_logged_and_the_connection_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = '{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}'
    async with Node(send_before(error)) as node, RpcClient(settings(node.url), "c") as client:
        assert await client.call("system_chain") == "Hostile"
        await until(lambda: "not tied to any request" in caplog.text)
        assert await client.call("system_chain") == "Hostile"
        assert node.connections == 1
    assert "preflight" not in caplog.text


async def test_connect_failures_are_logged_with_the_next_attempt_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, chains=["consensus"])
    url = dead_url()
    client = RpcClient(
        settings(url, backoff_initial=0.1), "consensus", observer=metrics.rpc_observer("consensus")
    )
    async with client:
        with pytest.raises(ConnectionLost, match="connection refused"):
            await client.wait_ready(0.5)
    lines = [m for m in records(caplog, logging.WARNING) if "cannot connect" in m]
    pattern = rf"consensus: cannot connect to {re.escape(url)}: connection refused; "
    pattern += r"next attempt in \d+\.\d s"
    assert lines
    assert all(re.fullmatch(pattern, m) for m in lines), lines
    failures = registry.get_sample_value(
        "blocktimes_rpc_connect_failures_total", {"chain": "consensus", "reason": "refused"}
    )
    assert failures == len(lines)


async def test_a_node_that_drops_every_connection_is_not_hammered() -> None:
    async with (
        Node(close_on_open=True) as node,
        RpcClient(settings(node.url, backoff_initial=0.1, backoff_cap=0.4), "c"),
    ):
        await asyncio.sleep(1.0)
        # Delays of 0.05-0.1, 0.1-0.2, then 0.2-0.4 s: a handful of connections, not hundreds.
        assert 2 <= node.connections <= 10


@pytest.mark.parametrize(
    ("url", "error", "kind", "words", "permanent"),
    [
        ("ws://h:1", ConnectionRefusedError(111, "x"), "refused", "connection refused", False),
        ("ws://h:1", TimeoutError(), "timeout", "no connection within 10 s", False),
        ("ws://h:1", socket.gaierror(-2, "Name or service not known"), "dns", "resolve", False),
        ("ws://h:1", OSError(113, "No route to host"), "network", "No route to host", False),
        ("ws://127.0.0.1:1", ConnectionResetError(), "network", "was reset", False),
        ("ws://h:99999", ValueError("Port out of range 0-65535"), "invalid url", "Port", True),
        (
            "http://h",
            InvalidURI("http://u:pw@h", "scheme isn't ws or wss"),
            "invalid url",
            "",
            True,
        ),
        ("ws://a..b:1", UnicodeError("label empty or too long"), "invalid url", "host name", True),
        ("ws://h:1", KeyError("surprise"), "internal", "KeyError", False),
    ],
)
async def test_connect_failures_in_words(
    url: str, error: Exception, kind: str, words: str, permanent: bool
) -> None:
    failure = await explain(url, error, 10.0)
    assert (failure.kind, failure.permanent) == (kind, permanent)
    assert words in failure.detail
    assert failure.detail
    assert "pw" not in failure.detail
