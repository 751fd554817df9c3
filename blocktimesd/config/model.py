"""The configuration as the daemon and the backfill use it: frozen dataclasses (and a
named tuple) of plain values, with the mainnet defaults of each chain kind.

The RPC and preflight settings of the I/O layers are built from these values where
the layers are wired (:mod:`blocktimesd.aio.app`, :mod:`blocktimesd.commands.backfill`),
so that the configuration depends on no I/O code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from blocktimesd.core.chains import ChainKind
from blocktimesd.dataset.objects import DataPath

__all__ = ["GENERIC_K", "MAINNET", "ChainConfig", "Config", "MainnetChain", "MetricsAddr"]


class MainnetChain(NamedTuple):
    """What a chain kind defaults to: the public mainnet node and what it must report."""

    endpoint: str
    k: int
    chain_name: str
    genesis_hash: str | None


MAINNET: Mapping[ChainKind, MainnetChain] = {
    ChainKind.CONSENSUS: MainnetChain(
        endpoint="wss://rpc.mainnet.autonomys.xyz/ws",
        k=100,
        chain_name="Autonomys Mainnet",
        genesis_hash="0x66455a580aabff303720aa83adbe6c44502922251c03ba73686d5245da9e21bd",
    ),
    ChainKind.AUTO_EVM: MainnetChain(
        endpoint="wss://auto-evm.mainnet.autonomys.xyz/ws",
        k=64,
        chain_name="Autonomys Mainnet Domain 0",
        genesis_hash=None,
    ),
}
GENERIC_K = 100  # a generic chain has no mainnet entry; be as careful as on consensus


@dataclass(frozen=True, slots=True)
class MetricsAddr:
    host: str
    port: int  # 0: any free port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ChainConfig:
    chain: str  # the chain's name in metrics, logs and file paths
    kind: ChainKind
    endpoints: tuple[str, ...]  # failover order
    k: int  # a block is confirmed once k blocks are built on it
    expected_chain_name: str | None = None  # None: not checked
    expected_genesis_hash: str | None = None  # lower-case 0x hex; None: not checked
    domain_ids: tuple[int, ...] = ()  # consensus: the domains whose bundles are counted


@dataclass(frozen=True, slots=True)
class Config:
    chains: tuple[ChainConfig, ...]
    data_dir: DataPath = Path("data")
    metrics_addr: MetricsAddr = MetricsAddr("127.0.0.1", 9615)
    max_rows_per_file: int = 500_000
    max_file_minutes: int = 15
    checkpoint_s: float = 60.0  # the open file is written as it stands this often; 0: never
    max_inflight_requests: int = 64  # per connection: blocks fetched at once, and every call
    rpc_batch_size: int = 1
    request_timeout_s: float = 30.0
    head_poll_s: float = 15.0  # silence after which the node's best head is asked for
    requests_per_second: float = 0.0  # per chain; 0: no limit
    delta_window: int = 1000  # recent deltas per chain behind the live quantiles
    writer_queue_items: int = 10_000  # a batch of rows is one item
    shutdown_deadline_s: float = 8.0  # below the 10 s docker stop gives before SIGKILL

    def chain(self, name: str) -> ChainConfig:
        for chain in self.chains:
            if chain.chain == name:
                return chain
        raise KeyError(name)
