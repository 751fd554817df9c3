"""The consensus blocks confirmed so far, shared by the consensus and domain followers.

An Auto-EVM block names the consensus block it was built from; its row is written
once that block is confirmed on the consensus chain.  The consensus follower records
each block it confirms here (and retracts what a reorg beyond confirmation orphans);
the domain follower looks its source up by hash and waits for the confirmed tip to
reach it.  The consensus follower also records the number of every block the node
showed it (heads and the ancestors it fetched), so that the domain follower need not
ask the consensus node the number of a source it has not confirmed yet.  Bounded: the
oldest entries go first, since domain blocks name recent consensus blocks.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from blocktimesd.core.forktree import BlockRef
from blocktimesd.core.header import hex_to_bytes
from blocktimesd.dataset.records import Row

__all__ = ["ConsensusIndex"]


class ConsensusIndex:
    """Confirmed consensus blocks (hash -> number, timestamp), for the domain follower."""

    def __init__(self, kept: int = 100_000, seen_kept: int = 8192) -> None:
        self._by_hash: OrderedDict[bytes, tuple[int, int | None]] = OrderedDict()
        self._by_number: dict[int, bytes] = {}  # the same blocks, by number
        self._kept = kept
        self._seen: OrderedDict[bytes, int] = OrderedDict()  # hash -> number, unconfirmed
        self._seen_kept = seen_kept
        self.tip = -1
        self._changed = asyncio.Condition()
        self._waiting = 0  # tasks in wait_confirmed

    @property
    def kept(self) -> int:
        return self._kept

    async def seed(self, rows: list[Row]) -> None:
        """Blocks confirmed before this process started (durable rows, ascending)."""
        for row in rows[-self._kept :]:
            self._keep(hex_to_bytes(row.hash, "row hash"), row.block_number, row.timestamp_ms)
        if rows:
            self.tip = max(self.tip, rows[-1].block_number)
            async with self._changed:
                self._changed.notify_all()

    def _keep(self, block_hash: bytes, number: int, timestamp_ms: int | None) -> None:
        self._by_hash[block_hash] = (number, timestamp_ms)
        self._by_number[number] = block_hash
        if len(self._by_hash) > self._kept:
            gone, (old, _) = self._by_hash.popitem(last=False)
            if self._by_number.get(old) == gone:
                del self._by_number[old]

    async def confirmed(self, ref: BlockRef, timestamp_ms: int | None = None) -> None:
        self._keep(ref.hash, ref.number, timestamp_ms)
        self.tip = ref.number
        if self._waiting:  # the domain follower waits for a block only now and then
            async with self._changed:
                self._changed.notify_all()

    async def retract_above(self, number: int) -> None:
        for block_hash, (n, _) in list(self._by_hash.items()):
            if n > number:
                del self._by_hash[block_hash]
                self._by_number.pop(n, None)
        self.tip = min(self.tip, number)

    async def wait_confirmed(self, number: int) -> None:
        if self.tip >= number:
            return
        self._waiting += 1
        try:
            async with self._changed:
                await self._changed.wait_for(lambda: self.tip >= number)
        finally:
            self._waiting -= 1

    def number_of(self, block_hash: bytes) -> int | None:
        entry = self._by_hash.get(block_hash)
        return None if entry is None else entry[0]

    def hash_at(self, number: int) -> bytes | None:
        """The block confirmed at ``number``, if it is still kept."""
        return self._by_number.get(number)

    def timestamp_of(self, block_hash: bytes) -> int | None:
        entry = self._by_hash.get(block_hash)
        return None if entry is None else entry[1]

    def saw(self, block_hash: bytes, number: int) -> None:
        """A block the consensus node showed the consensus follower (maybe not confirmed)."""
        seen = self._seen
        if block_hash not in seen:
            seen[block_hash] = number
            if len(seen) > self._seen_kept:
                seen.popitem(last=False)

    def number_seen(self, block_hash: bytes) -> int | None:
        """The number of a block :meth:`saw` recorded, if it is still kept."""
        return self._seen.get(block_hash)
