"""Soak: every fault at once for N minutes, kill -9 at random, then count what was lost.

The daemon follows the simulated network at high speed while every lasting fault is on
(error answers, latency with jitter, dropped connections, stalls, silently dropped and
lagging subscriptions, forks) and one-shot faults strike at random (reorgs deeper than
K, to lower heights too, a runtime upgrade, outages of either node, extra stalls and
drops), and it is killed with SIGKILL every few seconds to a minute and restarted.
Then the faults stop, the daemon catches up and stops on SIGTERM, and its dataset is
compared with the canonical chains walked over plain JSON-RPC (the chaos tests' oracle,
``tests/chaos/walk.py``).

    python bench/soak.py --minutes 10 [--seed 42] [--keep DIR]

Prints the blocks followed per chain, the faults injected by kind, kills and restarts,
and the rows lost, duplicated, orphaned and with a wrong delta (or timestamp, or
consensus link); exits 1 unless all of those are 0 and the daemon kept up.
Run it from the source tree: the harness lives with the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.chaos.harness import ALL_FAULTS, Outcome, Scenario, run_scenario

# One-shot faults per minute of soak (the upgrade happens once: the devnet has one).
_PER_MINUTE = {
    "reorg": 2,
    "reorg-lower": 1,
    "outage-consensus": 1,
    "outage-domain": 1,
    "stall": 2,
    "drop-connections": 2,
    "drop-subscriptions": 2,
}
_REQUEST_TIMEOUT_S = 3.0  # short, so that outages outlast it in seconds


def scenario(
    minutes: float, error_rate: float | None = None, longest_outage_s: float = 3.0
) -> Scenario:
    events = {kind: max(1, round(n * minutes)) for kind, n in _PER_MINUTE.items()}
    faults = dict(ALL_FAULTS)
    if error_rate is not None:
        faults["error_rate"] = error_rate
    return Scenario(
        "soak",
        faults=faults,
        events={**events, "upgrade": 1},
        seconds=minutes * 60,
        fork_rate=0.2,
        request_timeout_s=_REQUEST_TIMEOUT_S,
        restart_in_outage=True,
        kill_every=(3.0, 60.0),
        outage_beyond_timeout_s=(1.0, max(1.0, longest_outage_s)),
        min_rows=100,
    )


def report(outcome: Outcome, plan: Scenario) -> int:
    verdict = outcome.verdict
    print(f"soak: {outcome.seconds:.0f} s, BLOCKTIMESD_CHAOS_SEED={outcome.seed}")
    print(f"kills: {outcome.kills}, restarts: {outcome.restarts}")
    print("faults injected (as the simulator counted them):")
    for kind, count in sorted(outcome.injected.items()):
        print(f"  {kind:<28} {count}")
    if verdict is None:
        print("no verdict: the run stopped before the comparison")
        return 1
    print("blocks followed:")
    totals = dict.fromkeys(("lost", "duplicated", "orphaned", "wrong-delta", "other"), 0)
    for name, chain in verdict.chains.items():
        span = "-" if chain.first is None else f"#{chain.first}..#{chain.last}"
        print(f"  {name:<10} {chain.rows:>7} rows {span} (node head #{chain.head})")
        totals["lost"] += len(chain.missing)
        totals["duplicated"] += len(chain.duplicated)
        totals["orphaned"] += len(chain.orphaned)
        totals["wrong-delta"] += len(chain.wrong_delta)
        totals["other"] += len(chain.wrong_timestamp) + len(chain.wrong_link)
    print("rows " + ", ".join(f"{kind}: {n}" for kind, n in totals.items()))
    problems = outcome.problems(plan.min_rows)
    for problem in problems:
        print(f"PROBLEM {problem}")
    print(f"daemon log: {outcome.log}")
    return 1 if problems or any(totals.values()) else 0


async def soak(
    minutes: float, error_rate: float | None, longest_outage_s: float, seed: int, workdir: Path
) -> int:
    plan = scenario(minutes, error_rate, longest_outage_s)
    print(
        f"soak: {minutes:g} min of every fault (error rate {plan.faults['error_rate']:g}), "
        f"BLOCKTIMESD_CHAOS_SEED={seed}, in {workdir}"
    )
    sys.stdout.flush()
    return report(await run_scenario(plan, seed, workdir), plan)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the faulty phase")
    parser.add_argument(
        "--error-rate",
        type=float,
        help=f"share of calls answered with an error (default: {ALL_FAULTS['error_rate']:g})",
    )
    parser.add_argument(
        "--longest-outage",
        type=float,
        default=3.0,
        help="most seconds a node outage lasts beyond the daemon's request timeout "
        f"({_REQUEST_TIMEOUT_S:g} s) (default: 3)",
    )
    parser.add_argument("--seed", type=int, help="replay a run (default: random)")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    if args.error_rate is not None and not 0 <= args.error_rate < 1:
        parser.error("--error-rate must be at least 0 and below 1")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        return asyncio.run(
            soak(args.minutes, args.error_rate, args.longest_outage, seed, args.keep)
        )
    with tempfile.TemporaryDirectory(prefix="blocktimesd-soak-") as tmp:
        return asyncio.run(
            soak(args.minutes, args.error_rate, args.longest_outage, seed, Path(tmp))
        )


if __name__ == "__main__":
    sys.exit(main())
