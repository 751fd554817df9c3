"""The backfill over a pool of connections (:mod:`blocktimesd.aio.pool`), against the
simulated network with a Substrate node's RPC limits: the calls are spread over the
connections, the pool grows where the round trip is the limit and not where the
process is, and a node that refuses more connections shrinks the pool while the run
still writes exactly the canonical chains, faults and all."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from blocktimesd.aio.pool import RpcPool
from blocktimesd.aio.rpc import RpcClient, RpcObserver, RpcSettings
from blocktimesd.commands.backfill import run_backfill
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.network import CONSENSUS
from blocktimesd.devnet.params import ChainParams, FaultParams, RpcLimits
from tests.test_backfill import (
    PARAMS,
    K,
    check_consensus,
    check_domain,
    check_no_duplicates,
    env,
    parse,
    point_at,
    read_rows,
)

env = env  # the fixture, for the test below

SMALL = ChainParams(seed=3, history=60, stall_every_s=0)


def maker(made: list[RpcClient]) -> Callable[[RpcSettings, RpcObserver], RpcClient]:
    def make(settings: RpcSettings, observer: RpcObserver) -> RpcClient:
        client = RpcClient(settings, "consensus", observer=observer)
        made.append(client)
        return client

    return make


async def backlog(pool: RpcPool, lists: int, at_once: int = 16, per_list: int = 32) -> None:
    """Many lists of calls, ``at_once`` of them in flight (as the fetcher's gate lets
    them): more than one connection's in-flight cap."""
    calls: list[tuple[str, list[Any]]] = [("chain_getBlockHash", [n % 50]) for n in range(per_list)]
    gate = asyncio.Semaphore(at_once)

    async def one() -> list[Any]:
        async with gate:
            return await pool.call_many(calls)

    answers = await asyncio.gather(*(one() for _ in range(lists)))
    assert all(len(a) == per_list and all(isinstance(h, str) for h in a) for a in answers)


async def sample(devnet: Devnet, seen: list[int]) -> None:
    """The number of connections the consensus node holds, every few milliseconds."""
    while True:
        seen.append(len(devnet.servers[CONSENSUS]._connections))
        await asyncio.sleep(0.005)


@pytest.fixture
async def first() -> AsyncIterator[tuple[Devnet, RpcClient]]:
    devnet = Devnet(SMALL, FaultParams(latency_ms=20))
    async with devnet as urls, RpcClient(RpcSettings((urls.consensus,)), "consensus") as client:
        await client.wait_ready(10)
        yield devnet, client


async def test_calls_are_spread_over_the_pools_connections(
    first: tuple[Devnet, RpcClient],
) -> None:
    devnet, client = first
    made: list[RpcClient] = []
    pool = RpcPool(client, maker(made), size=4)
    seen: list[int] = []
    counter = asyncio.create_task(sample(devnet, seen))
    try:
        await pool.start()
        await backlog(pool, 40)
        assert pool.connections == 4
        assert len(made) == 3
    finally:
        counter.cancel()
        await pool.close()
    assert max(seen) == 4  # the node held four connections at once
    assert len(pool.served) == 4
    assert all(n >= 100 for n in pool.served), pool.served  # each carried its share
    assert client.ready
    assert not any(c.supervisor_alive for c in made)


async def test_probing_grows_the_pool_when_the_round_trip_is_the_limit(
    first: tuple[Devnet, RpcClient],
) -> None:
    _, client = first
    # The simulator runs in this process: its work must not count as ours.
    pool = RpcPool(client, maker([]), interval=0.2, cap=4, cpu_clock=lambda: 0.0)
    await pool.start()
    try:
        await backlog(pool, 400)
    finally:
        await pool.close()
    assert pool.peak > 1
    assert sum(1 for n in pool.served if n) == pool.peak


async def test_a_busy_process_does_not_probe(first: tuple[Devnet, RpcClient]) -> None:
    _, client = first
    made: list[RpcClient] = []
    pool = RpcPool(client, maker(made), interval=0.2, cpu_clock=time.monotonic)  # all busy
    await pool.start()
    try:
        await backlog(pool, 200)
    finally:
        await pool.close()
    assert pool.peak == 1
    assert pool.served[1:] == []  # no call went elsewhere
    # (Spare connections may have been opened for a distant node: none is left open.)
    assert not any(c.supervisor_alive for c in made)


async def test_refused_connections_shrink_the_pool_and_the_chains_are_written_exactly(
    tmp_path: Path, env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Three connections per node at most, error answers and dropped connections; the
    # latency makes the run last long enough for the connections to be dropped.
    faults = FaultParams(latency_ms=10, error_rate=0.0005, drop_connections_every_s=3)
    devnet = Devnet(PARAMS, faults, limits=RpcLimits(max_connections=3))
    seen: list[int] = []
    async with devnet:
        point_at(devnet, env)
        tip = devnet.network.consensus.best.number
        args = parse("--data", str(tmp_path), "--window", "32", "--start", "1", "--end",
                     str(tip), "--k", str(K))  # fmt: skip
        args.connections = 4
        counter = asyncio.create_task(sample(devnet, seen))
        with caplog.at_level(logging.INFO, logger="blocktimesd.aio.pool"):
            try:
                assert await run_backfill(args) == 0
            finally:
                counter.cancel()
        network = devnet.network
        dropped = devnet._injected["droppedConnections"]
    assert dropped >= 1  # (error answers are likely too, a few, but not certain)
    assert "one more connection was refused" in caplog.text
    assert "HTTP 429" in caplog.text
    assert max(seen) == 3
    consensus = read_rows(tmp_path, "consensus")
    assert [r["block_number"] for r in consensus] == list(range(1, tip - K + 1))
    check_no_duplicates(tmp_path, "consensus")
    check_consensus(consensus, network)
    domain = read_rows(tmp_path, "auto-evm")
    assert len(domain) > 300
    assert [r["block_number"] for r in domain] == list(range(1, len(domain) + 1))
    check_no_duplicates(tmp_path, "auto-evm")
    check_domain(domain, network)
