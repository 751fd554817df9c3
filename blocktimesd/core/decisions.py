"""What the fork tree decides, and what it needs of a header (:class:`BlockRef`);
:mod:`blocktimesd.core.forktree` tells when each comes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from blocktimesd.core.header import BlockHash, Header, to_hex
from blocktimesd.dataset.records import ReorgRecord

__all__ = [
    "BlockRef",
    "Confirmed",
    "Decision",
    "ForkBelowHistory",
    "NeedAncestor",
    "NeedRange",
    "Reorg",
]


@dataclass(frozen=True, slots=True)
class BlockRef:
    """What the tree needs of a header: its place in the chain."""

    number: int
    hash: BlockHash
    parent_hash: BlockHash

    @classmethod
    def of(cls, header: Header) -> BlockRef:
        return cls(header.number, header.hash(), BlockHash(header.parent_hash))

    def __repr__(self) -> str:
        return f"BlockRef(#{self.number} {self.hash.hex()[:8]} <- {self.parent_hash.hex()[:8]})"


@dataclass(frozen=True, slots=True)
class NeedAncestor:
    """Fetch the header with this hash, ``add`` it, then ``resume``."""

    hash: BlockHash
    number: int


@dataclass(frozen=True, slots=True)
class NeedRange:
    """Fetch the node's canonical headers numbered ``first..last`` (inclusive), ``add``
    each, then ``resume``."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Reorg:
    """The best chain switched branches; ``depth`` blocks of the old one were retracted.
    ``beyond_confirmation``: confirmed blocks were among them (apply the repair rule)."""

    depth: int
    old_tip: BlockRef
    new_tip: BlockRef
    common_ancestor: BlockRef
    beyond_confirmation: bool

    def record(self, chain: str, detected_ts_ms: int) -> ReorgRecord:
        return ReorgRecord(
            chain=chain,
            detected_ts_ms=detected_ts_ms,
            depth=self.depth,
            old_tip_number=self.old_tip.number,
            old_tip_hash=to_hex(self.old_tip.hash),
            new_tip_number=self.new_tip.number,
            new_tip_hash=to_hex(self.new_tip.hash),
            common_ancestor_number=self.common_ancestor.number,
            common_ancestor_hash=to_hex(self.common_ancestor.hash),
            beyond_confirmation=self.beyond_confirmation,
        )


@dataclass(frozen=True, slots=True)
class Confirmed:
    """``ref`` is K deep on the best chain: write its row now."""

    ref: BlockRef


@dataclass(frozen=True, slots=True)
class ForkBelowHistory:
    """The best chain forks from the confirmed chain below ``oldest_kept``, the oldest
    confirmed block remembered.  Rows from ``oldest_kept.number`` up are orphaned; the
    tree is spent (see the module docstring)."""

    old_tip: BlockRef
    new_tip: BlockRef
    oldest_kept: BlockRef


Decision: TypeAlias = NeedAncestor | NeedRange | Reorg | Confirmed | ForkBelowHistory
