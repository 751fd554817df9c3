"""The consensus block a domain block was built from, named once it is confirmed.

An Auto-EVM header names its consensus source by hash (the RGTR digest item).  The
row gives that block's hash and number, but only once the block is confirmed on the
consensus chain: a domain block is only as settled as its source.  When the source
cannot be named -- no digest item, no consensus chain configured, a block the
consensus node does not know, or one that was orphaned -- the row is written without
it, and an :class:`Unresolved` record says why (the :class:`Unmapped` reasons).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from blocktimesd.aio.chain import REASK_DELAY_S, BlockFacts, ChainReader, served_header
from blocktimesd.aio.consensus_index import ConsensusIndex
from blocktimesd.core.header import to_hex
from blocktimesd.dataset.records import (
    Unmapped,
    Unresolved,
    unmapped_after_lookup,
    unmapped_before_lookup,
)

__all__ = ["ConsensusSource", "Mapping", "SourceMetrics"]

log = logging.getLogger(__name__)

# The consensus block's hash and number, or the record of why it is not named.
Mapping = tuple[str | None, int | None, Unresolved | None]


class SourceMetrics(Protocol):
    def observe_anomaly(self, chain: str, kind: str) -> None: ...


class ConsensusSource:
    """Maps one domain chain's blocks to their confirmed consensus blocks.

    ``index`` is the consensus follower's record of confirmed blocks (None when this
    process follows no consensus chain: then the consensus node is asked directly);
    ``reader`` reads the consensus chain (None: no consensus chain is configured).
    ``on_wait`` runs before waiting for a source to be confirmed, so that the rows
    held back are shown while they wait.
    """

    def __init__(
        self,
        chain: str,
        index: ConsensusIndex | None,
        reader: ChainReader | None,
        metrics: SourceMetrics,
        *,
        on_wait: Callable[[], None] = lambda: None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.chain = chain
        self.index = index
        self.reader = reader
        self.metrics = metrics
        self._on_wait = on_wait
        self._wall = wall_clock

    async def map(self, facts: BlockFacts) -> Mapping:
        """The consensus block of ``facts``' domain block, or why it has none."""
        source = facts.consensus_hash
        reason = unmapped_before_lookup(source, self.reader is not None)
        number: int | None = None
        if reason is None:
            assert source is not None
            assert self.reader is not None
            if self.index is not None:
                number, reason = await self._confirmed_source(source, self.index, self.reader)
            else:  # no consensus follower here to wait for: the node's word is taken
                header = await self.reader.header(source)
                number = None if header is None else header.number
                reason = unmapped_after_lookup(header is not None, canonical=True)
        if reason is not None:
            record = Unresolved(
                chain=self.chain,
                block_number=facts.number,
                hash=to_hex(facts.hash),
                consensus_block_hash=None if source is None else to_hex(source),
                reason=reason,
                detected_ts_ms=int(self._wall() * 1000),
            )
            return None, None, record
        assert source is not None
        self._check_timestamp(facts, source, number)
        return to_hex(source), number, None

    def _check_timestamp(self, facts: BlockFacts, source: bytes, number: int | None) -> None:
        """A domain block carries its consensus block's timestamp; flag one that does not."""
        if self.index is None or facts.timestamp_ms is None:
            return
        source_ts = self.index.timestamp_of(source)
        if source_ts is not None and source_ts != facts.timestamp_ms:
            self.metrics.observe_anomaly(self.chain, "timestamp_differs_from_consensus")
            log.warning(
                "%s: block #%d: timestamp %d differs from its consensus block's %d "
                "(#%s); written as the chain says, flagged for validate",
                self.chain, facts.number, facts.timestamp_ms, source_ts, number,
            )  # fmt: skip

    async def _confirmed_source(
        self, source: bytes, index: ConsensusIndex, reader: ChainReader
    ) -> tuple[int | None, Unmapped | None]:
        """The number of consensus block ``source`` once it is confirmed, or why not."""
        number = index.number_of(source)
        if number is not None:
            return number, None
        # A block the consensus follower was shown has its number known; else the
        # consensus node is asked for its header.
        seen = index.number_seen(source)
        if seen is None:
            header = await served_header(reader, source)
            if header is None:
                return None, unmapped_after_lookup(False, canonical=False)
            seen = header.number
        if index.tip < seen:
            self._on_wait()
            await index.wait_confirmed(seen)
        number = index.number_of(source)
        if number is not None:
            return number, None
        if index.hash_at(seen) is not None:
            # Another block was confirmed at its height: the source was orphaned (a
            # domain block that names it is on its way out too).  No need to ask.
            return None, unmapped_after_lookup(True, canonical=False)
        # Confirmed before this process started following: ask the node's canonical chain.
        canonical = await _canonical_is(reader, seen, source)
        reason = unmapped_after_lookup(True, canonical)
        return (seen if reason is None else None), reason


async def _canonical_is(reader: ChainReader, number: int, block_hash: bytes) -> bool:
    """Whether the consensus node's canonical block ``number`` is ``block_hash``, asked
    twice before answering no (one wrong answer does not orphan a block)."""
    for attempt in range(2):
        canonical = await reader.call("chain_getBlockHash", number)
        if canonical == to_hex(block_hash):
            return True
        if attempt == 0:
            await asyncio.sleep(REASK_DELAY_S)
    return False
