"""The HTTP server: ``/metrics``, ``/healthz`` and ``/readyz``.

``/metrics`` serves the injected registry in whichever Prometheus format the scraper
asks for (OpenMetrics or the text format), with that format's content type.
``/healthz`` is liveness: 200 while ``alive()`` says the daemon's loops run, 503
otherwise, so a supervisor restarts a wedged process.  ``/readyz`` is readiness: 200
only while ``ready()`` says every chain is connected and followed, 503 before that
and whenever a chain is lost; the body is ``ready()``'s details as JSON.

The server is bounded, so that idle or slow clients cannot take the process's file
descriptors (which the writer and the RPC connections need) nor lock scrapers out:
at most ``max_connections`` connections are open at once, a connection accepted
beyond that is closed at once, and a connection that has not sent a complete request
head ``idle_timeout`` seconds after it opened or after its previous response is
closed.  aiohttp's keep-alive timer gives that last bound: it is armed when a
connection opens and after each response, and partial data does not re-arm it, so it
bounds the time to send a request head as well as the idle time between requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

__all__ = ["HttpServer"]

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], tuple[bool, Mapping[str, Any]]]

# A Prometheus pair, a dashboard and an operator's curl need a handful; the rest of the
# process (writer, RPC connections) needs the remaining descriptors of a 1,024 limit.
DEFAULT_MAX_CONNECTIONS = 64
# Above the usual 15 s scrape interval, so a scraper's kept-alive connection is reused.
DEFAULT_IDLE_TIMEOUT_S = 30.0


class HttpServer:
    """One listening socket serving the three endpoints; ``start`` then ``stop``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        alive: Callable[[], bool],
        ready: ReadyCheck,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> None:
        if max_connections < 1 or idle_timeout <= 0:
            raise ValueError("max_connections must be at least 1 and idle_timeout above 0")
        self._host = host
        self._port = port
        self._alive = alive
        self._ready = ready
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(registry))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        # No access log: a scrape every few seconds would drown the operator's log.
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, keepalive_timeout=idle_timeout
        )
        self._max_connections = max_connections
        self._listener: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._stopped = False

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound (host, port) while serving; the real port when 0 was asked for."""
        return self._address

    async def start(self) -> tuple[str, int]:
        """Listen; returns the bound address.  A stopped server does not start again."""
        if self._address is not None:
            return self._address
        if self._stopped:
            raise RuntimeError("this HTTP server was stopped; create a new one")
        await self._runner.setup()
        assert self._runner.server is not None
        cap = _ConnectionCap(self._runner.server, self._max_connections)
        try:
            self._listener = await asyncio.get_running_loop().create_server(
                cap, self._host, self._port
            )
        except OSError:
            await self._runner.cleanup()
            raise
        host, port = self._listener.sockets[0].getsockname()[:2]
        self._address = (str(host), int(port))
        log.info("serving /metrics, /healthz and /readyz on %s:%d", *self._address)
        return self._address

    async def stop(self) -> None:
        """Close the socket and open connections; safe to call more than once."""
        if self._address is None:
            return
        self._address = None
        self._stopped = True
        if self._listener is not None:
            self._listener.close()  # no new connections; cleanup closes the open ones
        await self._runner.cleanup()

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _healthz(self, request: web.Request) -> web.Response:
        try:
            alive = self._alive()
        except Exception:
            log.exception("the liveness check failed")
            alive = False
        if alive:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not alive\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        try:
            ok, details = self._ready()
        except Exception as exc:
            log.exception("the readiness check failed")
            ok, details = False, {"error": f"{type(exc).__name__}: {exc}"}
        return web.json_response({"ready": ok, "details": details}, status=200 if ok else 503)


class _ConnectionCap:
    """The protocol factory of the listening socket: counts the open connections and
    closes one accepted beyond ``limit`` before aiohttp sees it."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], limit: int) -> None:
        self._factory = factory
        self.limit = limit
        self.open = 0
        # Warned that the limit was reached; warned again only after the count fell to
        # half of it, so clients that keep the server full cannot flood the log.
        self._full = False

    def __call__(self) -> asyncio.Protocol:
        return _Counted(self)

    def admit(self) -> asyncio.Protocol | None:
        if self.open >= self.limit:
            if not self._full:
                self._full = True
                log.warning(
                    "%d HTTP connections are open, the most allowed; closing new ones until "
                    "some close",
                    self.limit,
                )
            return None
        self.open += 1
        return self._factory()

    def release(self) -> None:
        self.open -= 1
        if self.open <= self.limit // 2:
            self._full = False


class _Counted(asyncio.Protocol):
    """One accepted connection: aiohttp's protocol when admitted, closed otherwise."""

    __slots__ = ("_cap", "_inner")

    def __init__(self, cap: _ConnectionCap) -> None:
        self._cap = cap
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner = self._cap.admit()
        if self._inner is None:
            # A TCP transport, though uvloop's does not derive from asyncio.Transport.
            cast(asyncio.Transport, transport).abort()  # at once: nothing is owed
            return
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._cap.release()
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
