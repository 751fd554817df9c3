"""Other Substrate client libraries, unmodified, read the devnet and agree with it.

The peers of the benchmark bench/peers/run.py (the same code, in bench/peers/) fetch
the header and ``Timestamp.Now`` of every block of both chains, across a runtime
upgrade, and must see what the devnet serves:

- dedot 1.3.0 and polkadot-api 2.2.2 (npm, pinned in tests/js/package.json), which
  refuse a node whose metadata lacks ``System.Version`` (dedot) or whose ``:code`` cannot
  be hashed with ``state_getStorageHash`` (polkadot-api);
- async-substrate-interface 2.2.1 and substrate-interface 1.8.1 (PyPI), which are not
  the project's dependencies: they run from the virtual environments that
  ``python bench/peers/run.py`` makes under bench/peers/.venv/, and these tests are
  skipped without them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.chain import Block
from blocktimesd.devnet.params import ChainParams

from .conftest import JS

PEERS = Path(__file__).parents[2] / "bench" / "peers"
UPGRADE_AT = 20
CHAINS = ["consensus", "auto-evm"]


@pytest.fixture
async def devnet() -> AsyncIterator[Devnet]:
    params = ChainParams(seed=8, history=32, upgrade_at=UPGRADE_AT, fork_rate=0.1)
    net = Devnet(params, speed=0.001)  # a nearly frozen clock: the chains stay put
    async with net:
        yield net


def expected(devnet: Devnet, chain: str) -> list[list[Any]]:
    store = devnet.network.consensus if chain == "consensus" else devnet.network.domain
    blocks: list[Block] = store.canonical[1:]
    assert len({b.spec_version for b in blocks}) == 2, "the blocks span the runtime upgrade"
    return [
        [b.number, b.hash_hex, "0x" + b.header.parent_hash.hex(), b.timestamp_ms] for b in blocks
    ]


async def run_peer(*argv: str) -> list[list[Any]]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, err.decode()[-3000:]
    rows: list[list[Any]] = orjson.loads(out.splitlines()[-1])["rows"]
    return rows


def url(devnet: Devnet, chain: str) -> str:
    assert devnet.urls is not None
    return devnet.urls.consensus if chain == "consensus" else devnet.urls.domain


@pytest.mark.usefixtures("js_modules")
@pytest.mark.parametrize("chain", CHAINS)
@pytest.mark.parametrize("peer", ["dedot", "polkadot-api"])
async def test_node_peer_agrees(devnet: Devnet, peer: str, chain: str) -> None:
    want = expected(devnet, chain)
    rows = await run_peer(
        "node", str(JS / "peer_check.mjs"), peer, url(devnet, chain), "1", str(len(want)), "8"
    )
    assert rows == want


@pytest.mark.parametrize("chain", CHAINS)
@pytest.mark.parametrize("peer", ["async-substrate-interface", "substrate-interface"])
async def test_python_peer_agrees(devnet: Devnet, peer: str, chain: str) -> None:
    python = PEERS / ".venv" / peer / "bin" / "python"
    if not python.is_file():
        pytest.skip(
            f"{peer} is not installed in {python.parents[1]}: `python bench/peers/run.py` "
            "installs it (it is no dependency of blocktimesd)"
        )
    want = expected(devnet, chain)
    rows = await run_peer(
        str(python), str(PEERS / f"{peer}.py"), url(devnet, chain), "1", str(len(want)), "4"
    )
    assert rows == want
