"""Fixtures: chopsticks, a real Substrate runtime, started offline from a raw genesis.

Chopsticks (``@acala-network/chopsticks``) runs the Rococo Asset Hub runtime (aura,
12 s slots) from the raw chain spec shipped in ``@substrate/connect-known-chains``;
both are pinned in ``package.json``/``package-lock.json`` here.  ``npm ci`` runs once
into ``tests/chopsticks/node_modules``.  Without Node.js/npm the tests are skipped,
except in CI, where they fail.

Offline operation (checked with strace and inside a network namespace):

* ``--genesis FILE`` replaces the upstream endpoint: no ``--endpoint``, no network.
* ``--port 0`` lets the OS choose a free port; chopsticks announces it in its log
  (``RPC listening on http://H:P and ws://H:P``), which is parsed here.  Given a busy
  fixed port chopsticks silently moves to the next one, so the log is read either way.
* no ``--db``: blocks stay in memory (the default, 500 of them), and the ``sqlite3``
  native module, whose install script would download a prebuilt binary, is not needed:
  ``npm ci --ignore-scripts``.
* the process runs in a temporary directory (chopsticks loads ``.env`` from its working
  directory) with ``PORT`` removed from its environment (it would override ``--port``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import orjson
import pytest
from websockets.sync.client import connect

HERE = Path(__file__).parent
MODULES = HERE / "node_modules"
CHOPSTICKS = MODULES / "@acala-network" / "chopsticks" / "chopsticks.cjs"
SPEC_MODULE = (
    MODULES
    / "@substrate"
    / "connect-known-chains"
    / "dist"
    / "esm"
    / "specs"
    / "rococo_v2_2_asset_hub.js"
)
CHAIN = "asset-hub-rococo"
START_TIMEOUT = 60.0
LISTENING = re.compile(r"RPC listening on .* ws://(\S+)")

# Prints the chain spec string the module exports (it is a JS template literal).
EXTRACT = "const { chainSpec } = await import(process.argv[1]); process.stdout.write(chainSpec);"


def _node_modules() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("Node.js and npm are required in CI for the chopsticks tests")
        pytest.skip("Node.js/npm not installed: the chopsticks tests need them")
    if not (CHOPSTICKS.is_file() and SPEC_MODULE.is_file()):
        subprocess.run(
            [
                "npm",
                "ci",
                "--ignore-scripts",
                "--prefer-offline",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ],
            cwd=HERE,
            check=True,
            timeout=600,
        )
    return MODULES


@pytest.fixture(scope="session")
def chopsticks_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Rococo Asset Hub raw chain spec, extracted from the npm package to a file."""
    _node_modules()
    out = subprocess.run(
        ["node", "--input-type=module", "-e", EXTRACT, SPEC_MODULE.as_uri()],
        cwd=HERE,
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    spec = orjson.loads(out)
    assert spec["id"] == CHAIN
    assert "raw" in spec["genesis"]
    path = tmp_path_factory.mktemp("chopsticks-spec") / "rococo_v2_2_asset_hub.json"
    path.write_bytes(out)
    return path


def _call(url: str, method: str, *params: object) -> object:
    with connect(url, proxy=None, open_timeout=10, max_size=None) as ws:
        request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        ws.send(orjson.dumps(request).decode())
        reply = orjson.loads(ws.recv(timeout=10))
    assert reply.get("id") == 1, reply
    assert "error" not in reply, reply
    return reply["result"]


@contextmanager
def running_chopsticks(spec: Path, workdir: Path) -> Iterator[str]:
    """Starts chopsticks on a free port, yields its ws:// URL, and stops it."""
    log_path = workdir / "chopsticks.log"
    env = {k: v for k, v in os.environ.items() if k != "PORT"}
    if env.get("LOG_LEVEL") not in ("debug", "trace"):
        env["LOG_LEVEL"] = "info"  # the listening line is logged at info
    argv = [
        "node",
        str(CHOPSTICKS),
        "--genesis",
        str(spec),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ]
    started = time.monotonic()
    ready = threading.Event()
    found: list[str] = []

    with (
        open(log_path, "wb") as log,
        subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole
        ) as proc,
    ):
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:  # keeps draining the pipe, so chopsticks never blocks on it
            for line in stdout:
                log.write(line)
                log.flush()
                if not found and (m := LISTENING.search(line.decode(errors="replace"))):
                    found.append(m.group(1))
                    ready.set()
            ready.set()  # end of output: the process is gone

        reader = threading.Thread(target=pump, name="chopsticks-log", daemon=True)
        reader.start()
        try:
            if not ready.wait(START_TIMEOUT) or not found:
                if ready.is_set():  # its output ended: it is exiting
                    with suppress(subprocess.TimeoutExpired):
                        proc.wait(10)
                pytest.fail(
                    f"chopsticks did not announce its address within {START_TIMEOUT:.0f} s "
                    f"(exit code {proc.returncode}); log {log_path}:\n"
                    + log_path.read_text(errors="replace")[-3000:]
                )
            url = f"ws://{found[0]}"
            assert _call(url, "system_chain") == CHAIN
            print(f"chopsticks ready at {url} in {time.monotonic() - started:.2f} s")
            yield url
        finally:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            reader.join(10)


@pytest.fixture(scope="session")
def chopsticks_url(
    chopsticks_spec: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The ws:// URL of a chopsticks node shared by the session (do not poison it)."""
    with running_chopsticks(chopsticks_spec, tmp_path_factory.mktemp("chopsticks")) as url:
        yield url


@pytest.fixture
def private_chopsticks_url(chopsticks_spec: Path, tmp_path: Path) -> Iterator[str]:
    """A chopsticks node of its own, for tests that change what others would read."""
    with running_chopsticks(chopsticks_spec, tmp_path) as url:
        yield url
