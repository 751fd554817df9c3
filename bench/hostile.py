"""A hostile node for N minutes: a proxy between the daemon and the simulated network
injects one fault every few seconds (malformed messages, stuck connections, dropped
connections, trouble during the preflight, malformed answers, header lies and forged
timestamps, see ``tests/hostile_proxy.py``), with credentials in every endpoint.
Then the faults stop, the daemon catches up and stops on SIGTERM, and its dataset is
compared with the canonical chains walked over plain JSON-RPC (the chaos tests' oracle,
``tests/chaos/walk.py``), every block lied about aside.

    python bench/hostile.py --minutes 10 [--seed 42] [--keep DIR] [--log-level DEBUG]

Prints the faults injected by kind, the lies told and flagged, the rows compared per
chain and the rows lost, duplicated, orphaned and wrong, whether ``/healthz`` stayed
200 (polled every second), and the credentials found in the daemon's output,
``/readyz``, ``/metrics`` and its files; exits 1 unless every lie was flagged and all
of the others are 0.  Run it from the source tree: the harness lives with the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.chaos.harness import run_scenario
from tests.hostile_proxy import ALL_KINDS, HostileRun, check, describe, hostile_scenario


async def hostile(
    minutes: float, seed: int, every: float, kinds: list[str], log_level: str, workdir: Path
) -> int:
    plan = hostile_scenario(minutes * 60, log_level)
    print(f"hostile: {minutes:g} min, a fault every ~{every:g} s, seed {seed}, in {workdir}")
    left_out = sorted(set(ALL_KINDS) - set(kinds))
    if left_out:
        print(f"kinds left out: {', '.join(left_out)}")
    sys.stdout.flush()
    run = HostileRun(seed, (every / 2, every * 1.5), kinds)
    outcome = await run_scenario(plan, seed, workdir, middle=run)
    judged = check(outcome, run, workdir, plan.min_rows)
    print(describe(outcome, judged))
    return 1 if judged.problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the faulty phase")
    parser.add_argument("--seed", type=int, help="replay a run (default: random)")
    parser.add_argument(
        "--every", type=float, default=2.5, help="mean seconds between faults (default: 2.5)"
    )
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        choices=ALL_KINDS,
        metavar="KIND",
        help=f"leave out a kind of fault (repeatable): {', '.join(ALL_KINDS)}",
    )
    parser.add_argument("--log-level", default="INFO", help="the daemon's (default: INFO)")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()
    if args.minutes <= 0 or args.every <= 0:
        parser.error("--minutes and --every must be positive")
    kinds = [k for k in ALL_KINDS if k not in args.without]
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        return asyncio.run(
            hostile(args.minutes, seed, args.every, kinds, args.log_level, args.keep)
        )
    with tempfile.TemporaryDirectory(prefix="blocktimesd-hostile-") as tmp:
        return asyncio.run(
            hostile(args.minutes, seed, args.every, kinds, args.log_level, Path(tmp))
        )


if __name__ == "__main__":
    sys.exit(main())
