"""The follower's data-deleting and reconciling paths, head by head, against chains kept
in the test (real headers, so real hashes): a reorg beyond confirmation deletes the
orphaned rows, retracts them from the consensus index and reads the new parent's
timestamp again; a domain row whose consensus block cannot be named is written without
it, with a reconciliation record giving the reason; a row that does not follow the
last one written is refused.  Every expected value is computed here from the test's
own chain."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from blocktimesd.aio import chain as chain_module
from blocktimesd.aio import consensus_source, seen_blocks
from blocktimesd.aio.chain import BlockFacts
from blocktimesd.aio.consensus_index import ConsensusIndex
from blocktimesd.aio.follower import Follower
from blocktimesd.aio.subscription import QUIET
from blocktimesd.core.chains import ChainKind
from blocktimesd.core.forktree import BlockRef, Confirmed
from blocktimesd.core.header import Header, hex_to_bytes, to_hex
from blocktimesd.dataset.records import ReorgRecord, Row, Unmapped, Unresolved
from blocktimesd.dataset.writer import Reconciliation
from blocktimesd.errors import RetryPolicy

K = 2
T0 = 1_700_000_000_000
WALL_S = 1_750_000_000.25  # the follower's wall clock, frozen
WALL_MS = int(WALL_S * 1000)
SPEC = 7
FAST = RetryPolicy(initial=0.001, cap=0.002)


# -- chains of the test's own ----------------------------------------------------------------


@dataclass
class Block:
    header: Header
    timestamp_ms: int | None
    consensus: bytes | None = None  # domain: the consensus block its header names

    @property
    def hash(self) -> bytes:
        return self.header.hash()

    @property
    def number(self) -> int:
        return self.header.number


class Chain:
    """Blocks by hash; ``best`` decides what the node calls canonical."""

    def __init__(self, tag: int) -> None:
        genesis = Block(Header(b"\0" * 32, 0, bytes([tag]) * 32, b"\2" * 32), None)
        self.tag = tag
        self.blocks = {genesis.hash: genesis}
        self.best = genesis
        self.salt = 0

    @property
    def genesis(self) -> Block:
        return self.canonical()[0]

    def child(self, parent: Block, timestamp_ms: int, consensus: bytes | None = None) -> Block:
        """A block on top of ``parent``; it becomes canonical only through ``best``."""
        self.salt += 1
        state_root = bytes([self.tag]) + self.salt.to_bytes(31, "big")
        header = Header(parent.hash, parent.number + 1, state_root, b"\3" * 32)
        block = Block(header, timestamp_ms, consensus)
        self.blocks[block.hash] = block
        return block

    def extend(self, parent: Block, timestamps: list[int], **kwargs: Any) -> list[Block]:
        out = []
        for timestamp in timestamps:
            parent = self.child(parent, timestamp, **kwargs)
            out.append(parent)
        return out

    def canonical(self) -> list[Block]:
        out = [self.best]
        while out[-1].number > 0:
            out.append(self.blocks[out[-1].header.parent_hash])
        return out[::-1]

    def parent(self, block: Block) -> Block:
        return self.blocks[block.header.parent_hash]


def consensus_facts(number: int) -> dict[str, int]:
    """What the fake node says of a consensus block's slot, segment headers and bundles."""
    return {"slot": 100 + number, "segment_headers": number % 2, "bundle_count": number % 3}


def expected_row(
    name: str,
    kind: ChainKind,
    block: Block,
    parent: Block,
    *,
    consensus_hash: bytes | None = None,
    consensus_number: int | None = None,
) -> Row:
    """The row a block must have, computed from the test's chain."""
    assert block.timestamp_ms is not None
    delta = None if parent.timestamp_ms is None else block.timestamp_ms - parent.timestamp_ms
    facts = consensus_facts(block.number) if kind is ChainKind.CONSENSUS else None
    return Row(
        chain=name,
        block_number=block.number,
        hash=to_hex(block.hash),
        parent_hash=to_hex(parent.hash),
        timestamp_ms=block.timestamp_ms,
        delta_since_parent_ms=delta,
        ingestion_ts_ms=WALL_MS,
        contained_store_segment_headers=None if facts is None else facts["segment_headers"] > 0,
        bundle_count=None if facts is None else facts["bundle_count"],
        consensus_block_hash=None if consensus_hash is None else to_hex(consensus_hash),
        slot=None if facts is None else facts["slot"],
        spec_version=SPEC,
        consensus_block_number=consensus_number,
    )


# -- the node, the sink and the metrics, faked -----------------------------------------------


class FakeSubscription:
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    async def next_within(self, timeout: float) -> Any:
        if self.client.heads.empty():
            self.client.idle.set()  # the follower handled every head it was given
        try:
            return await asyncio.wait_for(self.client.heads.get(), timeout)
        except TimeoutError:
            return QUIET

    async def close(self) -> None:
        pass


class FakeClient:
    def __init__(self) -> None:
        self.heads: asyncio.Queue[Any] = asyncio.Queue()
        self.idle = asyncio.Event()
        self.settings = type("Settings", (), {"endpoints": ("ws://fake:1",)})()
        self.endpoint = "ws://fake:1"

    async def wait_ready(self) -> None:
        return None

    def fail_over(self, reason: str) -> None:
        raise AssertionError(f"no fail over expected: {reason}")

    async def subscribe(self, method: str, unsubscribe: str) -> FakeSubscription:
        return FakeSubscription(self)


class FakeReader:
    """What the follower uses of a ChainReader, over one of the test's chains."""

    def __init__(self, chain: Chain, kind: ChainKind, name: str) -> None:
        self.fake_chain = chain
        self.kind = kind
        self.chain = name
        self.client = FakeClient()
        self.facts_asked: list[bytes] = []
        self.reads: list[list[int]] = []  # the numbers of each facts_many, in order

    async def check_runtime(self) -> None:
        return None

    async def call(self, method: str, *params: Any) -> Any:
        if method == "chain_getBlockHash":
            canonical = self.fake_chain.canonical()

            def one(n: int) -> str | None:
                return to_hex(canonical[n].hash) if n < len(canonical) else None

            numbers = params[0]
            return [one(n) for n in numbers] if isinstance(numbers, list) else one(numbers)
        if method == "chain_getHeader" and not params:
            return self.fake_chain.best.header.to_json()
        if method == "chain_getHeader":
            block = self.fake_chain.blocks.get(hex_to_bytes(params[0]))
            return None if block is None else block.header.to_json()
        raise AssertionError(method)

    async def call_many(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        return [await self.call(method, *params) for method, params in calls]

    async def header(self, block_hash: bytes) -> Header | None:
        block = self.fake_chain.blocks.get(block_hash)
        return None if block is None else block.header

    async def facts_many(self, headers: list[Header]) -> list[BlockFacts]:
        self.reads.append([header.number for header in headers])
        return [await self.facts(header) for header in headers]

    async def facts(self, header: Header) -> BlockFacts:
        self.facts_asked.append(header.hash())
        block = self.fake_chain.blocks[header.hash()]
        extra: dict[str, Any] = {}
        if self.kind is ChainKind.CONSENSUS:
            extra = consensus_facts(header.number)
        elif self.kind is ChainKind.AUTO_EVM:
            extra = {"consensus_hash": block.consensus}
        return BlockFacts(
            number=header.number,
            hash=header.hash(),
            parent_hash=header.parent_hash,
            timestamp_ms=block.timestamp_ms,
            spec_version=SPEC,
            **extra,
        )


@dataclass(frozen=True)
class Deleted:
    chain: str
    block_number: int


@dataclass
class Sink:
    """Records what the follower hands to the writer, in order, and keeps the rows a
    writer would keep (deletions applied)."""

    durable: list[Row] = field(default_factory=list)
    log: list[Any] = field(default_factory=list)

    async def put(self, item: Any) -> None:
        if isinstance(item, Reconciliation):
            self.log.append(item.record)
            return
        self.log.append(item)
        if isinstance(item, Row):
            self.durable.append(item)

    async def delete_from(self, chain: str, block_number: int) -> None:
        self.log.append(Deleted(chain, block_number))
        self.durable = [r for r in self.durable if r.block_number < block_number]

    async def tail(self, count: int) -> list[Row]:
        return self.durable[-count:]


class Metrics:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.heads: list[tuple[int, int | None]] = []

    def count(self, name: str) -> int:
        return sum(1 for call in self.calls if call[0] == name)

    def observe_head(self, chain: str, number: int, timestamp_ms: int | None) -> None:
        self.heads.append((number, timestamp_ms))

    def observe_confirmed(self, chain: str, number: int, delta_ms: int | None) -> None:
        pass

    def observe_reorg(self, chain: str, depth: int, deep: bool) -> None:
        self.calls.append(("reorg", depth, deep))

    def observe_unresolved_mapping(self, chain: str, count: int = 1) -> None:
        self.calls.append(("unresolved", count))

    def set_following(self, chain: str, following: bool) -> None:
        pass

    def observe_retry(self, chain: str, outcome: str) -> None:
        self.calls.append(("retry", outcome))

    def observe_invariant_violation(self, chain: str) -> None:
        self.calls.append(("invariant",))

    def observe_anomaly(self, chain: str, kind: str) -> None:
        self.calls.append(("anomaly", kind))

    def set_rows_waiting(self, chain: str, rows: int) -> None:
        pass


def follower_for(reader: FakeReader, sink: Sink, metrics: Metrics, **kwargs: Any) -> Follower:
    return Follower(
        reader,  # type: ignore[arg-type]
        reader.chain,
        K,
        sink,
        metrics,
        tail=sink.tail,
        retry=FAST,
        head_poll_s=60.0,
        wall_clock=lambda: WALL_S,
        **kwargs,
    )


async def start(follower: Follower, reader: FakeReader) -> asyncio.Task[None]:
    """Run the follower until it waits for its first head."""
    task = asyncio.create_task(follower.run())
    await asyncio.wait_for(reader.client.idle.wait(), 5)
    return task


async def announce(reader: FakeReader, block: Block) -> None:
    """Announce ``block`` as the new best head; return once the follower handled it."""
    reader.fake_chain.best = block
    reader.client.idle.clear()
    reader.client.heads.put_nowait(block.header.to_json())
    await asyncio.wait_for(reader.client.idle.wait(), 5)


async def stop(task: asyncio.Task[None], metrics: Metrics) -> None:
    if task.done():
        raise AssertionError(f"the follower stopped: {task.exception()!r}")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert metrics.count("retry") == 0, metrics.calls


def durable_rows(name: str, kind: ChainKind, chain: Chain, blocks: list[Block]) -> list[Row]:
    return [expected_row(name, kind, b, chain.parent(b)) for b in blocks]


# -- a reorg beyond confirmation ---------------------------------------------------------------


def reorg_setup() -> tuple[Chain, list[Block], list[Block]]:
    """Genesis, then A1..A7 every 6 s; and a branch B4..B8 off A3 with its own times."""
    chain = Chain(1)
    main = chain.extend(chain.genesis, [T0 + 6000 * n for n in range(1, 8)])
    a3_ts = main[2].timestamp_ms
    assert a3_ts is not None
    branch = chain.extend(main[2], [a3_ts + 1111, a3_ts + 5222, a3_ts + 9333, a3_ts + 15444,
                                    a3_ts + 20555])  # fmt: skip
    chain.best = main[2]
    return chain, main, branch


@dataclass
class Resumed:
    """A follower resumed from the rows of some blocks, waiting for its first head."""

    reader: FakeReader
    durable: list[Row]  # the rows it resumed from
    sink: Sink
    metrics: Metrics
    follower: Follower
    task: asyncio.Task[None]


async def resumed(
    chain: Chain, kind: ChainKind, name: str, blocks: list[Block], **kwargs: Any
) -> Resumed:
    reader = FakeReader(chain, kind, name)
    durable = durable_rows(name, kind, chain, blocks)
    sink, metrics = Sink(durable=list(durable)), Metrics()
    follower = follower_for(reader, sink, metrics, resume=durable[-1], **kwargs)
    return Resumed(reader, durable, sink, metrics, follower, await start(follower, reader))


async def test_a_reorg_beyond_confirmation_deletes_retracts_and_rereads_the_parent() -> None:
    chain, (a1, a2, a3, a4, a5, a6, a7), (b4, b5, b6, _b7, b8) = reorg_setup()
    kind, index = ChainKind.CONSENSUS, ConsensusIndex()
    run = await resumed(
        chain, kind, "consensus", [a1, a2, a3], consensus=index, publish_durable_above=0
    )
    reader, durable, sink, metrics, task = run.reader, run.durable, run.sink, run.metrics, run.task
    await announce(reader, a6)
    await announce(reader, a7)
    assert sink.durable == [*durable, *durable_rows("consensus", kind, chain, [a4, a5])]
    assert (index.number_of(a4.hash), index.number_of(a5.hash), index.tip) == (4, 5, 5)

    asked_before = len(reader.facts_asked)
    await announce(reader, b8)  # the node switches to the branch: A4 and A5 are orphaned
    await stop(task, metrics)

    reorg, deleted, *rows = sink.log[2:]
    assert reorg == ReorgRecord(
        chain="consensus", detected_ts_ms=WALL_MS, depth=4,
        old_tip_number=7, old_tip_hash=to_hex(a7.hash),
        new_tip_number=8, new_tip_hash=to_hex(b8.hash),
        common_ancestor_number=3, common_ancestor_hash=to_hex(a3.hash),
        beyond_confirmation=True,
    )  # fmt: skip
    assert deleted == Deleted("consensus", 4)
    assert [c for c in metrics.calls if c[0] == "reorg"] == [("reorg", 4, True)]
    # The first row on the new branch has its delta against A3, read again from the node.
    assert a3.hash in reader.facts_asked[asked_before:]
    assert rows[0].delta_since_parent_ms == 1111
    assert rows == [
        expected_row("consensus", kind, b4, a3),
        expected_row("consensus", kind, b5, b4),
        expected_row("consensus", kind, b6, b5),
    ]
    assert sink.durable == [*durable, *rows]
    # The consensus index forgot the orphaned blocks and knows the branch.
    assert index.number_of(a4.hash) is None
    assert index.number_of(a5.hash) is None
    assert [index.number_of(b.hash) for b in (a3, b4, b5, b6)] == [3, 4, 5, 6]
    assert index.tip == 6
    assert metrics.count("invariant") == 0


@pytest.mark.parametrize("knows_the_tip", [True, False])
async def test_a_best_below_the_confirmed_tip_deletes_only_if_the_node_retracted_it(
    knows_the_tip: bool,
) -> None:
    """The node's best moves down to A3, a confirmed block, while A4 and A5 are rows.  A
    node that still knows A5 moved to a shorter chain: A4 and A5 are orphaned, and the
    next heads are confirmed from A3 on.  A node that does not know A5 lags behind it
    (a fail-over to a node still syncing): nothing is deleted."""
    chain, (a1, a2, a3, a4, a5, a6, a7), (b4, b5, b6, _b7, b8) = reorg_setup()
    kind = ChainKind.CONSENSUS
    run = await resumed(chain, kind, "consensus", [a1, a2, a3])
    reader, durable, sink, metrics, task = run.reader, run.durable, run.sink, run.metrics, run.task
    await announce(reader, a6)
    await announce(reader, a7)
    rows_before = [*durable, *durable_rows("consensus", kind, chain, [a4, a5])]
    assert sink.durable == rows_before
    if not knows_the_tip:
        for gone in (a4, a5, a6, a7):
            del chain.blocks[gone.hash]
    await announce(reader, a3)
    if not knows_the_tip:
        await stop(task, metrics)
        assert sink.durable == rows_before
        assert metrics.count("reorg") == 0
        return
    reorg, deleted = sink.log[2:4]
    assert (reorg.depth, reorg.new_tip_hash, reorg.common_ancestor_hash) == (
        4, to_hex(a3.hash), to_hex(a3.hash)
    )  # fmt: skip
    assert reorg.beyond_confirmation
    assert deleted == Deleted("consensus", 4)
    assert sink.durable == durable
    await announce(reader, b8)
    await stop(task, metrics)
    assert sink.durable == [*durable, *durable_rows("consensus", kind, chain, [b4, b5, b6])]
    assert sink.durable[3].delta_since_parent_ms == 1111
    assert metrics.calls == [("reorg", 4, True)]


async def test_a_reorg_while_stopped_deletes_the_orphaned_rows_on_start() -> None:
    chain, (a1, a2, a3, a4, a5, *_), (b4, b5, b6, b7, b8) = reorg_setup()
    kind = ChainKind.CONSENSUS
    chain.best = b7  # while the daemon was down, the node switched to the branch
    reader = FakeReader(chain, kind, "consensus")
    durable = durable_rows("consensus", kind, chain, [a1, a2, a3, a4, a5])
    sink, metrics, index = Sink(durable=list(durable)), Metrics(), ConsensusIndex()
    await index.seed(durable)
    follower = follower_for(reader, sink, metrics, resume=durable[-1], consensus=index)
    task = await start(follower, reader)
    assert sink.log == [Deleted("consensus", 4)]
    assert metrics.calls == [("reorg", 2, True)]
    assert index.number_of(a4.hash) is None
    assert index.tip == 3
    await announce(reader, b8)
    await stop(task, metrics)
    assert sink.durable == [
        *durable[:3],
        *(expected_row("consensus", kind, b, chain.parent(b)) for b in (b4, b5, b6)),
    ]
    assert sink.durable[3].delta_since_parent_ms == 1111


async def test_all_rows_orphaned_below_the_first_head_are_deleted_then_it_starts_afresh() -> None:
    """A fresh start (no rows) follows from A5 and writes A5's row; then the node moves to
    a branch off A3, below the first block followed, where the tree cannot find the fork.
    Every row is this run's own, read from this node, and orphaned: they are deleted and
    the follower starts afresh from the new best, where it stopped the chain before."""
    chain, (_a1, _a2, _a3, a4, a5, a6, a7), (*_, b8) = reorg_setup()
    kind = ChainKind.CONSENSUS
    reader = FakeReader(chain, kind, "consensus")
    sink, metrics = Sink(), Metrics()
    follower = follower_for(reader, sink, metrics)
    task = await start(follower, reader)
    for block in (a5, a6, a7):
        await announce(reader, block)
    assert sink.durable == [expected_row("consensus", kind, a5, a4)]
    b9, b10, b11, b12 = chain.extend(b8, [T0 + 100_000 + 6000 * n for n in range(4)])
    for block in (b8, b9, b10, b11, b12):
        await announce(reader, block)
    await stop(task, metrics)
    assert Deleted("consensus", 5) in sink.log
    assert ("reorg", 1, True) in metrics.calls
    # What is written after the fresh start is the new best chain's, without a gap.
    assert sink.durable == [expected_row("consensus", kind, b, chain.parent(b)) for b in (b9, b10)]


# -- heads read together ---------------------------------------------------------------------


async def test_heads_that_come_fast_are_read_together_and_rows_are_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first head is read at once; the heads within HEAD_READ_EVERY_S of that read
    wait, and are read together when a row needs one of them (here, before the window
    ends).  The rows are what block-by-block reads give."""
    monkeypatch.setattr(seen_blocks, "HEAD_READ_EVERY_S", 60.0)
    chain = Chain(4)
    blocks = chain.extend(chain.genesis, [T0 + 6000 * n for n in range(1, 9)])
    kind = ChainKind.CONSENSUS
    reader = FakeReader(chain, kind, "consensus")
    sink, metrics = Sink(), Metrics()
    follower = follower_for(reader, sink, metrics)
    task = await start(follower, reader)
    for block in blocks:
        await announce(reader, block)
    await stop(task, metrics)
    # #1 at once; then #2 is confirmed by #4 and reads #2..#4 with it; #5 by #7, and so on.
    assert reader.reads == [[1], [2, 3, 4], [5, 6, 7]]
    assert sink.durable == [
        expected_row("consensus", kind, b, chain.parent(b)) for b in blocks[: len(blocks) - K]
    ]
    # The metrics show the newest head of each read.
    assert metrics.heads == [(1, blocks[0].timestamp_ms), (4, blocks[3].timestamp_ms),
                             (7, blocks[6].timestamp_ms)]  # fmt: skip


async def test_heads_left_unread_when_the_chain_goes_quiet_are_read_within_every_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(seen_blocks, "HEAD_READ_EVERY_S", 0.2)
    chain = Chain(5)
    a1, a2, a3 = chain.extend(chain.genesis, [T0 + 6000 * n for n in range(1, 4)])
    reader = FakeReader(chain, ChainKind.CONSENSUS, "consensus")
    sink, metrics = Sink(), Metrics()
    follower = follower_for(reader, sink, metrics)
    task = await start(follower, reader)
    for block in (a1, a2, a3):
        await announce(reader, block)
    assert metrics.heads == [(1, a1.timestamp_ms)]  # #2 and #3 came within 0.2 s of it
    for _ in range(200):  # no head comes: within about 0.2 s, the two are read
        if len(metrics.heads) > 1:
            break
        await asyncio.sleep(0.01)
    await stop(task, metrics)
    assert reader.reads == [[1], [2, 3]]
    assert metrics.heads == [(1, a1.timestamp_ms), (3, a3.timestamp_ms)]


# -- a domain row whose consensus block cannot be named ---------------------------------------


@dataclass
class Case:
    """How the domain blocks name their consensus block, and what the follower has."""

    source: str  # "none", "canonical", "unknown" or "orphaned"
    reader: bool  # a consensus chain is configured
    index: bool  # this process follows it (a consensus index)
    reason: Unmapped


CASES = {
    "no digest item": Case("none", reader=True, index=True, reason=Unmapped.NO_DIGEST),
    "no consensus chain": Case(
        "canonical", reader=False, index=False, reason=Unmapped.NO_CONSENSUS_CHAIN
    ),
    "unknown, asked directly": Case("unknown", reader=True, index=False, reason=Unmapped.UNKNOWN),
    "unknown, while following": Case("unknown", reader=True, index=True, reason=Unmapped.UNKNOWN),
    "orphaned": Case("orphaned", reader=True, index=True, reason=Unmapped.ORPHANED),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
async def test_an_unresolved_consensus_block_is_recorded_and_the_row_written_without_it(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chain_module, "REASK_DELAY_S", 0.0)
    monkeypatch.setattr(consensus_source, "REASK_DELAY_S", 0.0)
    consensus = Chain(2)
    c1, c2, c3 = consensus.extend(consensus.genesis, [T0 + 6000, T0 + 12000, T0 + 18000])
    consensus.best = c3
    orphan = consensus.child(c1, T0 + 12500)  # a #2 the consensus chain abandoned
    source = {
        "none": None,
        "canonical": c2.hash,
        "unknown": b"\x77" * 32,
        "orphaned": orphan.hash,
    }[case.source]
    domain = Chain(3)
    d1, d2, d3, _d4, d5 = domain.extend(
        domain.genesis, [T0 + 6000 * n + 5 for n in range(1, 6)], consensus=source
    )
    domain.best = d1
    kind = ChainKind.AUTO_EVM
    reader = FakeReader(domain, kind, "auto-evm")
    index = None
    if case.index:
        index = ConsensusIndex()
        for block in (c1, c2, c3):
            await index.confirmed(BlockRef.of(block.header), block.timestamp_ms)
    durable = [expected_row("auto-evm", kind, d1, domain.genesis)]
    sink, metrics = Sink(durable=list(durable)), Metrics()
    follower = follower_for(
        reader,
        sink,
        metrics,
        resume=durable[-1],
        consensus=index,
        consensus_reader=FakeReader(consensus, ChainKind.CONSENSUS, "consensus")
        if case.reader
        else None,
    )
    task = await start(follower, reader)
    await announce(reader, d5)  # confirms D2 and D3
    await stop(task, metrics)

    def record(block: Block) -> Unresolved:
        return Unresolved(
            chain="auto-evm",
            block_number=block.number,
            hash=to_hex(block.hash),
            consensus_block_hash=None if source is None else to_hex(source),
            reason=case.reason,
            detected_ts_ms=WALL_MS,
        )

    assert sink.log == [
        record(d2),
        expected_row("auto-evm", kind, d2, d1),
        record(d3),
        expected_row("auto-evm", kind, d3, d2),
    ]
    assert [r.reason for r in sink.log if isinstance(r, Unresolved)] == [case.reason] * 2
    assert metrics.count("unresolved") == 2


@pytest.mark.parametrize("following", [True, False], ids=["while following", "asked directly"])
async def test_a_named_consensus_block_is_written_with_its_number_and_no_record(
    following: bool,
) -> None:
    """The contrast to the unresolved cases: the same set-up, a source the consensus
    follower confirmed (or, with no consensus follower, that the consensus node knows)."""
    consensus = Chain(2)
    c1, c2 = consensus.extend(consensus.genesis, [T0 + 6000, T0 + 12000])
    consensus.best = c2
    index = ConsensusIndex() if following else None
    if index is not None:
        for block in (c1, c2):
            await index.confirmed(BlockRef.of(block.header), block.timestamp_ms)
    domain = Chain(3)
    d1, d2, _d3, d4 = domain.extend(domain.genesis, [T0 + 6000, T0 + 12000, T0 + 18000, T0 + 24000],
                                   consensus=c2.hash)  # fmt: skip
    domain.best = d1
    kind = ChainKind.AUTO_EVM
    reader = FakeReader(domain, kind, "auto-evm")
    durable = [expected_row("auto-evm", kind, d1, domain.genesis)]
    sink, metrics = Sink(durable=list(durable)), Metrics()
    follower = follower_for(
        reader, sink, metrics, resume=durable[-1], consensus=index,
        consensus_reader=FakeReader(consensus, ChainKind.CONSENSUS, "consensus"),
    )  # fmt: skip
    task = await start(follower, reader)
    await announce(reader, d4)  # confirms D2
    await stop(task, metrics)
    assert sink.log == [
        expected_row("auto-evm", kind, d2, d1, consensus_hash=c2.hash, consensus_number=2)
    ]
    assert metrics.count("unresolved") == 0


class NoHeaders(FakeReader):
    async def header(self, block_hash: bytes) -> Header | None:
        raise AssertionError("the consensus node was asked for a header it had shown")


async def test_a_source_the_consensus_follower_was_shown_is_not_asked_for_again() -> None:
    """The consensus follower records every head it is shown; the domain follower
    waits for that block's confirmation without asking the consensus node its number."""
    consensus = Chain(2)
    c1, c2 = consensus.extend(consensus.genesis, [T0 + 6000, T0 + 12000])
    consensus.best = c1
    index = ConsensusIndex()
    c_reader = FakeReader(consensus, ChainKind.CONSENSUS, "consensus")
    c_follower = follower_for(c_reader, Sink(), Metrics(), consensus=index)
    c_task = await start(c_follower, c_reader)
    await announce(c_reader, c2)  # shown, not confirmed (K = 2)
    assert index.number_seen(c2.hash) == 2
    assert index.number_of(c2.hash) is None
    source = consensus_source.ConsensusSource(
        "auto-evm", index, NoHeaders(consensus, ChainKind.CONSENSUS, "consensus"), Metrics()
    )
    facts = BlockFacts(1, b"\x0d" * 32, b"\x0c" * 32, T0 + 12000, SPEC, consensus_hash=c2.hash)
    mapping = asyncio.create_task(source.map(facts))
    await asyncio.sleep(0.01)
    assert not mapping.done()  # waiting for #2 to be confirmed
    await index.confirmed(BlockRef.of(c2.header), c2.timestamp_ms)
    assert await mapping == (to_hex(c2.hash), 2, None)
    await stop(c_task, Metrics())


class NoCanonicalQuestions(FakeReader):
    async def call(self, method: str, *params: Any) -> Any:
        if method == "chain_getBlockHash":
            raise AssertionError("the consensus node was asked which block is canonical")
        return await super().call(method, *params)


async def test_a_source_orphaned_under_the_consensus_followers_eyes_is_named_at_once() -> None:
    """A source the consensus follower was shown, at a height where it confirmed another
    block, is orphaned: the domain row says so at once, without asking the consensus
    node twice, a second apart (a backlog of such blocks after a deep consensus reorg
    would leave the domain follower a second per block behind)."""
    consensus = Chain(2)
    c1, c2 = consensus.extend(consensus.genesis, [T0 + 6000, T0 + 12000])
    orphan = consensus.child(c1, T0 + 12500)  # a #2 the consensus chain abandoned
    consensus.best = c2
    index = ConsensusIndex()
    index.saw(orphan.hash, 2)
    for block in (c1, c2):
        await index.confirmed(BlockRef.of(block.header), block.timestamp_ms)
    source = consensus_source.ConsensusSource(
        "auto-evm",
        index,
        NoCanonicalQuestions(consensus, ChainKind.CONSENSUS, "consensus"),
        Metrics(),
        wall_clock=lambda: WALL_MS / 1000,
    )
    facts = BlockFacts(1, b"\x0d" * 32, b"\x0c" * 32, T0 + 12500, SPEC, consensus_hash=orphan.hash)
    consensus_hash, number, record = await asyncio.wait_for(source.map(facts), 0.5)
    assert (consensus_hash, number) == (None, None)
    assert record is not None
    assert record.reason is Unmapped.ORPHANED
    assert record.consensus_block_hash == to_hex(orphan.hash)


# -- the emission invariant --------------------------------------------------------------------


async def test_a_row_whose_parent_is_not_the_last_written_is_refused() -> None:
    chain, (a1, a2, a3, a4, a5, a6, a7), _ = reorg_setup()
    kind = ChainKind.GENERIC
    run = await resumed(chain, kind, "generic", [a1, a2, a3])
    reader, durable, sink, metrics, task = run.reader, run.durable, run.sink, run.metrics, run.task
    await announce(reader, a6)  # confirms A4
    assert sink.durable[-1] == expected_row("generic", kind, a4, a3)
    # A confirmation of a block whose parent is not A4 (as a bug in the tree would make).
    stray = chain.child(a4, T0 + 99_000)
    stray_sibling = chain.child(a3, T0 + 98_000)
    for ref in (BlockRef.of(stray_sibling.header), BlockRef.of(chain.child(stray, T0).header)):
        run.follower._todo.append(Confirmed(ref))
        await announce(reader, a6)  # the queue is applied before the head
        assert metrics.count("invariant") == 1
        assert sink.durable[-1] == expected_row("generic", kind, a4, a3), "a stray row went out"
        metrics.calls.clear()
    await announce(reader, a7)  # the walk from the last row written goes on
    await stop(task, metrics)
    assert sink.durable == [
        *durable,
        expected_row("generic", kind, a4, a3),
        expected_row("generic", kind, a5, a4),
    ]
