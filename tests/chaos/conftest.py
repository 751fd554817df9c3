"""The seed of a chaos run: random unless pinned, and printed when a test fails."""

from __future__ import annotations

import os
import random
from collections.abc import Generator

import pytest

SEED_ENV = "BLOCKTIMESD_CHAOS_SEED"
RANDOM = "random"  # the parameter of a run whose seed is drawn (or pinned by SEED_ENV)
_SEED = pytest.StashKey[int]()


@pytest.fixture
def chaos_seed(request: pytest.FixtureRequest) -> int:
    """A fixed seed when parametrized with one; else ``$BLOCKTIMESD_CHAOS_SEED`` or random."""
    param = getattr(request, "param", RANDOM)
    if param != RANDOM:
        seed = int(param)
    elif os.environ.get(SEED_ENV, "").strip():
        seed = int(os.environ[SEED_ENV])
    else:
        seed = random.SystemRandom().randrange(2**31)
    request.node.stash[_SEED] = seed
    return seed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    seed = item.stash.get(_SEED, None)
    if seed is not None and report.failed:
        report.sections.append(("chaos seed", f"replay: {SEED_ENV}={seed} pytest '{item.nodeid}'"))
    return report
