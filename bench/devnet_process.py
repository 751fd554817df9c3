"""A `blocktimesd devnet` in its own process, for benchmarks: the simulator must not
share an interpreter (or a core's worth of GIL) with what it is measuring."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator

# This interpreter, its path normalized: started as ``../.venv/bin/python``, every path of
# a child (sys.path, the bytecode cache's) would hold the "..", and its start-up measured
# 20-40 ms slower than by the same interpreter named plainly.
PYTHON = os.path.normpath(sys.executable)


@contextlib.asynccontextmanager
async def devnet_process(*flags: str) -> AsyncIterator[tuple[str, str]]:
    """Start the devnet on free ports; yield (consensus URL, auto-evm URL)."""
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "blocktimesd", "--log-level", "WARNING", "devnet",
        "--consensus-port", "0", "--domain-port", "0", *flags,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        consensus = (await proc.stdout.readline()).decode().split()[1]
        domain = (await proc.stdout.readline()).decode().split()[1]
        yield consensus, domain
    finally:
        proc.terminate()
        await proc.wait()
