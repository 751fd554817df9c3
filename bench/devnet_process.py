"""A `blocktimesd devnet` in its own process, for benchmarks: the simulator must not
share an interpreter (or a core's worth of GIL) with what it is measuring."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

# This interpreter, its path normalized: started as ``../.venv/bin/python``, every path of
# a child (sys.path, the bytecode cache's) would hold the "..", and its start-up measured
# 20-40 ms slower than by the same interpreter named plainly.
PYTHON = os.path.normpath(sys.executable)

_PIDS: dict[str, int] = {}  # the consensus URL of each devnet running -> its process id


def devnet_cpu_seconds(url: str) -> float:
    """The CPU time (user and system) used so far by the devnet serving ``url``, from
    ``/proc`` (Linux; in clock ticks, 10 ms)."""
    fields = Path(f"/proc/{_PIDS[url]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def devnet_process(*flags: str) -> AsyncIterator[tuple[str, str]]:
    """Start the devnet on free ports; yield (consensus URL, auto-evm URL)."""
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "blocktimesd", "--log-level", "WARNING", "devnet",
        "--consensus-port", "0", "--domain-port", "0", *flags,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    consensus = ""
    try:
        assert proc.stdout is not None
        consensus = (await proc.stdout.readline()).decode().split()[1]
        domain = (await proc.stdout.readline()).decode().split()[1]
        _PIDS[consensus] = proc.pid
        yield consensus, domain
    finally:
        _PIDS.pop(consensus, None)
        proc.terminate()
        await proc.wait()
