"""Backfill: rows for a past range of one chain, into the daemon's own dataset.

The range is clamped to ``tip - K`` (deeper blocks only, as the daemon confirms them).
The block numbers already durable for the chain are read from the dataset (file names
first, the ``block_number`` column only where a file does not prove itself gap-free)
and skipped, so re-running a range, overlapping the daemon's rows or resuming an
interrupted backfill never writes a row twice.  The rest is worked through a window
at a time (memory stays bounded whatever the range), with the next windows fetched
while one is turned into rows.

Per block the cheapest set of calls: the hash by number (``chain_getBlockHash`` with a
list of numbers), the header, and the storage values: ``Timestamp.Now`` with
``state_getStorage``, or with ``Domains.SuccessfulBundles`` in one
``state_queryStorageAt`` on the consensus chain; when the node allows unsafe methods,
``state_queryStorage`` over a range of blocks instead.  Calls are pipelined (and
batched, per :class:`RpcSettings`) under the client's in-flight cap.  Runtime versions
are asked only at upgrades, as :class:`ChainReader` does.  Parent links are checked; a
hash that a racing reorg discarded makes the window be fetched again by number.

Rows are formed as the follower forms them; domain rows name their consensus block
(by the consensus node's header), or get a null and a reconciliation record.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from blocktimesd.aio.chain import ChainKind, ChainReader, check_runtime
from blocktimesd.aio.follower import Unresolved
from blocktimesd.aio.rpc import RpcClient
from blocktimesd.aio.writer import Reconciliation
from blocktimesd.core import decode, digest_hex
from blocktimesd.core.header import hex_to_bytes, to_hex
from blocktimesd.core.ranges import Span, merge, runs, subtract, total, windows
from blocktimesd.core.rotation import ROWS, check_chain, parse_file_name
from blocktimesd.core.rows import Row, delta_ms
from blocktimesd.errors import (
    BlocktimesError,
    DecodeError,
    ProtocolError,
    PrunedNode,
    RpcError,
    is_retryable,
)
from blocktimesd.progress import Progress

__all__ = [
    "Backfill",
    "BackfillSettings",
    "BackfillSink",
    "ChainResult",
    "ConsensusMap",
    "block_at_time",
    "durable_runs",
]

log = logging.getLogger(__name__)

TIMESTAMP_NOW_KEY = "0xf0c365c3cf59d671eb72da0e7a4113c49f1f0515f462cdcf84e0f1d6045dfcbb"
_DISCARDED = "State already discarded"


@dataclass(frozen=True, slots=True)
class BackfillSettings:
    window: int = 4096  # blocks turned into rows at a time
    blocks_per_task: int = 256  # numbers per chain_getBlockHash list (and state_queryStorage)
    lookahead: int = 3  # windows fetched at once, the oldest being written
    attempts: int = 3  # fetches of a window before its blocks are reported as failed
    retry_delay: float = 1.0
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


class _Reorged(BlocktimesError):
    """The hashes fetched by number no longer form one chain: fetch the window again."""


@dataclass(frozen=True, slots=True)
class _Raw:
    """One block as the node answered: hash, header object, storage values."""

    number: int
    hash: str
    header: Any
    values: tuple[bytes | None, ...]


@dataclass(slots=True)
class _Tip:
    """The last block turned into a row: the next window's parent."""

    number: int
    hash: str
    timestamp_ms: int | None
    child_spec: int  # the runtime its children run


# -- what is durable already ----------------------------------------------------------------


def durable_runs(data_dir: Path | str, chain: str, span: Span) -> list[Span]:
    """Runs of ``chain``'s block numbers inside ``span`` that are on disk.

    A file whose row count equals its name's block range is gap-free and costs a footer
    read; only other files have their ``block_number`` column read.
    """
    base = Path(data_dir) / ROWS / f"chain={check_chain(chain)}"
    found: list[Span] = []
    with contextlib.suppress(FileNotFoundError):
        for directory in sorted(base.iterdir()):
            if not directory.name.startswith("date="):
                continue
            for path in sorted(directory.iterdir()):
                name = parse_file_name(path.name)
                if name is None or name.last < span.first or name.first > span.last:
                    continue
                with pq.ParquetFile(path) as parquet:
                    if parquet.metadata.num_rows == name.last - name.first + 1:
                        found.append(Span(name.first, name.last))
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


# -- resolving date-times -------------------------------------------------------------------


async def _timestamp_at(client: RpcClient, number: int, label: str) -> int | None:
    block_hash = await client.call("chain_getBlockHash", number)
    if block_hash is None:
        return None
    try:
        value = await client.call("state_getStorage", TIMESTAMP_NOW_KEY, block_hash)
    except RpcError as exc:
        raise _pruned(client, label, number, block_hash, exc) from None
    return decode.timestamp_from_storage(None if value is None else hex_to_bytes(value))


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
            f"{label}: this node is pruned; use an archive node. {client.endpoint} no longer "
            f"has the state of block {number} ({block_hash}): {exc.message}"
        )
    return exc


# -- domain -> consensus ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Mapped:
    number: int | None
    reason: str | None = None  # why the number is unknown
    pending: bool = False  # the consensus block is not yet K deep


class ConsensusMap:
    """Numbers of consensus blocks named by domain headers, read from the consensus node.

    A block counts only when it is on the node's canonical chain and at most
    ``confirmed_tip`` (K deep); deeper checks are the follower's business.
    """

    def __init__(self, client: RpcClient, confirmed_tip: int) -> None:
        self.client = client
        self.confirmed_tip = confirmed_tip

    async def resolve(self, hashes: Sequence[str]) -> dict[str, _Mapped]:
        unique = list(dict.fromkeys(hashes))
        headers = await self.client.call_many([("chain_getHeader", [h]) for h in unique])
        out: dict[str, _Mapped] = {}
        known: list[tuple[str, int]] = []
        for block_hash, header in zip(unique, headers, strict=True):
            if isinstance(header, RpcError):
                raise header
            if header is None:
                out[block_hash] = _Mapped(None, "the consensus node does not know the block")
            else:
                known.append((block_hash, int(header["number"], 16)))
        if known:
            canonical = await self.client.call("chain_getBlockHash", [n for _, n in known])
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
        progress: Callable[[str, int], Progress] | None = None,
        wall_clock: Callable[[], float] = time.time,
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
        self._keys: list[str] = []
        self._tip: _Tip | None = None
        self._failed: list[Span] = []
        self._written = 0
        self._unresolved = 0
        self._stopped_at: int | None = None

    async def tip(self) -> int:
        best = await self.client.call("chain_getHeader")
        return int(best["number"], 16)

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
        span = Span(first, last)
        present = await asyncio.to_thread(durable_runs, self.data_dir, self.chain, span)
        missing = subtract(span, present)
        skipped = span.count - total(missing)
        log.info(
            "%s: backfilling %d blocks of %s (%d already in the dataset), %s",
            self.chain, total(missing), span, skipped,
            "storage by state_queryStorage ranges" if self.query_storage else "storage per block",
        )  # fmt: skip
        if missing:
            await self._check_state(missing[0].first - 1)
            runtime = await self.reader.check_runtime()
            self._keys = [to_hex(runtime.storage_key("Timestamp", "Now"))]
            if self.reader.kind is ChainKind.CONSENSUS:
                self._keys += [
                    to_hex(runtime.storage_key("Domains", "SuccessfulBundles", domain))
                    for domain in self.reader.domain_ids
                ]
            progress = self._progress(self.chain, total(missing)) if self._progress else None
            await self._pipeline(missing, progress)
            if progress is not None:
                progress.finish()
        return ChainResult(
            self.chain,
            span,
            written=self._written,
            skipped=skipped,
            failed=tuple(merge(self._failed)),
            unresolved=self._unresolved,
            stopped_at=self._stopped_at,
        )

    async def _check_state(self, number: int) -> None:
        """Fail early, and clearly, on a node that no longer has the range's state."""
        await _timestamp_at(self.client, max(number, 0), self.chain)

    # -- the pipeline: fetch ahead, write in order ----------------------------------------------

    async def _pipeline(self, missing: list[Span], progress: Progress | None) -> None:
        # Up to ``lookahead`` windows are being fetched (or wait, fetched) while the
        # oldest is turned into rows: the requests in flight never drain between windows,
        # and memory holds at most ``lookahead`` windows.
        fetching: deque[tuple[Span, asyncio.Task[list[_Raw]]]] = deque()
        todo = windows(missing, self.settings.window)
        try:
            while True:
                while len(fetching) < self.settings.lookahead:
                    window = next(todo, None)
                    if window is None:
                        break
                    task = asyncio.create_task(self._fetch(window), name=f"fetch-{window}")
                    fetching.append((window, task))
                if not fetching:
                    return
                window, task = fetching.popleft()
                fetched: list[_Raw] | BaseException
                try:
                    fetched = await task
                except BlocktimesError as exc:
                    fetched = exc
                done = await self._write_window(window, fetched)
                if progress is not None:
                    progress.advance(window.count)
                if not done:
                    return
        finally:
            for _, task in fetching:
                task.cancel()
            for _, task in fetching:
                with contextlib.suppress(asyncio.CancelledError, BlocktimesError):
                    await task

    async def _write_window(self, window: Span, fetched: list[_Raw] | BaseException) -> bool:
        """Turn one window into rows, fetching it again after a retryable failure;
        False when the backfill must stop here (domain blocks not yet confirmable)."""
        for attempt in range(1, self.settings.attempts + 1):
            try:
                if isinstance(fetched, BaseException):
                    raise fetched
                return await self._emit(window, fetched)
            except PrunedNode:
                raise
            except BlocktimesError as exc:
                retry = isinstance(exc, _Reorged) or is_retryable(exc)
                if not retry or attempt == self.settings.attempts:
                    log.error("%s: blocks %s failed: %s", self.chain, window, exc)
                    self._failed.append(window)
                    self._tip = None
                    return True
                log.warning(
                    "%s: blocks %s: %s; fetching them again (attempt %d of %d)",
                    self.chain, window, exc, attempt + 1, self.settings.attempts,
                )  # fmt: skip
                await asyncio.sleep(self.settings.retry_delay)
                try:
                    fetched = await self._fetch(window)
                except PrunedNode:
                    raise
                except BlocktimesError as again:
                    fetched = again
        return True

    # -- fetching ---------------------------------------------------------------------------------

    async def _fetch(self, window: Span) -> list[_Raw]:
        """The window's blocks and the parent of its first, in order of number."""
        step = self.settings.blocks_per_task
        first = window.first - 1
        tasks = [
            self._fetch_chunk(n, min(n + step - 1, window.last))
            for n in range(first, window.last + 1, step)
        ]
        chunks = await asyncio.gather(*tasks)
        return [raw for chunk in chunks for raw in chunk]

    async def _fetch_chunk(self, first: int, last: int) -> list[_Raw]:
        numbers = list(range(first, last + 1))
        hashes = await self.client.call("chain_getBlockHash", numbers)
        if not isinstance(hashes, list) or len(hashes) != len(numbers):
            raise ProtocolError(f"{self.chain}: chain_getBlockHash answered {hashes!r:.80}")
        for number, block_hash in zip(numbers, hashes, strict=True):
            if not isinstance(block_hash, str):
                raise _Reorged(f"the node does not know block {number} any more")
        hashes = [h.lower() for h in hashes]  # as the rows and parent links spell them
        header_calls = [("chain_getHeader", [h]) for h in hashes]
        if self.query_storage:
            headers, values = await asyncio.gather(
                self.client.call_many(header_calls), self._query_range(numbers, hashes)
            )
        else:
            answers = await self.client.call_many(header_calls + self._storage_calls(hashes))
            headers = answers[: len(hashes)]
            values = self._values(numbers, hashes, answers[len(hashes) :])
        for number, block_hash, header in zip(numbers, hashes, headers, strict=True):
            if isinstance(header, RpcError):
                raise header
            if header is None:
                raise _Reorged(f"block {number} ({block_hash}) vanished from the node")
        return [
            _Raw(n, h, header, v)
            for n, h, header, v in zip(numbers, hashes, headers, values, strict=True)
        ]

    def _storage_calls(self, hashes: list[str]) -> list[tuple[str, list[Any]]]:
        if len(self._keys) == 1:
            key = self._keys[0]
            return [("state_getStorage", [key, h]) for h in hashes]
        return [("state_queryStorageAt", [self._keys, h]) for h in hashes]

    def _values(
        self, numbers: list[int], hashes: list[str], answers: list[Any]
    ) -> list[tuple[bytes | None, ...]]:
        out: list[tuple[bytes | None, ...]] = []
        for number, block_hash, answer in zip(numbers, hashes, answers, strict=True):
            if isinstance(answer, RpcError):
                raise _pruned(self.client, self.chain, number, block_hash, answer)
            if len(self._keys) == 1:
                out.append((None if answer is None else hex_to_bytes(answer, "storage value"),))
                continue
            changes = dict(answer[0]["changes"]) if answer else {}
            out.append(tuple(_value(changes.get(key)) for key in self._keys))
        return out

    async def _query_range(
        self, numbers: list[int], hashes: list[str]
    ) -> list[tuple[bytes | None, ...]]:
        """The values at every block of a range, from one ``state_queryStorage`` (which
        lists a key's value only where it changed; the first block lists them all)."""
        try:
            sets = await self.client.call("state_queryStorage", self._keys, hashes[0], hashes[-1])
        except RpcError as exc:
            raise _pruned(self.client, self.chain, numbers[0], hashes[0], exc) from None
        by_block = {entry["block"]: dict(entry["changes"]) for entry in sets}
        if not by_block.keys() <= set(hashes):
            raise _Reorged("state_queryStorage walked blocks that are not canonical any more")
        current: dict[str, bytes | None] = dict.fromkeys(self._keys)
        out: list[tuple[bytes | None, ...]] = []
        for block_hash in hashes:
            changes = by_block.get(block_hash)
            if changes:
                for key, value in changes.items():
                    current[key] = _value(value)
            out.append(tuple(current[key] for key in self._keys))
        return out

    # -- rows ---------------------------------------------------------------------------------

    async def _emit(self, window: Span, fetched: list[_Raw]) -> bool:
        parent, blocks = fetched[0], fetched[1:]
        tip = self._tip
        if tip is not None and tip.number == parent.number and tip.hash == parent.hash:
            child_spec = tip.child_spec
        else:
            if self._written and (tip is None or tip.number != parent.number):
                await self.sink.flush()  # a new run of blocks starts a new file
            runtime = await self.reader.runtime_at(hex_to_bytes(parent.hash, "hash"))
            check_runtime(runtime, self.reader.kind, self.chain)
            child_spec = runtime.spec_version
        parent_ts = decode.timestamp_from_storage(parent.values[0])
        parent_hash = parent.hash
        now_ms = int(self._wall() * 1000)
        kind = self.reader.kind
        rows: list[Row] = []
        links: list[str | None] = []
        for raw in blocks:
            number, parent_hex, logs = _header_fields(raw.header)
            if number != raw.number or parent_hex != parent_hash:
                raise _Reorged(f"block {raw.number} ({raw.hash}) is not a child of {parent_hash}")
            timestamp = decode.timestamp_from_storage(raw.values[0])
            if timestamp is None:
                raise DecodeError(f"{self.chain}: block #{raw.number} has no Timestamp.Now")
            spec = child_spec
            if digest_hex.runtime_updated(logs):
                runtime = await self.reader.runtime_at(hex_to_bytes(raw.hash, "hash"))
                check_runtime(runtime, kind, self.chain)
                child_spec = runtime.spec_version
            segments = bundles = slot = None
            if kind is ChainKind.CONSENSUS:
                slot = digest_hex.consensus_slot(logs)
                segments = digest_hex.segment_commitments(logs) > 0
                bundles = sum(decode.bundle_count_from_storage(v) for v in raw.values[1:])
            links.append(
                digest_hex.domain_consensus_hash(logs) if kind is ChainKind.AUTO_EVM else None
            )
            rows.append(
                Row(
                    chain=self.chain,
                    block_number=raw.number,
                    hash=raw.hash,
                    parent_hash=parent_hash,
                    timestamp_ms=timestamp,
                    delta_since_parent_ms=delta_ms(timestamp, parent_ts),
                    ingestion_ts_ms=now_ms,
                    contained_store_segment_headers=segments,
                    bundle_count=bundles,
                    consensus_block_hash=None,
                    slot=slot,
                    spec_version=spec,
                    consensus_block_number=None,
                )
            )
            parent_hash, parent_ts = raw.hash, timestamp
        complete = True
        if kind is ChainKind.AUTO_EVM:
            rows, complete = await self._map(rows, links, now_ms)
        if rows:
            await self.sink.put(rows)
            self._written += len(rows)
            last = rows[-1]
            self._tip = _Tip(last.block_number, last.hash, last.timestamp_ms, child_spec)
        return complete

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


def _header_fields(obj: Any) -> tuple[int, str, list[str]]:
    """A header's number, parent hash and digest logs, as the node sent them."""
    try:
        number, parent, logs = int(obj["number"], 16), obj["parentHash"], obj["digest"]["logs"]
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"header: missing or malformed field {exc}") from None
    if not isinstance(parent, str) or not isinstance(logs, list):
        raise DecodeError("header: parentHash or digest.logs has the wrong type")
    return number, parent.lower(), logs


def _with_consensus(row: Row, source: str | None, number: int | None) -> Row:
    if source is None:
        return row
    return dataclasses.replace(row, consensus_block_hash=source, consensus_block_number=number)


def _value(text: str | None) -> bytes | None:
    return None if text is None else hex_to_bytes(text, "storage value")
