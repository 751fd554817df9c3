"""One simulated chain: a tree of blocks, its best chain, and its state.

Pure: blocks are added by the network model; nothing here reads a clock or does I/O.
A node keeps every block it imported, best or not, until finality prunes forks; so
does this store, and it answers look-ups the way a node's client database does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from blocktimesd.core.header import Header, to_hex

__all__ = ["BestChange", "Block", "ChainStore"]


@dataclass(eq=False, slots=True)
class Block:
    """A block and what the simulator knows about it.

    ``storage`` holds the values written in this block (a value of ``None`` means the
    key was cleared); ``persistent`` is shared with the parent until a block changes
    a long-lived key (copy on write).  ``lazy`` computes expensive values (events) on
    first use.
    """

    header: Header
    hash: bytes
    parent: Block | None = field(repr=False)
    timestamp_ms: int | None
    spec_version: int  # runtime version reported by this block's state
    seed: int  # everything not in the header is derived from it on demand
    facts: Any  # chain-specific facts used to build the body (frozen dataclass)
    storage: dict[bytes, bytes | None]
    persistent: dict[bytes, bytes]
    children: list[Block] = field(default_factory=list, repr=False)
    # domain: its consensus source; consensus: its domain tip
    link: Block | None = field(default=None, repr=False)

    @property
    def hash_hex(self) -> str:
        return to_hex(self.hash)

    @property
    def number(self) -> int:
        return self.header.number

    def ancestors(self) -> Iterator[Block]:
        """This block, then its parent, up to genesis."""
        block: Block | None = self
        while block is not None:
            yield block
            block = block.parent


@dataclass(frozen=True, slots=True)
class BestChange:
    block: Block
    retracted: tuple[Block, ...]  # blocks that left the best chain, tip first
    enacted: tuple[Block, ...]  # blocks that joined it, lowest first


class ChainStore:
    """Blocks by hash, the best chain by number, and look-ups of state."""

    def __init__(self, genesis: Block) -> None:
        self.by_hash: dict[bytes, Block] = {genesis.hash: genesis}
        self.canonical: list[Block] = [genesis]
        self.genesis = genesis

    @property
    def best(self) -> Block:
        return self.canonical[-1]

    def add(self, block: Block) -> None:
        """Import a block whose parent is known; it does not become the best yet."""
        parent = block.parent
        assert parent is not None, "genesis is never added"
        assert parent.hash in self.by_hash, "parent must be imported first"
        self.by_hash[block.hash] = block
        parent.children.append(block)

    def set_best(self, block: Block) -> BestChange:
        enacted: list[Block] = []
        cursor: Block | None = block
        while cursor is not None and not self.is_canonical(cursor):
            enacted.append(cursor)
            cursor = cursor.parent
        assert cursor is not None, "every block descends from genesis"
        retracted = tuple(reversed(self.canonical[cursor.number + 1 :]))
        del self.canonical[cursor.number + 1 :]
        self.canonical.extend(reversed(enacted))
        return BestChange(block, retracted, tuple(reversed(enacted)))

    def is_canonical(self, block: Block) -> bool:
        n = block.number
        return n < len(self.canonical) and self.canonical[n] is block

    def at_number(self, number: int) -> Block | None:
        if 0 <= number < len(self.canonical):
            return self.canonical[number]
        return None

    def get(self, block_hash: bytes) -> Block | None:
        return self.by_hash.get(block_hash)

    def storage_value(
        self, block: Block, key: bytes, lazy: Callable[[Block, bytes], bytes | None] | None = None
    ) -> bytes | None:
        """The value of ``key`` in the state after ``block``."""
        if key in block.storage:
            return block.storage[key]  # None: cleared in this block
        if lazy is not None:
            value = lazy(block, key)
            if value is not None:
                return value
        return block.persistent.get(key)
