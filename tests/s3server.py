"""A real S3 on loopback for the tests: moto's server in a process of its own, and a
fault proxy in front of it.

:func:`moto_server` starts ``python -m moto.server`` on a port the kernel picks and
yields its endpoint URL once it answers; clients in the test process (boto3, Arrow's
AWS SDK) and in child processes talk real HTTP to it.  :func:`aws_env` is the
environment a client needs to find it through the standard AWS chain.

:class:`FaultProxy` is an HTTP reverse proxy (aiohttp, on its own event loop in a
background thread) that forwards every request to an upstream unchanged (method,
path, query, headers and body, streamed both ways) and, when told to, answers a
random share of requests the way a struggling S3 does:

* ``slowdown``: ``503 SlowDown``, S3's throttling answer;
* ``internal``: ``500 InternalError``;
* ``reset``: the connection is reset before the request reaches the upstream;
* ``lost``: the request reaches the upstream and is carried out, then the connection
  is reset instead of answering (the client cannot tell it from ``reset``, and its
  retry finds the work already done).

``proxy.set_faults(slowdown=0.1, reset=0.05, seed=7)`` changes them at run time;
``proxy.script("lost")`` gives the next requests a fault each, chosen rather than
drawn; ``proxy.counts`` says how many of each were injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, TCPConnector, hdrs, web

__all__ = [
    "CREDENTIALS",
    "FAULT_KINDS",
    "FaultProxy",
    "aws_env",
    "moto_server",
]

# moto accepts any credentials; these are the ones its documentation uses.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
FAULT_KINDS = ("slowdown", "internal", "reset", "lost")

_START_TIMEOUT = 60.0
_RUNNING = re.compile(rb"Running on (http://127\.0\.0\.1:\d+)")


def aws_env(endpoint: str) -> dict[str, str]:
    """The environment a process needs to use the S3 at ``endpoint`` through the
    standard AWS chain (and never to ask an instance metadata service)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        **CREDENTIALS,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Run moto's S3 in a child process on a free loopback port; yield its endpoint."""
    with tempfile.TemporaryDirectory(prefix="moto-") as tmp:
        log_path = Path(tmp) / "moto.log"
        # Without the caller's AWS settings: the server is the endpoint, not a client of one.
        env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            yield _wait_until_serving(process, log_path)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_serving(process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + _START_TIMEOUT
    endpoint: str | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"moto's server exited with {process.returncode}:\n{log_path.read_text()}"
            )
        if endpoint is None and (found := _RUNNING.search(log_path.read_bytes())):
            endpoint = found.group(1).decode()
        if endpoint is not None and _answers(endpoint):
            return endpoint
        time.sleep(0.05)
    raise RuntimeError(
        f"moto's server did not answer within {_START_TIMEOUT:.0f} s:\n{log_path.read_text()}"
    )


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/moto-api/data.json", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# -- the fault proxy ---------------------------------------------------------------------

# Headers about one hop, not the request: aiohttp sets its own on each side.
_HOP_BY_HOP = frozenset(
    {
        hdrs.CONNECTION,
        hdrs.KEEP_ALIVE,
        hdrs.PROXY_AUTHENTICATE,
        hdrs.PROXY_AUTHORIZATION,
        hdrs.TE,
        hdrs.TRAILER,
        hdrs.TRANSFER_ENCODING,
        hdrs.UPGRADE,
        # The proxy answers ``100 Continue`` itself, then streams the body on.
        hdrs.EXPECT,
    }
)
# Headers aiohttp's client adds unless told not to; a request without them goes without.
_AUTO_HEADERS = (hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.USER_AGENT, hdrs.CONTENT_TYPE)
_CHUNK = 64 * 1024

_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
}


def _error_body(code: str, message: str, resource: str) -> bytes:
    request_id = uuid.uuid4().hex[:16].upper()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{resource}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()


def _reset(request: web.BaseRequest) -> None:
    """Close the client's connection with a TCP reset, as a crashed front end does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class FaultProxy:
    """A reverse proxy to ``upstream`` on a loopback port, with switchable faults.

    Use as a context manager (or :meth:`start` and :meth:`stop`); :attr:`endpoint` is
    the URL clients use instead of the upstream's.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.endpoint = ""
        self._lock = threading.Lock()  # guards the faults, the dice and the counts
        self._rates: dict[str, float] = dict.fromkeys(FAULT_KINDS, 0.0)
        self._rng = random.Random(0)
        self._counts: Counter[str] = Counter()
        self._script: deque[str | None] = deque()
        self._forwarded = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._session: ClientSession | None = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control, from any thread ---------------------------------------------------------

    def set_faults(
        self,
        *,
        slowdown: float = 0.0,
        internal: float = 0.0,
        reset: float = 0.0,
        lost: float = 0.0,
        seed: int | None = None,
    ) -> None:
        """Inject each fault into that share of requests from now on (all 0: none).

        The shares add up to at most 1; ``seed`` makes the choice of requests repeatable.
        """
        rates = {"slowdown": slowdown, "internal": internal, "reset": reset, "lost": lost}
        if any(rate < 0 for rate in rates.values()) or sum(rates.values()) > 1:
            raise ValueError(f"fault shares must be >= 0 and add up to <= 1: {rates}")
        with self._lock:
            self._rates = rates
            if seed is not None:
                self._rng = random.Random(seed)

    def script(self, *faults: str | None) -> None:
        """Give the next requests these faults, one each in order (None: forwarded
        as is), before the shares set by :meth:`set_faults` apply again."""
        unknown = [kind for kind in faults if kind is not None and kind not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; the kinds are {FAULT_KINDS}")
        with self._lock:
            self._script.extend(faults)

    def reset_counts(self) -> None:
        """Forget the faults injected, the requests forwarded and any script."""
        with self._lock:
            self._script.clear()
            self._counts.clear()
            self._forwarded = 0

    @property
    def counts(self) -> Mapping[str, int]:
        """How many of each fault were injected (every kind present, 0 if none)."""
        with self._lock:
            return {kind: self._counts[kind] for kind in FAULT_KINDS}

    @property
    def forwarded(self) -> int:
        """How many requests reached the upstream (``lost`` ones included)."""
        with self._lock:
            return self._forwarded

    def _draw(self) -> str | None:
        with self._lock:
            if self._script:
                kind = self._script.popleft()
                if kind is not None:
                    self._counts[kind] += 1
                return kind
            roll = self._rng.random()
            for kind in FAULT_KINDS:
                rate = self._rates[kind]
                if roll < rate:
                    self._counts[kind] += 1
                    return kind
                roll -= rate
            return None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Serve on a free loopback port in a background thread; return once listening."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="s3-fault-proxy", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise RuntimeError("the fault proxy did not start") from failure[0]

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        loop, stopped, thread = self._loop, self._stopped, self._thread
        if loop is None or stopped is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has already closed
            loop.call_soon_threadsafe(stopped.set)
        thread.join(timeout=30)
        self._loop = self._stopped = self._thread = None

    async def _serve(self, ready: threading.Event) -> None:
        self._stopped = asyncio.Event()
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        connector = TCPConnector(limit=0, force_close=False)
        # No total timeout: a large object may take long; a stalled upstream fails the test.
        timeout = ClientTimeout(total=None, sock_connect=10)
        async with ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session:
            self._session = session
            try:
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                host, port = runner.addresses[0][:2]
                self.endpoint = f"http://{host}:{port}"
                ready.set()
                await self._stopped.wait()
            finally:
                await runner.cleanup()

    # -- one request ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._draw()
        if fault in _ERRORS:
            status, code, message = _ERRORS[fault]
            await request.read()  # the client sends its whole body before reading
            return web.Response(
                status=status,
                body=_error_body(code, message, request.path),
                content_type="application/xml",
            )
        if fault == "reset":
            _reset(request)
            return web.Response(status=500)  # never sent: the connection is gone
        response = await self._forward(request, lost=fault == "lost")
        if fault == "lost":
            _reset(request)
        return response

    async def _forward(self, request: web.Request, *, lost: bool) -> web.StreamResponse:
        session = self._session
        assert session is not None, "a request before the proxy started"
        headers = [(k, v) for k, v in request.headers.items() if k not in _HOP_BY_HOP]
        present = {key.lower() for key, _ in headers}
        skip = [name for name in _AUTO_HEADERS if name.lower() not in present]
        body = _stream(request) if request.body_exists else None
        async with session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body,
            skip_auto_headers=skip,
            allow_redirects=False,
        ) as upstream:
            with self._lock:
                self._forwarded += 1
            if lost:
                await upstream.read()  # the upstream finishes its work; the answer is lost
                return web.Response(status=500)
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key not in _HOP_BY_HOP:
                    response.headers.add(key, value)
            if request.method == "HEAD":
                # The length of the body a GET would send: kept, with no body.
                await response.prepare(request)
                return response
            if hdrs.CONTENT_LENGTH not in upstream.headers:
                response.enable_chunked_encoding()
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(_CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response


async def _stream(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(_CHUNK):
        yield chunk
