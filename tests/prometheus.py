"""A real Prometheus server for tests (Debian package ``prometheus``), on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

__all__ = ["PROMETHEUS_CONFIG", "free_port", "query", "running_prometheus"]

PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: blocktimesd
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: ["{target}"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def running_prometheus(binary: str, config: Path, workdir: Path) -> AsyncIterator[str]:
    """Run Prometheus with ``config``; yield its API base URL; print its log on failure."""
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    except AssertionError:
        print(log.read_text(errors="replace")[-4000:])
        raise
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def query(session: aiohttp.ClientSession, api: str, promql: str) -> dict[str, float]:
    """The instant vector of ``promql``, keyed by its chain label."""
    async with session.get(f"{api}/api/v1/query", params={"query": promql}) as resp:
        if resp.status != 200:
            return {}
        body = await resp.json()
    return {
        series["metric"].get("chain", ""): float(series["value"][1])
        for series in body["data"]["result"]
    }
