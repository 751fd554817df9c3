"""The daemon end to end: follow the simulated network, then compare the dataset with
the network's own canonical chains, block by block."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from blocktimesd.aio.app import App
from blocktimesd.config.model import Config
from blocktimesd.dataset.writer import ParquetWriter
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.content import ConsensusFacts
from blocktimesd.devnet.network import Network
from blocktimesd.devnet.params import ChainParams
from blocktimesd.errors import ConfigError
from tests.daemon import K_CONSENSUS, advance, config_for, row_of


def read_rows(data: Path, chain: str) -> list[dict[str, Any]]:
    files = sorted((data / "block_times" / f"chain={chain}").glob("date=*/*.parquet"))
    rows: list[dict[str, Any]] = []
    for path in files:
        rows.extend(pq.read_table(path).to_pylist())
    return sorted(rows, key=lambda r: r["block_number"])


def check_dataset(data: Path, network: Network) -> tuple[int, int]:
    """Every row is the canonical block of its number, exactly once, with no gap."""
    consensus = read_rows(data, "consensus")
    assert consensus, "no consensus rows"
    numbers = [r["block_number"] for r in consensus]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "gap or duplicate"
    canonical = network.consensus.canonical
    assert numbers[-1] <= len(canonical) - 1 - K_CONSENSUS
    for row in consensus:
        block = canonical[row["block_number"]]
        assert row["hash"] == block.hash_hex, f"orphan at {row['block_number']}"
        assert row["timestamp_ms"] == block.timestamp_ms
        parent = block.parent
        assert parent is not None
        expected_delta = (
            None if parent.timestamp_ms is None else block.timestamp_ms - parent.timestamp_ms
        )  # type: ignore[operator]
        assert row["delta_since_parent_ms"] == expected_delta
        facts = block.facts
        assert isinstance(facts, ConsensusFacts)
        assert row["bundle_count"] == facts.bundles
        assert row["contained_store_segment_headers"] == bool(facts.segments)
        assert row["slot"] == facts.slot
        assert row["consensus_block_hash"] is None
    domain = read_rows(data, "auto-evm")
    assert domain, "no domain rows"
    numbers = [r["block_number"] for r in domain]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "domain gap or duplicate"
    for row in domain:
        block = network.domain.canonical[row["block_number"]]
        assert row["hash"] == block.hash_hex
        assert block.link is not None
        assert row["consensus_block_hash"] == block.link.hash_hex
        assert row["consensus_block_number"] == block.link.number
        assert row["timestamp_ms"] == block.link.timestamp_ms
        assert row["bundle_count"] is None
    return len(consensus), len(domain)


@pytest.mark.parametrize("faults", [False, True])
async def test_dataset_equals_the_canonical_chain(tmp_path: Path, faults: bool) -> None:
    params = ChainParams(seed=31 + faults, history=60, fork_rate=0.3, stall_every_s=600)
    devnet = Devnet(params)
    async with devnet:
        app = App(config_for(devnet, tmp_path), registry=CollectorRegistry())
        runner = asyncio.create_task(app.run())
        await advance(devnet, 3.0)
        if faults:
            for _ in range(3):
                devnet.drop_connections()
                await advance(devnet, 1.0)
                await app.clients["consensus"].call("devnet_dropSubscriptions")
                devnet.stall(0.5)
                await advance(devnet, 1.5)
        await advance(devnet, 2.0)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    consensus, domain = check_dataset(tmp_path, devnet.network)
    assert consensus > 50
    assert domain > 20
    reorgs = list((tmp_path / "reorgs").glob("chain=*/*.parquet"))
    assert reorgs, "forks at rate 0.3 must leave reorg records"


@pytest.mark.parametrize("seed", [11, 12, 13])
async def test_error_answers_lose_no_row(tmp_path: Path, seed: int) -> None:
    """Error answers on one call in ten, forks and dropped connections at once: the
    dataset is still every canonical block exactly once, with true deltas."""
    params = ChainParams(seed=seed, history=60, fork_rate=0.3, stall_every_s=600)
    devnet = Devnet(params)
    async with devnet:
        devnet.set_faults(error_rate=0.1)
        app = App(config_for(devnet, tmp_path), registry=CollectorRegistry())
        runner = asyncio.create_task(app.run())
        for _ in range(3):
            await advance(devnet, 2.0)
            devnet.drop_connections()
        await advance(devnet, 2.0)
        devnet.set_faults(error_rate=0.0)
        await advance(devnet, 1.0)
        assert not runner.done(), "the daemon stopped on a transient error"
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        errors = sum(
            sample.value
            for metric in app.registry.collect()
            if metric.name == "blocktimes_rpc_requests"
            for sample in metric.samples
            if sample.labels.get("outcome") == "error -32603"
        )
        assert errors > 10, "too few error answers reached the daemon: the test proves nothing"
    consensus, domain = check_dataset(tmp_path, devnet.network)
    assert consensus > 50
    assert domain > 20


async def test_resume_after_stop_continues_exactly_once(tmp_path: Path) -> None:
    params = ChainParams(seed=41, history=60, fork_rate=0.2)
    devnet = Devnet(params)
    async with devnet:
        for _ in range(3):
            app = App(config_for(devnet, tmp_path), registry=CollectorRegistry())
            runner = asyncio.create_task(app.run())
            await advance(devnet, 2.0)
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await runner
            await advance(devnet, 0.5)  # blocks made while the daemon is down
    consensus, _ = check_dataset(tmp_path, devnet.network)
    assert consensus > 60


def test_config_override_is_a_dataclass() -> None:
    config = Config(chains=())
    assert dataclasses.replace(config, max_rows_per_file=5).max_rows_per_file == 5


async def test_rows_orphaned_while_stopped_are_repaired(tmp_path: Path) -> None:
    params = ChainParams(seed=43, history=80, fork_rate=0.0)
    devnet = Devnet(params)
    async with devnet:
        canonical = devnet.network.consensus.canonical
        rows = [row_of(b) for b in canonical[1:41]]
        # Five durable rows on a branch that a deep reorg orphaned while the daemon was down.
        parent = rows[-1].hash
        for n in range(41, 46):
            fake = "0x" + bytes([n]).hex() * 32
            rows.append(rows[-1]._replace(block_number=n, hash=fake, parent_hash=parent))
            parent = fake
        writer = ParquetWriter(tmp_path)
        await writer.start()
        await writer.put(rows)
        await writer.close()
        config = dataclasses.replace(
            config_for(devnet, tmp_path), chains=config_for(devnet, tmp_path).chains[:1]
        )
        app = App(config, registry=CollectorRegistry())
        runner = asyncio.create_task(app.run())
        await advance(devnet, 2.0)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    found = read_rows(tmp_path, "consensus")
    assert [r["block_number"] for r in found] == list(range(1, len(found) + 1))
    assert all(r["hash"] == canonical[r["block_number"]].hash_hex for r in found)
    assert len(found) > 50


async def test_a_node_of_another_chain_is_refused_naming_both_genesis_hashes(
    tmp_path: Path,
) -> None:
    genesis: list[tuple[str, str]] = []  # (consensus, domain) of each network
    for seed in (51, 52):
        devnet = Devnet(ChainParams(seed=seed, history=30))
        async with devnet:
            network = devnet.network
            genesis.append(
                (network.consensus.canonical[0].hash_hex, network.domain.canonical[0].hash_hex)
            )
            app = App(config_for(devnet, tmp_path), registry=CollectorRegistry())
            runner = asyncio.create_task(app.run())
            await advance(devnet, 1.5)
            if seed == 51:
                runner.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await runner
            else:
                with pytest.raises(ConfigError) as caught:
                    await asyncio.wait_for(runner, 10)
    message = str(caught.value)
    # Either chain may be refused first; its message names both of its genesis hashes.
    chain = 0 if message.startswith("consensus:") else 1
    assert message.startswith(("consensus:", "auto-evm:")), message
    assert genesis[0][chain] != genesis[1][chain]
    assert genesis[0][chain] in message
    assert genesis[1][chain] in message
    assert "another DATA_DIR" in message
