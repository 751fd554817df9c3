"""Helpers for tests that run the daemon against the simulated network."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from blocktimesd.config.model import ChainConfig, Config, MetricsAddr
from blocktimesd.core.chains import ChainKind
from blocktimesd.dataset.records import Row
from blocktimesd.devnet.app import Devnet

__all__ = ["K_CONSENSUS", "K_DOMAIN", "advance", "config_for", "row_of"]

K_CONSENSUS = 12
K_DOMAIN = 8


def config_for(devnet: Devnet, data: Path) -> Config:
    assert devnet.urls is not None
    return Config(
        chains=(
            ChainConfig("consensus", ChainKind.CONSENSUS, (devnet.urls.consensus,), K_CONSENSUS,
                        domain_ids=(0,)),
            ChainConfig("auto-evm", ChainKind.AUTO_EVM, (devnet.urls.domain,), K_DOMAIN),
        ),
        data_dir=data,
        metrics_addr=MetricsAddr("127.0.0.1", 0),
        max_rows_per_file=40,
    )  # fmt: skip


async def advance(devnet: Devnet, seconds: float, step_ms: int = 20_000) -> None:
    """Let the simulated network run faster than its clock, in small steps."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        devnet.publish(devnet.network.advance(devnet.network.now_ms + step_ms))
        await asyncio.sleep(0.05)


def row_of(block: Any, chain: str = "consensus") -> Row:
    facts = block.facts
    parent = block.parent
    return Row(
        chain=chain,
        block_number=block.number,
        hash=block.hash_hex,
        parent_hash=parent.hash_hex,
        timestamp_ms=block.timestamp_ms,
        delta_since_parent_ms=None
        if parent.timestamp_ms is None
        else block.timestamp_ms - parent.timestamp_ms,
        ingestion_ts_ms=0,
        contained_store_segment_headers=bool(facts.segments),
        bundle_count=facts.bundles,
        consensus_block_hash=None,
        slot=facts.slot,
        spec_version=facts.body_spec,
        consensus_block_number=None,
    )
