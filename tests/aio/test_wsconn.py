"""The WebSocket connection hands each whole message to its consumer, in order, however
the node's frames arrive: many in one read, split across reads, fragmented, with
control frames between, and before the consumer is named.  The node is a real
WebSocket server on loopback that writes raw frames."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest
from websockets.asyncio.server import ServerConnection, serve

from blocktimesd.aio.wsconn import ConnectionSettings, open_connection

SETTINGS = ConnectionSettings(
    max_message_bytes=1 << 20,
    connect_timeout=5,
    ping_interval=None,
    ping_timeout=None,
    close_timeout=1,
)


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A server's frame (unmasked), its length in the shortest form."""
    head = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        head += bytes([len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([126]) + len(payload).to_bytes(2)
    else:
        head += bytes([127]) + len(payload).to_bytes(8)
    return head + payload


LONG = b"x" * 300
HUGE = b"y" * 70_000
# (raw bytes written at once, ...): whole messages, a ping, a fragmented message with a
# ping between its fragments, 2- and 8-byte lengths, and frames split across writes.
WRITES: Sequence[bytes] = (
    frame(1, b"one") + frame(2, b"two") + frame(9, b"") + frame(1, b"thr", fin=False),
    frame(9, b"p") + frame(0, b"ee") + frame(1, LONG) + frame(1, b"fi"),
    frame(1, HUGE)[:5],
    frame(1, HUGE)[5:] + frame(1, b"last")[:3],
    frame(1, b"last")[3:],
)
EXPECTED = [b"one", b"two", b"three", LONG, b"fi", HUGE, b"last"]


@pytest.fixture
async def raw_node() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A node that writes WRITES, with pauses between, once it receives ``go`` (or at
    once, when the event is set before the connection opens)."""
    at_once = asyncio.Event()

    async def handler(conn: ServerConnection) -> None:
        if not at_once.is_set():
            await conn.recv()
        # A client that closed the connection (the limit's test) gets no more.
        with contextlib.suppress(RuntimeError):
            for data in WRITES:
                conn.transport.write(data)
                await asyncio.sleep(0.02)
        await conn.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}", at_once


class Collected:
    """A consumer that keeps the messages; ``wait(n)`` until it has ``n``."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self._more = asyncio.Event()

    def __call__(self, message: bytes) -> None:
        self.got.append(message)
        self._more.set()

    async def wait(self, count: int) -> list[bytes]:
        async with asyncio.timeout(5):
            while len(self.got) < count:
                self._more.clear()
                await self._more.wait()
        return self.got


async def test_messages_arrive_whole_and_in_order(raw_node: tuple[str, asyncio.Event]) -> None:
    url, _ = raw_node
    ws = await open_connection(url, SETTINGS)
    try:
        got = Collected()
        ws.consume(got)
        await ws.send("go")
        assert await got.wait(len(EXPECTED)) == EXPECTED
        assert ws.receiving_since is None  # the last message ended
    finally:
        await ws.close()


async def test_messages_before_the_consumer_are_kept(raw_node: tuple[str, asyncio.Event]) -> None:
    url, at_once = raw_node
    at_once.set()
    ws = await open_connection(url, SETTINGS)
    try:
        await asyncio.sleep(0.3)  # everything has been written
        got = Collected()
        ws.consume(got)
        assert await got.wait(len(EXPECTED)) == EXPECTED
    finally:
        await ws.close()


async def test_a_message_over_the_limit_ends_the_connection(
    raw_node: tuple[str, asyncio.Event],
) -> None:
    url, _ = raw_node
    small = ConnectionSettings(1000, 5, None, None, 1)
    ws = await open_connection(url, small)
    got: list[bytes] = []
    ws.consume(got.append)
    await ws.send("go")
    async with asyncio.timeout(5):
        await ws.wait_closed()
    assert got == EXPECTED[:5]  # the 70,000 bytes are too big
    assert ws.protocol.close_sent is not None
    assert ws.protocol.close_sent.code == 1009  # message too big
