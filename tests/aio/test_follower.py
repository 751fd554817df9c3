"""The follower against a chain kept in the test: forks, skipped heads, error answers
at every step, wrong answers, deep forks on a fresh start, and a domain waiting on its
consensus chain.  The rows are compared with a walk of the test's own chain."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from blocktimesd.aio.chain import BlockFacts, verify_hash
from blocktimesd.aio.consensus_index import ConsensusIndex
from blocktimesd.aio.follower import Follower
from blocktimesd.aio.subscription import QUIET
from blocktimesd.core.chains import ChainKind
from blocktimesd.core.forktree import BlockRef, Confirmed
from blocktimesd.core.header import Header, hex_to_bytes, to_hex
from blocktimesd.dataset.records import ReorgRecord, Row
from blocktimesd.dataset.writer import Reconciliation
from blocktimesd.errors import ChainStopped, RetryPolicy, RpcError, SubscriptionGap

GENESIS_TS = None
FAST = RetryPolicy(initial=0.001, cap=0.002, node_fault_limit=2)


# -- a chain of the test's own -------------------------------------------------------------


@dataclass
class Block:
    header: Header
    timestamp_ms: int | None
    consensus: bytes | None = None  # domain: the consensus block it names

    @property
    def hash(self) -> bytes:
        return self.header.hash()


class Chain:
    """Blocks by hash; the best block decides the canonical chain."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        genesis = Block(Header(b"\0" * 32, 0, b"\1" * 32, b"\2" * 32), GENESIS_TS)
        self.blocks: dict[bytes, Block] = {genesis.hash: genesis}
        self.best = genesis
        self.salt = 0

    def child(self, parent: Block, consensus: bytes | None = None) -> Block:
        self.salt += 1
        base = parent.timestamp_ms or 1_700_000_000_000
        header = Header(
            parent.hash,
            parent.header.number + 1,
            self.salt.to_bytes(32, "big"),
            b"\3" * 32,
        )
        block = Block(header, base + self.rng.randint(400, 9000), consensus)
        self.blocks[block.hash] = block
        return block

    def grow(self, n: int = 1, fork_depth: int = 0) -> Block:
        """Extend the best chain by ``n``, after switching to a fork ``fork_depth`` deep."""
        tip = self.best
        for _ in range(min(fork_depth, tip.header.number)):
            tip = self.blocks[tip.header.parent_hash]
        for _ in range(n + fork_depth):
            tip = self.child(tip)
        self.best = tip
        return tip

    def canonical(self) -> list[Block]:
        out = [self.best]
        while out[-1].header.number > 0:
            out.append(self.blocks[out[-1].header.parent_hash])
        return out[::-1]


class Faults:
    def __init__(self, rng: random.Random, error_rate: float = 0.0) -> None:
        self.rng = rng
        self.error_rate = error_rate
        self.errors = 0

    def maybe(self) -> None:
        if self.error_rate and self.rng.random() < self.error_rate:
            self.errors += 1
            raise RpcError(-32603, "Internal error (injected by the test)")


DROP_SILENTLY = "drop silently"  # a step: the node forgets the subscription without a word


class FakeSubscription:
    """The heads the test announces; ``None`` ends it with a gap, ``DROP_SILENTLY``
    makes it swallow every later head, as a node that forgot it does."""

    def __init__(self, heads: asyncio.Queue[Any]) -> None:
        self.heads = heads
        self.silent = False

    async def next_within(self, timeout: float) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if self.heads.empty() and left <= 0:
                return QUIET
            if self.heads.empty():
                await asyncio.sleep(min(left, 0.001))
                continue
            item = self.heads.get_nowait()
            if item is None:
                raise SubscriptionGap("dropped by the test")
            if item == DROP_SILENTLY:
                self.silent = True
            elif not self.silent:
                return item

    async def close(self) -> None:
        self.silent = True


class FakeClient:
    def __init__(self, chain: Chain, faults: Faults) -> None:
        self.chain = chain
        self.faults = faults
        self.heads: asyncio.Queue[Any] = asyncio.Queue()
        self.settings = type("S", (), {"endpoints": ("ws://fake:1",)})()
        self.endpoint = "ws://fake:1"
        self.failovers = 0
        self.lie_about: set[bytes] = set()  # hashes answered with another header
        self.subscriptions = 0
        self.hang_best = False

    async def wait_ready(self) -> None:
        return None

    def fail_over(self, reason: str) -> None:
        self.failovers += 1

    async def subscribe(self, method: str, unsubscribe: str) -> FakeSubscription:
        self.faults.maybe()
        self.subscriptions += 1
        return FakeSubscription(self.heads)

    async def call(self, method: str, *params: Any) -> Any:
        self.faults.maybe()
        if method == "chain_getBlockHash":
            canonical = self.chain.canonical()
            numbers = params[0]

            def one(n: int) -> str | None:
                return to_hex(canonical[n].hash) if n < len(canonical) else None

            return [one(n) for n in numbers] if isinstance(numbers, list) else one(numbers)
        if method == "chain_getHeader" and not params:
            if self.hang_best:  # a stalled node: the request is read, never answered
                await asyncio.Event().wait()
            return self.chain.best.header.to_json()
        if method == "chain_getHeader":
            block = self.chain.blocks.get(hex_to_bytes(params[0]))
            if block is None:
                return None
            header = block.header
            if block.hash in self.lie_about:  # consistent, but another block's header
                header = Header(header.parent_hash, header.number, b"\x09" * 32, b"\x09" * 32)
            return header.to_json()
        raise AssertionError(method)

    async def call_many(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        out = []
        for method, params in calls:
            try:
                out.append(await self.call(method, *params))
            except RpcError as exc:
                out.append(exc)
        return out


class FakeReader:
    """What the follower uses of a ChainReader, over the test's chain."""

    def __init__(self, chain: Chain, faults: Faults, kind: ChainKind = ChainKind.GENERIC):
        self.fake_chain = chain
        self.faults = faults
        self.kind = kind
        self.chain = kind.value
        self.client = FakeClient(chain, faults)
        self.lie_about = self.client.lie_about

    async def check_runtime(self) -> None:
        self.faults.maybe()

    async def call(self, method: str, *params: Any) -> Any:
        return await self.client.call(method, *params)

    async def call_many(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        return await self.client.call_many(calls)

    async def header(self, block_hash: bytes) -> Header | None:
        obj = await self.client.call("chain_getHeader", to_hex(block_hash))
        if obj is None:
            return None
        header = Header.from_json(obj)
        verify_hash(header, block_hash, self.chain)
        return header

    async def facts_many(self, headers: list[Header]) -> list[BlockFacts]:
        return [await self.facts(header) for header in headers]

    async def facts(self, header: Header) -> BlockFacts:
        self.faults.maybe()
        block = self.fake_chain.blocks[header.hash()]
        return BlockFacts(
            number=header.number,
            hash=header.hash(),
            parent_hash=header.parent_hash,
            timestamp_ms=block.timestamp_ms,
            spec_version=1,
            consensus_hash=block.consensus,
        )


@dataclass
class Sink:
    rows: list[Row] = field(default_factory=list)
    reorgs: list[ReorgRecord] = field(default_factory=list)
    reconciliations: list[Any] = field(default_factory=list)

    async def put(self, item: Any) -> None:
        if isinstance(item, Row):
            self.rows.append(item)
        elif isinstance(item, ReorgRecord):
            self.reorgs.append(item)
        elif isinstance(item, Reconciliation):
            self.reconciliations.append(item.record)

    async def delete_from(self, chain: str, block_number: int) -> None:
        self.rows = [r for r in self.rows if r.block_number < block_number]

    async def tail(self, count: int) -> list[Row]:
        return self.rows[-count:]


class Metrics:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.waiting: list[int] = []

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def observe_head(self, chain: str, number: int, timestamp_ms: int | None) -> None:
        self._count("head")

    def observe_confirmed(self, chain: str, number: int, delta_ms: int | None) -> None:
        self._count("confirmed")

    def observe_reorg(self, chain: str, depth: int, deep: bool) -> None:
        self._count("reorg")

    def observe_unresolved_mapping(self, chain: str, count: int = 1) -> None:
        self._count("unresolved")

    def set_following(self, chain: str, following: bool) -> None:
        pass

    def observe_retry(self, chain: str, outcome: str) -> None:
        self._count(f"retry {outcome}")

    def observe_invariant_violation(self, chain: str) -> None:
        self._count("invariant")

    def observe_anomaly(self, chain: str, kind: str) -> None:
        self._count(kind)

    def set_rows_waiting(self, chain: str, rows: int) -> None:
        self.waiting.append(rows)


def follower_for(
    reader: FakeReader, sink: Sink, metrics: Metrics, k: int, **kwargs: Any
) -> Follower:
    return Follower(
        reader,  # type: ignore[arg-type]
        reader.chain,
        k,
        sink,
        metrics,
        tail=sink.tail,
        retry=FAST,
        **kwargs,
    )


def check_rows(rows: list[Row], chain: Chain, k: int) -> None:
    """The rows are the canonical chain's blocks, each once, contiguous, with true deltas."""
    canonical = chain.canonical()
    assert rows, "no rows"
    numbers = [r.block_number for r in rows]
    assert numbers == list(range(numbers[0], numbers[0] + len(rows))), "gap or duplicate"
    assert numbers[-1] <= len(canonical) - 1 - k
    for row in rows:
        block = canonical[row.block_number]
        parent = canonical[row.block_number - 1]
        assert row.hash == to_hex(block.hash), f"orphan at #{row.block_number}"
        assert row.timestamp_ms == block.timestamp_ms
        expected = None if parent.timestamp_ms is None else block.timestamp_ms - parent.timestamp_ms  # type: ignore[operator]
        assert row.delta_since_parent_ms == expected, f"wrong delta at #{row.block_number}"


async def drive(follower: Follower, reader: FakeReader, steps: list[Any]) -> asyncio.Task[None]:
    task = asyncio.create_task(follower.run())
    for step in steps:
        reader.client.heads.put_nowait(step)
        for _ in range(100):  # until the follower took it (or gave up trying for now)
            await asyncio.sleep(0.001)
            if reader.client.heads.empty():
                break
    return task


async def stop_at_the_tip(follower: Follower, task: asyncio.Task[None]) -> None:
    """Wait until the follower confirmed up to the best block's depth, then stop it."""
    chain: Chain = follower.reader.fake_chain  # type: ignore[attr-defined]
    target = chain.best.header.number - follower.k
    for _ in range(400):
        await asyncio.sleep(0.005)
        confirmed = follower.tree.confirmed
        if confirmed is not None and confirmed.number >= target:
            break
    assert not task.done(), task.exception()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def settle(follower: Follower, reader: FakeReader, task: asyncio.Task[None]) -> None:
    """Faults off, the best head announced again, then wait until the follower is idle."""
    reader.faults.error_rate = 0.0
    reader.lie_about.clear()
    reader.client.heads.put_nowait(reader.fake_chain.best.header.to_json())
    target = reader.fake_chain.best.header.number - follower.k
    for _ in range(400):  # until the follower confirmed up to the best block's depth
        await asyncio.sleep(0.005)
        confirmed = follower.tree.confirmed
        if confirmed is not None and confirmed.number >= target and not follower._todo:
            break
    assert not task.done(), task.exception()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
async def test_forks_gaps_and_error_answers_give_the_canonical_chain(seed: int) -> None:
    rng = random.Random(seed)
    chain = Chain(rng)
    chain.grow(3)
    faults = Faults(rng, error_rate=0.25)
    reader = FakeReader(chain, faults)
    sink, metrics = Sink(), Metrics()
    k = 4
    follower = follower_for(reader, sink, metrics, k)
    steps: list[Any] = []
    for _ in range(120):
        roll = rng.random()
        tip = chain.grow(rng.randint(1, 3), fork_depth=rng.choice([0, 0, 0, 1, 2, 3, 6]))
        if roll < 0.1:
            steps.append(None)  # the subscription drops
        elif roll < 0.8:
            steps.append(tip.header.to_json())  # else: a head never announced
    task = await drive(follower, reader, steps)
    await settle(follower, reader, task)
    assert faults.errors > 20, "too few errors injected to prove anything"
    check_rows(sink.rows, chain, k)
    assert sink.rows[-1].block_number == chain.best.header.number - k
    assert "invariant" not in metrics.counts


async def test_a_fork_below_the_first_head_on_a_fresh_start_starts_afresh() -> None:
    chain = Chain(random.Random(1))
    first = chain.grow(10)
    reader = FakeReader(chain, Faults(random.Random(1)))
    sink, metrics = Sink(), Metrics()
    follower = follower_for(reader, sink, metrics, 3)
    # The first head is #10; the chain then switches to a branch forking at #4, below
    # the first head's parent: nothing was written, so nothing is wrong.
    second = chain.grow(8, fork_depth=6)
    later = [chain.grow(1).header.to_json() for _ in range(6)]
    task = await drive(follower, reader, [first.header.to_json(), second.header.to_json(), *later])
    await settle(follower, reader, task)
    check_rows(sink.rows, chain, 3)
    assert len(sink.rows) >= 3


async def test_a_header_that_is_not_the_one_asked_for_fails_over_then_stops_the_chain() -> None:
    chain = Chain(random.Random(2))
    chain.grow(5)
    reader = FakeReader(chain, Faults(random.Random(2)))
    sink, metrics = Sink(), Metrics()
    follower = follower_for(reader, sink, metrics, 2)
    skipped = chain.grow(1)
    tip = chain.grow(2)
    reader.lie_about.add(skipped.hash)  # the one block the follower must fetch by hash
    task = await drive(
        follower,
        reader,
        [chain.blocks[skipped.header.parent_hash].header.to_json(), tip.header.to_json()],
    )
    with pytest.raises(ChainStopped, match="wrong answers in a row"):
        await asyncio.wait_for(task, 5)
    assert reader.client.failovers >= 1
    assert metrics.counts["retry node fault"] >= 2
    assert all(r.hash != to_hex(skipped.hash) for r in sink.rows)


async def test_a_row_that_does_not_follow_the_last_row_is_refused_and_rewalked() -> None:
    chain = Chain(random.Random(3))
    chain.grow(6)
    reader = FakeReader(chain, Faults(random.Random(3)))
    sink, metrics = Sink(), Metrics()
    follower = follower_for(reader, sink, metrics, 2)
    first = chain.canonical()[1].header.to_json()
    task = await drive(follower, reader, [first, chain.best.header.to_json()])
    written = len(sink.rows)
    assert written > 0
    # A confirmation out of the blue (as a bug in the tree would make): not written.
    stray = chain.child(chain.blocks[chain.canonical()[1].hash])
    follower._todo.append(Confirmed(BlockRef.of(stray.header)))
    chain.grow(4)
    reader.client.heads.put_nowait(chain.best.header.to_json())
    await settle(follower, reader, task)
    assert metrics.counts["invariant"] == 1
    assert all(r.hash != to_hex(stray.hash) for r in sink.rows)
    check_rows(sink.rows, chain, 2)


async def test_forged_timestamps_are_written_and_flagged() -> None:
    chain = Chain(random.Random(4))
    chain.grow(3)
    parent = chain.best
    forged = chain.child(parent)
    forged.timestamp_ms = parent.timestamp_ms  # type: ignore[assignment]
    chain.best = forged
    chain.grow(4)
    reader = FakeReader(chain, Faults(random.Random(4)))
    sink, metrics = Sink(), Metrics()
    follower = follower_for(reader, sink, metrics, 2)
    first = chain.canonical()[1].header.to_json()
    task = await drive(follower, reader, [first, chain.best.header.to_json()])
    await settle(follower, reader, task)
    check_rows(sink.rows, chain, 2)
    assert [r.delta_since_parent_ms for r in sink.rows if r.hash == to_hex(forged.hash)] == [0]
    assert metrics.counts["non_positive_delta"] == 1


async def test_domain_rows_wait_for_a_consensus_chain_that_is_down_and_lose_nothing() -> None:
    rng = random.Random(5)
    consensus_chain = Chain(rng)
    consensus_chain.grow(30)
    domain_chain = Chain(rng)
    sources = consensus_chain.canonical()[1:]
    tip = domain_chain.best
    for source in sources:
        tip = domain_chain.child(tip, consensus=source.hash)
        tip.timestamp_ms = source.timestamp_ms
    domain_chain.best = tip
    consensus_faults = Faults(rng)
    consensus_reader = FakeReader(consensus_chain, consensus_faults, ChainKind.CONSENSUS)
    reader = FakeReader(domain_chain, Faults(rng), ChainKind.AUTO_EVM)
    index = ConsensusIndex()
    sink, metrics = Sink(), Metrics()
    follower = follower_for(
        reader, sink, metrics, 2, consensus=index, consensus_reader=consensus_reader
    )
    consensus_faults.error_rate = 1.0  # the consensus node answers nothing but errors
    first = domain_chain.canonical()[1].header.to_json()
    task = await drive(follower, reader, [first, domain_chain.best.header.to_json()])
    await asyncio.sleep(0.3)
    assert sink.rows == []
    assert max(metrics.waiting) > 0, "rows waiting are not shown"
    consensus_faults.error_rate = 0.0
    for block in sources[:-2]:  # the consensus chain confirms up to #28
        await index.confirmed(BlockRef.of(block.header), block.timestamp_ms)
    await asyncio.sleep(0.3)
    await settle(follower, reader, task)
    check_rows(sink.rows, domain_chain, 2)
    assert len(sink.rows) == domain_chain.best.header.number - 2  # from #1, the first head
    for row in sink.rows:
        block = domain_chain.blocks[hex_to_bytes(row.hash)]
        assert row.consensus_block_hash == to_hex(block.consensus or b"")
    assert sink.reconciliations == []


async def test_a_subscription_the_node_dropped_without_a_word_is_noticed_and_renewed() -> None:
    chain = Chain(random.Random(3))
    chain.grow(5)
    reader = FakeReader(chain, Faults(random.Random(3)))
    sink, metrics = Sink(), Metrics()
    follower = follower_for(reader, sink, metrics, 3, head_poll_s=0.02)
    task = await drive(follower, reader, [chain.best.header.to_json(), DROP_SILENTLY])
    for _ in range(20):  # the chain goes on; heads are announced to a dead subscription
        reader.client.heads.put_nowait(chain.grow(1).header.to_json())
        await asyncio.sleep(0.005)
    await stop_at_the_tip(follower, task)
    check_rows(sink.rows, chain, 3)
    assert sink.rows[-1].block_number == chain.best.header.number - 3
    assert metrics.counts.get("retry silent subscription", 0) >= 1
    assert reader.client.subscriptions >= 2


async def test_durable_consensus_rows_resolve_domain_sources_without_asking_the_node() -> None:
    """After a restart, the domain blocks still to come name consensus blocks that were
    confirmed (and written) before it: the consensus follower publishes those rows, so the
    domain follower resolves them while the consensus node answers nothing but errors."""
    rng = random.Random(8)
    consensus_chain = Chain(rng)
    consensus_chain.grow(30)
    canonical = consensus_chain.canonical()
    durable = [
        Row("consensus", b.header.number, to_hex(b.hash), to_hex(b.header.parent_hash),
            b.timestamp_ms or 0, None, 0, None, None, None, None, 1, None)
        for b in canonical[1:21]
    ]  # fmt: skip
    consensus_faults = Faults(rng)
    consensus_reader = FakeReader(consensus_chain, consensus_faults, ChainKind.CONSENSUS)
    index = ConsensusIndex()
    consensus_sink = Sink(rows=list(durable))
    consensus = follower_for(
        consensus_reader, consensus_sink, Metrics(), 4, consensus=index,
        resume=durable[-1], publish_durable_above=5,
    )  # fmt: skip
    consensus_task = asyncio.create_task(consensus.run())
    for _ in range(200):
        await asyncio.sleep(0.005)
        if index.tip >= 20:
            break
    assert index.tip == 20
    assert index.number_of(canonical[6].hash) == 6
    assert index.number_of(canonical[5].hash) is None  # at or below the domain's source
    consensus_faults.error_rate = 1.0  # from here the consensus node answers only errors

    domain_chain = Chain(rng)
    tip = domain_chain.best
    for source in canonical[6:21]:
        tip = domain_chain.child(tip, consensus=source.hash)
        tip.timestamp_ms = source.timestamp_ms
    domain_chain.best = tip
    reader = FakeReader(domain_chain, Faults(rng), ChainKind.AUTO_EVM)
    sink = Sink()
    domain = follower_for(
        reader, sink, Metrics(), 2, consensus=index, consensus_reader=consensus_reader
    )
    first = domain_chain.canonical()[1].header.to_json()
    task = await drive(domain, reader, [first, domain_chain.best.header.to_json()])
    await settle(domain, reader, task)
    consensus_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consensus_task
    check_rows(sink.rows, domain_chain, 2)
    assert len(sink.rows) == domain_chain.best.header.number - 2
    assert [r.consensus_block_number for r in sink.rows] == list(range(6, 6 + len(sink.rows)))
    assert sink.reconciliations == []


async def test_a_best_head_probe_the_node_never_answers_does_not_hold_up_the_heads() -> None:
    chain = Chain(random.Random(4))
    chain.grow(5)
    reader = FakeReader(chain, Faults(random.Random(4)))
    reader.client.hang_best = True
    sink, metrics = Sink(), Metrics()
    follower = follower_for(reader, sink, metrics, 3, head_poll_s=0.02)
    task = await drive(follower, reader, [chain.best.header.to_json()])
    for _ in range(10):  # heads keep coming, each after a silence that prompts a probe
        await asyncio.sleep(0.05)
        reader.client.heads.put_nowait(chain.grow(1).header.to_json())
    await stop_at_the_tip(follower, task)
    check_rows(sink.rows, chain, 3)
    assert sink.rows[-1].block_number == chain.best.header.number - 3
