"""The systemd unit: systemd's own checks, its settings, and the daemon under its W^X rule."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocktimesd.config.load import load_config
from blocktimesd.config.model import Config
from tests.prometheus import free_port

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "blocktimesd.service"
ENV_EXAMPLE = ROOT / "systemd" / "blocktimesd.env.example"
WDX = Path(__file__).with_name("wdx.py")
# The most exposure `systemd-analyze security` may find (0 is best, 10 worst; "OK" < 5).
MAX_EXPOSURE = 2.0


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (Debian: apt-get install systemd)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run this test")
        pytest.skip(reason)
    return path


def directives(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file, every value of a key in order."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "": 1}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


def blocktimesd_executable() -> str:
    path = Path(sys.executable).with_name("blocktimesd")
    assert path.exists(), f"{path}: install the project (pip install -e .)"
    return str(path)


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's blocktimesd (verify needs it)."""
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/blocktimesd run\n" in text
    copy = tmp_path / "blocktimesd.service"
    copy.write_text(text.replace("/usr/local/bin/blocktimesd", blocktimesd_executable()))
    return copy


def test_systemd_analyze_verify(unit_copy: Path) -> None:
    verify = subprocess.run(
        [tool("systemd-analyze"), "verify", str(unit_copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    # Only complaints about this unit count; the host's own units are not ours to judge.
    ours = [line for line in verify.stderr.splitlines() if "blocktimesd" in line]
    assert ours == []


def test_security_exposure_is_ok(capsys: pytest.CaptureFixture[str]) -> None:
    result = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    score, rating = float(match[1]), match[2]
    with capsys.disabled():
        print(f"\nsystemd-analyze security: exposure {score} {rating}")
    assert score <= MAX_EXPOSURE, result.stdout
    assert rating in {"OK", "SAFE", "PERFECT"}


def test_unit_settings() -> None:
    unit = directives(UNIT.read_text())
    for key, value in {
        "Type": "notify",
        "NotifyAccess": "main",
        "Restart": "on-failure",
        "DynamicUser": "yes",
        "StateDirectory": "blocktimesd",
        "EnvironmentFile": "-/etc/blocktimesd/blocktimesd.env",
        "ExecStart": "/usr/local/bin/blocktimesd run",
        "UMask": "0077",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "SystemCallArchitectures": "native",
    }.items():
        assert unit.get(key) == [value], key
    assert "DATA_DIR=/var/lib/blocktimesd" in unit["Environment"]
    assert unit["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    # systemd's SIGKILL must come after the daemon's own shutdown deadline.
    assert seconds(unit["TimeoutStopSec"][0]) > Config(chains=()).shutdown_deadline_s + 5
    # The daemon pings at half the period; a period too short would flap on a busy host.
    assert seconds(unit["WatchdogSec"][0]) >= 10


def test_env_example_names_only_settings_the_daemon_reads(tmp_path: Path) -> None:
    documented = set(re.findall(r"`([A-Z][A-Z_]+)`", (ROOT / "docs/runbook/config.md").read_text()))
    env: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            env[match[1]] = match[2]
    assert set(env) <= documented, set(env) - documented
    assert {"CONSENSUS_RPC_WS", "AUTO_EVM_RPC_WS"} <= set(env)
    # Uncommented, every example is a valid value.
    config = load_config(None, {**env, "DATA_DIR": str(tmp_path)}, {})
    assert len(config.chains) == 2


# -- the daemon under MemoryDenyWriteExecute= and Type=notify -------------------------------


def test_the_filter_denies_writable_executable_memory() -> None:
    code = (
        "import ctypes, mmap\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "    print('mmap W+X allowed')\n"
        "except PermissionError:\n"
        "    print('mmap W+X denied')\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.mmap.restype = ctypes.c_void_p\n"
        "libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,"
        " ctypes.c_int, ctypes.c_long]\n"
        "page = libc.mmap(None, 4096, 3, 0x22, -1, 0)\n"
        "libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]\n"
        "print('mprotect X', libc.mprotect(page, 4096, 5), ctypes.get_errno())\n"
    )
    out = subprocess.run(
        [sys.executable, str(WDX), sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == ["mmap W+X denied", "mprotect X -1 1"]


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_daemon_runs_under_write_xor_execute_and_notifies(tmp_path: Path) -> None:
    """The installed command, as systemd would run it: W^X seccomp filter, NOTIFY_SOCKET."""
    notify_path = tmp_path / "n.sock"
    if len(str(notify_path)) > 100:
        pytest.skip(f"{notify_path} is too long for a Unix socket")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.5)
    devnet_args = [sys.executable, "-m", "blocktimesd", "--log-level", "WARNING", "devnet",
                   "--consensus-port", "0", "--domain-port", "0", "--speed", "20",
                   "--history", "40", "--seed", "9"]  # fmt: skip
    lines: list[str] = []
    try:
        with process(devnet_args, {}) as devnet:
            assert devnet.stdout is not None
            consensus = devnet.stdout.readline().split()[1].decode()
            domain = devnet.stdout.readline().split()[1].decode()
            port = free_port()  # after the devnet's own ports 0 are taken: never one of them
            env = {
                "CONSENSUS_RPC_WS": consensus,
                "AUTO_EVM_RPC_WS": domain,
                "K_CONSENSUS": "8",
                "K_AUTO_EVM": "6",
                "DATA_DIR": str(tmp_path / "data"),
                "METRICS_ADDR": f"127.0.0.1:{port}",
                "NOTIFY_SOCKET": str(notify_path),
                "WATCHDOG_USEC": "1000000",
            }
            daemon_args = [sys.executable, str(WDX), blocktimesd_executable(), "run"]
            with process(daemon_args, env) as daemon:
                deadline = time.monotonic() + 60
                while "READY=1" not in lines and time.monotonic() < deadline:
                    if daemon.poll() is not None:
                        assert daemon.stdout is not None
                        said = daemon.stdout.read().decode(errors="replace")[-3000:]
                        pytest.fail(f"the daemon exited under the filter:\n{said}")
                    with contextlib.suppress(TimeoutError):
                        lines.extend(notify.recv(4096).decode().split("\n"))
                assert "READY=1" in lines, lines
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                    assert r.status == 200
                while lines.count("WATCHDOG=1") < 2 and time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        lines.extend(notify.recv(4096).decode().split("\n"))
                daemon.send_signal(signal.SIGTERM)
                assert daemon.wait(30) == 0
                assert daemon.stdout is not None
                output = daemon.stdout.read().decode(errors="replace")
            with contextlib.suppress(TimeoutError):
                while True:
                    lines.extend(notify.recv(4096).decode().split("\n"))
    finally:
        notify.close()
    assert lines.count("WATCHDOG=1") >= 2, lines
    assert "STOPPING=1" in lines, lines
    assert "Operation not permitted" not in output, output
