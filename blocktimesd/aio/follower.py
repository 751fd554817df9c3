"""One chain, followed: new heads -> fork tree -> confirmed rows -> the writer.

The follower owns one subscription at a time.  Every head goes to the fork tree; the
tree's ``Need*`` answers are fetched here (by hash, or by number in batches), so gaps
from skipped heights, reconnects, dropped subscriptions and stalls are all filled the
same way: when the next head arrives, the tree walks down to the confirmed tip and
asks for what it lacks.  A block's row is emitted when the tree confirms it (K deep on
the best chain), exactly once; live metrics follow the best head.

Auto-EVM rows wait for their consensus block: a domain block is only as settled as its
consensus source, so its row is written once that source is confirmed on the consensus
chain (see :class:`ConsensusIndex`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from blocktimesd.aio.chain import BlockFacts, ChainKind, ChainReader
from blocktimesd.aio.writer import Reconciliation
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
from blocktimesd.core.rows import Row, delta_ms
from blocktimesd.errors import (
    BlocktimesError,
    DecodeError,
    RpcError,
    SubscriptionGap,
    TransportError,
)

__all__ = ["ConsensusIndex", "Follower", "FollowerMetrics", "RowSink", "Unresolved"]

log = logging.getLogger(__name__)

_FACTS_KEPT = 4096  # facts of recent heads, reused when they are confirmed


class RowSink(Protocol):
    async def put(self, item: Any) -> None: ...

    async def delete_from(self, chain: str, block_number: int) -> None: ...


class FollowerMetrics(Protocol):
    def observe_head(self, chain: str, number: int, timestamp_ms: int | None) -> None: ...

    def observe_confirmed(self, chain: str, number: int, delta_ms: int | None) -> None: ...

    def observe_reorg(self, chain: str, depth: int, deep: bool) -> None: ...

    def observe_unresolved_mapping(self, chain: str, count: int = 1) -> None: ...

    def set_following(self, chain: str, following: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A reconciliation record: a domain row whose consensus block could not be named."""

    chain: str
    block_number: int
    hash: str
    consensus_block_hash: str | None
    reason: str
    detected_ts_ms: int


class ConsensusIndex:
    """Confirmed consensus blocks (hash -> number), for the domain follower to wait on."""

    def __init__(self, kept: int = 100_000) -> None:
        self._by_hash: OrderedDict[bytes, int] = OrderedDict()
        self._kept = kept
        self.tip = -1
        self._changed = asyncio.Condition()

    async def confirmed(self, ref: BlockRef) -> None:
        self._by_hash[ref.hash] = ref.number
        if len(self._by_hash) > self._kept:
            self._by_hash.popitem(last=False)
        self.tip = ref.number
        async with self._changed:
            self._changed.notify_all()

    async def retract_above(self, number: int) -> None:
        for block_hash, n in list(self._by_hash.items()):
            if n > number:
                del self._by_hash[block_hash]
        self.tip = min(self.tip, number)

    async def wait_confirmed(self, number: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.tip >= number)

    def number_of(self, block_hash: bytes) -> int | None:
        return self._by_hash.get(block_hash)


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
        consensus: ConsensusIndex | None = None,
        consensus_reader: ChainReader | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.reader = reader
        self.chain = chain
        self.sink = sink
        self.metrics = metrics
        self.consensus = consensus  # set on the consensus follower (publishes) and domain (waits)
        self.consensus_reader = consensus_reader
        self._wall = wall_clock
        self._facts: OrderedDict[bytes, BlockFacts] = OrderedDict()
        self._headers: OrderedDict[bytes, Header] = OrderedDict()
        confirmed = None
        self._parent_ts: int | None = None
        if resume is not None:
            confirmed = BlockRef(
                resume.block_number,
                BlockHash(hex_to_bytes(resume.hash, "resume hash")),
                BlockHash(hex_to_bytes(resume.parent_hash, "resume parent hash")),
            )
            self._parent_ts = resume.timestamp_ms
        self.k = k
        self.resume_row = resume
        self.tree = ForkTree(k, confirmed)
        self.following = False

    # -- resuming ------------------------------------------------------------------------------

    async def verify_resume(self, tail: Callable[[int], Awaitable[list[Row]]]) -> None:
        """Check that the last durable row is still canonical; repair the dataset if not.

        A reorg deeper than K while the daemon was down orphans durable rows: find the
        highest durable row that the node's canonical chain still has, delete the rows
        above it, and resume from there.
        """
        resume = self.resume_row
        if resume is None:
            return
        client = self.reader.client
        if await client.call("chain_getBlockHash", resume.block_number) == resume.hash:
            return
        rows = await tail(2 * self.k + 64)
        canonical = await client.call("chain_getBlockHash", [r.block_number for r in rows])
        keep: Row | None = None
        for row, block_hash in zip(rows, canonical, strict=True):
            if row.hash != block_hash:
                break
            keep = row
        if keep is None:
            raise BlocktimesError(
                f"{self.chain}: none of the last {len(rows)} durable rows is on the node's "
                "canonical chain; check that the endpoint serves the same chain as the "
                "dataset, or move the dataset aside"
            )
        log.error(
            "%s: REORG BEYOND CONFIRMATION while stopped: rows above #%d are orphaned; "
            "deleting them and resuming from there",
            self.chain, keep.block_number,
        )  # fmt: skip
        self.metrics.observe_reorg(self.chain, resume.block_number - keep.block_number, True)
        await self.sink.delete_from(self.chain, keep.block_number + 1)
        self.resume_row = keep
        self._parent_ts = keep.timestamp_ms
        self.tree = ForkTree(
            self.k,
            BlockRef(
                keep.block_number,
                BlockHash(hex_to_bytes(keep.hash, "resume hash")),
                BlockHash(hex_to_bytes(keep.parent_hash, "resume parent hash")),
            ),
        )

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        client = self.reader.client
        while True:
            try:
                await client.wait_ready()
                heads = await client.subscribe(
                    "chain_subscribeNewHeads", "chain_unsubscribeNewHeads"
                )
                async for head in heads:
                    self._set_following(True)
                    await self._on_head(Header.from_json(head))
            except SubscriptionGap as gap:
                log.info("%s: %s; the next head fills the gap", self.chain, gap.reason)
            except (TransportError, RpcError) as exc:
                log.warning("%s: %s; resubscribing", self.chain, exc)
                await asyncio.sleep(0.5)
            finally:
                self._set_following(False)

    def _set_following(self, following: bool) -> None:
        if following != self.following:
            self.following = following
            self.metrics.set_following(self.chain, following)

    async def _on_head(self, header: Header) -> None:
        facts = await self._facts_of(header)
        self.metrics.observe_head(self.chain, header.number, facts.timestamp_ms)
        decisions = self.tree.set_best(BlockRef.of(header))
        while True:
            for decision in decisions:
                await self._apply(decision)
            if not any(isinstance(d, NeedAncestor | NeedRange) for d in decisions):
                return
            decisions = self.tree.resume()

    async def _apply(self, decision: Decision) -> None:
        if isinstance(decision, Confirmed):
            await self._emit(decision.ref)
        elif isinstance(decision, NeedRange):
            await self._fill_range(decision.first, decision.last)
        elif isinstance(decision, NeedAncestor):
            header = await self.reader.header(decision.hash)
            if header is None:
                raise BlocktimesError(
                    f"{self.chain}: the node does not know block {to_hex(decision.hash)} "
                    f"(#{decision.number}), an ancestor of its own best block"
                )
            self._remember(header)
        elif isinstance(decision, Reorg):
            await self._on_reorg(decision)
        elif isinstance(decision, ForkBelowHistory):
            raise BlocktimesError(
                f"{self.chain}: the best chain forks below block {decision.oldest_kept.number}, "
                "deeper than the history kept; rows from there up may be orphaned. Run "
                "'blocktimesd validate' and re-backfill that range"
            )

    async def _fill_range(self, first: int, last: int) -> None:
        log.info("%s: filling blocks %d..%d", self.chain, first, last)
        client = self.reader.client
        hashes = await client.call("chain_getBlockHash", list(range(first, last + 1)))
        wanted = [h for h in hashes if h is not None]
        results = await client.call_many([("chain_getHeader", [h]) for h in wanted])
        for result in results:
            if isinstance(result, RpcError):
                raise result
            if result is not None:
                self._remember(Header.from_json(result))

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
            log.error(
                "%s: REORG BEYOND CONFIRMATION: confirmed blocks above #%d were orphaned; "
                "deleting their rows and confirming the new chain from there",
                self.chain, reorg.common_ancestor.number,
            )  # fmt: skip
            await self.sink.delete_from(self.chain, reorg.common_ancestor.number + 1)
            if self.consensus is not None and self.reader.kind is ChainKind.CONSENSUS:
                await self.consensus.retract_above(reorg.common_ancestor.number)
            self._parent_ts = None  # fetched again for the common ancestor

    # -- rows ---------------------------------------------------------------------------------

    def _remember(self, header: Header) -> None:
        block_hash = header.hash()
        self._headers[block_hash] = header
        if len(self._headers) > _FACTS_KEPT:
            self._headers.popitem(last=False)
        self.tree.add(BlockRef(header.number, BlockHash(block_hash), BlockHash(header.parent_hash)))

    async def _facts_of(self, header: Header) -> BlockFacts:
        block_hash = header.hash()
        facts = self._facts.get(block_hash)
        if facts is None:
            facts = await self.reader.facts(header)
            self._facts[block_hash] = facts
            if len(self._facts) > _FACTS_KEPT:
                self._facts.popitem(last=False)
        self._remember(header)
        return facts

    async def _header(self, ref: BlockRef) -> Header:
        header = self._headers.get(ref.hash)
        if header is None:
            header = await self.reader.header(ref.hash)
            if header is None:
                raise BlocktimesError(f"{self.chain}: block #{ref.number} vanished from the node")
        return header

    async def _emit(self, ref: BlockRef) -> None:
        facts = await self._facts_of(await self._header(ref))
        if self._parent_ts is None and ref.number > 0:
            parent = await self.reader.header(ref.parent_hash)
            if parent is not None:
                self._parent_ts = (await self.reader.facts(parent)).timestamp_ms
        if facts.timestamp_ms is None:
            if ref.number != 0:
                raise DecodeError(f"{self.chain}: block #{ref.number} has no Timestamp.Now")
            return  # genesis has no timestamp: it has no row, and block 1 no delta
        delta = delta_ms(facts.timestamp_ms, self._parent_ts)
        consensus_hash = consensus_number = None
        if self.reader.kind is ChainKind.AUTO_EVM:
            consensus_hash, consensus_number = await self._map_to_consensus(facts)
        row = Row(
            chain=self.chain,
            block_number=facts.number,
            hash=to_hex(facts.hash),
            parent_hash=to_hex(facts.parent_hash),
            timestamp_ms=facts.timestamp_ms,
            delta_since_parent_ms=delta,
            ingestion_ts_ms=int(self._wall() * 1000),
            contained_store_segment_headers=(
                None if facts.segment_headers is None else facts.segment_headers > 0
            ),
            bundle_count=facts.bundle_count,
            consensus_block_hash=consensus_hash,
            slot=facts.slot,
            spec_version=facts.spec_version,
            consensus_block_number=consensus_number,
        )
        await self.sink.put(row)
        self._parent_ts = facts.timestamp_ms
        self.metrics.observe_confirmed(self.chain, facts.number, delta)
        if self.consensus is not None and self.reader.kind is ChainKind.CONSENSUS:
            await self.consensus.confirmed(ref)

    @staticmethod
    async def _confirmed_source(
        source: bytes, index: ConsensusIndex, reader: ChainReader
    ) -> tuple[int | None, str | None]:
        """The number of consensus block ``source`` once it is confirmed, or why not."""
        number = index.number_of(source)
        if number is not None:
            return number, None
        header = await reader.header(source)
        if header is None:
            return None, "the consensus node does not know the block"
        await index.wait_confirmed(header.number)
        number = index.number_of(source)
        if number is not None:
            return number, None
        # Confirmed before this process started following: ask the node's canonical chain.
        canonical = await reader.client.call("chain_getBlockHash", header.number)
        if canonical == to_hex(source):
            return header.number, None
        return None, "the consensus block was orphaned"

    async def _map_to_consensus(self, facts: BlockFacts) -> tuple[str | None, int | None]:
        source = facts.consensus_hash
        reason = None
        number: int | None = None
        if source is None:
            reason = "no RGTR digest item in the domain header"
        elif self.consensus is not None and self.consensus_reader is not None:
            number, reason = await self._confirmed_source(
                source, self.consensus, self.consensus_reader
            )
        elif self.consensus_reader is not None:
            header = await self.consensus_reader.header(source)
            number = None if header is None else header.number
            if number is None:
                reason = "the consensus node does not know the block"
        else:
            reason = "no consensus chain configured"
        if reason is not None:
            self.metrics.observe_unresolved_mapping(self.chain)
            record = Unresolved(
                chain=self.chain,
                block_number=facts.number,
                hash=to_hex(facts.hash),
                consensus_block_hash=None if source is None else to_hex(source),
                reason=reason,
                detected_ts_ms=int(self._wall() * 1000),
            )
            await self.sink.put(Reconciliation(self.chain, record))
            return None, None
        assert source is not None
        return to_hex(source), number
