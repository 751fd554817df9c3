"""Fetching a window of blocks: the cheapest set of calls per block, pipelined under the
client's in-flight cap, and every answer checked before it becomes a :class:`Block`.

Per block: the hash by number (``chain_getBlockHash`` with a list of numbers), the
header, and the storage values: ``Timestamp.Now`` with ``state_getStorage``, or with
``Domains.SuccessfulBundles`` in one ``state_queryStorageAt`` on the consensus chain;
when the node allows unsafe methods, ``state_queryStorage`` over a range of blocks
instead.  Every header must hash to the hash it was fetched by and carry the number it
was fetched at; an answer of the wrong shape is a :class:`MalformedAnswer`, blocks that
no longer form one chain a :class:`Reorged`: node faults, for the engine to fetch again.
A transient error (a busy node's answer, a dropped connection) costs only the calls of
the group it hit: they are sent again in place, a few times, before the window fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from blocktimesd.aio.chain import queried, retried_in_place
from blocktimesd.aio.pool import Caller
from blocktimesd.backfill.reads import header_of, shown
from blocktimesd.core import hexfacts
from blocktimesd.core.ranges import Span
from blocktimesd.errors import (
    BlocktimesError,
    DecodeError,
    HashMismatch,
    MalformedAnswer,
    NodeFault,
    RpcError,
    pruned_state,
    raise_node_errors,
)

__all__ = ["Block", "BlockFetcher", "Landing", "Reorged"]

_GROUP_BLOCKS = 16  # the least blocks fetched (and reported) together: see _group_size


class Reorged(NodeFault):
    """The blocks fetched by number no longer form one chain (a reorg raced the fetch, or
    the node contradicts itself): fetch the window again."""


class Block(NamedTuple):
    """What a row needs of one block, read from the node's answers as they arrive
    (while they are still in the CPU's caches; the answers are dropped right away)."""

    number: int
    hash: str
    parent_hash: str
    timestamp_ms: int | None  # None: no Timestamp.Now (genesis)
    facts: hexfacts.DigestFacts
    bundles: int  # SuccessfulBundles of the configured domains (consensus)


class Landing:
    """A window's blocks as they arrive, a group at a time: what the progress counts, and
    what an interrupted run can still write (the groups that form an unbroken run from
    the window's parent on)."""

    def __init__(self, window: Span, report: Callable[[int], None] | None) -> None:
        self.window = window
        self.report = report
        self.groups: dict[int, list[Block]] = {}  # by the number of their first block

    def add(self, blocks: list[Block]) -> None:
        if not blocks:
            return
        self.groups[blocks[0].number] = blocks
        if self.report is not None:
            window = self.window
            # The parent and the child of the window are fetched with it, not for it.
            inside = min(blocks[-1].number, window.last) - max(blocks[0].number, window.first)
            self.report(max(inside + 1, 0))

    def prefix(self) -> list[Block]:
        """The blocks that arrived from the window's parent on, up to the first gap."""
        out: list[Block] = []
        number = self.window.first - 1
        while (group := self.groups.get(number)) is not None:
            out += group
            number = group[-1].number + 1
        return out


class BlockFetcher:
    """Fetches windows of one chain's blocks from its node.

    ``keys`` (the storage keys read per block, ``Timestamp.Now`` first) and ``batch``
    (calls per JSON-RPC batch) are set once the runtime is read and the node timed.
    The hashes of the first window's first chunk, which need neither, may be asked for
    before then (:meth:`ask_early`).
    """

    def __init__(
        self, client: Caller, chain: str, *, blocks_per_task: int, query_storage: bool
    ) -> None:
        self.client = client
        self.chain = chain
        self.blocks_per_task = blocks_per_task
        self.query_storage = query_storage
        self.keys: list[str] = []
        self.batch = client.settings.batch_size
        # Groups of blocks in flight: enough to keep the client's in-flight caps full, few
        # enough that they are answered in order of number (the semaphore is FIFO), so
        # an interrupted run has an unbroken run of blocks to write.
        self._gate = asyncio.Semaphore(client.settings.max_inflight)
        # Hash lists asked for ahead of their fetch, by (first, last) number.
        self._early: dict[tuple[int, int], asyncio.Future[Any]] = {}

    def ask_early(self, window: Span) -> None:
        """Ask now for the hashes of ``window``'s first chunk, while the runtime and the
        node's timing are still being read (they need neither); :meth:`fetch` of that
        window takes the answer.  :meth:`take_early` hands over what no fetch took."""
        first, last, _ = self._chunks(window)[0]
        if (first, last) not in self._early:
            self._early[(first, last)] = asyncio.ensure_future(self._hashes(first, last))

    def take_early(self) -> list[asyncio.Future[Any]]:
        """The early asks no fetch took (its caller cancels them), forgotten here."""
        asked = list(self._early.values())
        self._early.clear()
        return asked

    async def _hashes(self, first: int, last: int) -> Any:
        async with self._gate:
            return await self.client.call("chain_getBlockHash", list(range(first, last + 1)))

    def _chunks(self, window: Span) -> list[tuple[int, int, bool]]:
        """The window's chunks, with the window's parent and child: (first, last, whether
        ``last`` is the child, which may not exist yet)."""
        step = self.blocks_per_task
        first, child = window.first - 1, window.last + 1
        return [
            (n, min(n + step - 1, child), n + step > child) for n in range(first, child + 1, step)
        ]

    async def fetch(self, window: Span, landing: Landing | None = None) -> list[Block]:
        """The window's blocks, the parent of its first and the child of its last, in
        order of number.  The child is what vouches for the last block (as each block
        vouches for its parent); only the best block has none, and then the last block
        must be the best block.  Each group of blocks is handed to ``landing`` as it
        arrives."""
        tasks = [
            self._fetch_chunk(first, last, successor=successor, landing=landing)
            for first, last, successor in self._chunks(window)
        ]
        chunks = await asyncio.gather(*tasks)
        blocks = [raw for chunk in chunks for raw in chunk]
        if len(blocks) == window.count + 1:  # no child
            await self._check_best(blocks[-1])
        return blocks

    async def _check_best(self, block: Block) -> None:
        number, computed, _, _ = header_of(await self.client.call("chain_getHeader"))
        if (number, computed) != (block.number, block.hash):
            raise Reorged(
                f"block {block.number + 1} is unknown, yet block {block.number} "
                f"({block.hash}) is not the best block (#{number}, {computed})"
            )

    async def _fetch_chunk(
        self, first: int, last: int, *, successor: bool = False, landing: Landing | None = None
    ) -> list[Block]:
        """Blocks ``first``..``last``; with ``successor``, ``last`` may not exist yet."""
        numbers = list(range(first, last + 1))
        hashes = await self._asked(first, last)
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
                raise Reorged(f"the node does not know block {number} any more")
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

    async def _asked(self, first: int, last: int) -> Any:
        """The node's hash list of ``first``..``last``: the early ask's answer, if there
        was one and it came, else asked now."""
        early = self._early.pop((first, last), None)
        if early is not None:
            try:
                return await early
            except BlocktimesError:
                pass  # asked again, as any first ask that failed
        return await retried_in_place(lambda: self._hashes(first, last))

    def _group_size(self) -> int:
        """Blocks per group: a group's calls fill a batch (as many messages as a whole
        chunk would take), yet there are groups enough to report progress often: with
        single calls to a distant node, 16 blocks take well under a second."""
        calls_per_block = 1 if self.query_storage else 2
        return max(_GROUP_BLOCKS, -(-self.batch // calls_per_block))

    async def _fetch_group(
        self, numbers: list[int], hashes: list[str], landing: Landing | None
    ) -> list[Block]:
        async def fetch() -> list[Block]:
            async with self._gate:
                return await self._fetch_blocks(numbers, hashes)

        blocks = await retried_in_place(fetch)
        if landing is not None:
            landing.add(blocks)
        return blocks

    async def _fetch_blocks(self, numbers: list[int], hashes: list[str]) -> list[Block]:
        """The blocks of ``numbers``, whose hashes are ``hashes``: headers and storage."""
        header_calls = [("chain_getHeader", [h]) for h in hashes]
        if self.query_storage:
            headers, values = await asyncio.gather(
                self.client.call_many(header_calls, batch_size=self.batch),
                self._query_range(numbers, hashes),
            )
        else:
            answers = await self.client.call_many(
                header_calls + self._storage_calls(hashes), batch_size=self.batch
            )
            headers = answers[: len(hashes)]
            values = self._values(numbers, hashes, answers[len(hashes) :])
        blocks: list[Block] = []
        new_tuple = tuple.__new__  # the C constructor: a backfill makes millions of tuples
        header_facts, stamp, bundle_count = (
            hexfacts.header_facts,
            hexfacts.timestamp,
            hexfacts.bundle_count,
        )
        raise_node_errors(headers)
        for number, block_hash, header, found in zip(numbers, hashes, headers, values, strict=True):
            if header is None:
                raise Reorged(f"block {number} ({block_hash}) vanished from the node")
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
                raise Reorged(f"block {block_hash} is block {header_number}, not {number}")
            if timestamp is None and number:
                raise MalformedAnswer(f"block {number} ({block_hash}): no Timestamp.Now")
            blocks.append(
                new_tuple(Block, (number, block_hash, parent_hash, timestamp, facts, bundles))
            )
        return blocks

    def _storage_calls(self, hashes: list[str]) -> list[tuple[str, list[Any]]]:
        if len(self.keys) == 1:
            key = self.keys[0]
            return [("state_getStorage", [key, h]) for h in hashes]
        return [("state_queryStorageAt", [self.keys, h]) for h in hashes]

    def _values(
        self, numbers: list[int], hashes: list[str], answers: list[Any]
    ) -> list[Sequence[str | None]]:
        """Each block's storage values, from its ``state_getStorage`` answer (one key) or
        its ``state_queryStorageAt`` answer (``[{block, changes: [[key, value], ...]}]``)."""
        keys = self.keys
        out: list[Sequence[str | None]] = []
        for number, block_hash, answer in zip(numbers, hashes, answers, strict=True):
            if isinstance(answer, RpcError):
                raise pruned_state(answer, self.chain, shown(self.client), number, block_hash)
            if len(keys) == 1:
                out.append((answer,))
                continue
            try:
                out.append(queried(answer, keys))
            except MalformedAnswer as exc:
                raise MalformedAnswer(f"block {number} ({block_hash}): {exc}") from None
        return out

    async def _query_range(
        self, numbers: list[int], hashes: list[str]
    ) -> list[Sequence[str | None]]:
        """The values at every block of a range, from one ``state_queryStorage`` (which
        lists a key's value only where it changed; the first block lists them all)."""
        try:
            sets = await self.client.call("state_queryStorage", self.keys, hashes[0], hashes[-1])
        except RpcError as exc:
            raise pruned_state(exc, self.chain, shown(self.client), numbers[0], hashes[0]) from None
        keys = self.keys
        current: dict[str, str | None] = dict.fromkeys(keys)
        out: list[Sequence[str | None]] = []
        values: Sequence[str | None] = ()
        try:
            by_block = {entry["block"]: entry["changes"] for entry in sets}
            if not by_block.keys() <= set(hashes):
                raise Reorged("state_queryStorage walked blocks that are not canonical any more")
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
