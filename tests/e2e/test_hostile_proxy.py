"""A broken or hostile node cannot stop, stall or fool the daemon.

The daemon (``blocktimesd run``, its own process) follows the simulated network
through :class:`tests.hostile_proxy.HostileProxy`, which injects a fault of a random
kind every second or two: malformed messages, stuck and dropped connections, trouble
during the preflight, malformed answers, header lies and forged timestamps, with
credentials in every endpoint.  Then the dataset must equal the chains for every block
not lied about, every lie must be flagged, ``/healthz`` must have stayed 200, the daemon
must not have stopped by itself, and no credential may show anywhere.

One run replays a fixed seed, one draws a seed (``BLOCKTIMESD_HOSTILE_SEED`` pins it);
a failure prints the seed and every figure.  The long version is ``bench/hostile.py``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

from blocktimesd.aio.preflight import NodeExpectations, Preflight
from blocktimesd.aio.rpc import RpcClient, RpcSettings
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams
from tests.chaos.harness import run_scenario
from tests.hostile_proxy import ALL_KINDS, HostileRun, check, describe, hostile_scenario
from tests.lying_node import lying_node

SEED_ENV = "BLOCKTIMESD_HOSTILE_SEED"
SECONDS = 25.0
EVERY = (0.5, 2.0)  # seconds between faults: many of each kind in a short run
FIXED_SEED = 20261203


def _seed(param: int | None) -> int:
    if param is not None:
        return param
    pinned = os.environ.get(SEED_ENV, "").strip()
    return int(pinned) if pinned else random.SystemRandom().randrange(2**31)


async def _hostile_run(
    seed: int, workdir: Path, kinds: Collection[str], seconds: float = SECONDS
) -> tuple[list[str], str]:
    plan = hostile_scenario(seconds, log_level="DEBUG")  # secrets must not show even there
    run = HostileRun(seed, EVERY, kinds)
    outcome = await run_scenario(plan, seed, workdir, middle=run)
    judged = check(outcome, run, workdir, plan.min_rows)
    report = f"{describe(outcome, judged)}\nreplay: {SEED_ENV}={seed}"
    return judged.problems, report


@pytest.mark.parametrize("param", [FIXED_SEED, None], ids=["fixed-seed", "random-seed"])
async def test_a_hostile_node_cannot_stop_stall_or_fool_the_daemon(
    param: int | None, tmp_path: Path
) -> None:
    seed = _seed(param)
    problems, report = await _hostile_run(seed, tmp_path, list(ALL_KINDS))
    assert not problems, report


async def test_a_null_timestamp_for_one_block_costs_no_row(tmp_path: Path) -> None:
    problems, report = await _hostile_run(FIXED_SEED, tmp_path, ["null-timestamp"], 12.0)
    assert not problems, report


async def test_a_malformed_genesis_answer_in_the_preflight_is_not_another_network() -> None:
    told = 0

    def rewrite(method: str, params: list[Any], result: Any) -> Any:
        nonlocal told
        if method == "chain_getBlockHash" and params == [0] and told == 0:
            told += 1
            return 12345  # not a hash at all: a malformed answer, not another chain's
        return result

    async with Devnet(ChainParams(seed=8, history=10)) as urls:
        async with RpcClient(RpcSettings((urls.consensus,)), "consensus") as probe:
            genesis = await probe.call("chain_getBlockHash", 0)
        async with lying_node(urls.consensus, rewrite) as url:
            preflight = Preflight(NodeExpectations(genesis_hash=genesis), "consensus")
            client = RpcClient(RpcSettings((url,), connect_timeout=5), "consensus",
                               on_connect=preflight)  # fmt: skip
            async with client:
                try:
                    await client.wait_ready(20)
                except Exception as exc:
                    raise AssertionError(f"one malformed answer ended the client: {exc}") from exc
    assert told == 1
