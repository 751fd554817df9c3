"""WebSocket JSON-RPC server of one simulated node, with injectable faults.

Like a Substrate node (jsonrpsee 0.24): separate messages run concurrently, the calls
of one batch run one after another, and the limits of :class:`RpcLimits` hold: at
most 64 messages per connection are in progress (the reader stops reading beyond
that, so TCP pushes back; no error is sent), at most 100 connections are open (the
next WebSocket upgrade is refused with HTTP 429 and jsonrpsee's text), and at most
1024 subscriptions per connection (error -32006).  Each subscription may owe a
lagging client at most ``subscription_buffer`` notifications; past that it is
dropped silently, as Substrate does.

Faults a node can show: answers that are late or errors, stalls (nothing answered or
sent), connections cut without a close frame, subscriptions forgotten silently or
delivered late in bursts, and outages (the port refuses connections for a while).
The ``devnet_*`` control methods are answered even during a stall, so that a test can
always switch faults off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import string
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from blocktimesd.core import jsonrpc
from blocktimesd.devnet.chain import Block
from blocktimesd.devnet.node import ALIASES, SUBSCRIPTIONS, Node
from blocktimesd.devnet.params import FaultParams, RpcLimits
from blocktimesd.errors import RpcError

__all__ = ["TOO_MANY_CONNECTIONS", "TOO_MANY_SUBSCRIPTIONS", "ChainServer"]

log = logging.getLogger(__name__)

# jsonrpsee's answers when a limit is reached: the body of its HTTP 429, and the
# error code of a subscription over the per-connection limit.
TOO_MANY_CONNECTIONS = "Too many connections. Please try again later."
TOO_MANY_SUBSCRIPTIONS = -32006
_UNSUBSCRIBE = {unsub: sub for sub, (_, unsub) in SUBSCRIPTIONS.items()}
_ID_CHARS = string.ascii_letters + string.digits
_BURST_FACTOR = 64


@dataclass(eq=False)
class _Connection:
    ws: ServerConnection
    # Messages in progress, up to RpcLimits.messages_per_connection: the reader waits
    # for a free slot before it reads the next message.
    inflight: asyncio.Semaphore
    subscriptions: dict[str, str] = field(default_factory=dict)  # id -> subscribe method
    pending: dict[str, int] = field(default_factory=dict)  # id -> notifications not yet sent
    # Bounded per subscription by ``pending``: a subscription that would exceed its
    # share is dropped instead of queued, so this queue never grows without limit.
    outbox: asyncio.Queue[tuple[str, bytes]] = field(default_factory=asyncio.Queue)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class ChainServer:
    """Serves one chain's :class:`Node` over WebSocket."""

    def __init__(
        self,
        node: Node,
        control: Callable[[str, Any], Any],
        fault_seed: int,
        limits: RpcLimits | None = None,
    ) -> None:
        self.node = node
        self.limits = limits or RpcLimits()
        self._control = control  # devnet_* methods, answered by the owner of both servers
        self._rng = random.Random(fault_seed)
        self._connections: set[_Connection] = set()
        self._server: Server | None = None
        self._address: tuple[str, int] | None = None  # where to listen again after an outage
        self._outage: asyncio.Task[None] | None = None
        self._healed = asyncio.Event()  # set by heal(): an outage ends now
        self.stalled_until = 0.0
        self.down_until = 0.0
        self.dropped_subscriptions = 0
        # Faults this server injected, by kind (devnet_info reports them).
        self.injected: Counter[str] = Counter()
        self._last_version: int | None = None
        self._last_finalized: Block | None = None

    @property
    def faults(self) -> FaultParams:
        return self.node.faults

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> str:
        self._server = await self._listen(host, port)
        sock = next(iter(self._server.sockets))
        bound_host, bound_port = sock.getsockname()[:2]
        self._address = (bound_host, bound_port)
        if ":" in bound_host:
            bound_host = f"[{bound_host}]"
        return f"ws://{bound_host}:{bound_port}"

    async def _listen(self, host: str, port: int) -> Server:
        return await serve(
            self._handle,
            host,
            port,
            process_request=self._admit,
            compression=None,
            max_size=16 * 1024 * 1024,
            ping_interval=None,
            server_header=None,
        )

    def _admit(self, ws: ServerConnection, request: Request) -> Response | None:
        """Refuse an upgrade over the connection limit, with jsonrpsee's answer."""
        if len(self._connections) < self.limits.max_connections:
            return None
        log.info("devnet: %s refuses a connection over the limit", self.node.chain)
        return ws.respond(HTTPStatus.TOO_MANY_REQUESTS, TOO_MANY_CONNECTIONS)

    async def close(self) -> None:
        if self._outage is not None:
            self._outage.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._outage
            self._outage = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def drop_connections(self) -> int:
        """Cut every connection without a closing handshake, like a crashed node."""
        count = 0
        for conn in list(self._connections):
            conn.ws.transport.abort()
            count += 1
        return count

    def drop_subscriptions(self) -> int:
        """Forget every subscription silently, as a node does with a lagging client."""
        count = 0
        for conn in self._connections:
            count += len(conn.subscriptions)
            conn.subscriptions.clear()
        return count

    def active_subscriptions(self) -> set[str]:
        return {sub for conn in self._connections for sub in conn.subscriptions}

    def stall(self, seconds: float) -> None:
        self.stalled_until = max(self.stalled_until, time.monotonic() + seconds)

    def is_stalled(self) -> bool:
        return time.monotonic() < self.stalled_until

    def outage(self, seconds: float) -> None:
        """Go down like a stopped node: cut every connection, refuse new ones (the port
        is closed) for ``seconds``, then listen again on the same address.  A second
        outage while down extends the first."""
        self.down_until = max(self.down_until, time.monotonic() + seconds)
        if self._outage is None or self._outage.done():
            self._outage = asyncio.create_task(self._go_down(), name="devnet-outage")

    def is_down(self) -> bool:
        return self._outage is not None and not self._outage.done()

    def heal(self) -> None:
        """End a stall or an outage in progress now."""
        self.stalled_until = 0.0
        self.down_until = 0.0
        self._healed.set()

    async def _go_down(self) -> None:
        server, self._server = self._server, None
        assert server is not None, "outage before start"
        assert self._address is not None
        log.info("devnet: %s endpoint down", self.node.chain)
        server.close(close_connections=False)
        self.drop_connections()
        await server.wait_closed()
        self._healed.clear()
        while (left := self.down_until - time.monotonic()) > 0:  # outage() may extend it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._healed.wait(), left)
        while self._server is None:
            try:
                self._server = await self._listen(*self._address)
            except OSError as exc:  # the port is not free yet: try again shortly
                log.warning("devnet: cannot listen again on %s: %s", self._address, exc)
                await asyncio.sleep(0.1)
        log.info("devnet: %s endpoint up again", self.node.chain)

    # -- notifications --------------------------------------------------------------------

    def publish_block(self, block: Block) -> None:
        self._notify("chain_subscribeAllHeads", orjson.dumps(block.header.to_json()))

    def publish_best(self, block: Block) -> None:
        self._notify("chain_subscribeNewHeads", orjson.dumps(block.header.to_json()))
        if block.spec_version != self._last_version:
            self._last_version = block.spec_version
            version = self.node.runtime_at(block).version_json()
            self._notify("state_subscribeRuntimeVersion", orjson.dumps(version))
        finalized = self.node.network.finalized(self.node.chain)
        if finalized is not self._last_finalized:
            self._last_finalized = finalized
            self._notify("chain_subscribeFinalizedHeads", orjson.dumps(finalized.header.to_json()))

    def _notify(self, subscribe_method: str, payload: bytes) -> None:
        if self.is_stalled():
            return
        method = SUBSCRIPTIONS[subscribe_method][0].encode()
        for conn in self._connections:
            for sub_id, kind in list(conn.subscriptions.items()):
                if kind == subscribe_method:
                    self._enqueue(conn, sub_id, method, payload)

    def _enqueue(self, conn: _Connection, sub_id: str, method: bytes, payload: bytes) -> None:
        owed = conn.pending.get(sub_id, 0)
        limit = self.faults.subscription_buffer
        # Owing ``limit`` notifications means lagging only if the socket is backed up too:
        # a burst of simulated blocks published at once is not the client's fault.  The
        # hard cap keeps the outbox bounded even then.
        backed_up = conn.ws.transport.get_write_buffer_size() > 0
        if (owed >= limit and backed_up) or owed >= limit * _BURST_FACTOR:
            log.info("dropping subscription %s of a lagging client", sub_id)
            conn.subscriptions.pop(sub_id, None)
            self.dropped_subscriptions += 1
            self.injected["laggingSubscribersDropped"] += 1
            return
        conn.pending[sub_id] = owed + 1
        message = (
            b'{"jsonrpc":"2.0","method":"'
            + method
            + b'","params":{"subscription":"'
            + sub_id.encode()
            + b'","result":'
            + payload
            + b"}}"
        )
        conn.outbox.put_nowait((sub_id, message))

    async def _sender(self, conn: _Connection) -> None:
        while True:
            batch = [await conn.outbox.get()]
            delay_ms = self.faults.notification_delay_ms
            if delay_ms > 0:
                # A lagging node: hold what is due, then send all that piled up at once.
                await asyncio.sleep(delay_ms / 1000)
                while not conn.outbox.empty():
                    batch.append(conn.outbox.get_nowait())
                self.injected["delayedNotifications"] += len(batch)
            for sub_id, message in batch:
                conn.pending[sub_id] -= 1
                if sub_id in conn.subscriptions:
                    await conn.ws.send(message, text=True)

    # -- requests ---------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        conn = _Connection(ws, asyncio.Semaphore(self.limits.messages_per_connection))
        self._connections.add(conn)
        sender = asyncio.create_task(self._sender(conn))
        try:
            async for message in ws:
                if self.is_stalled() and not _is_control(message):
                    continue  # a stalled node reads but never answers
                if self.faults.latency_ms <= 0 and self.faults.latency_jitter_ms <= 0:
                    await self._answer(conn, message, delay=False)
                    continue
                await conn.inflight.acquire()
                task = asyncio.create_task(self._answer(conn, message, delay=True))
                conn.tasks.add(task)
                task.add_done_callback(conn.tasks.discard)
        except ConnectionClosed:
            pass
        finally:
            self._connections.discard(conn)
            sender.cancel()
            for task in list(conn.tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _answer(self, conn: _Connection, message: str | bytes, delay: bool) -> None:
        try:
            calls, is_batch = jsonrpc.parse_incoming(message)
            replies: list[dict[str, Any]] = []
            after: list[tuple[str, str]] = []  # subscriptions to prime once answered
            for entry in calls:
                if delay:
                    await asyncio.sleep(self._latency())
                reply = self._reply(conn, entry, after)
                if reply is not None:
                    replies.append(reply)
            if not replies or (self.is_stalled() and not _is_control(message)):
                return
            body = orjson.dumps(replies if is_batch else replies[0])
            await conn.ws.send(body, text=True)
            for sub_id, method in after:
                self._prime(conn, sub_id, method)
        except ConnectionClosed:
            pass
        finally:
            if delay:
                conn.inflight.release()

    def _latency(self) -> float:
        f = self.faults
        jitter = self._rng.uniform(0, f.latency_jitter_ms) if f.latency_jitter_ms > 0 else 0.0
        return (f.latency_ms + jitter) / 1000

    def _reply(
        self, conn: _Connection, entry: jsonrpc.Call | jsonrpc.Invalid, after: list[tuple[str, str]]
    ) -> dict[str, Any] | None:
        if isinstance(entry, jsonrpc.Invalid):
            return jsonrpc.error(entry.id, entry.code, entry.message)
        try:
            value = self._dispatch(conn, entry, after)
        except RpcError as exc:
            return (
                None
                if entry.is_notification
                else jsonrpc.error(entry.id, exc.code, exc.message, exc.data)
            )
        except Exception:
            log.exception("devnet: %s failed", entry.method)
            return jsonrpc.error(entry.id, jsonrpc.INTERNAL_ERROR, "Internal error")
        return None if entry.is_notification else jsonrpc.result(entry.id, value)

    def _dispatch(self, conn: _Connection, call: jsonrpc.Call, after: list[tuple[str, str]]) -> Any:
        method = ALIASES.get(call.method, call.method)
        if method.startswith("devnet_"):
            return self._control(method, call.params)
        if self.faults.error_rate > 0 and self._rng.random() < self.faults.error_rate:
            self.injected["errors"] += 1
            raise RpcError(
                jsonrpc.INTERNAL_ERROR, "Internal error", "injected by devnet --error-rate"
            )
        if method in SUBSCRIPTIONS:
            limit = self.limits.max_subscriptions_per_connection
            if len(conn.subscriptions) >= limit:
                raise RpcError(
                    TOO_MANY_SUBSCRIPTIONS,
                    "Too many subscriptions on the connection",
                    f"Exceeded max limit of {limit}",
                )
            sub_id = "".join(self._rng.choices(_ID_CHARS, k=16))
            conn.subscriptions[sub_id] = method
            after.append((sub_id, method))
            return sub_id
        if method in _UNSUBSCRIBE:
            sub_id = jsonrpc_param0(call.params)
            return conn.subscriptions.pop(str(sub_id), None) is not None
        return self.node.call(method, call.params)

    def _prime(self, conn: _Connection, sub_id: str, method: str) -> None:
        """A new subscription starts with the current value, as Substrate's do."""
        node = self.node
        if method == "chain_subscribeFinalizedHeads":
            block = node.network.finalized(node.chain)
        else:
            block = node.store.best
        if method == "state_subscribeRuntimeVersion":
            payload = orjson.dumps(node.runtime_at(block).version_json())
        else:
            payload = orjson.dumps(block.header.to_json())
        self._enqueue(conn, sub_id, SUBSCRIPTIONS[method][0].encode(), payload)


def _is_control(message: str | bytes) -> bool:
    """Whether every call of a message is a ``devnet_*`` control method."""
    calls, _ = jsonrpc.parse_incoming(message)
    return bool(calls) and all(
        isinstance(c, jsonrpc.Call) and c.method.startswith("devnet_") for c in calls
    )


def jsonrpc_param0(params: list[Any] | dict[str, Any]) -> Any:
    if isinstance(params, dict):
        return next(iter(params.values()), None)
    return params[0] if params else None
