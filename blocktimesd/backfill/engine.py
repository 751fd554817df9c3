"""The backfill engine: one chain's rows for a past range, into the daemon's own dataset.

The range is clamped to ``tip - K`` (deeper blocks only, as the daemon confirms them).
The block numbers already durable for the chain are read from the dataset
(:func:`~blocktimesd.dataset.scan.durable_runs`) and skipped, so re-running a range,
overlapping the daemon's rows or resuming an interrupted backfill never writes a row
twice.  The rest is worked through a window at a time (memory stays bounded whatever
the range), with the next windows fetched (:mod:`blocktimesd.backfill.fetch`) while one
is turned into rows.  Blocks are counted for the progress as they arrive; an interrupt
still writes the oldest window's blocks that arrived (as far as each is vouched for by
its child).

Nothing a node says is written unchecked: every block must be its successor's parent,
the last block of a window included, and a window must continue the rows written
before it.  An answer that fails a check is a node fault
(:func:`blocktimesd.errors.classify`): the window is fetched again, a bounded number of
times with the :class:`RetryPolicy`'s delays, and then listed as failed, naming the
chain, the endpoint and the block.  What cannot be checked (storage values) is written
as the chain says; a timestamp no later than its parent's is logged and counted.

Rows are formed by :func:`~blocktimesd.dataset.records.form_row`, as the follower forms
them; domain rows name their consensus block (:mod:`blocktimesd.backfill.mapping`), or
get a null and a reconciliation record saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from blocktimesd.aio.chain import ChainReader
from blocktimesd.aio.pool import Caller
from blocktimesd.backfill.fetch import Block, BlockFetcher, Landing, Reorged
from blocktimesd.backfill.mapping import ConsensusMap, Mapped, map_source
from blocktimesd.backfill.reads import (
    Tries,
    best_number,
    block_at_time,
    choose_batch_size,
    retrying,
    shown,
    timestamp_at,
)
from blocktimesd.core.chains import ChainKind, check_runtime
from blocktimesd.core.header import hex_to_bytes, to_hex
from blocktimesd.core.ranges import Shard, Span, merge, subtract, total, windows
from blocktimesd.dataset.objects import DataPath
from blocktimesd.dataset.records import Row, Unresolved, form_row
from blocktimesd.dataset.scan import durable_runs
from blocktimesd.dataset.writer import Reconciliation
from blocktimesd.errors import BlocktimesError, MalformedAnswer, Outcome, RetryPolicy
from blocktimesd.progress import ProgressSink

if TYPE_CHECKING:
    from blocktimesd.core.runtime import Runtime

__all__ = ["Backfill", "BackfillSettings", "BackfillSink", "ChainResult"]

log = logging.getLogger(__name__)

_SALVAGE_S = 10.0  # an interrupted run's time to write the rows it fetched already
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class BackfillSettings:
    window: int = 2048  # blocks turned into rows at a time
    blocks_per_task: int = 256  # numbers per chain_getBlockHash list (and state_queryStorage)
    lookahead: int = 3  # windows fetched at once, the oldest being written
    # Node faults (wrong or malformed answers) in the fetches of a window before its
    # blocks are reported as failed, and in the tries of each start-up question (the
    # tip, a date-time's block, the runtime) before the run ends.
    attempts: int = 3
    # The same bound for transient errors (dropped connections, timeouts, a busy node):
    # with the retry policy's delays (capped at 30 s) about 4 minutes of a failing node.
    transient_attempts: int = 12
    query_storage: bool | None = None  # None: state_queryStorage when the node allows it
    shard: Shard | None = None  # this worker's part of the range (--shard I/N); None: all

    def __post_init__(self) -> None:
        bounds = (self.window, self.blocks_per_task, self.lookahead, self.attempts)
        if min(*bounds, self.transient_attempts) < 1:
            raise ValueError(
                "window, blocks_per_task, lookahead, attempts and transient_attempts must be >= 1"
            )

    def tries(self) -> Tries:
        """A fresh count of tries for one request."""
        return Tries(self.attempts, self.transient_attempts)


class BackfillSink(Protocol):
    """Where rows go: the Parquet writer."""

    async def put(self, item: Any) -> None: ...

    async def flush(self) -> None: ...


class ChainResult(NamedTuple):
    chain: str
    span: Span | None  # the range worked on, after clamping; None: nothing to do
    written: int = 0
    skipped: int = 0  # already durable
    failed: tuple[Span, ...] = ()
    unresolved: int = 0  # domain rows without a consensus block number
    stopped_at: int | None = None  # domain: from here on the consensus source is not K deep
    not_later: int = 0  # rows stamped no later than their parent (written as the chain says)
    errors: tuple[str, ...] = ()  # why the failed blocks failed, one line per window


class _Tip(NamedTuple):
    """The last block turned into a row: the next window's parent."""

    number: int
    hash: str
    timestamp_ms: int | None
    child_spec: int  # the runtime its children run


class Backfill:
    """One chain's backfill over ``span``; :meth:`run` returns what it did."""

    def __init__(
        self,
        reader: ChainReader,
        chain: str,
        k: int,
        sink: BackfillSink,
        data_dir: DataPath,
        *,
        settings: BackfillSettings | None = None,
        unsafe_allowed: bool = False,
        consensus: ConsensusMap | None = None,
        progress: Callable[[str, int], ProgressSink] | None = None,
        wall_clock: Callable[[], float] = time.time,
        retry: RetryPolicy | None = None,
        fetch_client: Caller | None = None,
    ) -> None:
        self.reader = reader
        self.client = reader.client
        self.chain = chain
        self.k = k
        self.sink = sink
        self.data_dir = data_dir
        self.settings = settings or BackfillSettings()
        wanted = self.settings.query_storage
        self.query_storage = unsafe_allowed if wanted is None else wanted and unsafe_allowed
        # The blocks may come over several connections (an RpcPool); the rest of what
        # the backfill asks goes over the reader's.
        self.fetcher = BlockFetcher(
            fetch_client or self.client,
            chain,
            blocks_per_task=self.settings.blocks_per_task,
            query_storage=self.query_storage,
        )
        self.consensus = consensus
        self._progress = progress
        self._wall = wall_clock
        self.retry = retry or RetryPolicy()
        self._tip: _Tip | None = None
        self._failed: list[Span] = []
        self._errors: list[str] = []
        self._written = 0
        self._unresolved = 0
        self._not_later = 0
        self._stopped_at: int | None = None
        self._span: Span | None = None
        self._skipped = 0
        self._checks: tuple[asyncio.Future[int], asyncio.Future[Runtime]] | None = None

    async def _retrying(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        tries = self.settings.tries()
        return await retrying(call, what, self.client, self.chain, self.retry, tries)

    async def tip(self) -> int:
        """The number of the node's best block."""
        return await self._retrying("asking for the best block", lambda: best_number(self.client))

    async def block_at(self, timestamp_ms: int, tip: int, *, end: bool) -> int:
        """:func:`block_at_time` on this chain's node."""
        return await self._retrying(
            "finding the block of a date-time",
            lambda: block_at_time(self.client, timestamp_ms, tip, self.chain, end=end),
        )

    def prepare(self) -> None:
        """Start reading what the fetch needs of the node (its runtime, checked, and its
        timing) while the caller still asks other things: on a distant node each round
        trip counts.  :meth:`run` waits for them, or drops them when nothing is missing."""
        if self._checks is None:
            # The timing's calls go first, so that they are answered before the metadata
            # arrives and is decoded (which holds the event loop).
            batch = asyncio.ensure_future(
                self._retrying(
                    "timing the node", lambda: choose_batch_size(self.client, self.chain)
                )
            )
            runtime = asyncio.ensure_future(
                self._retrying("reading the runtime", self.reader.check_runtime)
            )
            self._checks = (batch, runtime)

    async def run(self, requested: Span, tip: int | None = None) -> ChainResult:
        """Backfill ``requested`` up to ``tip`` (the best block's number, asked for
        when not given) minus K."""
        self.prepare()
        assert self._checks is not None
        try:
            return await self._run(requested, tip, *self._checks)
        finally:
            self.drop_checks()

    def drop_checks(self) -> None:
        """Cancel what :meth:`prepare` and the run started ahead, if still running."""
        if self._checks is not None:
            _drop(self._checks)
        _drop(self.fetcher.take_early())

    async def _run(
        self,
        requested: Span,
        tip: int | None,
        batch: asyncio.Future[int],
        runtime_read: asyncio.Future[Runtime],
    ) -> ChainResult:
        if tip is None:
            tip = await self.tip()
        last = min(requested.last, tip - self.k)
        if last < requested.last:
            log.warning(
                "%s: the end is clamped from %d to %d (tip %d minus K %d): shallower blocks "
                "are not confirmed yet", self.chain, requested.last, last, tip, self.k,
            )  # fmt: skip
        first = max(requested.first, 1)  # genesis has no timestamp and no row
        if last < first:
            log.warning("%s: nothing to backfill in %s below tip - K", self.chain, requested)
            return ChainResult(self.chain, None)
        span = self._span = Span(first, last)
        shard = self.settings.shard
        # A shard's chunks are apart: each run of blocks is its own file (_parent_spec).
        wanted = [span] if shard is None else shard.spans(span)
        # The first hashes are asked for while the runtime and timing are read, and the
        # dataset is scanned: a chunk found written meanwhile is asked again from the
        # first missing block (the unused answer is dropped with the run).
        self.fetcher.ask_early(next(windows(wanted, self.settings.window)))
        present = await asyncio.to_thread(durable_runs, self.data_dir, self.chain, span)
        missing = [part for chunk in wanted for part in subtract(chunk, present)]
        skipped = self._skipped = total(wanted) - total(missing)
        log.info(
            "%s: backfilling %d blocks of %s%s (%d already in the dataset), %s",
            self.chain, total(missing), span,
            "" if shard is None else f", shard {shard.index}/{shard.count}", skipped,
            "storage by state_queryStorage ranges" if self.query_storage else "storage per block",
        )  # fmt: skip
        if missing:
            # The first missing hashes (asked already, unless the scan found the first
            # chunk written) and the range's state, asked for while the runtime and
            # timing are read.
            self.fetcher.ask_early(next(windows(missing, self.settings.window)))
            state = asyncio.ensure_future(
                self._retrying(
                    "reading the state before the range",
                    lambda: self._check_state(missing[0].first - 1),
                )
            )
            try:
                runtime = await runtime_read
                await state
                self.fetcher.batch = await batch
            finally:
                _drop([state])
            keys = [to_hex(runtime.storage_key("Timestamp", "Now"))]
            if self.reader.kind is ChainKind.CONSENSUS:
                keys += [
                    to_hex(runtime.storage_key("Domains", "SuccessfulBundles", domain))
                    for domain in self.reader.domain_ids
                ]
            self.fetcher.keys = keys
            _import_arrow_meanwhile()
            progress = self._progress(self.chain, total(missing)) if self._progress else None
            try:
                await self._pipeline(missing, progress)
            finally:
                if progress is not None:  # however it ended: the rows written, truly
                    progress.close(self._written)
        return self.result()

    def result(self) -> ChainResult:
        """What the run did so far (all of it, once :meth:`run` returned)."""
        return ChainResult(
            self.chain,
            self._span,
            written=self._written,
            skipped=self._skipped,
            failed=tuple(merge(self._failed)),
            unresolved=self._unresolved,
            stopped_at=self._stopped_at,
            not_later=self._not_later,
            errors=tuple(self._errors),
        )

    async def _check_state(self, number: int) -> None:
        """Fail early, and clearly, on a node that no longer has the range's state."""
        await timestamp_at(self.client, max(number, 0), self.chain)

    # -- the pipeline: fetch ahead, write in order ----------------------------------------------

    async def _pipeline(self, missing: list[Span], progress: ProgressSink | None) -> None:
        # Up to ``lookahead`` windows are being fetched (or wait, fetched) while the
        # oldest is turned into rows: the requests in flight never drain between windows,
        # and memory holds at most ``lookahead`` windows.
        fetching: deque[tuple[Landing, asyncio.Task[list[Block]]]] = deque()
        todo = windows(missing, self.settings.window)
        report = progress.advance if progress is not None else None
        try:
            while True:
                while len(fetching) < self.settings.lookahead:
                    window = next(todo, None)
                    if window is None:
                        break
                    landing = Landing(window, report)
                    fetch = self.fetcher.fetch(window, landing)
                    task = asyncio.create_task(fetch, name=f"fetch-{window}")
                    fetching.append((landing, task))
                if not fetching:
                    return
                landing, task = fetching.popleft()
                fetched: list[Block] | BaseException
                try:
                    fetched = await task
                except BlocktimesError as exc:
                    fetched = exc
                except asyncio.CancelledError:
                    await _cancel(task for _, task in fetching)
                    await self._salvage(landing)
                    raise
                written = await self._write_window(landing.window, fetched)
                # The window's blocks (the list, its task's result, its landing's groups)
                # are dropped before the next window is awaited and another one started:
                # memory holds ``lookahead`` windows of blocks, not one more.
                del fetched, task, landing
                if not written:
                    return
        finally:
            await _cancel(task for _, task in fetching)

    async def _salvage(self, landing: Landing) -> None:
        """On an interrupt, the rows of the oldest window's blocks that arrived already, as
        far as they are vouched for (each block by its child), checked as ever."""
        blocks = landing.prefix()
        window = landing.window
        if len(blocks) < 3:  # a parent, a block and the block's child at least
            return
        part = Span(window.first, min(blocks[-2].number, window.last))
        try:
            async with asyncio.timeout(_SALVAGE_S):
                await self._emit(part, blocks[: part.count + 2])
        except (BlocktimesError, TimeoutError) as exc:
            log.warning(
                "%s: blocks %s, fetched before the interrupt, are not written: %s",
                self.chain, part, exc,
            )  # fmt: skip
            return
        log.info("%s: interrupted: blocks %s written from what had arrived", self.chain, part)

    async def _write_window(self, window: Span, fetched: list[Block] | BaseException) -> bool:
        """Turn one window into rows, fetching it again after a node fault or a transient
        error (bounded by :meth:`BackfillSettings.tries`, with the retry policy's delays),
        then listing it as failed; a fatal error ends the run.  False when the backfill
        must stop here (domain blocks not yet confirmable)."""
        tries = self.settings.tries()
        delays = self.retry.delays()
        while True:
            try:
                if isinstance(fetched, BaseException):
                    raise fetched
                return await self._emit(window, fetched)
            except BlocktimesError as exc:
                outcome = self.retry.classify(exc)
                if outcome is Outcome.FATAL:
                    raise
                if tries.failed(outcome):
                    error = f"blocks {window} failed ({tries.spent()}; {shown(self.client)}): {exc}"
                    log.error("%s: %s", self.chain, error)
                    self._failed.append(window)
                    self._errors.append(error)
                    self._tip = None
                    return True
                log.warning(
                    "%s: blocks %s (%s): %s; fetching them again (try %d)",
                    self.chain, window, shown(self.client), exc, tries.count + 1,
                )  # fmt: skip
            await asyncio.sleep(next(delays))
            try:
                fetched = await self.fetcher.fetch(window)
            except BlocktimesError as again:
                fetched = again

    # -- rows ---------------------------------------------------------------------------------

    async def _emit(self, window: Span, fetched: list[Block]) -> bool:
        """Write the rows of ``window``'s blocks (``fetched``: with the window's parent
        and, if it exists, its last block's child).  False when a domain block's consensus
        block is not K deep yet: the rows stop before it, and so must the run.

        The loop is the backfill's hot path (once per block of the range): each row is
        one call of :func:`form_row`, and the consensus blocks are looked up for the
        whole window before it."""
        parent, blocks = fetched[0], fetched[1 : window.count + 1]
        self._check_links(parent, blocks, fetched[window.count + 1 :])
        child_spec = await self._parent_spec(parent)
        mapped = await self._resolve(blocks)
        parent_ts = parent.timestamp_ms
        parent_hash = parent.hash
        now_ms = int(self._wall() * 1000)
        kind = self.reader.kind
        consensus, domain = kind is ChainKind.CONSENSUS, kind is ChainKind.AUTO_EVM
        chain = self.chain
        rows: list[Row] = []
        unresolved: list[Unresolved] = []
        not_later: list[tuple[int, str, int]] = []
        complete = True
        for number, block_hash, parent_hex, timestamp, facts, bundle_count in blocks:
            if parent_hex != parent_hash:
                raise Reorged(f"block {number} ({block_hash}) is not a child of {parent_hash}")
            if timestamp is None:
                raise MalformedAnswer(f"block {number} ({block_hash}): no Timestamp.Now")
            if parent_ts is not None and timestamp <= parent_ts:
                not_later.append((number, block_hash, timestamp - parent_ts))
            spec = child_spec
            if facts.runtime_updated:
                runtime = await self.reader.runtime_at(hex_to_bytes(block_hash, "hash"))
                check_runtime(runtime, kind, chain)
                child_spec = runtime.spec_version
            if consensus:
                row = form_row(
                    chain, number, block_hash, parent_hash, timestamp, parent_ts, now_ms, spec,
                    segment_headers=facts.segment_commitments,
                    bundle_count=bundle_count,
                    slot=facts.slot,
                )  # fmt: skip
            elif domain:
                source = facts.consensus_hash
                found = map_source(source, self.consensus, mapped)
                if found.pending:
                    self._stop(number, found)
                    complete = False
                    break
                if found.reason is not None:
                    unresolved.append(
                        Unresolved(chain, number, block_hash, source, found.reason, now_ms)
                    )
                    source = None
                row = form_row(
                    chain, number, block_hash, parent_hash, timestamp, parent_ts, now_ms, spec,
                    consensus_block_hash=source,
                    consensus_block_number=found.number,
                )  # fmt: skip
            else:
                row = form_row(
                    chain, number, block_hash, parent_hash, timestamp, parent_ts, now_ms, spec
                )
            rows.append(row)
            parent_hash, parent_ts = block_hash, timestamp
        await self._put(rows, unresolved, child_spec, not_later)
        return complete

    def _check_links(self, parent: Block, blocks: list[Block], child: list[Block]) -> None:
        """The window's last block is its child's parent, and its parent is the block
        the previous window's rows ended on (when it continues them)."""
        last = blocks[-1]
        if child and child[0].parent_hash != last.hash:
            raise Reorged(
                f"block {last.number} ({last.hash}) is not the parent of block "
                f"{child[0].number} ({child[0].hash}), whose parent is {child[0].parent_hash}"
            )
        tip = self._tip
        if tip is not None and tip.number == parent.number and tip.hash != parent.hash:
            raise Reorged(
                f"block {parent.number} is {parent.hash} now, but the row written for it "
                f"has {tip.hash}"
            )

    async def _parent_spec(self, parent: Block) -> int:
        """The runtime the window's first block runs: known when the window continues the
        rows written, otherwise read at its parent (and a new run of blocks starts a new
        file)."""
        tip = self._tip
        if tip is not None and tip.number == parent.number:
            return tip.child_spec
        if self._written:
            await self.sink.flush()
        runtime = await self.reader.runtime_at(hex_to_bytes(parent.hash, "hash"))
        check_runtime(runtime, self.reader.kind, self.chain)
        return runtime.spec_version

    async def _resolve(self, blocks: list[Block]) -> dict[str, Mapped]:
        """The consensus blocks the window's domain blocks name, in one lookup."""
        if self.reader.kind is not ChainKind.AUTO_EVM or self.consensus is None:
            return {}
        sources = [block.facts.consensus_hash for block in blocks]
        return await self.consensus.resolve([h for h in sources if h is not None])

    def _stop(self, number: int, found: Mapped) -> None:
        self._stopped_at = number
        log.warning(
            "%s: stopping at block %d: its consensus block %d is not yet K deep",
            self.chain, number, found.number,
        )  # fmt: skip

    async def _put(
        self,
        rows: list[Row],
        unresolved: list[Unresolved],
        child_spec: int,
        not_later: list[tuple[int, str, int]],
    ) -> None:
        """Hand the writer a window's reconciliation records, then its rows."""
        for record in unresolved:
            self._unresolved += 1
            await self.sink.put(Reconciliation(self.chain, record))
        if not rows:
            return
        await self.sink.put(rows)
        self._written += len(rows)
        row = rows[-1]
        self._tip = _Tip(row.block_number, row.hash, row.timestamp_ms, child_spec)
        if not_later:
            self._warn_not_later(not_later, row.block_number)

    def _warn_not_later(self, blocks: list[tuple[int, str, int]], written_to: int) -> None:
        """Timestamps no later than the parent's are the chain's word, and written as
        such; the operator hears of each, and the run counts them."""
        for number, block_hash, delta in blocks:
            if number <= written_to:
                self._not_later += 1
                log.warning(
                    "%s: block %d (%s) is stamped %d ms after its parent, not later than "
                    "it; written as the chain says", self.chain, number, block_hash, delta,
                )  # fmt: skip


def _import_arrow_meanwhile() -> None:
    """Import pyarrow (about 0.1 s) in a thread while the first blocks are fetched, not
    when the first file is written: a distant node leaves the process waiting then.
    Started after the node is timed, whose timings it would upset."""
    if "blocktimesd.dataset.schema" not in sys.modules:
        threading.Thread(
            target=importlib.import_module,
            args=("blocktimesd.dataset.schema",),
            name="import-pyarrow",
            daemon=True,
        ).start()


def _drop(started: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel what was started ahead and is still running; mark a failed one's error
    seen (a failure that mattered was raised where it was awaited)."""
    for future in started:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()


async def _cancel(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for them; their errors are moot now."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, BlocktimesError):
            await task
