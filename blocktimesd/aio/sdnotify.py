"""systemd's notification protocol (sd_notify), in pure Python, and the loop that uses it.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET``, a datagram socket (a path, or
``@name`` in the abstract namespace), and with ``WatchdogSec=`` also ``WATCHDOG_USEC``
(and ``WATCHDOG_PID``).  The daemon sends newline-separated ``KEY=VALUE`` lines:
``READY=1`` once every chain is followed, ``WATCHDOG=1`` at half the watchdog period
while its loops are alive (a wedged event loop or a dead follower stops the pings and
systemd restarts the unit), ``STATUS=...`` for ``systemctl status`` and ``STOPPING=1``
at shutdown.  Without ``NOTIFY_SOCKET`` every call is a no-op, so the same code runs
under Docker, a terminal or the tests.

A notification is never worth failing the daemon: sending is non-blocking and an error
is logged once, then the message is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SystemdNotifier", "supervise"]

log = logging.getLogger(__name__)

# How often readiness and status are looked at when no watchdog asks for more.
_POLL_S = 0.5


class SystemdNotifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``; does nothing when it is unset."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (``"READY=1"``, ...) as one datagram; True if it was sent."""
        if self.address is None:
            return False
        message = "\n".join(lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(message, self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %r: %s", self.address, exc)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _address(value: str) -> str | None:
    if not value:
        return None
    if value.startswith("@"):  # the abstract namespace: a leading NUL byte
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is neither a path nor @abstract; not notifying", value)
    return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, if the watchdog is meant for this process."""
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None


async def supervise(
    notifier: SystemdNotifier,
    *,
    alive: Callable[[], bool],
    ready: Callable[[], tuple[bool, Mapping[str, Any]]],
    status: Callable[[bool, Mapping[str, Any]], str],
) -> None:
    """Tell systemd about readiness, status and liveness until cancelled.

    ``READY=1`` is sent the first time ``ready()`` is true; ``STATUS=`` whenever
    ``status(...)`` changes; ``WATCHDOG=1`` every watchdog interval while ``alive()``.
    """
    interval = notifier.watchdog_interval
    tick = _POLL_S if interval is None else min(_POLL_S, interval)
    loop = asyncio.get_running_loop()
    next_ping = loop.time()
    announced = False
    last_status = ""
    pinging = True
    while True:
        try:
            ok, details = ready()
        except Exception:  # a broken check reads as not ready, as on /readyz
            log.exception("readiness check failed")
            ok, details = False, {}
        text = status(ok, details)
        lines = []
        if text != last_status:
            last_status = text
            lines.append(f"STATUS={text}")
        if ok and not announced:
            announced = True
            lines.append("READY=1")
        if interval is not None and loop.time() >= next_ping:
            if alive():
                lines.append("WATCHDOG=1")
                pinging = True
            elif pinging:
                pinging = False
                log.error("a loop of the daemon has ended; no more watchdog pings")
            next_ping = loop.time() + interval
        if lines:
            notifier.notify(*lines)
        await asyncio.sleep(tick)
