"""kill -9 at random moments, many times, then restart: still every block exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.parquet as pq
from websockets.asyncio.client import connect


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "blocktimesd", "--log-level", "WARNING", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


async def canonical_hashes(url: str, numbers: list[int]) -> list[str | None]:
    async with connect(url, max_size=None) as ws:
        await ws.send(
            orjson.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "chain_getBlockHash", "params": [numbers]}
            ).decode()
        )
        return list(orjson.loads(await ws.recv())["result"])  # fmt: skip


def rows(data: Path, chain: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for path in (data / "block_times" / f"chain={chain}").glob("date=*/*.parquet"):
        table = pq.read_table(path, columns=["block_number", "hash"])
        out.extend(zip(table["block_number"].to_pylist(), table["hash"].to_pylist(), strict=True))
    return sorted(out)


async def test_kill_9_and_restart_many_times(tmp_path: Path) -> None:
    rng = random.Random(7)
    devnet = start(["devnet", "--consensus-port", "0", "--domain-port", "0", "--speed", "40",
                    "--history", "80", "--fork-rate", "0.2", "--seed", "5"])  # fmt: skip
    try:
        assert devnet.stdout is not None
        consensus_url = devnet.stdout.readline().split()[1].decode()
        domain_url = devnet.stdout.readline().split()[1].decode()
        env = {
            "CONSENSUS_RPC_WS": consensus_url,
            "AUTO_EVM_RPC_WS": domain_url,
            "K_CONSENSUS": "8",
            "K_AUTO_EVM": "6",
            "MAX_ROWS_PER_FILE": "7",
            "METRICS_ADDR": "127.0.0.1:0",
            "DATA_DIR": str(tmp_path),
        }
        for _ in range(6):
            with start(["run"], env) as daemon:
                await asyncio.sleep(rng.uniform(1.5, 4.0))
                daemon.send_signal(signal.SIGKILL)
                daemon.wait(10)
        with start(["run"], env) as daemon:
            await asyncio.sleep(8.0)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(20) == 0
        for chain, url in (("consensus", consensus_url), ("auto-evm", domain_url)):
            found = rows(tmp_path, chain)
            numbers = [n for n, _ in found]
            assert len(numbers) > 20, chain
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), chain
            assert [h for _, h in found] == await canonical_hashes(url, numbers), chain
    finally:
        devnet.terminate()
        devnet.wait(10)
        if devnet.stdout is not None:
            devnet.stdout.close()
