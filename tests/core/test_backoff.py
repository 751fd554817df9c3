"""Backoff delays and request pacing: pure, with seeded randomness and time passed in."""

import itertools
import random

import pytest

from blocktimesd.core.backoff import EndpointSchedule, TokenBucket, backoff


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    delays = list(itertools.islice(backoff(0.5, 2.0, 8.0, random.Random(1)), 10))
    assert delays[0] == 0.0
    nominal = [0.5, 1, 2, 4, 8, 8, 8, 8, 8]
    for delay, top in zip(delays[1:], nominal, strict=True):
        assert top / 2 <= delay <= top


def test_backoff_is_reproducible_with_a_seed() -> None:
    first = list(itertools.islice(backoff(rng=random.Random(3)), 6))
    second = list(itertools.islice(backoff(rng=random.Random(3)), 6))
    assert first == second


@pytest.mark.parametrize(("initial", "factor", "cap"), [(0, 2, 1), (1, 0.5, 5), (2, 2, 1)])
def test_backoff_rejects_nonsense(initial: float, factor: float, cap: float) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        next(backoff(initial, factor, cap))


def test_token_bucket_spaces_requests() -> None:
    bucket = TokenBucket(rate=10, burst=2)
    # A burst of two goes at once; then one every 0.1 s.
    assert bucket.delay(0.0) == 0.0
    assert bucket.delay(0.0) == 0.0
    assert bucket.delay(0.0) == pytest.approx(0.1)
    assert bucket.delay(0.0) == pytest.approx(0.2)
    # After a long pause the bucket is full again, but never fuller than the burst.
    assert bucket.delay(100.0) == 0.0
    assert bucket.delay(100.0) == 0.0
    assert bucket.delay(100.0) == pytest.approx(0.1)


class _Top(random.Random):
    """Jitter that always draws the top of its range: delays are the nominal ones."""

    def uniform(self, a: float, b: float) -> float:
        return b


# Each step: (how long the ended connection held, or None; fail over?) ->
# (next endpoint, delay).  initial 1, factor 2, cap 8, stable after 8 s.
_TWO = [
    ((None, False), (1, 1.0)),  # endpoint 0 failed: 1 next, after the first step
    ((None, False), (0, 2.0)),
    ((3.0, False), (1, 4.0)),  # held 3 s only: not a reset
    ((None, False), (0, 8.0)),
    ((None, False), (1, 8.0)),  # capped
    ((60.0, False), (0, 0.0)),  # held a minute: at once, to the other endpoint
    ((None, False), (1, 1.0)),
    ((60.0, True), (0, 0.0)),  # fail over from a connection that held: at once
]
_ONE = [
    ((None, False), (0, 1.0)),
    ((60.0, False), (0, 0.0)),  # a loss after a long hold: reconnect at once
    ((60.0, True), (0, 1.0)),  # a fail-over to the same node waits
    ((0.1, False), (0, 2.0)),  # accepted, then dropped at once: growing delays
    ((0.1, False), (0, 4.0)),
]


@pytest.mark.parametrize(("endpoints", "steps"), [(2, _TWO), (1, _ONE)])
def test_endpoint_schedule(
    endpoints: int, steps: list[tuple[tuple[float | None, bool], tuple[int, float]]]
) -> None:
    schedule = EndpointSchedule(endpoints, 1.0, 2.0, 8.0, _Top(), stable_after=8.0)
    assert schedule.current == 0
    for (held, fail_over), expected in steps:
        assert schedule.after(held, fail_over) == expected
        assert schedule.current == expected[0]


def test_endpoint_schedule_skips_retired_endpoints() -> None:
    schedule = EndpointSchedule(3, 1.0, 2.0, 8.0, _Top())
    schedule.retire(1)
    assert [schedule.after(None)[0] for _ in range(4)] == [2, 0, 2, 0]
    schedule.retire(0)
    assert schedule.after(60.0, fail_over=True) == (2, 1.0)  # the only one left waits
    schedule.retire(2)
    assert schedule.exhausted
    with pytest.raises(ValueError, match="retired"):
        schedule.after(None)


def test_endpoint_schedule_never_spins() -> None:
    # Connections that never hold: the delays only grow, up to the cap, whatever the jitter.
    schedule = EndpointSchedule(3, 0.5, 2.0, 30.0, random.Random(7))
    delays = [schedule.after(0.01)[1] for _ in range(40)]
    assert all(d >= 0.25 for d in delays)
    assert sum(delays) > 40 * 0.25


def test_a_productive_connection_restarts_the_delays_at_the_shortest() -> None:
    # A node that serves, then drops, every connection within seconds: each productive
    # connection brings the delay back to the shortest one, never to the cap.
    schedule = EndpointSchedule(1, 1.0, 2.0, 8.0, _Top(), stable_after=8.0)
    assert [schedule.after(0.1)[1] for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert schedule.after(2.0, productive=True) == (0, 1.0)
    assert schedule.after(2.0, productive=True) == (0, 1.0)
    assert schedule.after(2.0) == (0, 2.0)  # served nothing: back off again
    assert schedule.after(None, productive=True) == (0, 4.0)  # never usable: no reset
