"""How a chaos run is judged: rows the daemon owed, and rows it could not yet write."""

from __future__ import annotations

from tests.chaos.harness import Outcome
from tests.chaos.walk import ChainVerdict, Verdict


def _outcome(rows: int, first: int, head: int, made: int, least_last: int) -> Outcome:
    chain = ChainVerdict("auto-evm", rows=rows, first=first, last=first + rows - 1, head=head)
    return Outcome(
        "judged",
        seed=1,
        verdict=Verdict({"auto-evm": chain}),
        progress={"auto-evm": least_last},
        made={"auto-evm": made},
        stop_code=0,
    )


def test_a_chain_that_fell_behind_is_named() -> None:
    # 100 blocks made, the first 40 confirmable by the end; 5 rows is too few.
    outcome = _outcome(rows=5, first=80, head=180, made=100, least_last=119)
    assert outcome.problems(min_rows=25) == [
        "auto-evm: only 5 rows (expected at least 20)",
        "auto-evm: the last row is #84, below #119: the daemon did not catch up once the "
        "faults stopped",
    ]


def test_blocks_still_waiting_for_confirmation_are_not_owed() -> None:
    # A domain idle for most of the run, awake only at its end: 9 blocks made, none of
    # them at or below the least last row expected (#79) once confirmations are counted.
    outcome = _outcome(rows=1, first=80, head=89, made=9, least_last=79)
    assert outcome.problems(min_rows=25) == []
