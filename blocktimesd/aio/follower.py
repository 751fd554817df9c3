"""One chain, followed: new heads -> fork tree -> confirmed rows -> the writer.

The follower owns one subscription at a time.  Every head goes to the fork tree; the
tree's ``Need*`` answers are fetched here (by hash, or by number in batches), so gaps
from skipped heights, reconnects, dropped subscriptions and stalls are all filled the
same way: when the next head arrives, the tree walks down to the confirmed tip and
asks for what it lacks.  A block's row is emitted when the tree confirms it (K deep on
the best chain), exactly once; live metrics follow the best head.

Nothing the tree decided is lost when applying it fails.  The tree hands out each
:class:`Confirmed` and :class:`Reorg` once; the follower keeps them in a queue and
removes one only once it is applied (its row handed to the writer), so after any
error -- an error answer, a lost connection, a wrong answer -- the same work is done
again, in the same order.  ``Need*`` requests are not kept: the tree asks again.

Every row is checked before it goes out: its ``parent_hash`` must be the hash of the
previous row (or of the row resumed from), and its delta is its timestamp minus its
parent's, read for the parent's hash.  A row that does not follow is a bug: it is
refused, counted and logged, and the tree is rebuilt from the last row written.

Errors are sorted by :func:`blocktimesd.errors.classify`: transient ones back off and
retry without limit; node faults (malformed or inconsistent answers) retry a bounded
number of times, then fail over to another endpoint, then stop the chain
(:class:`ChainStopped`); fatal ones end the run.

Auto-EVM rows wait for their consensus block: a domain block is only as settled as its
consensus source, so its row is written once that source is confirmed on the consensus
chain (see :class:`ConsensusIndex`).  The rows waiting are shown by
``blocktimes_rows_waiting``; they stay queued (bounded by the tree) and never vanish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from blocktimesd.aio.chain import BlockFacts, ChainReader
from blocktimesd.aio.consensus_index import ConsensusIndex
from blocktimesd.aio.consensus_source import ConsensusSource
from blocktimesd.aio.follower_ports import FollowerMetrics, RowSink
from blocktimesd.aio.seen_blocks import SeenBlocks
from blocktimesd.aio.subscription import QUIET
from blocktimesd.core.chains import ChainKind
from blocktimesd.core.forktree import (
    BlockRef,
    Confirmed,
    Decision,
    ForkBelowHistory,
    ForkTree,
    NeedAncestor,
    NeedRange,
    Reorg,
)
from blocktimesd.core.header import BlockHash, Header, hex_to_bytes, to_hex
from blocktimesd.core.redact import redact_url
from blocktimesd.dataset.records import Row, form_row
from blocktimesd.dataset.writer import Reconciliation
from blocktimesd.errors import (
    BlocktimesError,
    ChainStopped,
    MalformedAnswer,
    Outcome,
    RetryPolicy,
    SubscriptionGap,
)

__all__ = ["Follower"]

log = logging.getLogger(__name__)

Tail = Callable[[int], Awaitable[list[Row]]]


@dataclass(frozen=True, slots=True)
class _Written:
    """The last row handed to the writer (or resumed from): the next row's parent."""

    number: int
    hash: bytes
    parent_hash: bytes
    timestamp_ms: int | None  # None after a repair, until read again


class Follower:
    """Follows one chain until cancelled; hands confirmed rows to the sink."""

    def __init__(
        self,
        reader: ChainReader,
        chain: str,
        k: int,
        sink: RowSink,
        metrics: FollowerMetrics,
        *,
        resume: Row | None = None,
        tail: Tail | None = None,
        consensus: ConsensusIndex | None = None,
        consensus_reader: ChainReader | None = None,
        retry: RetryPolicy | None = None,
        head_poll_s: float = 15.0,
        publish_durable_above: int | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.reader = reader
        self.chain = chain
        self.sink = sink
        self.metrics = metrics
        self.consensus = consensus  # set on the consensus follower (publishes) and domain (waits)
        self.consensus_reader = consensus_reader
        self._source = ConsensusSource(
            chain,
            consensus,
            consensus_reader,
            metrics,
            on_wait=lambda: self._show_waiting(self._waiting()),
            wall_clock=wall_clock,
        )
        self.retry = retry or RetryPolicy()
        self.head_poll_s = head_poll_s  # silence after which the best head is asked for
        # Durable rows above this block go to the consensus index on start: the domain
        # rows still to come name them, and need not ask the node about each one.
        self._publish_durable_above = publish_durable_above
        self._tail = tail
        self._wall = wall_clock
        # The consensus follower tells the index the number of every block it is shown.
        self._saw = (
            consensus.saw if consensus is not None and reader.kind is ChainKind.CONSENSUS else None
        )
        self._seen = SeenBlocks(reader, chain, metrics)
        self._todo: deque[Decision] = deque()  # decided by the tree, not yet applied
        self._shown_waiting: int | None = None  # the rows waiting, as last shown
        self._written: _Written | None = None
        confirmed = None
        if resume is not None:
            confirmed = _ref_of_row(resume)
            self._written = _Written(
                confirmed.number, confirmed.hash, confirmed.parent_hash, resume.timestamp_ms
            )
        self.k = k
        self.resume_row = resume
        self.tree = ForkTree(k, confirmed)
        self.following = False
        self._started = False
        self.progress = 0  # heads handled: a retry loop resets its bounds on progress

    # -- resuming ------------------------------------------------------------------------------

    async def verify_resume(self) -> None:
        """Check that the last durable row is still canonical; repair the dataset if not.

        A reorg deeper than K while the daemon was down orphans durable rows: find the
        highest durable row that the node's canonical chain still has, delete the rows
        above it, and resume from there.
        """
        resume = self.resume_row
        if resume is None:
            return
        if await self.reader.call("chain_getBlockHash", resume.block_number) == resume.hash:
            return
        await self._repair("while stopped")

    async def _repair(self, when: str) -> None:
        """Rebuild the tree from the highest durable row the node's canonical chain has,
        deleting the rows above it; on an empty dataset, start afresh."""
        if self._tail is None and self._written is not None:
            raise BlocktimesError(
                f"{self.chain}: the best chain forks below the history kept ({when}) and "
                "this follower cannot read the dataset back to repair it; run "
                "'blocktimesd validate' and re-backfill the range"
            )
        asked = 2 * self.k + 64
        rows = [] if self._tail is None else await self._tail(asked)
        if not rows:
            log.warning(
                "%s: the best chain forked below the first block followed, before any row "
                "was written; starting afresh from the best block", self.chain,
            )  # fmt: skip
            self._reset(ForkTree(self.k), None)
            return
        canonical = await self.reader.call("chain_getBlockHash", [r.block_number for r in rows])
        if not isinstance(canonical, list) or len(canonical) != len(rows):
            raise MalformedAnswer(
                f"{self.chain}: chain_getBlockHash for {len(rows)} numbers answered "
                f"{type(canonical).__name__} of another length"
            )
        kept: list[Row] = []
        for row, block_hash in zip(rows, canonical, strict=True):
            if row.hash != block_hash:
                break
            kept.append(row)
        if not kept and self.resume_row is None and len(rows) < asked:
            # Every row of the chain is this run's (it started on none), read from this
            # node, which no longer has any: a reorg deeper than K below the first block.
            first = rows[0].block_number
            log.error(
                "%s: REORG BEYOND CONFIRMATION %s: every row written (#%d..#%d) is orphaned; "
                "deleting them and starting afresh from the best block",
                self.chain, when, first, rows[-1].block_number,
            )  # fmt: skip
            await self._orphaned(rows[-1].block_number - first + 1, first)
            self._reset(ForkTree(self.k), None)
            return
        if not kept:
            raise BlocktimesError(
                f"{self.chain}: none of the last {len(rows)} durable rows is on the node's "
                "canonical chain; check that the endpoint serves the same chain as the "
                "dataset, or move the dataset aside"
            )
        keep = kept[-1]
        if keep is not rows[-1]:
            log.error(
                "%s: REORG BEYOND CONFIRMATION %s: rows above #%d are orphaned; deleting "
                "them and resuming from there",
                self.chain, when, keep.block_number,
            )  # fmt: skip
            await self._orphaned(rows[-1].block_number - keep.block_number, keep.block_number + 1)
        refs = [_ref_of_row(r) for r in kept]
        self.resume_row = keep
        self._reset(ForkTree(self.k, refs), keep)

    async def _orphaned(self, depth: int, first: int) -> None:
        """The rows from block ``first`` up are orphaned, found on repairing."""
        self.metrics.observe_reorg(self.chain, depth, True)
        await self.sink.delete_from(self.chain, first)
        if self.consensus is not None and self.reader.kind is ChainKind.CONSENSUS:
            await self.consensus.retract_above(first - 1)

    async def _publish_durable(self) -> None:
        above, last = self._publish_durable_above, self.resume_row
        if above is None or last is None or self.consensus is None or self._tail is None:
            return
        count = min(last.block_number - above, self.consensus.kept)
        rows = await self._tail(count) if count > 0 else []
        if rows:
            await self.consensus.seed(rows)
            log.info(
                "%s: blocks #%d..#%d, durable, are known to the domain follower",
                self.chain, rows[0].block_number, rows[-1].block_number,
            )  # fmt: skip

    def _reset(self, tree: ForkTree, last: Row | None) -> None:
        self.tree = tree
        self._todo.clear()
        self._written = (
            None
            if last is None
            else _Written(
                last.block_number,
                hex_to_bytes(last.hash, "row hash"),
                hex_to_bytes(last.parent_hash, "row parent hash"),
                last.timestamp_ms,
            )
        )

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow until cancelled.  Transient errors back off and retry; node faults
        retry, fail over, then raise :class:`ChainStopped`; fatal errors raise."""
        delays = self.retry.delays()
        faults = 0
        progress = self.progress
        while True:
            try:
                await self.reader.client.wait_ready()
                if not self._started:
                    await self.reader.check_runtime()
                    await self.verify_resume()
                    await self._publish_durable()
                    self._started = True
                await self._drain()  # work left by an error
                await self._advance(self.tree.resume())
                await self._follow_heads()
            except SubscriptionGap as gap:
                log.info("%s: %s; the next head fills the gap", self.chain, gap.reason)
                if self.progress != progress:
                    progress = self.progress
                    continue
                await asyncio.sleep(next(delays))  # gaps without progress: do not spin
            except Exception as exc:
                outcome = self.retry.classify(exc)
                if outcome is Outcome.FATAL:
                    raise
                if self.progress != progress:  # it went on for a while: a fresh start
                    progress, faults, delays = self.progress, 0, self.retry.delays()
                self.metrics.observe_retry(self.chain, outcome.value)
                if outcome is Outcome.NODE_FAULT:
                    faults += 1
                    self._on_node_fault(exc, faults)
                delay = next(delays)
                # The RPC layer's errors name the chain already; the others do not.
                what = str(exc).removeprefix(f"{self.chain}: ")
                log.warning(
                    "%s: %s (%s from %s); %d blocks waiting, retrying in %.1f s",
                    self.chain, what, outcome.value, self._endpoint(), self._waiting(), delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
            finally:
                self._set_following(False)

    def _on_node_fault(self, exc: BaseException, faults: int) -> None:
        """Bounded: fail over every ``node_fault_limit`` faults, stop after trying every
        endpoint that many times."""
        limit = max(1, self.retry.node_fault_limit)
        endpoints = len(self.reader.client.settings.endpoints)
        if faults >= limit * (endpoints + 1):
            raise ChainStopped(
                f"{self.chain}: {faults} wrong answers in a row from "
                f"{', '.join(redact_url(u) for u in self.reader.client.settings.endpoints)} "
                f"(last: {exc}); the chain stops here. Check the node(s), or configure "
                "another endpoint"
            ) from exc
        if faults % limit == 0:
            self.reader.client.fail_over(f"{faults} wrong answers in a row: {exc}")

    def _endpoint(self) -> str:
        endpoint = self.reader.client.endpoint
        return "no endpoint" if endpoint is None else redact_url(endpoint)

    async def _follow_heads(self) -> None:
        """Handle each new head.  After ``head_poll_s`` without a notification the node's
        best head is asked for: a node may drop a subscription without a word, and a
        best head the subscription did not announce means it did."""
        heads = await self.reader.client.subscribe(
            "chain_subscribeNewHeads", "chain_unsubscribeNewHeads"
        )
        last: bytes | None = None
        quiet_since = time.monotonic()
        while True:
            left = quiet_since + self.head_poll_s - time.monotonic()
            head = await heads.next_within(self._seen.reads.wait(left))
            if head is QUIET:
                if self._seen.reads.pending:
                    await self._seen.read_heads()
                    continue
                if time.monotonic() - quiet_since < self.head_poll_s:
                    continue
                quiet_since = time.monotonic()
                try:
                    # A probe: it gets as long as the silence that prompted it, and a
                    # node too slow to answer it may still be notifying.
                    unannounced = await asyncio.wait_for(
                        self._unannounced_best(last), self.head_poll_s
                    )
                except TimeoutError:
                    continue
                if unannounced is None:
                    continue  # the chain is quiet, not the subscription
                self.metrics.observe_retry(self.chain, "silent subscription")
                await heads.close()
                await self._on_head(unannounced)
                self.progress += 1
                raise SubscriptionGap(
                    f"no head announced for {self.head_poll_s:g} s while the node's best "
                    f"moved to #{unannounced.number}: the subscription was dropped"
                )
            header = Header.from_json(head)
            last = header.hash()
            quiet_since = time.monotonic()
            self._set_following(True)
            await self._on_head(header)
            self.progress += 1

    async def _unannounced_best(self, last: bytes | None) -> Header | None:
        """The node's best head, when it is not the last head announced."""
        header = Header.from_json(await self.reader.call("chain_getHeader"))
        best = self.tree.best
        known = last if last is not None or best is None else best.hash
        return None if header.hash() == known else header

    def _set_following(self, following: bool) -> None:
        if following != self.following:
            self.following = following
            self.metrics.set_following(self.chain, following)

    async def _on_head(self, header: Header) -> None:
        if self._todo:
            await self._drain()  # what an error left undone goes first
        else:
            self._show_waiting(0)
        self._remember(header)
        self._seen.reads.add(header)
        if self._seen.reads.due():
            await self._seen.read_heads()
        ref = BlockRef.of(header)
        # A best below the confirmed tip: a node that knows the tip moved to a shorter
        # chain (the rows above are orphaned); one that does not lags behind it.
        tip = self.tree.retracted_tip(ref)
        retracted = tip is not None and await self.reader.header(tip.hash) is not None
        await self._advance(self.tree.retract_to(ref) if retracted else self.tree.set_best(ref))

    async def _advance(self, decisions: list[Decision]) -> None:
        """Apply the tree's decisions; answer its ``Need*`` until it asks for nothing."""
        while True:
            need: NeedAncestor | NeedRange | None = None
            for decision in decisions:
                if isinstance(decision, NeedAncestor | NeedRange):
                    need = decision  # always the last one
                else:
                    self._todo.append(decision)
            await self._drain()
            if need is None:
                return
            if isinstance(need, NeedRange):
                await self._fill_range(need.first, need.last)
            else:
                self._remember(await self._seen.known_header(need.hash, need.number))
            self.progress += 1
            decisions = self.tree.resume()

    async def _drain(self) -> None:
        """Apply the queued decisions in order; each leaves the queue once applied.

        The rows waiting are shown when applying stops short: while a row waits for
        its consensus block (``on_wait``) and when an error leaves work queued."""
        todo = self._todo
        try:
            while todo:
                decision = todo[0]
                if type(decision) is Confirmed:
                    await self._emit(decision.ref)
                elif isinstance(decision, Reorg):
                    await self._on_reorg(decision)
                elif isinstance(decision, ForkBelowHistory):
                    await self._repair("below the history kept")  # clears the queue
                    return
                if todo and todo[0] is decision:
                    todo.popleft()
                self.progress += 1
        except BaseException:
            self._show_waiting(self._waiting())
            raise
        self._show_waiting(0)

    def _waiting(self) -> int:
        return sum(1 for d in self._todo if isinstance(d, Confirmed))

    def _show_waiting(self, rows: int) -> None:
        if rows != self._shown_waiting:
            self._shown_waiting = rows
            self.metrics.set_rows_waiting(self.chain, rows)

    async def _fill_range(self, first: int, last: int) -> None:
        log.info("%s: filling blocks %d..%d", self.chain, first, last)
        for header in await self._seen.headers_between(first, last):
            self._remember(header)

    async def _on_reorg(self, reorg: Reorg) -> None:
        log.info(
            "%s: reorg of depth %d: #%d %s -> #%d %s (common ancestor #%d)",
            self.chain, reorg.depth, reorg.old_tip.number, to_hex(reorg.old_tip.hash)[:12],
            reorg.new_tip.number, to_hex(reorg.new_tip.hash)[:12], reorg.common_ancestor.number,
        )  # fmt: skip
        self.metrics.observe_reorg(self.chain, reorg.depth, reorg.beyond_confirmation)
        await self.sink.put(reorg.record(self.chain, int(self._wall() * 1000)))
        if reorg.beyond_confirmation:
            # The repair rule: every row above the common ancestor is orphaned.
            ancestor = reorg.common_ancestor
            log.error(
                "%s: REORG BEYOND CONFIRMATION: confirmed blocks above #%d were orphaned; "
                "deleting their rows and confirming the new chain from there",
                self.chain, ancestor.number,
            )  # fmt: skip
            await self.sink.delete_from(self.chain, ancestor.number + 1)
            if self.consensus is not None and self.reader.kind is ChainKind.CONSENSUS:
                await self.consensus.retract_above(ancestor.number)
            written = self._written
            if written is None or written.number > ancestor.number:
                self._written = _Written(ancestor.number, ancestor.hash, ancestor.parent_hash, None)

    # -- blocks --------------------------------------------------------------------------------

    def _remember(self, header: Header) -> None:
        block_hash = self._seen.remember(header)
        if self._saw is not None:
            self._saw(block_hash, header.number)
        self.tree.add(BlockRef(header.number, block_hash, BlockHash(header.parent_hash)))

    async def _facts_of(self, header: Header) -> BlockFacts:
        facts = await self._seen.facts_of(header)
        self._remember(header)
        return facts

    async def _parent_timestamp(self, ref: BlockRef) -> int | None:
        """The timestamp of ``ref``'s parent, read for the parent's hash."""
        written = self._written
        if written is not None and written.hash == ref.parent_hash:
            if written.timestamp_ms is not None:
                return written.timestamp_ms
        elif ref.number == 0:
            return None
        facts = self._seen.facts(ref.parent_hash)
        if facts is None:
            parent = await self._seen.known_header(ref.parent_hash, ref.number - 1)
            facts = await self._facts_of(parent)
        return facts.timestamp_ms

    def _follows_written(self, ref: BlockRef) -> bool:
        """The emission invariant: a row's parent is the row written before it."""
        written = self._written
        if written is None or (
            ref.parent_hash == written.hash and ref.number == written.number + 1
        ):
            return True
        self.metrics.observe_invariant_violation(self.chain)
        log.error(
            "%s: INTERNAL ERROR: block #%d %s does not follow the last row written (#%d %s); "
            "refusing it and walking the chain again from the last row written",
            self.chain, ref.number, to_hex(ref.hash)[:12], written.number,
            to_hex(written.hash)[:12],
        )  # fmt: skip
        anchor = BlockRef(written.number, BlockHash(written.hash), BlockHash(written.parent_hash))
        self.tree = ForkTree(self.k, anchor)
        self._todo.clear()
        return False

    async def _emit(self, ref: BlockRef) -> None:
        written = self._written
        if written is not None and written.hash == ref.hash:
            return  # already handed to the writer: a decision applied again
        if not self._follows_written(ref):
            return
        # Measured when it was a head, usually.
        facts = self._seen.facts(ref.hash)
        if facts is None and self._seen.reads.pending:
            await self._seen.read_heads()
            facts = self._seen.facts(ref.hash)
        if facts is None:
            facts = await self._facts_of(await self._seen.known_header(ref.hash, ref.number))
        if facts.timestamp_ms is None:
            if ref.number != 0:
                raise MalformedAnswer(
                    f"{self.chain}: block #{ref.number}: the node answered no Timestamp.Now"
                )
            # Genesis has no timestamp: it has no row, and block 1 no delta.
            self._written = _Written(ref.number, ref.hash, ref.parent_hash, None)
            return
        parent_timestamp = await self._parent_timestamp(ref)
        consensus_hash = consensus_number = unresolved = None
        if self.reader.kind is ChainKind.AUTO_EVM:
            consensus_hash, consensus_number, unresolved = await self._source.map(facts)
        row = form_row(
            self.chain,
            facts.number,
            to_hex(facts.hash),
            to_hex(facts.parent_hash),
            facts.timestamp_ms,
            parent_timestamp,
            int(self._wall() * 1000),
            facts.spec_version,
            segment_headers=facts.segment_headers,
            bundle_count=facts.bundle_count,
            slot=facts.slot,
            consensus_block_hash=consensus_hash,
            consensus_block_number=consensus_number,
        )
        delta = row.delta_since_parent_ms
        if unresolved is not None:
            self.metrics.observe_unresolved_mapping(self.chain)
            await self.sink.put(Reconciliation(self.chain, unresolved))
        await self.sink.put(row)
        self._written = _Written(ref.number, ref.hash, ref.parent_hash, facts.timestamp_ms)
        self.metrics.observe_confirmed(self.chain, facts.number, delta)
        if delta is not None and delta <= 0:
            self._flag(
                row, "non_positive_delta", f"its timestamp is {-delta} ms before or at its parent's"
            )
        if self.consensus is not None and self.reader.kind is ChainKind.CONSENSUS:
            await self.consensus.confirmed(ref, facts.timestamp_ms)

    def _flag(self, row: Row, kind: str, what: str) -> None:
        """A block written as the chain says, but that no honest chain makes."""
        self.metrics.observe_anomaly(self.chain, kind)
        log.warning(
            "%s: block #%d %s: %s (%s); written as the chain says, flagged for validate",
            self.chain, row.block_number, row.hash, what, kind,
        )  # fmt: skip


def _ref_of_row(row: Row) -> BlockRef:
    return BlockRef(
        row.block_number,
        BlockHash(hex_to_bytes(row.hash, "resume hash")),
        BlockHash(hex_to_bytes(row.parent_hash, "resume parent hash")),
    )
