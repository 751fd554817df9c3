"""A request whose send fails as its connection ends: one error, and none left unseen."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest
from websockets.exceptions import ConnectionClosed

from blocktimesd.aio.rpc import NullRpcObserver
from blocktimesd.aio.rpc_calls import Requests
from blocktimesd.aio.rpc_connection import RpcConnection
from blocktimesd.errors import ConnectionLost


class _Transport:
    def abort(self) -> None:
        pass


class EndingSocket:
    """A socket whose connection ends during the send: what it carries fails (the
    request just registered among it), then the send raises."""

    def __init__(self) -> None:
        self.transport = _Transport()
        self.conn: RpcConnection | None = None

    def send_now(self, body: bytes) -> bool:
        assert self.conn is not None
        self.conn.end("connection lost", None)
        return False

    async def send(self, body: bytes, text: bool) -> None:
        raise ConnectionClosed(None, None)


async def test_a_send_that_fails_as_the_connection_ends_leaves_no_error_unseen() -> None:
    loop = asyncio.get_running_loop()
    unseen: list[str] = []
    loop.set_exception_handler(lambda _, context: unseen.append(context["message"]))
    sock = EndingSocket()
    conn = RpcConnection(sock, "ws://node", "ws://node", "consensus")  # type: ignore[arg-type]
    sock.conn = conn

    async def connection() -> RpcConnection:
        return conn

    requests = Requests(
        "consensus", connection, NullRpcObserver(), observed=False, max_inflight=4,
        requests_per_second=0, request_timeout=5, timeouts_to_drop=3, clock=time.monotonic,
    )  # fmt: skip
    with pytest.raises(ConnectionLost, match="closed"):
        await requests.post([("chain_getBlockHash", [1])], None, None)
    await asyncio.sleep(0)
    gc.collect()  # a future's unseen error is reported when the future is collected
    assert unseen == []
    assert conn.pending == {}
