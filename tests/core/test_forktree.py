"""The fork tracker: tables of chain shapes, then random block trees against a model.

The property tests build a random block tree, replay random best notifications (jumps,
repeats, lower heights, forks of any depth) and random out-of-order or repeated adds,
answer every ``Need*`` from the generated tree, and check the decisions two ways: equal
to those of a naive model that sees the whole tree at once, and free of duplicates,
gaps and orphans once the module's repair rule is applied.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from blocktimesd.core.forktree import (
    BlockRef,
    Confirmed,
    Decision,
    ForkBelowHistory,
    ForkTree,
    NeedAncestor,
    NeedRange,
    Reorg,
)
from blocktimesd.core.header import BlockHash, Header

NEEDS = (NeedAncestor, NeedRange)


def bh(tag: str, number: int) -> BlockHash:
    return BlockHash(f"{tag}:{number}".encode().ljust(32, b"."))


GENESIS = BlockRef(0, bh("g", 0), BlockHash(b"\xff" * 32))


def branch(parent: BlockRef, length: int, tag: str) -> list[BlockRef]:
    """``length`` blocks on top of ``parent``, hashes tagged ``tag``."""
    out = []
    for _ in range(length):
        parent = BlockRef(parent.number + 1, bh(tag, parent.number + 1), parent.hash)
        out.append(parent)
    return out


class Node:
    """Answers the tree's questions from the blocks it was given, like a node would:
    ``NeedRange`` with the canonical chain of the current best."""

    def __init__(self, blocks: Iterable[BlockRef]) -> None:
        self.by_hash = {b.hash: b for b in blocks}
        self.asked: list[Decision] = []
        self.rng: random.Random | None = None  # set: add random known blocks now and then

    def ancestor_at(self, ref: BlockRef, number: int) -> BlockRef:
        ref = self.by_hash.get(ref.hash, ref)  # the real block behind a virtual anchor
        while ref.number > number:
            ref = self.by_hash[ref.parent_hash]
        assert ref.number == number
        return ref

    def answer(self, tree: ForkTree, need: Decision, best: BlockRef) -> None:
        self.asked.append(need)
        if isinstance(need, NeedAncestor):
            ref = self.by_hash[need.hash]
            assert ref.number == need.number
            tree.add(ref)
            if self.rng is not None and self.rng.random() < 0.3:
                tree.add(self.rng.choice(list(self.by_hash.values())))
        else:
            assert isinstance(need, NeedRange)
            assert need.first <= need.last <= best.number
            for number in range(need.first, need.last + 1):
                tree.add(self.ancestor_at(best, number))

    def head(self, tree: ForkTree, best: BlockRef) -> list[Decision]:
        """``set_best`` then answer every Need; the decisions other than needs."""
        return self.drain(tree, tree.set_best(best), best)

    def drain(self, tree: ForkTree, out: list[Decision], best: BlockRef) -> list[Decision]:
        got: list[Decision] = []
        for _ in range(10_000):
            got += [d for d in out if not isinstance(d, NEEDS)]
            needs = [d for d in out if isinstance(d, NEEDS)]
            if not needs:
                assert tree.pending is None or tree.spent
                return got
            assert needs == [out[-1]], "a Need is always the last decision"
            self.answer(tree, needs[0], best)
            out = tree.resume()
        raise AssertionError("the tree keeps asking")


def confirmed(decisions: Iterable[Decision]) -> list[int]:
    return [d.ref.number for d in decisions if isinstance(d, Confirmed)]


def reorgs(decisions: Iterable[Decision]) -> list[Reorg]:
    return [d for d in decisions if isinstance(d, Reorg)]


def feed(tree: ForkTree, node: Node, heads: Iterable[BlockRef]) -> list[Decision]:
    out: list[Decision] = []
    for head in heads:
        out += node.head(tree, head)
    return out


# -- tables ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 2, 5])
def test_linear_chain_confirms_each_block_once_at_depth_k(k: int) -> None:
    chain = branch(GENESIS, 12, "a")
    node = Node([GENESIS, *chain])
    tree = ForkTree(k, GENESIS)
    seen: list[int] = []
    for head in chain:
        out = node.head(tree, head)
        # A head at height n confirms exactly block n - k (when that is above genesis).
        assert confirmed(out) == ([head.number - k] if head.number - k >= 1 else [])
        seen += confirmed(out)
    assert seen == list(range(1, 13 - k))
    assert node.asked == []
    assert tree.confirmed == chain[11 - k]
    assert len(tree) == k


@pytest.mark.parametrize(
    ("skip_to", "batch", "asked"),
    [
        (3, 256, [NeedAncestor(bh("a", 2), 2)]),  # one height skipped
        (6, 256, [NeedRange(2, 5)]),  # several: fetched by number
        # Wider than a batch: from the confirmed tip up, each batch confirmed in turn.
        (6, 2, [NeedRange(1, 2), NeedRange(3, 4), NeedAncestor(bh("a", 5), 5)]),
    ],
)
def test_skipped_heights_are_fetched_and_confirmed_without_gap(
    skip_to: int, batch: int, asked: list[Decision]
) -> None:
    chain = branch(GENESIS, 10, "a")
    node = Node([GENESIS, *chain])
    tree = ForkTree(2, GENESIS, batch=batch)
    out = node.head(tree, chain[0]) + node.head(tree, chain[skip_to - 1])
    assert node.asked == asked
    assert confirmed(out) == list(range(1, skip_to - 1))
    out += feed(tree, node, chain[skip_to:])
    assert confirmed(out) == list(range(1, 9))


def test_wide_gap_is_caught_up_from_the_bottom_in_batches() -> None:
    chain = branch(GENESIS, 60, "a")
    node = Node([GENESIS, *chain])
    tree = ForkTree(2, GENESIS, batch=5, max_blocks=4 + 10 + 8 + 2, history=8)
    out = node.head(tree, chain[0]) + node.head(tree, chain[59])
    assert confirmed(out) == list(range(1, 59))
    # Bottom up while the gap is wider than a batch; each batch confirmed before the next.
    ranges = [(n.first, n.last) for n in node.asked if isinstance(n, NeedRange)]
    assert ranges[:3] == [(1, 5), (6, 10), (11, 15)]
    assert all(last - first < 5 for first, last in ranges)
    assert len(tree) == 2


def test_catch_up_never_fetches_or_confirms_above_best_minus_k() -> None:
    chain = branch(GENESIS, 20, "a")
    node = Node([GENESIS, *chain])
    tree = ForkTree(4, GENESIS, batch=3)
    out = tree.set_best(chain[19])
    assert out == [NeedRange(1, 3)]
    node.answer(tree, out[0], chain[19])
    tree.add(chain[17])  # learned meanwhile: #18 is not 4 deep under #20
    out = tree.resume()
    assert confirmed(out) == [1, 2, 3]
    out = node.drain(tree, out, chain[19])
    assert confirmed(out) == list(range(1, 17))
    assert node.asked[1:] == [
        NeedRange(4, 6),
        NeedRange(7, 9),
        NeedRange(10, 12),
        NeedRange(13, 15),
        NeedRange(16, 16),  # the rest of the gap is not 4 deep: fetched from the top
        NeedAncestor(chain[18].hash, 19),
        NeedAncestor(chain[16].hash, 17),
    ]


def test_orphans_are_pruned_once_below_the_confirmed_tip() -> None:
    main = branch(GENESIS, 8, "a")
    side = branch(main[0], 2, "b")  # #2', #3'
    node = Node([GENESIS, *main, *side])
    tree = ForkTree(2, GENESIS)
    feed(tree, node, main[:3])
    for block in side:
        tree.add(block)
    assert len(tree) == 2 + 2  # the side branch forks from the confirmed tip: it may win
    feed(tree, node, main[3:4])
    assert len(tree) == 2  # now it cannot: only the best chain's unconfirmed blocks
    feed(tree, node, main[4:])
    assert len(tree) == 2


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_reorg_reports_depth_and_common_ancestor(depth: int) -> None:
    main = branch(GENESIS, 10, "a")
    fork = branch(main[9 - depth], depth + 1, "b")  # one block longer than what it retracts
    node = Node([GENESIS, *main, *fork])
    tree = ForkTree(5, GENESIS)
    feed(tree, node, main)
    out = node.head(tree, fork[-1])
    ancestor = main[9 - depth]
    assert reorgs(out) == [Reorg(depth, main[9], fork[-1], ancestor, False)]
    # The sibling blocks are fetched one by one, by hash.
    assert node.asked == [NeedAncestor(b.hash, b.number) for b in reversed(fork[:-1])]
    assert confirmed(out) == [6]
    assert tree.best == fork[-1]


def test_reorg_to_a_lower_height() -> None:
    main = branch(GENESIS, 10, "a")
    fork = branch(main[6], 2, "b")  # #8', #9' replace #8..#10
    node = Node([GENESIS, *main, *fork])
    tree = ForkTree(3, GENESIS)
    feed(tree, node, main)
    out = node.head(tree, fork[-1])
    assert out == [Reorg(3, main[9], fork[-1], main[6], False)]  # nothing newly K deep
    out = feed(tree, node, branch(fork[-1], 2, "b"))
    assert confirmed(out) == [8]
    assert tree.confirmed == fork[0]


def test_switching_back_and_forth_between_forks() -> None:
    main = branch(GENESIS, 6, "a")
    fork = branch(main[3], 2, "b")
    node = Node([GENESIS, *main, *fork])
    tree = ForkTree(4, GENESIS)
    feed(tree, node, main)
    assert node.head(tree, fork[1]) == [Reorg(2, main[5], fork[1], main[3], False)]
    assert node.head(tree, main[5]) == [Reorg(2, fork[1], main[5], main[3], False)]
    assert node.asked == [NeedAncestor(fork[0].hash, 5)]  # main's blocks were kept


def test_duplicate_and_stale_notifications_are_ignored() -> None:
    main = branch(GENESIS, 8, "a")
    node = Node([GENESIS, *main])
    tree = ForkTree(2, GENESIS, history=3)
    feed(tree, node, main)
    assert tree.confirmed == main[5]
    for stale in [main[7], main[7], main[6], main[5], main[3], GENESIS]:
        # the best itself, an unconfirmed ancestor, a confirmed one, one older than history
        assert tree.set_best(stale) == []
    tree.add(main[7])
    tree.add(main[2])
    assert tree.best == main[7]
    assert confirmed(feed(tree, node, branch(main[7], 1, "a"))) == [7]


def test_resume_continues_after_the_last_durable_block() -> None:
    chain = branch(GENESIS, 10, "a")
    node = Node([GENESIS, *chain])
    tree = ForkTree(2, chain[4])
    assert tree.confirmed == chain[4]
    out = node.head(tree, chain[9])
    first = next(d.ref for d in out if isinstance(d, Confirmed))
    assert first.number == 6
    assert first.parent_hash == chain[4].hash
    assert confirmed(out) == [6, 7, 8]


def test_resume_detects_that_the_last_durable_block_was_orphaned() -> None:
    chain = branch(GENESIS, 6, "a")
    fork = branch(chain[2], 5, "b")
    node = Node([GENESIS, *chain, *fork])
    tree = ForkTree(2, chain[:6])
    out = node.head(tree, fork[-1])
    assert out[0] == Reorg(3, chain[5], fork[-1], chain[2], True)
    assert confirmed(out) == [4, 5, 6]


def test_deep_reorg_beyond_k_is_reported_and_confirmation_moves_to_the_new_chain() -> None:
    main = branch(GENESIS, 10, "a")
    fork = branch(main[4], 7, "b")  # from #5: #6'..#12'
    node = Node([GENESIS, *main, *fork])
    tree = ForkTree(2, GENESIS)
    rows = confirmed(feed(tree, node, main))
    assert rows == list(range(1, 9))
    out = node.head(tree, fork[-1])
    assert out[0] == Reorg(5, main[9], fork[-1], main[4], True)
    assert [d.ref for d in out[1:]] == fork[:5]
    # The repair rule: drop rows above the common ancestor, then append.
    repaired = [*main[: out[0].common_ancestor.number], *fork[:5]]
    assert [r.number for r in repaired] == list(range(1, 11))
    assert tree.confirmed == fork[4]


def test_a_best_that_retracts_to_a_confirmed_block_orphans_the_rows_above_it() -> None:
    """The node's best moves down to a confirmed block (its chain got shorter): the
    caller, having checked that the node still knows the confirmed tip, retracts to it.
    The blocks above are reported orphaned, the next heads confirm from there, and the
    old chain, should it come back, is confirmed again."""
    main = branch(GENESIS, 10, "a")
    node = Node([GENESIS, *main])
    tree = ForkTree(2, GENESIS)
    assert confirmed(feed(tree, node, main)) == list(range(1, 9))
    for not_below in [main[7], main[9], branch(GENESIS, 3, "x")[-1]]:
        assert tree.retracted_tip(not_below) is None  # the tip, unconfirmed, unknown
        assert tree.retract_to(not_below) == []
    assert tree.retracted_tip(main[4]) == main[7]
    assert tree.retract_to(main[4]) == [Reorg(5, main[9], main[4], main[4], True)]
    assert tree.confirmed == main[4]
    assert tree.best == main[4]
    fork = branch(main[4], 4, "b")
    node = Node([GENESIS, *main, *fork])
    assert confirmed(feed(tree, node, fork)) == [6, 7]
    assert tree.confirmed == fork[1]
    back = node.head(tree, main[9])  # the first chain is the best again
    assert reorgs(back) == [Reorg(4, fork[3], main[9], main[4], True)]
    assert confirmed(back) == [6, 7, 8]


def test_fork_below_history_is_reported_and_spends_the_tree() -> None:
    main = branch(GENESIS, 12, "a")
    fork = branch(main[1], 12, "b")  # forks at #2, below the 3 remembered blocks
    node = Node([GENESIS, *main, *fork])
    tree = ForkTree(2, GENESIS, history=3)
    feed(tree, node, main)
    out = node.head(tree, fork[-1])
    assert out == [ForkBelowHistory(main[11], fork[-1], main[7])]
    assert tree.spent
    with pytest.raises(RuntimeError, match="build a new one"):
        tree.set_best(fork[-1])
    with pytest.raises(RuntimeError):
        tree.add(fork[0])


def test_k_zero_confirms_at_once_and_every_reorg_is_beyond_confirmation() -> None:
    main = branch(GENESIS, 3, "a")
    sibling = branch(main[1], 1, "b")
    node = Node([GENESIS, *main, *sibling])
    tree = ForkTree(0, GENESIS)
    assert confirmed(feed(tree, node, main)) == [1, 2, 3]
    assert len(tree) == 0
    out = node.head(tree, sibling[0])
    assert out == [Reorg(1, main[2], sibling[0], main[1], True), Confirmed(sibling[0])]


def test_fresh_start_never_emits_below_the_first_block_seen() -> None:
    chain = branch(GENESIS, 110, "a")
    node = Node([GENESIS, *chain])
    tree = ForkTree(3)
    assert tree.confirmed is None
    out = node.head(tree, chain[99])  # #100
    assert out == []
    assert tree.confirmed is None
    sibling = branch(chain[98], 1, "b")[0]  # another #100: a depth-1 reorg at the start
    node.by_hash[sibling.hash] = sibling
    out = node.head(tree, sibling) + node.head(tree, chain[99])
    assert [r.common_ancestor.hash for r in reorgs(out)] == [chain[98].hash] * 2
    out = feed(tree, node, chain[100:])
    assert confirmed(out) == list(range(100, 108))
    assert next(d.ref for d in out if isinstance(d, Confirmed)).parent_hash == chain[98].hash
    assert node.asked == []


def test_memory_bound_drops_lowest_side_branches_never_the_best_chain() -> None:
    k, max_blocks = 4, 8 + 2 * 2 + 3 + 2  # the least the tree accepts for k=4, batch=2
    main = branch(GENESIS, 40, "a")
    node = Node([GENESIS, *main])
    tree = ForkTree(k, GENESIS, max_blocks=max_blocks, history=3, batch=2)
    stubs: dict[int, list[BlockRef]] = {}
    for head in main:
        # Every block grows a side stub of four blocks that never becomes best.
        parent = node.by_hash[head.parent_hash]
        stubs[parent.number] = branch(parent, 4, f"s{parent.number}")
        for block in stubs[parent.number]:
            node.by_hash[block.hash] = block
            tree.add(block)
        node.head(tree, head)
        assert len(tree) <= max_blocks
        assert tree.best == head
    # Held: the best chain #37..#40 and the stubs of #37..#39; the stub of the
    # confirmed tip #36 was the lowest side branch, so it was dropped at the bound.
    assert len(tree) == 4 + 3 * 4
    assert tree.confirmed == main[35]
    node.asked.clear()
    late = branch(stubs[36][-1], 4, "late")  # that stub wins after all: #41'..#44'
    for block in late:
        node.by_hash[block.hash] = block
    out = node.head(tree, late[-1])
    assert out[0] == Reorg(4, main[39], late[-1], main[35], False)
    assert [d.ref for d in out[1:]] == stubs[36]
    # Fetched again: the dropped stub (by number: its fork is wider than a batch),
    # then the new blocks.
    assert node.asked == [
        NeedRange(37, 38),
        NeedRange(39, 40),
        *(NeedAncestor(b.hash, b.number) for b in reversed(late[:-1])),
    ]


def test_parameters_and_seed_are_checked() -> None:
    with pytest.raises(ValueError, match="k >= 0"):
        ForkTree(-1)
    with pytest.raises(ValueError, match="max_blocks"):
        ForkTree(2, max_blocks=10)
    a, b = branch(GENESIS, 2, "a")
    with pytest.raises(ValueError, match="do not form a chain"):
        ForkTree(2, [GENESIS, b])
    tree = ForkTree(2, GENESIS)
    with pytest.raises(ValueError, match="not numbered after"):
        tree.set_best(BlockRef(5, bh("x", 5), GENESIS.hash))
    assert ForkTree(2, [GENESIS, a, b]).confirmed == b


def test_reorg_record_and_blockref_from_header() -> None:
    header = Header(b"\x01" * 32, 7, b"\x02" * 32, b"\x03" * 32)
    ref = BlockRef.of(header)
    assert (ref.number, ref.hash, ref.parent_hash) == (7, header.hash(), b"\x01" * 32)
    reorg = Reorg(1, ref, ref, GENESIS, False)
    record = reorg.record("consensus", 1234)
    assert (record.depth, record.old_tip_number, record.common_ancestor_number) == (1, 7, 0)
    assert record.common_ancestor_hash == "0x" + GENESIS.hash.hex()
    assert not record.beyond_confirmation


# -- property tests -------------------------------------------------------------------

_UNKNOWN = BlockHash(b"")


@dataclass
class Model:
    """The same decisions, computed naively with the whole block tree in view."""

    k: int
    history: int
    node: Node
    ring: deque[BlockRef] = field(init=False)
    best: BlockRef | None = None
    spent: bool = False
    linked: bool = False  # the last best was not stale

    def seed(self, refs: Sequence[BlockRef]) -> None:
        self.ring = deque(refs[-self.history :], maxlen=self.history)
        self.best = self.ring[-1] if self.ring else None

    def is_ancestor(self, a: BlockRef, b: BlockRef) -> bool:
        return a.number <= b.number and self.node.ancestor_at(b, a.number).hash == a.hash

    def common(self, a: BlockRef, b: BlockRef) -> BlockRef:
        a, b = self.node.by_hash[a.hash], self.node.by_hash[b.hash]
        while a.number > b.number:
            a = self.node.by_hash[a.parent_hash]
        while b.number > a.number:
            b = self.node.by_hash[b.parent_hash]
        while a.hash != b.hash:
            a, b = self.node.by_hash[a.parent_hash], self.node.by_hash[b.parent_hash]
        return a

    def set_best(self, new: BlockRef) -> list[Decision]:
        if not self.ring:
            self.seed([BlockRef(new.number - 1, new.parent_hash, _UNKNOWN)])
        assert self.best is not None
        old, tip = self.best, self.ring[-1]
        self.linked = not (new.number < self.ring[0].number or self.is_ancestor(new, old))
        if not self.linked:
            return []
        deep = not self.is_ancestor(tip, new)
        ancestor = self.common(old, new)
        if deep and ancestor.number < self.ring[0].number:
            self.spent = True
            return [ForkBelowHistory(old, new, self.ring[0])]
        ancestor = next((r for r in self.ring if r.hash == ancestor.hash), ancestor)
        out: list[Decision] = []
        if ancestor.hash != old.hash:
            out.append(Reorg(old.number - ancestor.number, old, new, ancestor, deep))
        while self.ring[-1].number > ancestor.number:
            self.ring.pop()
        self.best = new
        for number in range(self.ring[-1].number + 1, new.number - self.k + 1):
            block = self.node.ancestor_at(new, number)
            self.ring.append(block)
            out.append(Confirmed(block))
            self.best = self.ring[-1] if block.hash == new.hash else new
        return out


def same_decisions(got: list[Decision], expected: list[Decision]) -> bool:
    """Equal, except that a reorg within the unconfirmed blocks may come after the
    confirmation of blocks at or below its common ancestor (catch-up confirms those
    before it meets the fork)."""

    def within(d: Decision) -> bool:
        return isinstance(d, Reorg) and not d.beyond_confirmation

    return [d for d in got if within(d)] == [d for d in expected if within(d)] and [
        d for d in got if not within(d)
    ] == [d for d in expected if not within(d)]


def check_stream(stream: list[Decision], start: BlockRef | None) -> list[BlockRef]:
    """Apply the repair rule; the rows must be contiguous, linked and distinct."""
    rows: list[BlockRef] = []
    last = start
    beyond = False
    ever: set[BlockHash] = set()
    for decision in stream:
        if isinstance(decision, Reorg) and decision.beyond_confirmation:
            beyond = True
            ancestor = decision.common_ancestor
            assert last is not None
            assert ancestor.number < last.number
            rows = [r for r in rows if r.number <= ancestor.number]
            assert not rows or rows[-1].hash == ancestor.hash
            last = ancestor
        elif isinstance(decision, Confirmed):
            ref = decision.ref
            if last is not None:
                assert (ref.number, ref.parent_hash) == (last.number + 1, last.hash), ref
            assert beyond or ref.hash not in ever, f"{ref} confirmed twice"
            ever.add(ref.hash)
            rows.append(ref)
            last = ref
    assert len({r.hash for r in rows}) == len(rows)
    return rows


@dataclass
class Scenario:
    tree: ForkTree
    model: Model
    node: Node
    plan: list[tuple[bool, BlockRef]]  # (set_best?, block): else an add
    max_blocks: int
    seed: int


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    k = draw(st.integers(0, 4))
    batch = draw(st.integers(1, 5))
    history = draw(st.integers(1, 8))
    max_blocks = 2 * k + 2 * batch + history + 2 + draw(st.integers(0, 3))
    trunk = draw(st.integers(1, 5))
    size = draw(st.integers(trunk + 1, 70))
    bushy = draw(st.integers(1, 4))  # how often a block forks off a recent one
    blocks = [BlockRef(0, bh("n", 0), BlockHash(b"\xff" * 32))]
    for index in range(1, size):
        if index < trunk:
            parent = blocks[index - 1]
        else:  # mostly the previous block, else a recent one: forks of random length
            back = draw(st.sampled_from([1, 1, 1, 2]))
            if draw(st.integers(0, 9)) < bushy:
                back = draw(st.integers(1, 12))
            parent = blocks[max(0, index - back)]
        blocks.append(BlockRef(parent.number + 1, bh("n", index), parent.hash))
    picks = st.integers(1, size - 1)
    is_best = st.integers(0, draw(st.sampled_from([1, 3]))).map(bool)  # heads : adds
    events = draw(st.lists(st.tuples(is_best, picks), min_size=1, max_size=60))
    if draw(st.booleans()):  # heads in creation order: long chains, fewer deep reorgs
        bests = sorted(i for is_best, i in events if is_best)
        events = [(True, bests.pop(0)) if is_best else (False, i) for is_best, i in events]
    node = Node(blocks)
    model = Model(k, history, node)
    seed = blocks[:trunk] if draw(st.booleans()) else []
    tree = ForkTree(k, seed or None, max_blocks=max_blocks, history=history, batch=batch)
    model.seed(seed)
    plan = [(is_best, blocks[i]) for is_best, i in events]
    return Scenario(tree, model, node, plan, max_blocks, draw(st.integers(0, 2**32)))


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_random_forks_match_the_model_and_leave_no_gap_duplicate_or_orphan(
    scenario: Scenario,
) -> None:
    tree, model, node = scenario.tree, scenario.model, scenario.node
    rng = node.rng = random.Random(scenario.seed)
    start = tree.confirmed
    stream: list[Decision] = []
    for is_best, ref in scenario.plan:
        if not is_best:  # headers learned out of order (a branch, shuffled), some twice
            branch_ = [node.ancestor_at(ref, n) for n in range(max(0, ref.number - 5), ref.number)]
            for block in rng.sample(branch_, len(branch_)) + [ref] * rng.randint(1, 2):
                tree.add(block)
            continue
        if start is None:  # a fresh start: rows link to the first best's parent
            start = BlockRef(ref.number - 1, ref.parent_hash, _UNKNOWN)
        expected = model.set_best(ref)
        got = node.drain(tree, tree.set_best(ref), ref)
        assert same_decisions(got, expected)
        assert len(tree) <= scenario.max_blocks
        if model.linked and not tree.spent:  # only descendants of the confirmed tip held
            tip = model.ring[-1]
            above = [b for b in node.by_hash.values() if b.number > tip.number]
            assert len(tree) <= sum(model.is_ancestor(tip, b) for b in above)
        stream += got
        if tree.spent:
            break
    for kind in sorted({type(d).__name__ for d in [*stream, *node.asked]}):
        event(kind)
    if any(isinstance(d, Reorg) and d.beyond_confirmation for d in stream):
        event("reorg beyond confirmation")
    rows = check_stream(stream, start)
    if tree.spent:
        return
    best = tree.best
    if best is None:  # a fresh start that never saw a best
        assert model.best is None
        assert stream == []
        return
    assert model.best is not None
    assert best.hash == model.best.hash
    # Every surviving row is on the final best chain, up to at least best - k.
    for row in rows:
        assert model.is_ancestor(row, best), f"orphan row {row}"
    if rows:
        assert rows[-1].number >= best.number - tree.k
    if not any(isinstance(d, Reorg) and d.beyond_confirmation for d in stream):
        assert [d.ref for d in stream if isinstance(d, Confirmed)] == rows


class WalkEveryTime(ForkTree):
    """The tree without its shortcuts: every best is walked down to the confirmed ring,
    and every prune looks at every block."""

    def _extend(self, target: BlockRef) -> list[Decision] | None:
        return None

    def _prune(self) -> None:
        self._clean = False
        super()._prune()


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_the_shortcuts_decide_and_keep_what_walking_every_time_does(scenario: Scenario) -> None:
    tree = scenario.tree
    seed = list(tree._ring) or None
    twin = WalkEveryTime(
        tree.k, seed, max_blocks=tree._max_blocks, history=tree._history, batch=tree._batch
    )
    nodes = [Node(scenario.node.by_hash.values()) for _ in range(2)]
    for node in nodes:
        node.rng = random.Random(scenario.seed)
    for is_best, ref in scenario.plan:
        if is_best:
            got = [node.head(t, ref) for node, t in zip(nodes, (tree, twin), strict=True)]
            assert got[0] == got[1]
        else:
            tree.add(ref)
            twin.add(ref)
        assert tree._blocks == twin._blocks
        assert tree.best == twin.best
        if tree.spent:
            break


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 5), st.sampled_from([None, 3, 12]))
def test_following_live_heads_with_the_shortcuts_is_walking_every_time(
    seed: int, k: int, history: int | None
) -> None:
    """Heads as a live node sends them: mostly a child of the last, now and then a fork
    off a recent block, a missed head or a block only added."""
    rng = random.Random(seed)
    blocks = [BlockRef(0, bh("n", 0), BlockHash(b"\xff" * 32))]
    for index in range(1, 150):
        back = 1 if rng.random() < 0.8 else rng.randint(1, 6)
        parent = blocks[max(0, index - back)]
        blocks.append(BlockRef(parent.number + 1, bh("n", index), parent.hash))
    trees = (ForkTree(k, history=history), WalkEveryTime(k, history=history))
    nodes = [Node(blocks) for _ in trees]
    for block in blocks[1:]:
        roll = rng.random()
        if roll < 0.85:
            got = [node.head(t, block) for node, t in zip(nodes, trees, strict=True)]
            assert got[0] == got[1]
        elif roll < 0.95:
            for t in trees:
                t.add(block)
        assert trees[0]._blocks == trees[1]._blocks
        assert trees[0].best == trees[1].best
        if trees[0].spent:
            break


def test_the_stream_checker_catches_duplicates_gaps_and_bad_links() -> None:
    a = branch(GENESIS, 3, "a")
    ok = [Confirmed(r) for r in a]
    assert check_stream(ok, GENESIS) == a
    for broken in (
        [*ok, Confirmed(a[2])],  # emitted twice
        [ok[0], ok[2]],  # a gap
        [Confirmed(branch(GENESIS, 1, "z")[0]), ok[1]],  # a broken link
    ):
        with pytest.raises(AssertionError):
            check_stream(broken, GENESIS)
