"""The single Parquet writer: the one asyncio task that writes under ``DATA_DIR``.

Producers ``await writer.put(item)`` into a bounded queue; one task takes items in
order (with ``gather_s`` set, the daemon's 0.1 s, a row that wakes the task is followed
by the rows that come within ``gather_s``, taken together).  Rows (:class:`Row`,
alone or in lists) and :class:`ReorgRecord`\\ s are buffered per partition and written
a whole file at a time when the :class:`Rotator` rolls them;
:class:`Reconciliation` records are appended to ``reconciliation/<chain>.jsonl``;
:class:`DeleteFrom` removes a chain's rows from a block number on (a
:class:`~blocktimesd.dataset.repair.Repair`); :class:`Flush` completes once everything
queued before it is durable.  ``docs/schema.md`` tells what reaches disk when.

Rows are durable once their file is renamed into place and the directory fsynced
(:mod:`blocktimesd.dataset.files`); until then they live in memory, at most
``max_rows`` per chain for at most ``max_minutes``.  With ``checkpoint_s`` set (the
daemon: 60 s), an open file of rows is also written as it stands every ``checkpoint_s``
seconds while it gains rows, each snapshot replacing the previous one (removed just
before the new one is renamed into place, so no block is ever in two visible files),
so rows are durable within about ``checkpoint_s`` while files stay few.  A stop of
any kind loses only the rows not yet durable: the daemon resumes from
:func:`~blocktimesd.dataset.scan.last_durable_row`.

Any :class:`OSError` while writing (disk full, read-only filesystem, ...) sets
:attr:`ParquetWriter.error` (a :class:`StorageError` naming the path and the fix) and
``status`` to ``failing``, and the operation is retried with backoff until it succeeds
(each is safe to repeat: nothing is lost or duplicated); meanwhile the writer takes
nothing more from the queue, so producers wait in ``put``.  The observer hears it all,
so a writer that cannot write shows on the metrics and readiness.

One writer per DATA_DIR: :meth:`ParquetWriter.start` takes the
:class:`~blocktimesd.dataset.files.DataDirLock` (:class:`DataDirUnusable`, exit code
2, when the path cannot be used), and the writer stops with :class:`LockLost` (fatal)
as soon as the lock file is removed or replaced under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import TypeAlias

from blocktimesd.core.backoff import backoff
from blocktimesd.dataset import repair
from blocktimesd.dataset.files import (
    Append,
    Files,
    WriteFile,
    error_place,
    path_error,
    storage_error,
)
from blocktimesd.dataset.intake import (
    ITEM_TYPES,
    DeleteFrom,
    Flush,
    Item,
    NullObserver,
    Reconciliation,
    Stop,
    WriterObserver,
    WriterSettings,
    WriterStatus,
)
from blocktimesd.dataset.layout import (
    RECONCILIATION,
    ROWS,
    partition_runs,
    reorg_partition,
    row_partition,
)
from blocktimesd.dataset.object_files import files_for, lock_for
from blocktimesd.dataset.objects import DataPath, as_data_path
from blocktimesd.dataset.records import ReorgRecord, Row
from blocktimesd.dataset.rotation import Batch, RollReason, Rotator
from blocktimesd.dataset.scan import temp_files
from blocktimesd.errors import BlocktimesError, StorageError, WriterClosed

__all__ = [
    "DeleteFrom",
    "Flush",
    "Item",
    "ParquetWriter",
    "Reconciliation",
    "WriterObserver",
    "WriterSettings",
    "WriterStatus",
]

log = logging.getLogger(__name__)

_CHAIN, _NUMBER = attrgetter("chain"), attrgetter("block_number")

# -- operations: each is safe to repeat after a failure ----------------------------------


@dataclass(slots=True)
class _Resolve:
    flush: Flush


_Op: TypeAlias = WriteFile | Append | repair.Repair | _Resolve


# -- the writer --------------------------------------------------------------------------


class ParquetWriter:
    """The single writer of ``data_dir``: ``start()``, ``put()`` items, ``close()``."""

    def __init__(
        self,
        data_dir: DataPath | str,
        settings: WriterSettings | None = None,
        *,
        observer: WriterObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        files: Files | None = None,
        logger: logging.Logger | None = None,
        rng: random.Random | None = None,
        break_lease: bool = False,
        shard: str | None = None,
    ) -> None:
        self.data_dir = as_data_path(data_dir)
        # A backfill worker of several (--shard): its own lock, and no clean-up of temp
        # files, which may be another worker's.
        self._shard = shard
        self.settings = settings or WriterSettings()
        self._observer: WriterObserver = observer or NullObserver()
        self._clock = clock
        self._files = files or files_for(self.data_dir)
        self._log = logger or log
        self._rng = rng or random.Random()
        # Bounded: when full, put() waits, so producers slow to the disk's pace, and to a
        # halt while writes fail.  In memory: this many items plus the open files.
        self._queue: asyncio.Queue[Item | Stop] = asyncio.Queue(self.settings.queue_size)
        self._rows: Rotator[Row] = Rotator(self.settings.policy)
        self._reorgs: Rotator[ReorgRecord] = Rotator(self.settings.policy)
        self._ops: deque[_Op] = deque()  # operations due, in order; the head may be retrying
        self._task: asyncio.Task[None] | None = None
        self._lock = lock_for(self.data_dir, break_lease=break_lease, shard=shard)
        self._stopping = False  # no more intake; the task drains and ends
        self._close_started = False
        self._closed = asyncio.Event()
        self._failing_since: float | None = None
        # Rows of each chain put and not yet durable (queued, buffered or being written).
        self._pending: dict[str, int] = {}
        # The last snapshot of each open file of rows, by (dataset, chain), and when it
        # was taken; the file's next snapshot or final write replaces it.
        self._snapshots: dict[tuple[str, str], tuple[WriteFile, float]] = {}
        self.status = WriterStatus.NEW
        self.error: StorageError | None = None  # the current write failure, if any

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Take DATA_DIR's lock, remove temp files left by a crash, start the task."""
        if self._task is not None:
            return
        await asyncio.to_thread(self._prepare)
        self.status = WriterStatus.RUNNING
        self._observer.write_succeeded()  # it created DATA_DIR's lock: it can write
        self._task = asyncio.create_task(self._run(), name="parquet-writer")
        self._task.add_done_callback(self._on_done)

    async def close(self, timeout: float = 30.0) -> None:
        """Stop intake, drain the queue, write every open file; give up after ``timeout``.

        Idempotent.  Rows still in memory when time runs out are logged and dropped (the
        next start fetches them again).  Raises the writer's fatal error, if it had one.
        """
        if self._close_started:
            await self._closed.wait()
            return
        self._close_started = self._stopping = True
        task = self._task
        try:
            if task is not None:
                # When full, the task is busy rather than waiting; it sees _stopping anyway.
                with contextlib.suppress(asyncio.QueueFull):
                    self._queue.put_nowait(Stop())
                done, _ = await asyncio.wait({task}, timeout=timeout)
                if not done:
                    self._give_up(f"{timeout:g} s shutdown deadline passed")
                    task.cancel()
                    await asyncio.wait({task})
        except asyncio.CancelledError:
            if task is not None:
                task.cancel()
            raise
        finally:
            self._abandon_queue()
            self._lock.release()
            self.status = WriterStatus.CLOSED
            self._closed.set()
        if task is not None and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    async def join(self) -> None:
        """Wait until the writer task ends; raise its fatal error (for the app's TaskGroup)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def __aenter__(self) -> ParquetWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- intake --------------------------------------------------------------------------

    async def put(self, item: Item) -> None:
        """Queue one item, waiting while the queue is full."""
        if not isinstance(item, ITEM_TYPES):
            raise TypeError(f"the writer does not take {type(item).__name__}")
        if self._stopping or self._task is None or self._task.done():
            raise WriterClosed(f"the writer of {self.data_dir} is {self.status}")
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            await self._queue.put(item)
        if isinstance(item, Row):
            self._count_pending(item.chain, 1)
        elif isinstance(item, list) and item:
            if item[0].chain == item[-1].chain and len(set(map(_CHAIN, item))) == 1:
                self._count_pending(item[0].chain, len(item))
            else:
                for chain, rows in Counter(map(_CHAIN, item)).items():
                    self._count_pending(chain, rows)

    async def flush(self) -> None:
        """Return once everything put before this call is durable."""
        request = Flush()
        await self.put(request)
        await request

    async def delete_from(self, chain: str, block_number: int) -> None:
        await self.put(DeleteFrom(chain, block_number))

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def pending_rows(self) -> dict[str, int]:
        """Rows of each chain put and not yet durable: queued, buffered or being written."""
        return dict(self._pending)

    def _count_pending(self, chain: str, rows: int) -> None:
        self._pending[chain] = held = self._pending.get(chain, 0) + rows
        self._observer.rows_pending(chain, held)

    @property
    def buffered_rows(self) -> int:
        """Rows in memory, not yet in a file (open files and files waiting to be written)."""
        return self._rows.buffered + sum(
            len(op.batch.items)
            for op in self._ops
            if isinstance(op, WriteFile) and op.batch.partition.dataset == ROWS
        )

    # -- the task ------------------------------------------------------------------------

    async def _run(self) -> None:
        delays: Iterator[float] | None = None
        while True:
            if self._ops:
                try:
                    await self._apply_ops()
                except OSError as exc:
                    if delays is None:
                        s = self.settings
                        delays = backoff(s.retry_initial, 2.0, s.retry_cap, self._rng)
                        next(delays)  # its first delay is 0: an immediate retry
                    self._failed(exc)
                    await asyncio.sleep(next(delays))
                    continue
                if delays is not None:
                    delays = None
                    self._recovered()
            elif self._stopping and self._queue.empty():
                self._schedule(RollReason.SHUTDOWN)
                if not self._ops:
                    return
            else:
                await self._take()
                now = self._clock()
                self._write(self._rows.due(now))
                self._ops.extend(map(WriteFile, self._reorgs.due(now)))
                self._checkpoint(now)

    async def _take(self) -> None:
        """Take the next item, if one comes before an open file's deadline or the poll
        interval; after a lone row, the rows that come within ``gather_s`` too."""
        item = await self._next_item()
        if item is None:
            return
        self._handle(item, self._clock())
        if type(item) is Row and self.settings.gather_s:
            await self._gather()
        self._observer.queue_length(self._queue.qsize())

    async def _gather(self) -> None:
        """Wait ``gather_s``, unless more is queued already, and take the rows queued by
        then together, up to the first other item: rows that arrive one at a time cost
        one wake of the task per ``gather_s`` rather than one each."""
        queue = self._queue
        if queue.empty() and not self._stopping:
            await asyncio.sleep(self.settings.gather_s)
        rows: list[Row] = []
        other: Item | Stop | None = None
        while not queue.empty():
            taken = queue.get_nowait()
            if type(taken) is not Row:
                other = taken
                break
            rows.append(taken)
        now = self._clock()
        if rows:
            self._add_rows(rows, now)
        if other is not None and not isinstance(other, Stop):
            self._handle(other, now)

    async def _next_item(self) -> Item | None:
        if self._queue.empty():
            timeout = self.settings.poll_interval
            deadlines = [self._rows.next_deadline(), self._reorgs.next_deadline()]
            if due := [d for d in deadlines if d is not None]:
                timeout = min(timeout, max(0.0, min(due) - self._clock()))
            try:
                async with asyncio.timeout(timeout):
                    item = await self._queue.get()
            except TimeoutError:
                return None
        else:
            item = self._queue.get_nowait()
        return None if isinstance(item, Stop) else item

    def _handle(self, item: Item, now: float) -> None:
        if isinstance(item, Row):  # the follower's items: one row at a time
            pair = [(item.block_number, item)]
            self._write(self._rows.extend(row_partition(item), pair, now))
        elif isinstance(item, list):
            self._add_rows(item, now)
        elif isinstance(item, ReorgRecord):
            batches = self._reorgs.add(reorg_partition(item), item.new_tip_number, item, now)
            self._ops.extend(map(WriteFile, batches))
        elif isinstance(item, Reconciliation):
            path = self.data_dir / RECONCILIATION / f"{item.chain}.jsonl"
            self._ops.append(Append(path, item.line))
        elif isinstance(item, DeleteFrom):
            if any(chain == item.chain for _, chain in self._snapshots):
                # Its open file is partly on disk: write it whole first, so that the
                # repair below sees every row in one place.
                self._schedule(RollReason.FLUSH)
            dropped = self._rows.discard_from(ROWS, item.chain, item.block_number)
            if dropped:
                self._count_pending(item.chain, -dropped)
            self._ops.append(repair.Repair(item.chain, item.block_number, dropped))
        elif isinstance(item, Flush):
            self._schedule(RollReason.FLUSH)
            self._ops.append(_Resolve(item))

    def _add_rows(self, rows: Sequence[Row], now: float) -> None:
        """Buffer rows, a run of the same partition at a time (the hot path)."""
        for run in partition_runs(rows):
            pairs = list(zip(map(_NUMBER, run), run, strict=True))
            self._write(self._rows.extend(row_partition(run[0]), pairs, now))

    def _write(self, batches: Sequence[Batch[Row]]) -> None:
        """Write rolled files of rows, each replacing its open file's last snapshot."""
        for batch in batches:
            key = (batch.partition.dataset, batch.partition.chain)
            snapshot = self._snapshots.pop(key, None)
            self._ops.append(WriteFile(batch, replaces=None if snapshot is None else snapshot[0]))

    def _checkpoint(self, now: float) -> None:
        """Snapshot every open file of rows that gained rows ``checkpoint_s`` ago or more."""
        every = self.settings.checkpoint_s
        if every is None:
            return
        for key, opened_at, count in self._rows.open_files():
            last = self._snapshots.get(key)
            since = opened_at if last is None else last[1]
            if now - since < every:
                continue
            if last is not None and len(last[0].batch.items) == count:
                continue  # nothing new since the last snapshot
            batch = self._rows.copy(key, RollReason.FLUSH)
            op = WriteFile(batch, replaces=None if last is None else last[0], checkpoint=True)
            self._snapshots[key] = (op, now)
            self._ops.append(op)

    def _schedule(self, reason: RollReason) -> None:
        self._write(self._rows.roll_all(reason))
        self._ops.extend(map(WriteFile, self._reorgs.roll_all(reason)))

    async def _apply_ops(self) -> None:
        while self._ops:
            op = self._ops[0]
            if isinstance(op, _Resolve):
                if not op.flush.done.done():
                    op.flush.done.set_result(None)
            else:
                # Serializing and fsyncing block; a thread keeps the event loop responsive.
                await asyncio.to_thread(self._apply, op)
                self._report(op)
                self._observer.write_succeeded()
            self._ops.popleft()

    # -- operations (in a worker thread) -------------------------------------------------

    def _apply(self, op: WriteFile | Append | repair.Repair) -> None:
        self._lock.check()
        if isinstance(op, WriteFile):
            op.apply(self._files, self.data_dir, self.settings.row_group_rows)
        elif isinstance(op, Append):
            op.apply(self._files)
        else:
            repair.apply(op, self.data_dir, self._files, self.settings.row_group_rows)

    # -- bookkeeping (on the event loop) -------------------------------------------------

    def _report(self, op: WriteFile | Append | repair.Repair) -> None:
        if isinstance(op, WriteFile):
            part, rows, new = op.batch.partition, len(op.batch.items), op.new_rows
            if part.dataset == ROWS:
                self._count_pending(part.chain, -new)
            if op.checkpoint:
                self._observer.rows_checkpointed(part.chain, new)
                self._log.debug(
                    "%s: wrote %s, the open file so far (%d rows, blocks %d-%d)",
                    part.chain, op.published, rows, op.batch.first, op.batch.last,
                )  # fmt: skip
                return
            self._observer.file_written(part.dataset, part.chain, new)
            self._log.info(
                "%s: wrote %s (%d rows, blocks %d-%d, %s)",
                part.chain, op.published, rows, op.batch.first, op.batch.last, op.batch.reason,
            )  # fmt: skip
        elif isinstance(op, repair.Repair):
            self._observer.rows_deleted(op.chain, op.rows + op.buffered)
            self._log.info(
                "%s: removed rows from block %d on: %d in %d files, %d in memory",
                op.chain, op.number, op.rows, len(op.victims or ()), op.buffered,
            )  # fmt: skip

    def _failed(self, exc: OSError) -> None:
        error = storage_error(exc, self.data_dir)
        # One ERROR line per distinct problem (temp names differ from retry to retry).
        if self.error is None or error_place(self.error) != error_place(error):
            self._log.error("%s", error)
        else:
            self._log.debug("still failing: %s", error)
        if self._failing_since is None:
            self._failing_since = self._clock()
        self.error = error
        self.status = WriterStatus.FAILING
        self._observer.write_failed(str(error))

    def _recovered(self) -> None:
        since = self._failing_since if self._failing_since is not None else self._clock()
        self._log.info("writing to %s again after %.0f s", self.data_dir, self._clock() - since)
        self._failing_since = None
        self.error = None
        self.status = WriterStatus.RUNNING
        self._observer.write_recovered()

    def _give_up(self, why: str) -> None:
        self._log.error(
            "writer: %s with %d rows not yet in files (%s); the next start fetches them "
            "again from the last durable block",
            why, self.buffered_rows, self.error or "no write error",
        )  # fmt: skip

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._stopping = True
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._log.critical(
                "writer stopped: %s; %d rows not yet in files are not written (the next "
                "start fetches them again from the last durable block)",
                exc if isinstance(exc, BlocktimesError) else repr(exc),
                sum(self._pending.values()),
            )
        self._abandon_queue()

    def _abandon_queue(self) -> None:
        """Fail pending flushes so nobody waits forever on a writer that has stopped."""
        closed = WriterClosed(f"the writer of {self.data_dir} stopped")
        pending = [op.flush for op in self._ops if isinstance(op, _Resolve)]
        rows = 0
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, Flush):
                pending.append(item)
            elif isinstance(item, Row | list):
                rows += 1 if isinstance(item, Row) else len(item)
        if rows:
            self._log.warning("writer: %d rows left in the queue were not written", rows)
        for request in pending:
            if not request.done.done():
                request.done.set_exception(closed)

    # -- start-up (in a worker thread) ---------------------------------------------------

    def _prepare(self) -> None:
        try:
            self._files.makedirs(self.data_dir)
            self._lock.acquire()
            temps = [] if self._shard is not None else temp_files(self.data_dir)
            for temp in temps:
                self._files.unlink(temp)
        except OSError as exc:
            self._lock.release()
            raise path_error(exc, self.data_dir, "write", start=True) from exc
        if temps:
            where = self.data_dir
            self._log.info(
                "removed %d temp files left in %s by an interrupted write", len(temps), where
            )
