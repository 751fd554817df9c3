"""Settings of the simulated network: chain dynamics and injected faults."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChainParams", "FaultParams", "RpcLimits"]


@dataclass(frozen=True, slots=True)
class ChainParams:
    """How the simulated chains behave.  Defaults follow mainnet (CHAIN_FACTS)."""

    seed: int = 1
    history: int = 200  # consensus blocks built before serving
    slot_ms_min: int = 940  # a PoT-driven slot lasts about 0.94..1.10 s
    slot_ms_max: int = 1100
    slot_probability: float = 1 / 6
    min_block_gap_ms: int = 500  # Timestamp.MinimumPeriod * 2
    stall_every_s: float = 3600.0  # mean simulated seconds between chain stalls; 0: never
    stall_s_min: float = 45.0
    stall_s_max: float = 75.0
    fork_rate: float = 0.05  # share of new blocks that meet a competing block
    max_fork_depth: int = 12
    segment_rate: float = 1 / 400  # share of blocks that carry a burst of segment headers
    votes_per_block: float = 9.0
    transfers_per_block: float = 0.5
    bundles_per_block: float = 2.5  # while the domain is active
    domain_idle_rate: float = 1 / 400  # chance per block that an active domain goes idle
    domain_wake_rate: float = 1 / 60  # chance per block that an idle domain wakes up
    evm_txs_per_block: float = 2.0
    upgrade_at: int = 0  # consensus height of the runtime upgrade; 0: none
    confirmation_depth_k: int = 100
    finality_depth: int = 5000  # the node finalizes far behind the tip
    domain_finality_depth: int = 14400


@dataclass(frozen=True, slots=True)
class FaultParams:
    """Faults injected by the RPC servers; all can also be changed at run time."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    drop_connections_every_s: float = 0.0
    stall_every_s: float = 0.0
    stall_duration_s: float = 10.0
    error_rate: float = 0.0
    prune_state: int = 0  # keep state of this many recent blocks; 0: archive
    prune_bodies: int = 0  # keep bodies of this many recent blocks; 0: archive
    unsafe_rpc: bool = False
    subscription_buffer: int = 16  # notifications a lagging subscriber may owe
    drop_subscriptions_every_s: float = 0.0  # forget every subscription silently; 0: never
    notification_delay_ms: float = 0.0  # hold notifications this long, then send them together


@dataclass(frozen=True, slots=True)
class RpcLimits:
    """Resource limits of each node's RPC server.  Defaults are a Substrate node's
    (``sc-cli``'s ``RPC_DEFAULT_*``, served by jsonrpsee 0.24).

    Over ``messages_per_connection`` a node answers no error: it stops reading the
    connection until an answer is out, so TCP pushes back on the client.  Over
    ``max_connections`` it refuses the WebSocket upgrade with HTTP 429.  Over
    ``max_subscriptions_per_connection`` a subscribe call gets error -32006.
    """

    max_connections: int = 100  # --rpc-max-connections
    messages_per_connection: int = 64  # --rpc-message-buffer-capacity-per-connection
    max_subscriptions_per_connection: int = 1024  # --rpc-max-subscriptions-per-connection

    def __post_init__(self) -> None:
        for name in ("max_connections", "messages_per_connection"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_subscriptions_per_connection < 0:
            raise ValueError("max_subscriptions_per_connection must not be negative")
