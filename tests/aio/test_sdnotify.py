"""sd_notify against a real NOTIFY_SOCKET: the notifier alone, then the daemon under it."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from blocktimesd.aio.app import App
from blocktimesd.aio.sdnotify import SystemdNotifier, supervise
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams
from tests.daemon import advance, config_for


class NotifySocket:
    """What systemd listens on: a datagram socket; ``messages`` are the datagrams so far."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.messages: list[list[str]] = []  # every datagram so far

    def drain(self) -> list[list[str]]:
        """The datagrams that arrived since the last call, each split into its lines."""
        new = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            new.append(data.decode().split("\n"))
        self.messages.extend(new)
        return new

    def lines(self) -> list[str]:
        return [line for message in self.drain() for line in message]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    # A short path: sun_path holds 108 bytes, and pytest's tmp_path can be long.
    path = tmp_path / "n.sock"
    if len(str(path)) > 100:
        pytest.skip(f"{path} is too long for a Unix socket")
    sock = NotifySocket(str(path))
    try:
        yield sock
    finally:
        sock.sock.close()


def test_unset_notify_socket_is_a_no_op() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert notifier.notify("READY=1") is False
    notifier.close()


def test_messages_reach_a_path_socket(notify_socket: NotifySocket) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": notify_socket.address})
    assert notifier.enabled
    assert notifier.notify("READY=1", "STATUS=following") is True
    assert notifier.notify("WATCHDOG=1") is True
    notifier.close()
    assert notify_socket.drain() == [["READY=1", "STATUS=following"], ["WATCHDOG=1"]]


def test_messages_reach_an_abstract_socket() -> None:
    sock = NotifySocket(f"@blocktimesd-test-{uuid.uuid4().hex}")
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": sock.address})
        assert notifier.notify("STOPPING=1")
        notifier.close()
        assert sock.drain() == [["STOPPING=1"]]
    finally:
        sock.sock.close()


def test_a_missing_socket_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.notify("READY=1") is False
    assert notifier.notify("READY=1") is False
    notifier.close()
    assert len([r for r in caplog.records if "cannot notify systemd" in r.message]) == 1


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}, 0.2),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    env: dict[str, str], interval: float | None
) -> None:
    assert SystemdNotifier(env).watchdog_interval == interval


async def test_supervise_pings_while_alive_and_announces_ready_once(
    notify_socket: NotifySocket,
) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "100000"})
    state = {"ready": False, "alive": True}
    task = asyncio.create_task(
        supervise(
            notifier,
            alive=lambda: state["alive"],
            ready=lambda: (state["ready"], {}),
            status=lambda ok, _: "ready" if ok else "starting",
        )
    )
    try:
        await asyncio.sleep(0.3)
        state["ready"] = True
        await asyncio.sleep(0.3)
        lines = notify_socket.lines()
        assert lines[0] == "STATUS=starting"
        assert lines.count("READY=1") == 1
        assert lines.index("STATUS=ready") < lines.index("READY=1")
        assert lines.count("WATCHDOG=1") >= 4
        state["alive"] = False  # a loop died: systemd must see the pings stop
        await asyncio.sleep(0.1)
        notify_socket.drain()
        await asyncio.sleep(0.3)
        assert notify_socket.lines() == []
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        notifier.close()


async def test_the_daemon_notifies_ready_watchdog_and_stopping(
    notify_socket: NotifySocket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    devnet = Devnet(ChainParams(seed=61, history=30))
    async with devnet:
        app = App(config_for(devnet, tmp_path / "data"), registry=CollectorRegistry())
        assert app.notifier.enabled
        await app.start()
        runner = asyncio.create_task(app.run())
        ready = False
        for _ in range(300):
            await advance(devnet, 0.05)
            if any("READY=1" in message for message in notify_socket.drain()):
                # Followers never stop following here: READY=1 was sent after both started.
                assert all(f.following for f in app.followers.values())
                ready = True
                break
        assert ready, f"no READY=1 in {notify_socket.messages}"
        await advance(devnet, 1.5)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    notify_socket.drain()
    messages = notify_socket.messages
    lines = [line for message in messages for line in message]
    before_ready = lines[: lines.index("READY=1")]
    assert any(line.startswith("STATUS=starting") for line in before_ready), lines
    assert lines.count("READY=1") == 1
    assert "STATUS=following every chain: consensus following, auto-evm following" in lines
    assert lines.count("WATCHDOG=1") >= 5, lines
    assert messages[-1] == ["STOPPING=1", "STATUS=shutting down"]
    assert "WATCHDOG=1" not in messages[-1]
