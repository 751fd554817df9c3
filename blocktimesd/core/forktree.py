"""Fork tracking and confirmation at depth K: headers in, decisions out.

The model
---------
The node names its best block (``chain_subscribeNewHeads`` sends only the new tip: on a
reorg nothing says what was retracted, heights can jump, repeat or go down, and a
dropped subscription leaves a gap).  :class:`ForkTree` keeps:

* the *confirmed ring*: the last ``history`` confirmed blocks, a contiguous chain linked
  by parent hash.  Its top is the *confirmed tip*.  On resume it is seeded with the last
  rows of the dataset; on a fresh start (``confirmed=None``) with a *virtual anchor*, the
  parent of the first best block (its ``parent_hash`` is ``b""``; it is never emitted);
* the *unconfirmed blocks* above it, linked by parent hash, at most ``max_blocks``;
* the *best block* and the *best chain* from the confirmed tip up to it.

:meth:`ForkTree.add` records a header learned anywhere (subscription, ancestor fetch,
gap fill); duplicates are harmless.  :meth:`ForkTree.set_best` says "the node's best is
now this block" and returns :data:`Decision` values, in order.  It walks from the new
best down by parent hash until it meets the confirmed ring (a child of the best block
links at once).  If a header on the way is missing it returns one ``Need*`` decision
and stops: the caller fetches, adds what it got, and calls :meth:`ForkTree.resume`,
until a list carries no ``Need*``.  Linking is always checked by parent hash, whatever
the caller fetched:

* :class:`NeedAncestor` -- fetch this header by hash (``chain_getHeader(hash)``).  Asked
  for a fork (a block at that height is known, just not this one), for a single skipped
  height, and below the confirmed tip (the walk down a deep reorg).
* :class:`NeedRange` -- fetch the node's canonical headers for these numbers
  (``chain_getBlockHash([...])`` then the headers), at most ``batch`` of them.  When the
  missing block is more than ``batch`` above the confirmed tip and the heights right
  above the tip are K deep, the range starts at ``confirmed tip + 1`` (catch-up): once
  the highest block of the answer links to the confirmed tip, the tree confirms up to
  it, and asks for the next batch; so a gap of any width is bridged in bounded memory.
  Otherwise skipped heights are asked for from the top of the gap down.  Catch-up
  trusts the node's by-number answer for blocks K deep; if the best chain later turns
  out not to contain them, that is a reorg beyond confirmation and is reported as one
  (below).  Catch-up may also confirm blocks at or below a fork point before it reaches
  the fork and emits the :class:`Reorg`.

Once linked:

* a best that is the best block, an ancestor of it (a lagging node after failover, a
  late notification) or older than the oldest block in the ring retracts nothing and is
  ignored: ``[]``;
* a best that leaves the current best chain emits :class:`Reorg` (depth = blocks
  retracted from the old best, ``old_tip.number - common_ancestor.number``; a reorg to a
  lower height has ``new_tip.number < old_tip.number``);
* then every block of the best chain with ``best.number - number >= k`` is emitted as
  :class:`Confirmed`, in increasing contiguous numbers, each linking by parent hash to
  the previous one.  ``k = 0`` confirms the best block at once.

The repair rule
---------------
A :class:`Reorg` with ``beyond_confirmation=True`` means a confirmed block is not on the
new best chain.  Every row with ``block_number > common_ancestor.number`` is orphaned:
the caller deletes those rows (their number of rows is ``confirmed tip number -
common_ancestor.number``).  The tree then carries on from the common ancestor: the next
:class:`Confirmed` is ``common_ancestor.number + 1`` on the new chain, its parent the
common ancestor.  Applied to the stream of confirmations, "on a beyond-confirmation
reorg, drop everything above the common ancestor" always leaves a contiguous linked
prefix of the current best chain.

If the new best chain leaves the confirmed chain below the oldest block the ring
remembers, the tree cannot name the common ancestor: it emits :class:`ForkBelowHistory`
and is spent (every later call raises ``RuntimeError``).  The rows from
``oldest_kept.number`` up are orphaned; the caller walks down by number comparing its
rows with the node's canonical hashes, deletes the rows above the highest match, and
builds a new tree with ``confirmed`` = the matching rows.  On a fresh start the ring
first holds only the virtual anchor, so a fork below the first best's parent also ends
that way (with nothing emitted, nothing to repair).

Bounds
------
The ring holds ``history`` confirmed blocks (default ``2 * k + 64``; deep reorgs are
named down to its oldest block).  The unconfirmed blocks are at most ``max_blocks``
(default ``4 * k + 1024``; at least ``2 * k + 2 * batch + history + 2``) each time
``set_best`` or ``resume`` returns; between calls the blocks the caller adds may pass
it by one answer.  At the bound the tree drops the side branches off the best chain,
lowest first and a whole branch at a time, then the chain under a pending best from
just below it down (the next walk then catches up from the confirmed tip); never the
best chain (at most ``k`` blocks), the pending best, or a catch-up batch being linked.
After a best is linked, blocks that do not descend from the confirmed tip -- blocks at
or below the confirmed height off the confirmed chain among them -- are orphans and are
pruned; they are never emitted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TypeAlias, TypeVar

from blocktimesd.core.decisions import (
    BlockRef,
    Confirmed,
    Decision,
    ForkBelowHistory,
    NeedAncestor,
    NeedRange,
    Reorg,
)
from blocktimesd.core.header import BlockHash

__all__ = [
    "DEFAULT_BATCH",
    "BlockRef",
    "Confirmed",
    "Decision",
    "ForkBelowHistory",
    "ForkTree",
    "NeedAncestor",
    "NeedRange",
    "Reorg",
]

DEFAULT_BATCH = 256  # headers per NeedRange; a few hundred KiB of JSON per batch
_UNKNOWN = BlockHash(b"")  # parent hash of the virtual anchor
_K = TypeVar("_K")


@dataclass(frozen=True, slots=True)
class _Linked:
    anchor: BlockRef  # the ring block the walk reached
    chain: list[BlockRef]  # from the walk's start down to the block just above ``anchor``


@dataclass(frozen=True, slots=True)
class _Missing:
    child: BlockRef  # lowest block reached; its parent is unknown
    chain: list[BlockRef]


class _BelowHistory:
    pass


_Walk: TypeAlias = _Linked | _Missing | _BelowHistory


class ForkTree:
    """Unconfirmed blocks, reorgs and confirmation at depth ``k`` (see the module doc)."""

    __slots__ = (
        "_batch",
        "_best",
        "_best_chain",
        "_best_set",
        "_blocks",
        "_by_number",
        "_children",
        "_clean",
        "_clock",
        "_fill_seq",
        "_history",
        "_k",
        "_max_blocks",
        "_pending",
        "_ring",
        "_ring_index",
        "_seq",
        "_spent",
        "_stone",
    )

    def __init__(
        self,
        k: int,
        confirmed: BlockRef | Sequence[BlockRef] | None = None,
        *,
        max_blocks: int | None = None,
        history: int | None = None,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        """``confirmed``: the last block(s) already durable in the dataset, oldest first
        and linked by parent hash (more than one lets a resumed tree see deep reorgs
        right away); ``None`` starts at the first best block, which is confirmed once K
        deep (nothing below it is ever emitted: backfill covers that)."""
        self._k = k
        self._history = 2 * k + 64 if history is None else history
        self._batch = batch
        self._max_blocks = 4 * k + 1024 if max_blocks is None else max_blocks
        if k < 0 or self._history < 1 or batch < 1:
            raise ValueError("ForkTree needs k >= 0, history >= 1 and batch >= 1")
        if self._max_blocks < 2 * k + 2 * batch + self._history + 2:
            # The best chain (k) and a best being linked: its chain down to a fork below
            # the confirmed tip (k + history), or a catch-up fill and the chain from its
            # top down to the fork (2 * batch + history).
            raise ValueError("max_blocks must be at least 2 * k + 2 * batch + history + 2")
        seed = [confirmed] if isinstance(confirmed, BlockRef) else list(confirmed or ())
        for lower, upper in pairwise(seed):
            if upper.number != lower.number + 1 or upper.parent_hash != lower.hash:
                raise ValueError(f"confirmed blocks do not form a chain at {upper!r}")

        self._ring: deque[BlockRef] = deque()
        self._ring_index: dict[BlockHash, BlockRef] = {}
        self._blocks: dict[BlockHash, BlockRef] = {}
        self._children: dict[BlockHash, set[BlockHash]] = {}
        self._by_number: dict[int, set[BlockHash]] = {}
        self._seq: dict[BlockHash, int] = {}  # when each block was last added
        self._clock = 0
        self._best: BlockRef | None = None
        self._best_chain: deque[BlockRef] = deque()  # unconfirmed part, ascending
        self._best_set: set[BlockHash] = set()
        self._pending: BlockRef | None = None  # a best not yet linked
        self._stone: BlockRef | None = None  # top of a catch-up batch being linked
        self._fill_seq: int | None = None  # clock when the last catch-up batch was asked
        self._spent = False
        self._clean = True  # every block held descends from the confirmed tip
        for ref in seed[-self._history :]:
            self._push_ring(ref)
        if self._ring:
            self._best = self._ring[-1]

    # -- inspection ---------------------------------------------------------------

    @property
    def k(self) -> int:
        return self._k

    @property
    def confirmed(self) -> BlockRef | None:
        """The confirmed tip (``None`` before anything is confirmed on a fresh start)."""
        if not self._ring or self._ring[-1].parent_hash == _UNKNOWN:
            return None
        return self._ring[-1]

    @property
    def best(self) -> BlockRef | None:
        """The last linked best block."""
        return self._best

    @property
    def pending(self) -> BlockRef | None:
        """A best block waiting for its ancestors (answer the last ``Need*``)."""
        return self._pending

    @property
    def spent(self) -> bool:
        return self._spent

    def __len__(self) -> int:
        """Unconfirmed blocks held."""
        return len(self._blocks)

    # -- input --------------------------------------------------------------------

    def add(self, ref: BlockRef) -> None:
        """Record a header; repeats and blocks too old to matter are harmless."""
        self._check_usable()
        self._clock += 1
        if ref.hash in self._ring_index:
            return
        if ref.hash in self._blocks:
            self._seq[ref.hash] = self._clock
            return
        if self._ring and ref.number < self._ring[0].number:
            return  # no walk ever needs it: it would report ForkBelowHistory first
        if self._clean and ref.parent_hash not in self._blocks:
            self._clean = bool(self._ring) and ref.parent_hash == self._ring[-1].hash
        self._blocks[ref.hash] = ref
        self._seq[ref.hash] = self._clock
        self._children.setdefault(ref.parent_hash, set()).add(ref.hash)
        self._by_number.setdefault(ref.number, set()).add(ref.hash)

    def set_best(self, ref: BlockRef) -> list[Decision]:
        """The node's best block is now ``ref``."""
        self._check_usable()
        if not self._ring:
            self._push_ring(BlockRef(ref.number - 1, ref.parent_hash, _UNKNOWN))
            self._best = self._ring[-1]
        if not self._is_stale(ref):
            self.add(ref)
            self._pending = ref
            self._stone = None
            self._fill_seq = None
        return self.resume()

    def retracted_tip(self, ref: BlockRef) -> BlockRef | None:
        """The confirmed tip, if the node's best ``ref`` is a confirmed block below it:
        then either the node retracted the confirmed blocks above ``ref`` (its best
        chain moved to a shorter branch) or it lags behind them.  The caller tells which
        (a node that retracted them still knows the tip) and calls :meth:`retract_to`."""
        self._check_usable()
        anchor = self._ring_index.get(ref.hash)
        if anchor is None or anchor.hash == self._ring[-1].hash:
            return None
        return self._ring[-1]

    def retract_to(self, ref: BlockRef) -> list[Decision]:
        """The node's best chain now ends at ``ref``, a confirmed block below the
        confirmed tip: the confirmed blocks above it were orphaned (a
        ``Reorg`` beyond confirmation); the next heads are confirmed from ``ref`` on."""
        if self.retracted_tip(ref) is None:
            return []
        anchor = self._ring_index[ref.hash]
        old = self._best
        assert old is not None
        while self._ring[-1].hash != anchor.hash:
            self._insert_back(self._ring.pop())  # side blocks now: the chain may come back
        self._best_chain = deque()
        self._best_set = set()
        self._best = anchor
        self._pending = self._stone = self._fill_seq = None
        self._clean = False
        return [Reorg(old.number - anchor.number, old, anchor, anchor, True)]

    def resume(self) -> list[Decision]:
        """Carry on after the caller answered a ``Need*`` (``[]`` if nothing waits)."""
        self._check_usable()
        out = self._resolve()
        if not self._spent:
            self._keep_bound()
        return out

    # -- the walk -----------------------------------------------------------------

    def _resolve(self) -> list[Decision]:
        out: list[Decision] = []
        while (target := self._pending) is not None:
            stone = self._stone
            if stone is not None:
                walk = self._walk(stone)
                if isinstance(walk, _Linked):
                    out += self._adopt(stone, walk, target, limit=stone.number)
                    self._stone = None
                    continue
            else:
                extended = self._extend(target)
                if extended is not None:
                    out += extended
                    self._pending = self._fill_seq = None
                    self._prune()
                    break
                if self._is_stale(target):  # catch-up confirmed it (k = 0)
                    self._pending = self._fill_seq = None
                    self._prune()
                    break
                walk = self._walk(target)
                if isinstance(walk, _Linked):
                    out += self._adopt(target, walk, target, limit=target.number - self._k)
                    self._pending = self._fill_seq = None
                    self._prune()
                    break
            if isinstance(walk, _BelowHistory):
                assert self._best is not None
                out.append(ForkBelowHistory(self._best, target, self._ring[0]))
                self._spent = True
                for block_hash in list(self._blocks):
                    self._forget(block_hash)
                break
            if stone is None and self._fill_seq is not None:
                self._stone = self._find_stone(target)
                self._fill_seq = None
                if self._stone is not None:
                    continue
            out.append(self._need(target, walk.child, catch_up=stone is None))
            break
        return out

    def _walk(self, start: BlockRef) -> _Walk:
        """From ``start`` down by parent hash to the ring, or to the first gap."""
        chain = []
        block = start
        while True:
            chain.append(block)
            anchor = self._ring_index.get(block.parent_hash)
            if anchor is not None:
                _check_link(anchor, block)
                return _Linked(anchor, chain)
            if block.number - 1 < self._ring[0].number:
                return _BelowHistory()
            parent = self._blocks.get(block.parent_hash)
            if parent is None:
                return _Missing(block, chain)
            _check_link(parent, block)
            block = parent

    def _need(self, target: BlockRef, child: BlockRef, *, catch_up: bool) -> Decision:
        tip = self._ring[-1].number
        number = child.number - 1
        if number <= tip:
            return NeedAncestor(child.parent_hash, number)
        if catch_up and number - tip > self._batch and tip + 1 <= target.number - self._k:
            self._fill_seq = self._clock
            return NeedRange(tip + 1, min(tip + self._batch, target.number - self._k))
        if self._by_number.get(number):
            return NeedAncestor(child.parent_hash, number)
        first = number
        while first - 1 > tip and number - first + 1 < self._batch:
            if self._by_number.get(first - 1):
                break
            first -= 1
        if first == number:
            return NeedAncestor(child.parent_hash, number)
        return NeedRange(first, number)

    def _find_stone(self, target: BlockRef) -> BlockRef | None:
        """The highest block the caller added since the catch-up batch was asked for."""
        assert self._fill_seq is not None
        since = self._fill_seq
        for number in range(target.number - self._k, self._ring[-1].number, -1):
            fresh = [h for h in self._by_number.get(number, ()) if self._seq[h] > since]
            if fresh:
                return self._blocks[max(fresh, key=self._seq.__getitem__)]
        return None

    # -- switching and confirming -------------------------------------------------

    def _adopt(
        self, head: BlockRef, walk: _Linked, reported: BlockRef, limit: int
    ) -> list[Decision]:
        """Make the best chain run through ``head`` and confirm up to ``limit``.
        ``head`` is the new best, or a catch-up block on the way to it (``reported``)."""
        old = self._best
        assert old is not None
        self._clean = False
        tip = self._ring[-1]
        deep = walk.anchor.hash != tip.hash
        ancestor = walk.anchor
        if not deep:
            ancestor = next((b for b in walk.chain if b.hash in self._best_set), tip)
        out: list[Decision] = []
        if ancestor.hash != head.hash:  # else head is on the old best chain: keep it
            if ancestor.hash != old.hash:
                out.append(Reorg(old.number - ancestor.number, old, reported, ancestor, deep))
            while deep and self._ring[-1].hash != ancestor.hash:
                self._insert_back(self._ring.pop())
            self._best_chain = deque(reversed(walk.chain))
            self._best_set = {b.hash for b in self._best_chain}
            self._best = head
        return self._confirm(limit, out)

    def _confirm(self, limit: int, out: list[Decision]) -> list[Decision]:
        """Confirm the best chain up to ``limit``."""
        while self._best_chain and self._best_chain[0].number <= limit:
            block = self._best_chain.popleft()
            self._best_set.discard(block.hash)
            if len(self._children.get(block.parent_hash, ())) > 1:
                self._clean = False  # a side branch off the confirmed tip: orphaned
            self._forget(block.hash)
            self._push_ring(block)
            out.append(Confirmed(block))
        return out

    def _extend(self, target: BlockRef) -> list[Decision] | None:
        """What ``_adopt`` makes of the walk from ``target`` if it is a child of the best
        block atop the linked best chain (the common case); else ``None``."""
        best, chain = self._best, self._best_chain
        if not (
            best is not None
            and chain
            and chain[-1] is best
            and target.parent_hash == best.hash
            and target.number == best.number + 1
        ):
            return None
        chain.append(target)
        self._best_set.add(target.hash)
        self._best = target
        return self._confirm(target.number - self._k, [])

    def _is_stale(self, ref: BlockRef) -> bool:
        ring, best = self._ring_index, self._best_set
        return ref.number < self._ring[0].number or ref.hash in ring or ref.hash in best

    # -- memory -------------------------------------------------------------------

    def _prune(self) -> None:
        """Keep only descendants of the confirmed tip."""
        if self._clean:
            return
        self._clean = True
        keep: set[BlockHash] = set()
        frontier = [self._ring[-1].hash]
        while frontier:
            for child in self._children.get(frontier.pop(), ()):
                if child in self._blocks and child not in keep:
                    keep.add(child)
                    frontier.append(child)
        for block_hash in [h for h in self._blocks if h not in keep]:
            self._forget(block_hash)

    def _keep_bound(self) -> None:
        """Drop side branches lowest first (a whole branch at a time), then the chain
        below a pending best from just under it down (the walk then starts a catch-up
        or refetches it); never the best chain, the pending best or a catch-up chain."""
        if len(self._blocks) <= self._max_blocks:
            return
        self._clean = False
        protected = set(self._best_set)
        hanging: list[BlockRef] = []
        for start in (self._stone, self._pending):
            if start is not None:
                walk = self._walk(start)
                chain = [] if isinstance(walk, _BelowHistory) else walk.chain
                protected.update(b.hash for b in chain)
                protected.add(start.hash)
                hanging = chain[1:]  # the pending best's, walked last
        side = sorted(
            (b for b in self._blocks.values() if b.hash not in protected),
            key=lambda b: (b.number, self._seq[b.hash]),
        )
        for block in side:
            if len(self._blocks) <= self._max_blocks:
                return
            self._forget_subtree(block.hash)
        for block in hanging:
            if len(self._blocks) <= self._max_blocks:
                return
            if block.hash not in self._best_set:
                self._forget(block.hash)

    def _push_ring(self, ref: BlockRef) -> None:
        if len(self._ring) == self._history:
            del self._ring_index[self._ring.popleft().hash]
        self._ring.append(ref)
        self._ring_index[ref.hash] = ref

    def _insert_back(self, ref: BlockRef) -> None:
        """A confirmed block retracted by a deep reorg: now just a side block."""
        del self._ring_index[ref.hash]
        self.add(ref)

    def _forget(self, block_hash: BlockHash) -> None:
        ref = self._blocks.pop(block_hash, None)
        if ref is None:
            return
        del self._seq[block_hash]
        _discard(self._children, ref.parent_hash, block_hash)
        _discard(self._by_number, ref.number, block_hash)

    def _forget_subtree(self, block_hash: BlockHash) -> None:
        stack = [block_hash]
        while stack:
            current = stack.pop()
            if current in self._blocks:
                stack.extend(self._children.get(current, ()))
                self._forget(current)

    def _check_usable(self) -> None:
        if self._spent:
            raise RuntimeError("this ForkTree reported ForkBelowHistory: build a new one")


def _check_link(parent: BlockRef, child: BlockRef) -> None:
    if child.number != parent.number + 1:
        raise ValueError(f"{child!r} names {parent!r} as parent but is not numbered after it")


def _discard(index: dict[_K, set[BlockHash]], key: _K, value: BlockHash) -> None:
    bucket = index.get(key)
    if bucket is not None:
        bucket.discard(value)
        if not bucket:
            del index[key]
