"""The HTTP server: ``/metrics``, ``/healthz`` and ``/readyz``.

``/metrics`` serves the injected registry in whichever Prometheus format the scraper
asks for (OpenMetrics or the text format), with that format's content type.
``/healthz`` is liveness: 200 while ``alive()`` says the daemon's loops run, 503
otherwise, so a supervisor restarts a wedged process.  ``/readyz`` is readiness: 200
only while ``ready()`` says every chain is connected and followed, 503 before that
and whenever a chain is lost; the body is ``ready()``'s details as JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

__all__ = ["HttpServer"]

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], tuple[bool, Mapping[str, Any]]]


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
    ) -> None:
        self._host = host
        self._port = port
        self._alive = alive
        self._ready = ready
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(registry))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        # No access log: a scrape every few seconds would drown the operator's log.
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
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
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        host, port = self._runner.addresses[0][:2]
        self._address = (str(host), int(port))
        log.info("serving /metrics, /healthz and /readyz on %s:%d", *self._address)
        return self._address

    async def stop(self) -> None:
        """Close the socket and open connections; safe to call more than once."""
        if self._address is None:
            return
        self._address = None
        self._stopped = True
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
