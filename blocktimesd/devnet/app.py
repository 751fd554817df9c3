"""The simulated network as a running service: two nodes and one clock.

``async with Devnet(...) as urls:`` builds the history, starts both servers and the
clock, and yields the two WebSocket URLs; leaving the block stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from blocktimesd.devnet.control import Control
from blocktimesd.devnet.network import CONSENSUS, DOMAIN, BestChanged, BlockImported, Event, Network
from blocktimesd.devnet.node import Node
from blocktimesd.devnet.params import ChainParams, FaultParams, RpcLimits
from blocktimesd.devnet.server import ChainServer

__all__ = ["AVERAGE_BLOCK_MS", "Devnet", "DevnetUrls"]

log = logging.getLogger(__name__)

AVERAGE_BLOCK_MS = 6010  # 6.01 slots per block on mainnet
_TICK_MAX_S = 0.05


@dataclass(frozen=True, slots=True)
class DevnetUrls:
    consensus: str
    domain: str


class Devnet:
    """Two simulated nodes (consensus and Auto-EVM) that share one network and clock."""

    def __init__(
        self,
        params: ChainParams | None = None,
        faults: FaultParams | None = None,
        *,
        host: str = "127.0.0.1",
        consensus_port: int = 0,
        domain_port: int = 0,
        speed: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        chain_names: tuple[str, str] = ("Autonomys Devnet", "Autonomys Devnet Domain 0"),
        limits: RpcLimits | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.params = params or ChainParams()
        self.faults = faults or FaultParams()
        self.host = host
        self.ports = (consensus_port, domain_port)
        self.speed = speed
        self._monotonic = monotonic
        start_ms = int(wall_clock() * 1000) - self.params.history * AVERAGE_BLOCK_MS
        self.network = Network(self.params, start_ms)
        self.nodes = {
            CONSENSUS: Node(self.network, CONSENSUS, self.faults, chain_names[0]),
            DOMAIN: Node(self.network, DOMAIN, self.faults, chain_names[1]),
        }
        control = Control(self)
        self.servers = {
            chain: ChainServer(node, control, self.params.seed * 2 + i + 1, limits)
            for i, (chain, node) in enumerate(self.nodes.items())
        }
        # Faults injected by the network as a whole, by kind (the servers count their own).
        self._injected: Counter[str] = Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self._sim_base_ms = 0
        self._real_base = 0.0
        self.urls: DevnetUrls | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> DevnetUrls:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> DevnetUrls:
        self.network.build_history(self.params.history)
        self._sim_base_ms = self.network.now_ms
        self._real_base = self._monotonic()
        consensus = await self.servers[CONSENSUS].start(self.host, self.ports[0])
        domain = await self.servers[DOMAIN].start(self.host, self.ports[1])
        for server in self.servers.values():
            server.publish_best(server.node.store.best)  # remember the current version
        self._tasks = [
            asyncio.create_task(self._clock(), name="devnet-clock"),
            asyncio.create_task(self._fault_schedule(), name="devnet-faults"),
        ]
        self.urls = DevnetUrls(consensus, domain)
        log.info("devnet serving consensus at %s and auto-evm at %s", consensus, domain)
        return self.urls

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for server in self.servers.values():
            server.drop_connections()
            await server.close()

    # -- time ------------------------------------------------------------------------------

    def sim_now_ms(self) -> int:
        elapsed = self._monotonic() - self._real_base
        return self._sim_base_ms + int(elapsed * self.speed * 1000)

    async def _clock(self) -> None:
        while True:
            self.publish(self.network.advance(self.sim_now_ms()))
            wait_s = (self.network.now_ms - self.sim_now_ms()) / 1000 / self.speed
            await asyncio.sleep(min(max(wait_s, 0.001), _TICK_MAX_S))

    def publish(self, events: list[Event]) -> None:
        for event in events:
            server = self.servers[event.chain]
            if isinstance(event, BlockImported):
                server.publish_block(event.block)
            elif isinstance(event, BestChanged):
                server.publish_best(event.change.block)

    async def _fault_schedule(self) -> None:
        """Periodic faults: dropped connections, dropped subscriptions and stalls."""
        last = dict.fromkeys(("connections", "subscriptions", "stall"), self._monotonic())
        while True:
            now = self._monotonic()
            f = self.faults
            for kind, every, act in (
                ("connections", f.drop_connections_every_s, self.drop_connections),
                ("subscriptions", f.drop_subscriptions_every_s, self.drop_subscriptions),
                ("stall", f.stall_every_s, self._scheduled_stall),
            ):
                if every <= 0:
                    last[kind] = now  # a period switched on later counts from then
                elif now >= last[kind] + every:
                    last[kind] = now
                    act()
            await asyncio.sleep(0.1)

    def _scheduled_stall(self) -> None:
        self.stall(self.faults.stall_duration_s)

    # -- faults and control ----------------------------------------------------------------------

    def set_faults(self, **changes: Any) -> FaultParams:
        self.faults = dataclasses.replace(self.faults, **changes)
        for node in self.nodes.values():
            node.faults = self.faults
        return self.faults

    def drop_connections(self) -> int:
        log.info("devnet: dropping all connections")
        self._injected["droppedConnections"] += 1
        return sum(server.drop_connections() for server in self.servers.values())

    def drop_subscriptions(self) -> int:
        log.info("devnet: forgetting every subscription silently")
        self._injected["droppedSubscriptions"] += 1
        return sum(server.drop_subscriptions() for server in self.servers.values())

    def stall(self, seconds: float) -> None:
        log.info("devnet: stalling for %.1f s", seconds)
        self._injected["stalls"] += 1
        for server in self.servers.values():
            server.stall(seconds)

    def reorg(self, depth: int, length: int | None = None) -> list[Event]:
        """Make a competing branch the best chain now (see :meth:`Network.force_reorg`)."""
        self.publish(self.network.advance(self.sim_now_ms()))  # the branch ends at the present
        events = self.network.force_reorg(depth, length)
        log.info("devnet: forced reorg of the last %d consensus blocks", depth)
        self._injected["reorgs"] += 1
        self.publish(events)
        return events

    def upgrade(self, at: int | None = None) -> int:
        """Upgrade both runtimes at consensus height ``at`` (default: the next block)."""
        self.publish(self.network.advance(self.sim_now_ms()))
        height = self.network.schedule_upgrade(at)
        log.info("devnet: runtime upgrade at consensus block #%d", height)
        self._injected["upgrades"] += 1
        return height

    def outage(self, chain: str, seconds: float) -> None:
        log.info("devnet: %s endpoint down for %.1f s", chain, seconds)
        self._injected["outages"] += 1
        self.servers[chain].outage(seconds)

    def heal(self) -> None:
        """End every stall and outage in progress."""
        for server in self.servers.values():
            server.heal()

    def injected(self) -> Counter[str]:
        """Faults injected so far, by kind."""
        total = Counter(self._injected)
        for server in self.servers.values():
            total.update(server.injected)
        return total
