"""Backfill: rows for a past range of one chain, into the daemon's own dataset.

The range is clamped to ``tip - K`` (deeper blocks only, as the daemon confirms them).
The block numbers already durable for the chain are read from the dataset (file names
first, the ``block_number`` column only where a file does not prove itself gap-free)
and skipped, so re-running a range, overlapping the daemon's rows or resuming an
interrupted backfill never writes a row twice.  The rest is worked through a window
at a time (memory stays bounded whatever the range), with the next windows fetched
while one is turned into rows.  Blocks arrive in small groups, in order of number,
and are counted for the progress as they arrive; an interrupt still writes the oldest
window's blocks that arrived (as far as each is vouched for by its child).  A data file
that cannot be read is named in an :class:`~blocktimesd.errors.InvalidDataFile`.

Per block the cheapest set of calls: the hash by number (``chain_getBlockHash`` with a
list of numbers), the header, and the storage values: ``Timestamp.Now`` with
``state_getStorage``, or with ``Domains.SuccessfulBundles`` in one
``state_queryStorageAt`` on the consensus chain; when the node allows unsafe methods,
``state_queryStorage`` over a range of blocks instead.  Calls are pipelined (and
batched, per :class:`RpcSettings`) under the client's in-flight cap.  Runtime versions
are asked only at upgrades, as :class:`ChainReader` does.

Nothing a node says is written unchecked.  Every header must hash to the hash it was
fetched by; every block must be its successor's parent, the last block of a window
included (its successor is fetched with the window; the range ends at ``tip - K``, so
there is one); a window must continue the rows written before it.  An answer that fails
a check, or does not have the shape the protocol gives it, is a node fault
(:func:`blocktimesd.errors.classify`): the window is fetched again, a bounded number of
times with the :class:`RetryPolicy`'s delays, and then listed as failed, naming the
chain, the endpoint and the block.  What cannot be checked (storage values) is written
as the chain says; a timestamp no later than its parent's is logged and counted.

Rows are formed as the follower forms them; domain rows name their consensus block
(by the consensus node's header), or get a null and a reconciliation record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from blocktimesd.aio.chain import ChainKind, ChainReader, check_runtime
from blocktimesd.aio.rpc import RpcClient
from blocktimesd.core import decode, hexfacts
from blocktimesd.core.header import hex_to_bytes, to_hex
from blocktimesd.core.ranges import Span, merge, runs, subtract, total, windows
from blocktimesd.core.redact import redact_url
from blocktimesd.dataset.records import Row, Unresolved, delta_ms
from blocktimesd.dataset.rotation import ROWS, check_chain, parse_file_name
from blocktimesd.dataset.writer import Reconciliation, check_data_files
from blocktimesd.errors import (
    BlocktimesError,
    ChainStopped,
    DecodeError,
    HashMismatch,
    MalformedAnswer,
    NodeFault,
    Outcome,
    PrunedNode,
    RetryPolicy,
    RpcError,
)
from blocktimesd.progress import ProgressSink

__all__ = [
    "Backfill",
    "BackfillSettings",
    "BackfillSink",
    "ChainResult",
    "ConsensusMap",
    "best_number",
    "block_at_time",
    "choose_batch_size",
    "durable_runs",
]

log = logging.getLogger(__name__)

_FIRST, _SECOND = itemgetter(0), itemgetter(1)
TIMESTAMP_NOW_KEY = "0xf0c365c3cf59d671eb72da0e7a4113c49f1f0515f462cdcf84e0f1d6045dfcbb"
_DISCARDED = "State already discarded"
_GROUP_BLOCKS = 16  # the least blocks fetched (and reported) together: see _group_size
_SALVAGE_S = 10.0  # an interrupted run's time to write the rows it fetched already
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class BackfillSettings:
    window: int = 4096  # blocks turned into rows at a time
    blocks_per_task: int = 256  # numbers per chain_getBlockHash list (and state_queryStorage)
    lookahead: int = 3  # windows fetched at once, the oldest being written
    # Fetches of a window before its blocks are reported as failed, and tries of each
    # start-up question (the tip, a date-time's block, the runtime) before the run ends.
    attempts: int = 3
    query_storage: bool | None = None  # None: state_queryStorage when the node allows it

    def __post_init__(self) -> None:
        if min(self.window, self.blocks_per_task, self.lookahead, self.attempts) < 1:
            raise ValueError("window, blocks_per_task, lookahead and attempts must be >= 1")


class BackfillSink(Protocol):
    """Where rows go: the Parquet writer."""

    async def put(self, item: Any) -> None: ...

    async def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ChainResult:
    chain: str
    span: Span | None  # the range worked on, after clamping; None: nothing to do
    written: int = 0
    skipped: int = 0  # already durable
    failed: tuple[Span, ...] = ()
    unresolved: int = 0  # domain rows without a consensus block number
    stopped_at: int | None = None  # domain: from here on the consensus source is not K deep
    not_later: int = 0  # rows stamped no later than their parent (written as the chain says)
    errors: tuple[str, ...] = ()  # why the failed blocks failed, one line per window


class _Reorged(NodeFault):
    """The blocks fetched by number no longer form one chain (a reorg raced the fetch, or
    the node contradicts itself): fetch the window again."""


class _Block(NamedTuple):
    """What a row needs of one block, read from the node's answers as they arrive
    (while they are still in the CPU's caches; the answers are dropped right away)."""

    number: int
    hash: str
    parent_hash: str
    timestamp_ms: int | None  # None: no Timestamp.Now (genesis)
    facts: hexfacts.DigestFacts
    bundles: int  # SuccessfulBundles of the configured domains (consensus)


@dataclass(slots=True)
class _Tip:
    """The last block turned into a row: the next window's parent."""

    number: int
    hash: str
    timestamp_ms: int | None
    child_spec: int  # the runtime its children run


class _Landing:
    """A window's blocks as they arrive, a group at a time: what the progress counts, and
    what an interrupted run can still write (the groups that form an unbroken run from
    the window's parent on)."""

    def __init__(self, window: Span, report: Callable[[int], None] | None) -> None:
        self.window = window
        self.report = report
        self.groups: dict[int, list[_Block]] = {}  # by the number of their first block

    def add(self, blocks: list[_Block]) -> None:
        if not blocks:
            return
        self.groups[blocks[0].number] = blocks
        if self.report is not None:
            window = self.window
            # The parent and the child of the window are fetched with it, not for it.
            inside = min(blocks[-1].number, window.last) - max(blocks[0].number, window.first)
            self.report(max(inside + 1, 0))

    def prefix(self) -> list[_Block]:
        """The blocks that arrived from the window's parent on, up to the first gap."""
        out: list[_Block] = []
        number = self.window.first - 1
        while (group := self.groups.get(number)) is not None:
            out += group
            number = group[-1].number + 1
        return out


# -- what is durable already ----------------------------------------------------------------


def durable_runs(data_dir: Path | str, chain: str, span: Span) -> list[Span]:
    """Runs of ``chain``'s block numbers inside ``span`` that are on disk.

    A file whose row count equals its name's block range is gap-free and costs a footer
    read; only other files have their ``block_number`` column read.
    """
    paths = _files_over(Path(data_dir), chain, span)
    # A truncated or foreign file is named in one clear error (InvalidDataFile), not
    # met as a pyarrow traceback halfway through the walk.
    check_data_files([path for path, _ in paths], Path(data_dir))
    found: list[Span] = []
    for path, name in paths:
        with pq.ParquetFile(path) as parquet:
            if parquet.metadata.num_rows == name.count:
                found.append(name)
                continue
            column = parquet.read(columns=["block_number"])["block_number"]
        inside = pc.filter(
            column,
            pc.and_(pc.greater_equal(column, span.first), pc.less_equal(column, span.last)),
        )
        found.extend(runs(inside.to_pylist()))
    clipped = [
        Span(max(s.first, span.first), min(s.last, span.last))
        for s in found
        if s.last >= span.first and s.first <= span.last
    ]
    return merge(clipped)


def _files_over(data_dir: Path, chain: str, span: Span) -> list[tuple[Path, Span]]:
    """``chain``'s data files whose names say they hold blocks of ``span``."""
    base = data_dir / ROWS / f"chain={check_chain(chain)}"
    out: list[tuple[Path, Span]] = []
    with contextlib.suppress(FileNotFoundError):
        for directory in sorted(base.iterdir()):
            if not directory.name.startswith("date="):
                continue
            for path in sorted(directory.iterdir()):
                name = parse_file_name(path.name)
                if name is not None and name.last >= span.first and name.first <= span.last:
                    out.append((path, Span(name.first, name.last)))
    return out


# -- what a node answers ---------------------------------------------------------------------


def shown(client: RpcClient) -> str:
    """The endpoint that answers (between connections: the configured ones), as messages
    may show it: without credentials."""
    return client.shown_endpoint or ", ".join(map(redact_url, client.settings.endpoints))


def _header(obj: Any) -> tuple[int, str, str, hexfacts.DigestFacts]:
    """:func:`hexfacts.header_facts` of a node's answer; a malformed one is a node fault."""
    try:
        return hexfacts.header_facts(obj)
    except DecodeError as exc:
        raise MalformedAnswer(f"chain_getHeader answered {obj!r:.60}: {exc}") from None


async def best_number(client: RpcClient) -> int:
    """The number of the node's best block."""
    return _header(await client.call("chain_getHeader"))[0]


async def retrying(
    call: Callable[[], Awaitable[_T]],
    what: str,
    client: RpcClient,
    label: str,
    retry: RetryPolicy,
    attempts: int,
) -> _T:
    """``call()``, asked again after a node fault or a transient error (bounded: at most
    ``attempts`` in all, with the policy's delays); then :class:`ChainStopped` saying
    what failed, for which chain and where.  A fatal error is raised at once."""
    delays = retry.delays()
    attempt = 1
    while True:
        try:
            return await call()
        except BlocktimesError as exc:
            if retry.classify(exc) is Outcome.FATAL:
                raise
            if attempt >= attempts:
                raise ChainStopped(
                    f"{label}: {what} failed {attempts} times ({shown(client)}): {exc}"
                ) from exc
            attempt += 1
            log.warning(
                "%s: %s failed (%s): %s; asking again (attempt %d of %d)",
                label, what, shown(client), exc, attempt, attempts,
            )  # fmt: skip
            await asyncio.sleep(next(delays))


# -- resolving date-times -------------------------------------------------------------------


async def _timestamp_at(client: RpcClient, number: int, label: str) -> int | None:
    block_hash = await client.call("chain_getBlockHash", number)
    if block_hash is None:
        return None
    if not isinstance(block_hash, str):
        raise MalformedAnswer(f"block {number}: chain_getBlockHash answered {block_hash!r:.80}")
    try:
        value = await client.call("state_getStorage", TIMESTAMP_NOW_KEY, block_hash)
    except RpcError as exc:
        raise _pruned(client, label, number, block_hash, exc) from None
    try:
        return decode.timestamp_from_storage(None if value is None else hex_to_bytes(value))
    except DecodeError as exc:
        raise MalformedAnswer(f"block {number} ({block_hash}): Timestamp.Now: {exc}") from None


async def block_at_time(
    client: RpcClient, timestamp_ms: int, tip: int, label: str, *, end: bool
) -> int:
    """The first block stamped at or after ``timestamp_ms``; with ``end``, the last block
    stamped before it.  Binary search on ``Timestamp.Now`` over blocks 1..``tip``."""
    lo, hi = 1, tip + 1  # the answer for "first at or after" lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        stamp = await _timestamp_at(client, mid, label)
        if stamp is not None and stamp >= timestamp_ms:
            hi = mid
        else:
            lo = mid + 1
    return lo - 1 if end else lo


def _pruned(client: RpcClient, label: str, number: int, block_hash: str, exc: RpcError) -> Any:
    if _DISCARDED in exc.message:
        return PrunedNode(
            f"{label}: this node is pruned; use an archive node. {shown(client)} no longer has "
            f"the state of block {number} ({block_hash}): {exc.message}"
        )
    return exc


# -- batch size ------------------------------------------------------------------------------

_PROBE_CALLS = 4
_FAST_ROUND_TRIP_S = 0.005
_BATCH_BUDGET_S = 0.02  # the least time a batch's own calls may add to its round trip


async def choose_batch_size(
    client: RpcClient, label: str, clock: Callable[[], float] = time.perf_counter
) -> int:
    """Calls per JSON-RPC batch for this node, at most the client's ``batch_size``.

    A message costs a round trip plus, per call in it, the node's time for that call
    (nodes run a batch's calls one after another).  Big batches save the per-message
    costs on both sides, so calls are batched up to the point where they would make a
    round trip longer by more than the round trip itself (or 20 ms): a node that
    answers in microseconds gets the largest batches, one that takes tens of
    milliseconds per call gets single requests, many in flight.
    """
    largest = client.settings.batch_size
    if largest == 1:
        return 1
    probe = [("chain_getBlockHash", [0])] * _PROBE_CALLS

    async def timed(calls: list[tuple[str, list[Any]]]) -> float:
        started = clock()
        await client.call_many(calls, batch_size=len(calls))
        return clock() - started

    single = await timed(probe[:1])
    # A fast node's timings are close to the noise: take the best of a few.  A slow one
    # is measured well enough at once, and each probe costs it many milliseconds.
    samples = 3 if single < _FAST_ROUND_TRIP_S else 1
    single = min([single] + [await timed(probe[:1]) for _ in range(samples - 1)])
    batch = min([await timed(probe) for _ in range(samples)])
    per_call = max(batch - single, 0.0) / (_PROBE_CALLS - 1)
    budget = max(single, _BATCH_BUDGET_S)
    size = largest if per_call * largest <= budget else max(1, int(budget / per_call))
    log.info(
        "%s: round trip %.2f ms, %.3f ms more per call in a batch: %d calls per batch",
        label, single * 1000, per_call * 1000, size,
    )  # fmt: skip
    return size


# -- domain -> consensus ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Mapped:
    number: int | None
    reason: str | None = None  # why the number is unknown
    pending: bool = False  # the consensus block is not yet K deep


class ConsensusMap:
    """Numbers of consensus blocks named by domain headers, read from the consensus node.

    A block counts only when it is on the node's canonical chain and at most
    ``confirmed_tip`` (K deep); deeper checks are the follower's business.  Its header
    must hash to the hash the domain block names.
    """

    def __init__(self, client: RpcClient, confirmed_tip: int) -> None:
        self.client = client
        self.confirmed_tip = confirmed_tip

    async def resolve(self, hashes: Sequence[str]) -> dict[str, _Mapped]:
        unique = list(dict.fromkeys(hashes))
        headers = await self.client.call_many([("chain_getHeader", [h]) for h in unique])
        out: dict[str, _Mapped] = {}
        known: list[tuple[str, int]] = []
        where = shown(self.client)
        for block_hash, header in zip(unique, headers, strict=True):
            if isinstance(header, RpcError):
                raise header
            if header is None:
                out[block_hash] = _Mapped(None, "the consensus node does not know the block")
                continue
            try:
                number, computed, _, _ = _header(header)
            except MalformedAnswer as exc:
                raise MalformedAnswer(f"consensus block {block_hash} ({where}): {exc}") from None
            if computed != block_hash.lower():
                raise HashMismatch(
                    f"consensus block {number} ({block_hash}, {where}): the node answered a "
                    f"header that hashes to {computed}"
                )
            known.append((block_hash, number))
        if known:
            numbers = [n for _, n in known]
            canonical = await self.client.call("chain_getBlockHash", numbers)
            if not isinstance(canonical, list) or len(canonical) != len(numbers):
                raise MalformedAnswer(
                    f"consensus blocks {numbers[0]}..{numbers[-1]} ({where}): "
                    f"chain_getBlockHash answered {canonical!r:.80}"
                )
            for (block_hash, number), on_chain in zip(known, canonical, strict=True):
                if number > self.confirmed_tip:
                    out[block_hash] = _Mapped(number, pending=True)
                elif on_chain != block_hash:
                    out[block_hash] = _Mapped(None, "the consensus block was orphaned")
                else:
                    out[block_hash] = _Mapped(number)
        return out


# -- the engine -------------------------------------------------------------------------------


class Backfill:
    """One chain's backfill over ``span``; :meth:`run` returns what it did."""

    def __init__(
        self,
        reader: ChainReader,
        chain: str,
        k: int,
        sink: BackfillSink,
        data_dir: Path,
        *,
        settings: BackfillSettings | None = None,
        unsafe_allowed: bool = False,
        consensus: ConsensusMap | None = None,
        progress: Callable[[str, int], ProgressSink] | None = None,
        wall_clock: Callable[[], float] = time.time,
        retry: RetryPolicy | None = None,
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
        self.consensus = consensus
        self._progress = progress
        self._wall = wall_clock
        self.retry = retry or RetryPolicy()
        self._keys: list[str] = []
        self._tip: _Tip | None = None
        self._failed: list[Span] = []
        self._errors: list[str] = []
        self._written = 0
        self._unresolved = 0
        self._not_later = 0
        self._stopped_at: int | None = None
        self._span: Span | None = None
        self._skipped = 0
        self._batch = self.client.settings.batch_size
        # Groups of blocks in flight: enough to keep the client's in-flight cap full, few
        # enough that they are answered in order of number (the semaphore is FIFO), so
        # an interrupted run has an unbroken run of blocks to write.
        self._gate = asyncio.Semaphore(self.client.settings.max_inflight)

    async def _retrying(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        return await retrying(
            call, what, self.client, self.chain, self.retry, self.settings.attempts
        )

    async def tip(self) -> int:
        """The number of the node's best block."""
        return await self._retrying("asking for the best block", lambda: best_number(self.client))

    async def block_at(self, timestamp_ms: int, tip: int, *, end: bool) -> int:
        """:func:`block_at_time` on this chain's node."""
        return await self._retrying(
            "finding the block of a date-time",
            lambda: block_at_time(self.client, timestamp_ms, tip, self.chain, end=end),
        )

    async def run(self, requested: Span) -> ChainResult:
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
        present = await asyncio.to_thread(durable_runs, self.data_dir, self.chain, span)
        missing = subtract(span, present)
        skipped = self._skipped = span.count - total(missing)
        log.info(
            "%s: backfilling %d blocks of %s (%d already in the dataset), %s",
            self.chain, total(missing), span, skipped,
            "storage by state_queryStorage ranges" if self.query_storage else "storage per block",
        )  # fmt: skip
        if missing:
            # Both start-up checks at once: on a distant node each round trip counts.
            state = asyncio.ensure_future(
                self._retrying(
                    "reading the state before the range",
                    lambda: self._check_state(missing[0].first - 1),
                )
            )
            try:
                runtime = await self._retrying("reading the runtime", self.reader.check_runtime)
                await state
            finally:
                if not state.done():
                    state.cancel()
                elif not state.cancelled():
                    state.exception()  # seen, whichever check failed first
            self._keys = [to_hex(runtime.storage_key("Timestamp", "Now"))]
            if self.reader.kind is ChainKind.CONSENSUS:
                self._keys += [
                    to_hex(runtime.storage_key("Domains", "SuccessfulBundles", domain))
                    for domain in self.reader.domain_ids
                ]
            self._batch = await self._retrying(
                "timing the node", lambda: choose_batch_size(self.client, self.chain)
            )
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
        await _timestamp_at(self.client, max(number, 0), self.chain)

    # -- the pipeline: fetch ahead, write in order ----------------------------------------------

    async def _pipeline(self, missing: list[Span], progress: ProgressSink | None) -> None:
        # Up to ``lookahead`` windows are being fetched (or wait, fetched) while the
        # oldest is turned into rows: the requests in flight never drain between windows,
        # and memory holds at most ``lookahead`` windows.
        fetching: deque[tuple[_Landing, asyncio.Task[list[_Block]]]] = deque()
        todo = windows(missing, self.settings.window)
        report = progress.advance if progress is not None else None
        try:
            while True:
                while len(fetching) < self.settings.lookahead:
                    window = next(todo, None)
                    if window is None:
                        break
                    landing = _Landing(window, report)
                    task = asyncio.create_task(self._fetch(window, landing), name=f"fetch-{window}")
                    fetching.append((landing, task))
                if not fetching:
                    return
                landing, task = fetching.popleft()
                fetched: list[_Block] | BaseException
                try:
                    fetched = await task
                except BlocktimesError as exc:
                    fetched = exc
                except asyncio.CancelledError:
                    await _cancel(task for _, task in fetching)
                    await self._salvage(landing)
                    raise
                if not await self._write_window(landing.window, fetched):
                    return
        finally:
            await _cancel(task for _, task in fetching)

    async def _salvage(self, landing: _Landing) -> None:
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

    async def _write_window(self, window: Span, fetched: list[_Block] | BaseException) -> bool:
        """Turn one window into rows, fetching it again after a node fault or a transient
        error (at most ``attempts`` fetches, with the retry policy's delays), then listing
        it as failed; a fatal error ends the run.  False when the backfill must stop here
        (domain blocks not yet confirmable)."""
        attempts = self.settings.attempts
        delays = self.retry.delays()
        attempt = 1
        while True:
            try:
                if isinstance(fetched, BaseException):
                    raise fetched
                return await self._emit(window, fetched)
            except BlocktimesError as exc:
                if self.retry.classify(exc) is Outcome.FATAL:
                    raise
                if attempt >= attempts:
                    error = (
                        f"blocks {window} failed after {attempts} attempts "
                        f"({shown(self.client)}): {exc}"
                    )
                    log.error("%s: %s", self.chain, error)
                    self._failed.append(window)
                    self._errors.append(error)
                    self._tip = None
                    return True
                attempt += 1
                log.warning(
                    "%s: blocks %s (%s): %s; fetching them again (attempt %d of %d)",
                    self.chain, window, shown(self.client), exc, attempt, attempts,
                )  # fmt: skip
            await asyncio.sleep(next(delays))
            try:
                fetched = await self._fetch(window)
            except BlocktimesError as again:
                fetched = again

    # -- fetching ---------------------------------------------------------------------------------

    async def _fetch(self, window: Span, landing: _Landing | None = None) -> list[_Block]:
        """The window's blocks, the parent of its first and the child of its last, in
        order of number.  The child is what vouches for the last block (as each block
        vouches for its parent); only the best block has none, and then the last block
        must be the best block.  Each group of blocks is handed to ``landing`` as it
        arrives."""
        step = self.settings.blocks_per_task
        first, child = window.first - 1, window.last + 1
        tasks = [
            self._fetch_chunk(
                n, min(n + step - 1, child), successor=n + step > child, landing=landing
            )
            for n in range(first, child + 1, step)
        ]
        chunks = await asyncio.gather(*tasks)
        blocks = [raw for chunk in chunks for raw in chunk]
        if len(blocks) == window.count + 1:  # no child
            await self._check_best(blocks[-1])
        return blocks

    async def _check_best(self, block: _Block) -> None:
        number, computed, _, _ = _header(await self.client.call("chain_getHeader"))
        if (number, computed) != (block.number, block.hash):
            raise _Reorged(
                f"block {block.number + 1} is unknown, yet block {block.number} "
                f"({block.hash}) is not the best block (#{number}, {computed})"
            )

    async def _fetch_chunk(
        self, first: int, last: int, *, successor: bool = False, landing: _Landing | None = None
    ) -> list[_Block]:
        """Blocks ``first``..``last``; with ``successor``, ``last`` may not exist yet."""
        numbers = list(range(first, last + 1))
        async with self._gate:
            hashes = await self.client.call("chain_getBlockHash", numbers)
        if not isinstance(hashes, list) or len(hashes) != len(numbers):
            raise MalformedAnswer(
                f"blocks {first}-{last}: chain_getBlockHash answered {hashes!r:.80}"
            )
        if successor and hashes[-1] is None:
            del numbers[-1], hashes[-1]
            if not numbers:
                return []
        for number, block_hash in zip(numbers, hashes, strict=True):
            if block_hash is None:
                raise _Reorged(f"the node does not know block {number} any more")
            if not isinstance(block_hash, str):
                raise MalformedAnswer(
                    f"block {number}: chain_getBlockHash answered {block_hash!r:.80}"
                )
        hashes = [h.lower() for h in hashes]  # as the rows and parent links spell them
        size = self._group_size()
        groups = await asyncio.gather(
            *(
                self._fetch_group(numbers[at : at + size], hashes[at : at + size], landing)
                for at in range(0, len(numbers), size)
            )
        )
        return [block for group in groups for block in group]

    def _group_size(self) -> int:
        """Blocks per group: a group's calls fill a batch (as many messages as a whole
        chunk would take), yet there are groups enough to report progress often: with
        single calls to a distant node, 16 blocks take well under a second."""
        calls_per_block = 1 if self.query_storage else 2
        return max(_GROUP_BLOCKS, -(-self._batch // calls_per_block))

    async def _fetch_group(
        self, numbers: list[int], hashes: list[str], landing: _Landing | None
    ) -> list[_Block]:
        async with self._gate:
            blocks = await self._fetch_blocks(numbers, hashes)
        if landing is not None:
            landing.add(blocks)
        return blocks

    async def _fetch_blocks(self, numbers: list[int], hashes: list[str]) -> list[_Block]:
        """The blocks of ``numbers``, whose hashes are ``hashes``: headers and storage."""
        header_calls = [("chain_getHeader", [h]) for h in hashes]
        if self.query_storage:
            headers, values = await asyncio.gather(
                self.client.call_many(header_calls, batch_size=self._batch),
                self._query_range(numbers, hashes),
            )
        else:
            answers = await self.client.call_many(
                header_calls + self._storage_calls(hashes), batch_size=self._batch
            )
            headers = answers[: len(hashes)]
            values = self._values(numbers, hashes, answers[len(hashes) :])
        blocks: list[_Block] = []
        new_tuple = tuple.__new__  # the C constructor: a backfill makes millions of tuples
        header_facts, stamp, bundle_count = (
            hexfacts.header_facts,
            hexfacts.timestamp,
            hexfacts.bundle_count,
        )
        for number, block_hash, header, found in zip(numbers, hashes, headers, values, strict=True):
            if isinstance(header, RpcError):
                raise header
            if header is None:
                raise _Reorged(f"block {number} ({block_hash}) vanished from the node")
            try:
                header_number, computed, parent_hash, facts = header_facts(header)
            except DecodeError as exc:
                raise MalformedAnswer(
                    f"block {number} ({block_hash}): chain_getHeader answered {header!r:.60}: {exc}"
                ) from None
            try:
                timestamp = stamp(found[0])
                bundles = sum(map(bundle_count, found[1:])) if len(found) > 1 else 0
            except DecodeError as exc:
                raise MalformedAnswer(f"block {number} ({block_hash}): storage: {exc}") from None
            # Genesis is never a row, and block 1's own header vouches for its hash; some
            # nodes (chopsticks) report a genesis hash that is not its header's.
            if computed != block_hash and number:
                raise HashMismatch(
                    f"block {number} ({block_hash}): the node answered a header that hashes "
                    f"to {computed}"
                )
            if header_number != number:
                raise _Reorged(f"block {block_hash} is block {header_number}, not {number}")
            if timestamp is None and number:
                raise MalformedAnswer(f"block {number} ({block_hash}): no Timestamp.Now")
            blocks.append(
                new_tuple(_Block, (number, block_hash, parent_hash, timestamp, facts, bundles))
            )
        return blocks

    def _storage_calls(self, hashes: list[str]) -> list[tuple[str, list[Any]]]:
        if len(self._keys) == 1:
            key = self._keys[0]
            return [("state_getStorage", [key, h]) for h in hashes]
        return [("state_queryStorageAt", [self._keys, h]) for h in hashes]

    def _values(
        self, numbers: list[int], hashes: list[str], answers: list[Any]
    ) -> list[Sequence[str | None]]:
        """Each block's storage values, from its ``state_getStorage`` answer (one key) or
        its ``state_queryStorageAt`` answer (``[{block, changes: [[key, value], ...]}]``)."""
        keys = self._keys
        out: list[Sequence[str | None]] = []
        for number, block_hash, answer in zip(numbers, hashes, answers, strict=True):
            if isinstance(answer, RpcError):
                raise _pruned(self.client, self.chain, number, block_hash, answer)
            if len(keys) == 1:
                out.append((answer,))
                continue
            try:
                changes = answer[0]["changes"] if answer else []
                # The node lists the keys in the order asked; anything else is looked up.
                if list(map(_FIRST, changes)) == keys:
                    out.append(list(map(_SECOND, changes)))
                else:
                    found = dict(changes)
                    out.append([found.get(key) for key in keys])
            except (KeyError, IndexError, TypeError, ValueError):
                raise MalformedAnswer(
                    f"block {number} ({block_hash}): state_queryStorageAt answered {answer!r:.120}"
                ) from None
        return out

    async def _query_range(
        self, numbers: list[int], hashes: list[str]
    ) -> list[Sequence[str | None]]:
        """The values at every block of a range, from one ``state_queryStorage`` (which
        lists a key's value only where it changed; the first block lists them all)."""
        try:
            sets = await self.client.call("state_queryStorage", self._keys, hashes[0], hashes[-1])
        except RpcError as exc:
            raise _pruned(self.client, self.chain, numbers[0], hashes[0], exc) from None
        keys = self._keys
        current: dict[str, str | None] = dict.fromkeys(keys)
        out: list[Sequence[str | None]] = []
        values: Sequence[str | None] = ()
        try:
            by_block = {entry["block"]: entry["changes"] for entry in sets}
            if not by_block.keys() <= set(hashes):
                raise _Reorged("state_queryStorage walked blocks that are not canonical any more")
            for block_hash in hashes:
                changes = by_block.get(block_hash)
                if changes or not values:
                    current.update(changes or ())  # [[key, value], ...]
                    values = tuple(map(current.__getitem__, keys))
                out.append(values)  # unchanged values are shared with the previous block
        except (KeyError, TypeError, ValueError):
            raise MalformedAnswer(
                f"blocks {numbers[0]}-{numbers[-1]}: state_queryStorage answered {sets!r:.120}"
            ) from None
        return out

    # -- rows ---------------------------------------------------------------------------------

    async def _emit(self, window: Span, fetched: list[_Block]) -> bool:
        parent, blocks = fetched[0], fetched[1 : window.count + 1]
        last = blocks[-1]
        if len(fetched) > window.count + 1:
            child = fetched[-1]
            if child.parent_hash != last.hash:
                raise _Reorged(
                    f"block {last.number} ({last.hash}) is not the parent of block "
                    f"{child.number} ({child.hash}), whose parent is {child.parent_hash}"
                )
        tip = self._tip
        if tip is not None and tip.number == parent.number:
            if tip.hash != parent.hash:
                raise _Reorged(
                    f"block {parent.number} is {parent.hash} now, but the row written for it "
                    f"has {tip.hash}"
                )
            child_spec = tip.child_spec
        else:
            if self._written:
                await self.sink.flush()  # a new run of blocks starts a new file
            runtime = await self.reader.runtime_at(hex_to_bytes(parent.hash, "hash"))
            check_runtime(runtime, self.reader.kind, self.chain)
            child_spec = runtime.spec_version
        parent_ts = parent.timestamp_ms
        parent_hash = parent.hash
        now_ms = int(self._wall() * 1000)
        kind = self.reader.kind
        consensus = kind is ChainKind.CONSENSUS
        chain = self.chain
        rows: list[Row] = []
        links: list[str | None] = []
        not_later: list[tuple[int, str, int]] = []
        new_tuple = tuple.__new__
        for number, block_hash, parent_hex, timestamp, facts, bundle_count in blocks:
            if parent_hex != parent_hash:
                raise _Reorged(f"block {number} ({block_hash}) is not a child of {parent_hash}")
            if timestamp is None:
                raise MalformedAnswer(f"block {number} ({block_hash}): no Timestamp.Now")
            delta = delta_ms(timestamp, parent_ts)
            if delta is not None and delta <= 0:
                not_later.append((number, block_hash, delta))
            spec = child_spec
            if facts.runtime_updated:
                runtime = await self.reader.runtime_at(hex_to_bytes(block_hash, "hash"))
                check_runtime(runtime, kind, chain)
                child_spec = runtime.spec_version
            if consensus:
                bundles: int | None = bundle_count
                segments: bool | None = facts.segment_commitments > 0
            else:
                bundles = segments = None
            links.append(facts.consensus_hash)
            rows.append(
                new_tuple(  # Row, by the C constructor
                    Row,
                    (
                        chain,
                        number,
                        block_hash,
                        parent_hash,
                        timestamp,
                        delta,
                        now_ms,
                        segments,
                        bundles,
                        None,  # consensus_block_hash: set by _map
                        facts.slot if consensus else None,
                        spec,
                        None,  # consensus_block_number: set by _map
                    ),
                )
            )
            parent_hash, parent_ts = block_hash, timestamp
        complete = True
        if kind is ChainKind.AUTO_EVM:
            rows, complete = await self._map(rows, links, now_ms)
        if rows:
            await self.sink.put(rows)
            self._written += len(rows)
            row = rows[-1]
            self._tip = _Tip(row.block_number, row.hash, row.timestamp_ms, child_spec)
            if not_later:
                self._warn_not_later(not_later, row.block_number)
        return complete

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

    async def _map(
        self, rows: list[Row], hexes: list[str | None], now_ms: int
    ) -> tuple[list[Row], bool]:
        """Domain rows with their consensus block; cut before the first whose consensus
        block is not K deep yet (False: stop there)."""
        mapped: dict[str, _Mapped] = {}
        if self.consensus is not None:
            mapped = await self.consensus.resolve([h for h in hexes if h is not None])
        out: list[Row] = []
        for row, source in zip(rows, hexes, strict=True):
            if source is None:
                found = _Mapped(None, "no RGTR digest item in the domain header")
            elif self.consensus is None:
                found = _Mapped(None, "no consensus chain configured")
            else:
                found = mapped[source]
            if found.pending:
                self._stopped_at = row.block_number
                log.warning(
                    "%s: stopping at block %d: its consensus block %d is not yet K deep",
                    self.chain, row.block_number, found.number,
                )  # fmt: skip
                return out, False
            if found.reason is not None:
                self._unresolved += 1
                record = Unresolved(
                    self.chain, row.block_number, row.hash, source, found.reason, now_ms
                )
                await self.sink.put(Reconciliation(self.chain, record))
            out.append(_with_consensus(row, source if found.reason is None else None, found.number))
        return out, True


async def _cancel(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for them; their errors are moot now."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, BlocktimesError):
            await task


def _with_consensus(row: Row, source: str | None, number: int | None) -> Row:
    if source is None:
        return row
    return row._replace(consensus_block_hash=source, consensus_block_number=number)
