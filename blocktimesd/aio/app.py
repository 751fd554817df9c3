"""``blocktimesd run``: every chain followed at once, one writer, one HTTP server.

Under systemd (``Type=notify``) the app says ``READY=1`` once every chain is followed,
pings the watchdog while its loops are alive and says ``STOPPING=1`` at shutdown; see
:mod:`blocktimesd.aio.sdnotify`.

Start-up: the writer takes DATA_DIR (and cleans what a crash left), the HTTP server
listens, each chain's client connects (preflight on every connection) and its runtime
is checked for what the chain's kind needs, and each follower resumes after the last
block that is durable in the dataset.  Shutdown is phased and time-boxed: stop the
followers (no more intake), then the writer drains and writes every open file, then
the clients and the HTTP server close.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from blocktimesd.aio.chain import ChainReader
from blocktimesd.aio.consensus_index import ConsensusIndex
from blocktimesd.aio.follower import Follower
from blocktimesd.aio.http import HttpServer
from blocktimesd.aio.metrics import Metrics
from blocktimesd.aio.preflight import NodeExpectations, Preflight
from blocktimesd.aio.rpc import RpcClient, RpcSettings
from blocktimesd.aio.sdnotify import SystemdNotifier, supervise
from blocktimesd.config.model import ChainConfig, Config
from blocktimesd.core.chains import ChainKind
from blocktimesd.dataset.layout import ROWS
from blocktimesd.dataset.records import Row
from blocktimesd.dataset.scan import durable_tail, last_durable_row
from blocktimesd.dataset.writer import ParquetWriter, WriterSettings, WriterStatus
from blocktimesd.errors import ConfigError, WriterClosed
from blocktimesd.genesis import check_genesis

__all__ = ["App", "node_expectations", "rpc_settings"]

log = logging.getLogger(__name__)

# The writer takes the rows that come within this long of one another together: rows
# come one at a time, each chain's as its blocks are confirmed.
WRITER_GATHER_S = 0.1


def rpc_settings(config: Config, chain: ChainConfig) -> RpcSettings:
    """The RPC client's settings for ``chain``: the configured values, the client's own
    defaults for the rest."""
    return RpcSettings(
        endpoints=chain.endpoints,
        max_inflight=config.max_inflight_requests,
        batch_size=config.rpc_batch_size,
        request_timeout=config.request_timeout_s,
        requests_per_second=config.requests_per_second,
    )


def node_expectations(chain: ChainConfig) -> NodeExpectations:
    """What every connection's preflight checks the node against (None: not checked)."""
    return NodeExpectations(
        chain_name=chain.expected_chain_name, genesis_hash=chain.expected_genesis_hash
    )


class App:
    """The daemon: one follower per configured chain, feeding one writer."""

    def __init__(
        self,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        wall_clock: Callable[[], float] = time.time,
        notifier: SystemdNotifier | None = None,
        break_lease: bool = False,
    ) -> None:
        self.config = config
        # Default: systemd's, from NOTIFY_SOCKET and WATCHDOG_USEC; a no-op without them.
        self.notifier = notifier or SystemdNotifier()
        self._supervisor: asyncio.Task[None] | None = None
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(
            self.registry,
            chains=[c.chain for c in config.chains],
            delta_window=config.delta_window,
            clock=wall_clock,
        )
        self.writer = ParquetWriter(
            config.data_dir,
            WriterSettings(
                max_rows=config.max_rows_per_file,
                max_minutes=config.max_file_minutes,
                queue_size=max(16, config.writer_queue_items),
                # Rows durable within about checkpoint_s, files completed every
                # max_file_minutes: few files (docs/runbook/config.md).
                checkpoint_s=config.checkpoint_s or None,
                gather_s=WRITER_GATHER_S,
            ),
            observer=_WriterMetrics(self.metrics),
            break_lease=break_lease,
        )
        self.clients: dict[str, RpcClient] = {}
        self.preflights: dict[str, Preflight] = {}
        self._started: list[RpcClient] = []  # clients whose supervisor was started
        self.readers: dict[str, ChainReader] = {}
        self.followers: dict[str, Follower] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._wall = wall_clock
        self.http = HttpServer(
            self.registry,
            config.metrics_addr.host,
            config.metrics_addr.port,
            alive=self._alive,
            ready=self._ready,
        )
        self.metrics_url: str | None = None

    def _alive(self) -> bool:
        """Every task the daemon relies on runs: followers, the writer, RPC supervisors."""
        return all(not t.done() for t in self._tasks) and all(
            c.supervisor_alive for c in self._started
        )

    def _ready(self) -> tuple[bool, dict[str, Any]]:
        details: dict[str, Any] = {
            chain: {
                "connected": self.clients[chain].ready,
                "endpoint": self.clients[chain].shown_endpoint,  # served unauthenticated
                "following": f.following,
                "confirmed": None if f.tree.confirmed is None else f.tree.confirmed.number,
            }
            for chain, f in self.followers.items()
        }
        ok = bool(details) and all(d["connected"] and d["following"] for d in details.values())
        # Not ready while writes fail: the rows pile up in memory and nothing reaches disk.
        writer = self.writer
        details["writer"] = {
            "status": writer.status.value,
            "error": None if writer.error is None else str(writer.error),
        }
        return ok and writer.status is WriterStatus.RUNNING, details

    async def start(self) -> None:
        await self.writer.start()
        addr = self.config.metrics_addr
        try:
            host, port = await self.http.start()
        except OSError as exc:
            raise ConfigError(
                f"METRICS_ADDR: cannot listen on {addr}: {exc.strerror or exc}; choose a free "
                "address and port (port 0 picks any free port)"
            ) from None
        self.metrics_url = f"http://{host}:{port}/metrics"
        log.info("metrics at %s", self.metrics_url)
        self.metrics.set_up(True)
        index = None
        kinds = {c.kind for c in self.config.chains}
        if {ChainKind.CONSENSUS, ChainKind.AUTO_EVM} <= kinds:
            index = ConsensusIndex()
        for chain in self.config.chains:
            preflight = Preflight(node_expectations(chain), chain.chain)
            self.preflights[chain.chain] = preflight
            client = RpcClient(
                rpc_settings(self.config, chain),
                chain.chain,
                on_connect=preflight,
                observer=self.metrics.rpc_observer(chain.chain),
            )
            self.clients[chain.chain] = client
            self.readers[chain.chain] = ChainReader(
                client, chain.kind, chain.chain, chain.domain_ids or (0,)
            )
        consensus_reader = next(
            (self.readers[c.chain] for c in self.config.chains if c.kind is ChainKind.CONSENSUS),
            None,
        )
        resumes = {
            c.chain: await asyncio.to_thread(last_durable_row, self.config.data_dir, c.chain)
            for c in self.config.chains
        }
        # The consensus blocks the domain rows to come may name: at most those above the
        # last durable domain row's (it names the lowest).
        domain_sources = [
            row.consensus_block_number
            for c in self.config.chains
            if c.kind is ChainKind.AUTO_EVM
            and (row := resumes[c.chain]) is not None
            and row.consensus_block_number is not None
        ]
        for chain in self.config.chains:
            resume = resumes[chain.chain]
            if resume is not None:
                log.info("%s: resuming after block %d", chain.chain, resume.block_number)
            self.followers[chain.chain] = Follower(
                self.readers[chain.chain],
                chain.chain,
                chain.k,
                self.writer,
                self.metrics,
                resume=resume,
                tail=self._tail_reader(chain.chain),
                consensus=index if chain.kind is not ChainKind.GENERIC else None,
                consensus_reader=consensus_reader if chain.kind is ChainKind.AUTO_EVM else None,
                head_poll_s=self.config.head_poll_s,
                publish_durable_above=(
                    min(domain_sources)
                    if domain_sources and chain.kind is ChainKind.CONSENSUS
                    else None
                ),
                wall_clock=self._wall,
            )
        for chain in self.config.chains:
            client = self.clients[chain.chain]
            await client.start()
            self._started.append(client)
            task = asyncio.create_task(self._follow(chain.chain), name=f"follow-{chain.chain}")
            self._tasks.append(task)
        # The writer is watched like the followers: if it ends, the daemon ends loudly.
        self._tasks.append(asyncio.create_task(self._watch_writer(), name="watch-writer"))
        if self.notifier.enabled:
            self._supervisor = asyncio.create_task(
                supervise(self.notifier, alive=self._alive, ready=self._ready, status=_status),
                name="sd-notify",
            )

    def _tail_reader(self, chain: str) -> Callable[[int], Awaitable[list[Row]]]:
        """The last rows of ``chain`` made durable, for a follower's repairs."""

        async def tail(count: int) -> list[Row]:
            await self.writer.flush()
            return await asyncio.to_thread(durable_tail, self.config.data_dir, chain, count)

        return tail

    async def _watch_writer(self) -> None:
        await self.writer.join()
        raise WriterClosed(f"the writer of {self.config.data_dir} stopped unexpectedly")

    async def _follow(self, chain: str) -> None:
        await self._check_genesis(chain)
        # Start-up (runtime check, resume check) and following share one retry policy.
        await self.followers[chain].run()

    async def _check_genesis(self, chain: str) -> None:
        """The dataset and the node are of one chain; later connections must be too."""
        client = self.clients[chain]
        await client.wait_ready()
        preflight = self.preflights[chain]
        info = preflight.info
        if info is None:
            return
        recorded = await asyncio.to_thread(
            check_genesis, self.config.data_dir, chain, info.genesis_hash, client.endpoint
        )
        if recorded:
            log.info("%s: the dataset records genesis %s", chain, info.genesis_hash)
        if preflight.expect.genesis_hash is None:
            preflight.expect = dataclasses.replace(preflight.expect, genesis_hash=info.genesis_hash)

    async def run(self) -> None:
        """Run until cancelled or until a follower fails; then shut down in phases."""
        if not self._tasks:
            await self.start()
        try:
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a follower or the writer failed: raise its error
        finally:
            await self.stop()

    async def stop(self) -> None:
        deadline = self.config.shutdown_deadline_s
        log.info("shutting down (deadline %.0f s)", deadline)
        # systemd stops watching the watchdog at STOPPING=1; TimeoutStopSec= bounds the rest.
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        self.notifier.notify("STOPPING=1", "STATUS=shutting down")
        self.metrics.set_up(False)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:
            await self.writer.close(timeout=max(1.0, deadline - 2))
        finally:
            for client in self.clients.values():
                await client.close()
            await self.http.stop()
            self.notifier.close()


def _status(ready: bool, details: Mapping[str, Any]) -> str:
    """One line for ``systemctl status``: what each chain is doing."""
    states = []
    for chain, d in details.items():
        if chain == "writer":  # not a chain; said only when it is not writing
            if d["status"] != WriterStatus.RUNNING:
                states.append(f"writer {d['status']}")
            continue
        state = "following" if d["following"] else "connected" if d["connected"] else "connecting"
        states.append(f"{chain} {state}")
    prefix = "following every chain" if ready else "starting"
    return f"{prefix}: {', '.join(states)}" if states else prefix


class _WriterMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def file_written(self, dataset: str, chain: str, rows: int) -> None:
        if dataset == ROWS:
            self._m.observe_rows_written(chain, rows)
            self._m.observe_file_written(chain)

    def rows_deleted(self, chain: str, rows: int) -> None:
        log.warning("%s: %d orphaned rows deleted", chain, rows)

    def write_failed(self, reason: str) -> None:
        self._m.observe_writer_error()

    def write_recovered(self) -> None:
        pass

    def queue_length(self, items: int) -> None:
        self._m.set_writer_queue(items)

    def rows_pending(self, chain: str, rows: int) -> None:
        self._m.set_writer_rows_pending(chain, rows)

    def rows_checkpointed(self, chain: str, rows: int) -> None:
        self._m.observe_rows_written(chain, rows)

    def write_succeeded(self) -> None:
        self._m.observe_writer_success()
