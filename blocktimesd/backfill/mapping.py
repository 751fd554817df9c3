"""Domain -> consensus: the consensus block each domain block was built from, read from
the consensus node, and why a block's cannot be named (the :class:`Unmapped` reasons,
decided by the rules the follower applies too)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from blocktimesd.aio.chain import call_in_place, call_one_in_place, retried_in_place
from blocktimesd.aio.rpc import RpcClient
from blocktimesd.backfill.reads import header_of, shown
from blocktimesd.dataset.records import Unmapped, unmapped_after_lookup, unmapped_before_lookup
from blocktimesd.errors import HashMismatch, MalformedAnswer, raise_node_errors

__all__ = ["ConsensusMap", "Mapped", "map_source"]


@dataclass(frozen=True, slots=True)
class Mapped:
    """What became of one consensus hash a domain header names."""

    number: int | None
    reason: Unmapped | None = None  # why the number is unknown
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

    async def resolve(self, hashes: Sequence[str]) -> dict[str, Mapped]:
        """Each of ``hashes`` (duplicates asked once) mapped: two round trips at most, the
        headers and then the canonical hashes at their numbers (the reads a busy node
        fails asked again in place).

        A lookup cut short by a transient error (the connection dropped under it, a
        timeout) is asked again in place (:func:`retried_in_place`), once the client has
        reconnected: the domain blocks that name the hashes are not fetched again for
        it."""
        return await retried_in_place(lambda: self._resolve(hashes))

    async def _resolve(self, hashes: Sequence[str]) -> dict[str, Mapped]:
        unique = list(dict.fromkeys(hashes))
        headers = raise_node_errors(
            await call_in_place(self.client, [("chain_getHeader", [h]) for h in unique])
        )
        known = dict(self._numbers(unique, headers))
        canonical = await self._canonical(list(known.values()))
        out: dict[str, Mapped] = {}
        for block_hash in unique:
            number = known.get(block_hash)
            if number is not None and number > self.confirmed_tip:
                out[block_hash] = Mapped(number, pending=True)
                continue
            reason = unmapped_after_lookup(number is not None, canonical.get(number) == block_hash)
            out[block_hash] = Mapped(number if reason is None else None, reason)
        return out

    def _numbers(self, unique: list[str], headers: Sequence[object]) -> list[tuple[str, int]]:
        """The number of each hash whose header the node knows, the header checked."""
        where = shown(self.client)
        known: list[tuple[str, int]] = []
        for block_hash, header in zip(unique, headers, strict=True):
            if header is None:
                continue
            try:
                number, computed, _, _ = header_of(header)
            except MalformedAnswer as exc:
                raise MalformedAnswer(f"consensus block {block_hash} ({where}): {exc}") from None
            if computed != block_hash.lower():
                raise HashMismatch(
                    f"consensus block {number} ({block_hash}, {where}): the node answered a "
                    f"header that hashes to {computed}"
                )
            known.append((block_hash, number))
        return known

    async def _canonical(self, numbers: list[int]) -> dict[int | None, object]:
        """The node's canonical hash at each of ``numbers``."""
        if not numbers:
            return {}
        answer = await call_one_in_place(self.client, "chain_getBlockHash", numbers)
        if not isinstance(answer, list) or len(answer) != len(numbers):
            raise MalformedAnswer(
                f"consensus blocks {numbers[0]}..{numbers[-1]} ({shown(self.client)}): "
                f"chain_getBlockHash answered {answer!r:.80}"
            )
        return dict(zip(numbers, answer, strict=True))


def map_source(
    source: str | None, consensus: ConsensusMap | None, mapped: dict[str, Mapped]
) -> Mapped:
    """The mapping of a domain block whose header names ``source``: decided without a
    lookup where it can be, otherwise as ``mapped`` (:meth:`ConsensusMap.resolve`) says."""
    reason = unmapped_before_lookup(source, consensus is not None)
    if reason is not None or source is None:  # (no source is always a reason)
        return Mapped(None, reason)
    return mapped[source]
