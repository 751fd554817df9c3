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
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from blocktimesd.core import jsonrpc
from blocktimesd.devnet.network import CONSENSUS, DOMAIN, BestChanged, BlockImported, Event, Network
from blocktimesd.devnet.node import Node
from blocktimesd.devnet.params import ChainParams, FaultParams
from blocktimesd.devnet.server import ChainServer
from blocktimesd.errors import RpcError

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
        self.servers = {
            chain: ChainServer(node, self._control, self.params.seed * 2 + i + 1)
            for i, (chain, node) in enumerate(self.nodes.items())
        }
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
        """Periodic faults: dropped connections and stalls, every so many seconds."""
        next_drop = next_stall = self._monotonic()
        while True:
            now = self._monotonic()
            f = self.faults
            if f.drop_connections_every_s > 0:
                if now >= next_drop + f.drop_connections_every_s:
                    next_drop = now
                    self.drop_connections()
            else:
                next_drop = now
            if f.stall_every_s > 0:
                if now >= next_stall + f.stall_every_s:
                    next_stall = now
                    self.stall(f.stall_duration_s)
            else:
                next_stall = now
            await asyncio.sleep(0.1)

    # -- faults and control ----------------------------------------------------------------------

    def set_faults(self, **changes: Any) -> FaultParams:
        self.faults = dataclasses.replace(self.faults, **changes)
        for node in self.nodes.values():
            node.faults = self.faults
        return self.faults

    def drop_connections(self) -> int:
        log.info("devnet: dropping all connections")
        return sum(server.drop_connections() for server in self.servers.values())

    def stall(self, seconds: float) -> None:
        log.info("devnet: stalling for %.1f s", seconds)
        for server in self.servers.values():
            server.stall(seconds)

    def _control(self, method: str, params: list[Any] | dict[str, Any]) -> Any:
        arg = params[0] if isinstance(params, list) and params else params or None
        if method == "devnet_setFaults":
            if not isinstance(arg, dict):
                raise RpcError(
                    jsonrpc.INVALID_PARAMS, "Invalid params", "expected an object of fault settings"
                )
            known = {f.name for f in dataclasses.fields(FaultParams)}
            unknown = sorted(set(arg) - known)
            if unknown:
                raise RpcError(
                    jsonrpc.INVALID_PARAMS,
                    "Invalid params",
                    f"unknown faults {unknown}; known: {sorted(known)}",
                )
            try:
                return dataclasses.asdict(self.set_faults(**arg))
            except TypeError as exc:
                raise RpcError(jsonrpc.INVALID_PARAMS, "Invalid params", str(exc)) from None
        if method == "devnet_getFaults":
            return dataclasses.asdict(self.faults)
        if method == "devnet_dropConnections":
            # Answer first: the cut happens on the next loop iteration.
            asyncio.get_running_loop().call_soon(self.drop_connections)
            return True
        if method == "devnet_stall":
            seconds = float(arg if isinstance(arg, int | float) else self.faults.stall_duration_s)
            asyncio.get_running_loop().call_soon(self.stall, seconds)
            return True
        if method == "devnet_dropSubscriptions":
            return sum(server.drop_subscriptions() for server in self.servers.values())
        if method == "devnet_info":
            return {
                "seed": self.params.seed,
                "speed": self.speed,
                "simulatedTimeMs": self.sim_now_ms(),
                "consensusBest": self.network.consensus.best.number,
                "domainBest": self.network.domain.best.number,
            }
        raise RpcError(jsonrpc.METHOD_NOT_FOUND, "Method not found")
