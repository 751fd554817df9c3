"""The headers and facts a follower has read, kept until their blocks are confirmed.

A block's facts are read when it comes as a new head, with the heads near it (see
:class:`blocktimesd.core.head_reads.HeadReads`), and used again when the block is
confirmed K blocks later; a confirmed block whose facts are not known (an ancestor
fetched to fill a gap, a head whose read failed) reads them then.
"""

from __future__ import annotations

from collections import OrderedDict

from blocktimesd.aio.chain import BlockFacts, ChainReader, served_header, verify_hash
from blocktimesd.aio.follower_ports import FollowerMetrics
from blocktimesd.core.head_reads import HeadReads
from blocktimesd.core.header import BlockHash, Header, hex_to_bytes, to_hex
from blocktimesd.errors import MalformedAnswer, NodeFault, raise_node_errors

__all__ = ["HEAD_READ_EVERY_S", "HEAD_READ_MOST", "SeenBlocks"]

KEPT = 4096  # headers and facts of recent blocks
# Heads that come sooner than this after the last read of heads are read with the next
# ones, at most this many at once (see HeadReads).
HEAD_READ_EVERY_S = 0.5
HEAD_READ_MOST = 64


class SeenBlocks:
    """Recent headers and facts of one chain, by block hash."""

    def __init__(self, reader: ChainReader, chain: str, metrics: FollowerMetrics) -> None:
        self.reader = reader
        self.chain = chain
        self.metrics = metrics
        self.reads = HeadReads(HEAD_READ_EVERY_S, HEAD_READ_MOST)
        self._headers: OrderedDict[bytes, Header] = OrderedDict()
        self._facts: OrderedDict[bytes, BlockFacts] = OrderedDict()

    def remember(self, header: Header) -> BlockHash:
        """Keep ``header``; its hash."""
        block_hash = header.hash()
        self._headers[block_hash] = header
        if len(self._headers) > KEPT:
            self._headers.popitem(last=False)
        return block_hash

    def facts(self, block_hash: bytes) -> BlockFacts | None:
        """The facts of ``block_hash``, if read."""
        return self._facts.get(block_hash)

    async def read_heads(self) -> None:
        """Read the heads not read yet, together; the metrics show the newest (when it
        is read: at most ``HEAD_READ_EVERY_S`` after it came)."""
        heads = self.reads.take()
        if heads:
            read = await self.reader.facts_many(heads)
            for facts in read:
                self._keep(facts)
            self.metrics.observe_head(self.chain, heads[-1].number, read[-1].timestamp_ms)

    async def facts_of(self, header: Header) -> BlockFacts:
        """The facts of ``header``'s block, read now if not known."""
        facts = self._facts.get(header.hash())
        if facts is None:
            facts = await self.reader.facts(header)
            self._keep(facts)
        return facts

    def _keep(self, facts: BlockFacts) -> None:
        # Only whole answers are kept: a block without its timestamp (bar genesis) is a
        # wrong answer, asked again next time rather than remembered.
        if facts.timestamp_ms is not None or facts.number == 0:
            self._facts[facts.hash] = facts
            if len(self._facts) > KEPT:
                self._facts.popitem(last=False)

    async def known_header(self, block_hash: bytes, number: int) -> Header:
        """A header the node must have (an ancestor or a confirmed block of its own best
        chain); asked again a few times, since a node may announce a block before it
        serves it."""
        header = self._headers.get(block_hash)
        if header is not None:
            return header
        header = await served_header(self.reader, block_hash)
        if header is not None:
            return header
        raise NodeFault(
            f"{self.chain}: the node does not serve block {to_hex(block_hash)} (#{number}), "
            "which its own best chain contains"
        )

    async def headers_between(self, first: int, last: int) -> list[Header]:
        """The headers of the node's best chain at ``first``..``last`` (those it has),
        each checked to hash to the hash the node gave for its number."""
        hashes = await self.reader.call("chain_getBlockHash", list(range(first, last + 1)))
        if not isinstance(hashes, list) or len(hashes) != last - first + 1:
            raise MalformedAnswer(
                f"{self.chain}: chain_getBlockHash for #{first}..#{last} did not answer "
                f"{last - first + 1} hashes"
            )
        wanted = [hex_to_bytes(h, "block hash") for h in hashes if h is not None]
        results = await self.reader.call_many([("chain_getHeader", [to_hex(h)]) for h in wanted])
        headers = []
        for block_hash, result in zip(wanted, raise_node_errors(results), strict=True):
            if result is not None:
                header = Header.from_json(result)
                verify_hash(header, block_hash, self.chain)
                headers.append(header)
        return headers
