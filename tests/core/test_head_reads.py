"""When new heads are read: at once at a chain's normal pace, together when they come
fast (``HeadReads``, driven by a clock of the test's own)."""

from __future__ import annotations

import pytest

from blocktimesd.core.head_reads import HeadReads
from blocktimesd.core.header import Header


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def head(number: int) -> Header:
    return Header(bytes(32), number, number.to_bytes(32, "big"), bytes(32))


def test_heads_a_second_apart_are_read_one_by_one_at_once() -> None:
    clock = Clock()
    reads = HeadReads(0.5, 64, clock)
    for number in range(1, 6):
        reads.add(head(number))
        assert reads.due()
        assert [h.number for h in reads.take()] == [number]
        assert (reads.pending, reads.due()) == (0, False)
        clock.now += 1.0


def test_heads_that_come_fast_wait_for_the_first_one_after_every_s() -> None:
    clock = Clock()
    reads = HeadReads(0.5, 64, clock)
    reads.add(head(1))
    assert [h.number for h in reads.take()] == [1]  # the first head is read at once
    for number in range(2, 5):  # 0.125 s apart: within 0.5 s of that read
        clock.now += 0.125
        reads.add(head(number))
        assert not reads.due()
    assert reads.wait(60.0) == 0.125  # what is left of the 0.5 s
    clock.now += 0.125
    reads.add(head(5))  # 0.5 s after the read
    assert reads.due()
    assert [h.number for h in reads.take()] == [2, 3, 4, 5]  # oldest first
    assert reads.pending == 0


def test_most_heads_are_read_at_once_however_soon() -> None:
    reads = HeadReads(10.0, 3, Clock())
    reads.add(head(1))
    reads.take()
    reads.add(head(2))
    reads.add(head(3))
    assert not reads.due()
    reads.add(head(4))
    assert reads.due()
    assert [h.number for h in reads.take()] == [2, 3, 4]


def test_the_wait_for_the_next_head_is_bounded_by_the_heads_not_read() -> None:
    clock = Clock()
    reads = HeadReads(0.5, 64, clock)
    assert reads.wait(15.0) == 15.0  # nothing to read: wait for a head as long as asked
    assert reads.wait(-1.0) == 0.0
    reads.add(head(1))
    reads.take()
    reads.add(head(2))
    assert reads.wait(15.0) == pytest.approx(0.5)
    assert reads.wait(0.2) == pytest.approx(0.2)  # never beyond what was asked
    clock.now += 2.0
    assert reads.wait(15.0) == 0.0  # overdue: read now
    assert reads.due()


@pytest.mark.parametrize(("every_s", "most"), [(-0.1, 4), (0.5, 0)])
def test_settings_out_of_range_are_refused(every_s: float, most: int) -> None:
    with pytest.raises(ValueError, match="every_s must not be negative and most positive"):
        HeadReads(every_s, most)
