"""One WebSocket connection to a node: opened, watched for progress, and, when it cannot
be opened, a reason in an operator's words.

Keepalive pings prove that the node's WebSocket layer answers, not that its messages
arrive: control frames may pass between the fragments of a message (RFC 6455, 5.4), so
a node that trickles a message in fragments answers every ping while the message never
ends, and a node that has stopped reading blocks our pings behind the requests it does
not read.  :class:`WatchedConnection` therefore also knows since when a message has
been arriving without ending, and since when the node has not read what we send.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI
from websockets.frames import DATA_OPCODES, Frame, Opcode
from websockets.protocol import Event, State
from websockets.uri import parse_uri

__all__ = [
    "CONNECT_FAILURES",
    "ConnectFailure",
    "ConnectionSettings",
    "WatchedConnection",
    "explain",
    "open_connection",
]

# The kinds of connection failure: few and fixed, so that metrics can use them as labels.
CONNECT_FAILURES = (
    "refused",  # nothing listens there
    "dns",  # the host name does not resolve
    "timeout",  # no connection or no handshake within the connect timeout
    "tls",  # the TLS handshake failed, or the scheme does not match the server
    "handshake",  # the server did not accept the WebSocket upgrade
    "network",  # any other socket error
    "invalid url",  # the URL itself cannot work (retired)
    "preflight",  # connected, but the preflight failed
    "unusable",  # connected, but the node cannot serve us (wrong chain, pruned...)
    "lost",  # connected, but the connection ended during the preflight
    "internal",  # an error of ours (logged with its traceback)
)


class WatchedConnection(ClientConnection):
    """A client connection that knows how long it has gone without progress, and hands
    each message to its consumer as it arrives.

    ``receiving_since`` is when the bytes of a message still unfinished began to arrive
    (None between messages); ``blocked_since`` is when the transport's write buffer
    went above its high-water mark and stayed there (None while the node reads).

    Messages are not read with ``recv()``: :meth:`consume` names the callable that
    takes each whole message (its bytes, text or binary) inside the transport's
    callback, with no task between the socket and the caller waiting for the answer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.receiving_since: float | None = None
        self.blocked_since: float | None = None
        self._in_message = False  # a data frame without FIN came; its message goes on
        self._completed = False  # the data just received completed an event
        self._fragments: list[bytes] = []  # of the message still arriving
        self._consumer: Callable[[bytes], None] | None = None
        # Messages that came before the consumer: reading pauses at the first one, so
        # this holds at most what one read of the socket brought.
        self._early: deque[bytes] = deque()

    def consume(self, consumer: Callable[[bytes], None]) -> None:
        """Hand every message to ``consumer`` from now on, those that came before first."""
        self._consumer = consumer
        early = self._early
        if not early:
            return
        while early and self._consumer is consumer:
            consumer(early.popleft())
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self._completed = False
        super().data_received(data)
        if self._completed and not self._in_message:
            self.receiving_since = None
        elif self.receiving_since is None:
            self.receiving_since = self.loop.time()

    def process_event(self, event: Event) -> None:
        self._completed = True
        if type(event) is Frame and event.opcode in DATA_OPCODES:
            self._in_message = not event.fin
            if event.opcode is not Opcode.CONT:
                self._fragments.clear()  # the protocol checks that none is unfinished
            if not event.fin:
                self._fragments.append(bytes(event.data))
                return
            if self._fragments:
                self._fragments.append(bytes(event.data))
                message = b"".join(self._fragments)
                self._fragments.clear()
            else:
                message = bytes(event.data)  # the same object when it is bytes already
            consumer = self._consumer
            if consumer is not None:
                consumer(message)
            else:
                if not self._early and not self.transport.is_closing():
                    self.transport.pause_reading()
                self._early.append(message)
            return
        super().process_event(event)

    def send_now(self, message: bytes) -> bool:
        """Write one text message at once, if the connection is open and nothing holds
        it (a full write buffer, a fragmented send); False if it must go through
        ``send()``.  The common case, without ``send()``'s coroutine and context."""
        if (
            self.protocol.state is not State.OPEN
            or self.paused
            or self.send_in_progress is not None
            or self.transport.is_closing()
        ):
            return False
        self.protocol.send_text(message)
        try:
            self.send_data()
        except Exception as exc:
            # As ``send()`` would: the connection ends, and what it carries fails.
            self.set_connection_exc(exc)
            self.transport.abort()
        return True

    def pause_writing(self) -> None:
        super().pause_writing()
        self.blocked_since = self.loop.time()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.blocked_since = None

    def stalled(self, limit: float) -> str | None:
        """Why the connection is stuck (no progress for ``limit`` seconds), or None."""
        now = self.loop.time()
        if self.receiving_since is not None and now - self.receiving_since > limit:
            waited = now - self.receiving_since
            return f"a message has been arriving for {waited:.1f} s without ending"
        if self.blocked_since is not None and now - self.blocked_since > limit:
            waited = now - self.blocked_since
            return f"the node has not read what we sent for {waited:.1f} s"
        return None


_PROBE_TIMEOUT = 5.0  # for the second question about the scheme; the first one failed


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    max_message_bytes: int
    connect_timeout: float
    ping_interval: float | None
    ping_timeout: float | None
    close_timeout: float


async def open_connection(url: str, settings: ConnectionSettings) -> WatchedConnection:
    ws = await connect(
        url,
        max_size=settings.max_message_bytes,
        open_timeout=settings.connect_timeout,
        compression=None,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        close_timeout=settings.close_timeout,
        create_connection=WatchedConnection,
    )
    assert isinstance(ws, WatchedConnection)
    return ws


@dataclass(frozen=True, slots=True)
class ConnectFailure:
    """Why a connection could not be opened: ``kind`` is one of
    :data:`CONNECT_FAILURES`; ``detail`` never contains the URL (which may carry a
    credential); ``permanent`` when no later attempt can succeed."""

    kind: str
    detail: str
    permanent: bool = False
    probe: bool = False  # the scheme may not match the server: worth asking it


async def explain(url: str, exc: Exception, timeout: float) -> ConnectFailure:
    """Why ``connect(url)`` raised ``exc``.  When the scheme may not match the server
    (``ws://`` to a TLS server, ``wss://`` to a plain one), ask the server once more,
    the other way, within ``timeout`` seconds, to say so for sure."""
    secure = url[:4].lower() == "wss:"
    failure = _classify(exc, secure, timeout)
    if not failure.probe:
        return failure
    timeout = min(timeout, _PROBE_TIMEOUT)
    try:
        uri = parse_uri(url)
        if secure and await _speaks_plain_http(uri.host, uri.port, timeout):
            return ConnectFailure("tls", "the server does not speak TLS: use ws://")
        if not secure and await _speaks_tls(uri.host, uri.port, timeout):
            return ConnectFailure("tls", "the server speaks TLS: use wss://")
    except (OSError, TimeoutError, ValueError, InvalidURI):
        pass  # the probe proves nothing; the first reason stands
    return failure


def _classify(exc: Exception, secure: bool, timeout: float) -> ConnectFailure:
    if isinstance(exc, InvalidURI):
        return ConnectFailure("invalid url", f"invalid URL: {exc.msg}", permanent=True)
    if isinstance(exc, UnicodeError):  # IDNA: a label empty or longer than 63 characters
        return ConnectFailure("invalid url", f"invalid host name ({_cause(exc)})", permanent=True)
    if isinstance(exc, ValueError):  # a port out of range, an unclosed IPv6 bracket
        return ConnectFailure("invalid url", f"invalid URL ({exc})", permanent=True)
    if isinstance(exc, TimeoutError):
        return ConnectFailure("timeout", f"no connection within {timeout:g} s")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailure("refused", "connection refused")
    if isinstance(exc, socket.gaierror):
        return ConnectFailure("dns", f"cannot resolve the host name ({exc.strerror or exc})")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectFailure("tls", f"TLS certificate refused: {exc.verify_message or exc}")
    reset = isinstance(exc, ConnectionResetError | ConnectionAbortedError | EOFError)
    if secure and (reset or isinstance(exc, ssl.SSLError)):
        reason = getattr(exc, "reason", None) or "the connection was reset"
        return ConnectFailure("tls", f"TLS handshake failed ({reason})", probe=True)
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        detail = f"the server answered HTTP {status}, not a WebSocket"
        return ConnectFailure("handshake", detail, probe=status == 400)
    if isinstance(exc, InvalidMessage):
        return ConnectFailure("handshake", f"no valid HTTP answer ({_cause(exc)})", probe=True)
    if isinstance(exc, InvalidHandshake):
        return ConnectFailure("handshake", f"WebSocket handshake failed ({type(exc).__name__})")
    if reset:
        return ConnectFailure("network", "the connection was reset", probe=True)
    if isinstance(exc, OSError):
        return ConnectFailure("network", exc.strerror or str(exc) or type(exc).__name__)
    return ConnectFailure("internal", f"{type(exc).__name__}: {exc}")


def _cause(exc: BaseException) -> str:
    """The innermost reason, in words: ``str`` of the deepest cause that has any."""
    text = str(exc) or type(exc).__name__
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        text = str(seen) or text
        seen = seen.__cause__ or seen.__context__
    return text


async def _speaks_tls(host: str, port: int, timeout: float) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only whether TLS is spoken, not by whom
    async with asyncio.timeout(timeout):
        try:
            _, writer = await asyncio.open_connection(host, port, ssl=context)
        except ssl.SSLError:
            return False
    writer.transport.abort()
    return True


async def _speaks_plain_http(host: str, port: int, timeout: float) -> bool:
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            return (await reader.read(5)) == b"HTTP/"
        finally:
            writer.transport.abort()
