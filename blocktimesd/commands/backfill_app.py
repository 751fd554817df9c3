"""The wiring of ``blocktimesd backfill``: the clients, the writer and, chain after
chain, the engine (:mod:`blocktimesd.backfill`), as :mod:`blocktimesd.aio.app` wires
the daemon.  Imported by :func:`~blocktimesd.commands.backfill.run_backfill` once the
arguments and the configuration are known to be good.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import Iterator

from blocktimesd.aio.chain import ChainReader
from blocktimesd.aio.pool import MAX_CONNECTIONS, RpcPool
from blocktimesd.aio.preflight import NodeExpectations, Preflight
from blocktimesd.aio.rpc import RpcClient, RpcObserver, RpcSettings
from blocktimesd.backfill.engine import Backfill, BackfillSettings, ChainResult
from blocktimesd.backfill.mapping import ConsensusMap
from blocktimesd.backfill.reads import best_number, retrying
from blocktimesd.commands.backfill import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Ends,
    Job,
    parse_point,
    summary,
)
from blocktimesd.config.model import ChainConfig, Config
from blocktimesd.core.ranges import Shard, Span
from blocktimesd.dataset.writer import ParquetWriter, WriterSettings
from blocktimesd.errors import BlocktimesError, ConfigError, RetryPolicy
from blocktimesd.progress import ProgressSink, progress_for

__all__ = ["CONNECT_WAIT_S", "MAX_ROWS_PER_FILE", "run_jobs"]

log = logging.getLogger(__name__)

MAX_ROWS_PER_FILE = 50_000  # rows held in memory per chain until their file is written
CONNECT_WAIT_S = 60.0
_GC_GEN0 = 50_000  # allocations between young collections during a backfill


async def run_jobs(args: argparse.Namespace, config: Config, ends: Ends, jobs: list[Job]) -> int:
    """Backfill each job's chain in turn; the exit code (see the command's docstring)."""
    with _gc_for_bulk():
        return await _run_backfill(_Run(args, config, ends), jobs)


def rows_per_file(config: Config) -> int:
    """Rows per file of a backfill (and blocks per chunk of a ``--shard`` worker)."""
    return min(config.max_rows_per_file, MAX_ROWS_PER_FILE)


class _Run:
    """One run's connections and its current engine: the clients are closed at the end
    whatever happens, and an interrupted chain still gets its summary."""

    def __init__(self, args: argparse.Namespace, config: Config, ends: Ends) -> None:
        self.args = args
        self.config = config
        self.ends = ends
        self.engine: Backfill | None = None  # the chain being backfilled
        self.data_dir = config.data_dir  # --data is in the configuration already
        self.clients: list[RpcClient] = []
        self.retry = RetryPolicy()

    def settings(self, chain: ChainConfig) -> RpcSettings:
        return RpcSettings(
            endpoints=chain.endpoints,
            max_inflight=self.args.max_inflight,
            batch_size=self.args.batch_size,
            request_timeout=self.config.request_timeout_s,
            requests_per_second=self.config.requests_per_second,
        )

    async def connect(self, chain: ChainConfig) -> tuple[RpcClient, Preflight]:
        expect = NodeExpectations(chain.expected_chain_name, chain.expected_genesis_hash)
        preflight = Preflight(expect, chain.chain)
        client = RpcClient(self.settings(chain), chain.chain, on_connect=preflight)
        self.clients.append(client)
        await client.start(wait=CONNECT_WAIT_S)
        return client, preflight

    def pool(self, client: RpcClient, chain: ChainConfig) -> RpcPool:
        """The connections the blocks are fetched over: ``--connections``, or probed.
        Each one more runs the preflight too (it may go to another endpoint)."""
        expect = NodeExpectations(chain.expected_chain_name, chain.expected_genesis_hash)

        def make(settings: RpcSettings, observer: RpcObserver) -> RpcClient:
            preflight = Preflight(expect, chain.chain)
            return RpcClient(settings, chain.chain, on_connect=preflight, observer=observer)

        size: int | None = self.args.connections
        return RpcPool(client, make, size=size, cap=size or MAX_CONNECTIONS)

    async def span(self, engine: Backfill, chain: str, tip: int) -> Span | None:
        """The blocks asked for (None: none lies between two date-times)."""
        ends = self.ends
        start = parse_point(ends.start, "--start")
        first = start.block
        if first is None:
            assert start.time_ms is not None
            first = await engine.block_at(start.time_ms, tip, end=False)
            log.info("%s: %s is block %d", chain, ends.start_words, first)
        if ends.end is None:
            assert ends.count is not None
            return Span(first, first + ends.count - 1)
        end = parse_point(ends.end, "--end")
        last = end.block
        if last is None:
            assert end.time_ms is not None
            last = await engine.block_at(end.time_ms, tip, end=True)
            log.info("%s: %s is block %d", chain, ends.end_words, last)
        if last < first:  # a date-time was involved: numbers alone were checked before
            log.warning(
                "%s: no block lies from %s (block %d) to %s (block %d)",
                chain, ends.start_words, first, ends.end_words, last,
            )  # fmt: skip
            return None
        return Span(first, last)

    async def chain(self, job: Job, writer: ParquetWriter) -> ChainResult:
        chain = job.chain
        client, preflight = await self.connect(chain)
        assert preflight.info is not None
        reader = ChainReader(client, chain.kind, chain.chain, chain.domain_ids or (0,))
        shard = self.args.shard
        settings = BackfillSettings(
            window=self.args.window,
            query_storage=None if self.args.storage == "auto" else self.args.storage == "range",
            shard=None if shard is None else Shard(shard[0], shard[1], rows_per_file(self.config)),
        )
        consensus = None
        if job.consensus is not None:
            consensus_client, _ = await self.connect(job.consensus)
            best = await retrying(
                lambda: best_number(consensus_client),
                "asking for the best block",
                consensus_client,
                job.consensus.chain,
                self.retry,
                settings.tries(),
            )
            consensus = ConsensusMap(consensus_client, best - job.consensus.k)
        pool = self.pool(client, chain)
        engine = Backfill(
            reader,
            chain.chain,
            chain.k,
            writer,
            self.data_dir,
            settings=settings,
            unsafe_allowed=preflight.info.unsafe_allowed,
            consensus=consensus,
            progress=_progress,
            retry=self.retry,
            fetch_client=pool,
        )
        self.engine = engine
        if self.args.storage == "range" and not preflight.info.unsafe_allowed:
            log.warning(
                "%s: the node denies state_queryStorage; reading storage per block", chain.chain
            )
        engine.prepare()  # the runtime and the node's timing, read meanwhile
        try:
            tip = await engine.tip()  # one question for the span and the run's clamp
            span = await self.span(engine, chain.chain, tip)
            if span is None:
                return ChainResult(chain.chain, None)
            try:
                await pool.start()
                return await engine.run(span, tip)
            finally:
                await pool.close()
        finally:
            engine.drop_checks()

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


def _progress(chain: str, total: int) -> ProgressSink:
    return progress_for(chain, total, sys.stderr)


@contextlib.contextmanager
def _gc_for_bulk() -> Iterator[None]:
    """Tune the cyclic garbage collector for the run.

    A backfill allocates millions of short-lived, acyclic objects (parsed JSON, rows),
    freed by reference counting; with the default gen-0 threshold (700 allocations) the
    collector would walk the windows held in memory over and over, about a tenth of the
    CPU time.  Objects from start-up are frozen out of its walks and gen 0 is larger.
    """
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(_GC_GEN0, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


async def _run_backfill(run: _Run, jobs: list[Job]) -> int:
    config = run.config
    writer = ParquetWriter(
        run.data_dir,
        WriterSettings(
            max_rows=rows_per_file(config),
            max_minutes=config.max_file_minutes,
            queue_size=4,  # windows of rows; a full queue makes the backfill wait
        ),
        break_lease=run.args.break_lease,
        shard=None if run.args.shard is None else "{}-of-{}".format(*run.args.shard),
    )
    results: list[ChainResult] = []
    code = EXIT_OK
    try:
        await writer.start()
        for job in jobs:
            results.append(await run.chain(job, writer))
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        print("blocktimesd backfill: interrupted; writing what is done", file=sys.stderr)
        code = EXIT_INTERRUPTED
        if run.engine is not None and (not results or results[-1].chain != run.engine.chain):
            results.append(run.engine.result())  # the chain cut short
    except ConfigError as exc:
        print(f"blocktimesd backfill: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except BlocktimesError as exc:
        print(f"blocktimesd backfill: {exc}", file=sys.stderr)
        code = EXIT_FAILURE
    finally:
        try:
            await writer.close()
        except BlocktimesError as exc:
            print(f"blocktimesd backfill: {exc}", file=sys.stderr)
            code = code or EXIT_FAILURE
        await run.close()
    for result in results:
        print(summary(result), file=sys.stderr)
        if result.failed:
            code = code or EXIT_FAILURE
    return code
