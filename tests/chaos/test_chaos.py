"""Every canonical block exactly once, whatever goes wrong.

The daemon (``blocktimesd run``) follows the simulated network (``blocktimesd devnet``),
both as separate processes, while faults strike: each kind alone, then all at once with
``kill -9`` and restarts.  Then the faults stop, the daemon catches up and stops on
SIGTERM, and its dataset is compared with the network's canonical chains walked over
plain JSON-RPC (:mod:`tests.chaos.walk`): a contiguous range of blocks per chain, each
row the canonical block of its height with its ``Timestamp.Now`` and the delta to its
parent's, no duplicates, every Auto-EVM row linked to its consensus block or recorded
for reconciliation, and enough rows to show that the daemon kept up.

Seeds are random; a failure prints the seed, and ``BLOCKTIMESD_CHAOS_SEED=<seed>``
replays it.  A seed that once failed joins ``REGRESSION_SEEDS`` (or, for a fault alone,
``ALONE_REGRESSIONS``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.conftest import RANDOM
from tests.chaos.harness import ALL_FAULTS, Scenario, run_scenario

# The daemon's request timeout is shortened where a node outage must outlast it.
SHORT_TIMEOUT_S = 3.0

ALONE = [
    Scenario("rpc-errors", faults={"error_rate": 0.05}),
    Scenario("latency-with-jitter", faults={"latency_ms": 5, "latency_jitter_ms": 40}),
    Scenario("dropped-connections", faults={"drop_connections_every_s": 1.5}),
    # A stalled node reads requests and never answers them: only the request timeout
    # gets them back, so it is short here, as in the outages.
    Scenario(
        "node-stalls",
        faults={"stall_every_s": 2.5, "stall_duration_s": 1.0},
        request_timeout_s=SHORT_TIMEOUT_S,
    ),
    Scenario("lagging-subscriptions", faults={"notification_delay_ms": 600}),
    Scenario("silently-dropped-subscriptions", faults={"drop_subscriptions_every_s": 1.5}),
    Scenario("forks-and-reorgs-to-lower-heights", fork_rate=0.3),
    Scenario("reorgs-deeper-than-k", events={"reorg": 2, "reorg-lower": 1}),
    Scenario("runtime-upgrade-while-following", events={"upgrade": 1}),
    Scenario(
        "consensus-outage",
        events={"outage-consensus": 1},
        request_timeout_s=SHORT_TIMEOUT_S,
        restart_in_outage=True,
        seconds=4,
    ),
    Scenario(
        "domain-outage",
        events={"outage-domain": 1},
        request_timeout_s=SHORT_TIMEOUT_S,
        restart_in_outage=True,
        seconds=4,
    ),
    Scenario("kill-9-and-restart", events={"kill": 4}),
    # Files stay open; their rows are written as they stand twice a second, each version
    # replacing the last: kills land between the removal of one and the rename of the next.
    Scenario(
        "kill-9-while-open-files-are-rewritten",
        events={"kill": 5},
        max_rows_per_file=100_000,
        settings={"checkpoint_s": 0.5},
    ),
]

ALL_AT_ONCE = Scenario(
    "all-at-once",
    faults=ALL_FAULTS,
    events={
        "kill": 3,
        "reorg": 1,
        "reorg-lower": 1,
        "upgrade": 1,
        "outage-consensus": 1,
        "outage-domain": 1,
        "stall": 1,
        "drop-connections": 1,
        "drop-subscriptions": 1,
    },
    fork_rate=0.2,
    seconds=12,
    request_timeout_s=SHORT_TIMEOUT_S,
    restart_in_outage=True,
)

# Seeds that once broke the invariant, replayed on every run.
REGRESSION_SEEDS = [9]


@pytest.mark.parametrize("scenario", ALONE, ids=lambda s: s.name)
async def test_each_fault_alone(scenario: Scenario, chaos_seed: int, tmp_path: Path) -> None:
    outcome = await run_scenario(scenario, chaos_seed, tmp_path)
    assert not outcome.problems(scenario.min_rows), outcome.report(scenario.min_rows)


# Seeds that once failed a scenario alone, with that scenario.
ALONE_REGRESSIONS = [
    # A deep consensus reorg left the domain follower a second per stale block behind.
    ("reorgs-deeper-than-k", 896931286),
]


@pytest.mark.parametrize(("name", "seed"), ALONE_REGRESSIONS, ids=lambda v: str(v))
async def test_a_fault_alone_with_a_seed_that_once_failed(
    name: str, seed: int, tmp_path: Path
) -> None:
    scenario = next(s for s in ALONE if s.name == name)
    outcome = await run_scenario(scenario, seed, tmp_path)
    assert not outcome.problems(scenario.min_rows), outcome.report(scenario.min_rows)


@pytest.mark.parametrize("chaos_seed", [*REGRESSION_SEEDS, RANDOM], indirect=True)
async def test_all_faults_at_once_with_kills(chaos_seed: int, tmp_path: Path) -> None:
    outcome = await run_scenario(ALL_AT_ONCE, chaos_seed, tmp_path)
    assert not outcome.problems(ALL_AT_ONCE.min_rows), outcome.report(ALL_AT_ONCE.min_rows)
