"""Backoff delays and request pacing: pure, with seeded randomness and time passed in."""

import itertools
import random

import pytest

from blocktimesd.core.backoff import TokenBucket, backoff


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
