"""The backfill of a domain where its consensus blocks cannot all be named, and where it
must stop: against the simulated network, with the consensus node's answers (and, for
headers without an ``RGTR`` item, the domain's fetched blocks) altered by small fakes.

Every expectation is computed here from the simulator's own chains: which domain block
names which consensus block, and what the fakes were told to hide.  The nodes misbehave
meanwhile, several ways at once (:data:`FAULTS`): errors, dropped connections, jitter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from blocktimesd.aio.chain import IN_PLACE_ATTEMPTS, ChainReader
from blocktimesd.aio.rpc import RpcClient, RpcSettings
from blocktimesd.backfill.engine import Backfill, BackfillSettings, ChainResult
from blocktimesd.backfill.fetch import Block, BlockFetcher, Landing
from blocktimesd.backfill.mapping import ConsensusMap, Mapped
from blocktimesd.core.chains import ChainKind
from blocktimesd.core.ranges import Span
from blocktimesd.dataset.records import Unmapped
from blocktimesd.dataset.writer import ParquetWriter
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.chain import Block as SimBlock
from blocktimesd.devnet.params import ChainParams, FaultParams
from blocktimesd.errors import ConnectionLost, RetryPolicy
from tests.test_backfill import FAULTS

K = 20
PARAMS = ChainParams(seed=11, history=500, fork_rate=0.3, stall_every_s=0)
DOMAIN = "auto-evm"
OTHER_HASH = "0x" + "ee" * 32  # a canonical hash no block of the network has


class ConsensusNode:
    """The consensus node as :class:`ConsensusMap` asks it: the simulator's, except that
    it knows no header of the hashes in ``unknown`` and names another block canonical at
    the numbers in ``orphaned``."""

    def __init__(self, client: RpcClient, unknown: set[str], orphaned: set[int]) -> None:
        self.client = client
        self.settings = client.settings
        self.shown_endpoint = client.shown_endpoint
        self.unknown = unknown
        self.orphaned = orphaned

    async def call_many(self, calls: Sequence[tuple[str, list[Any]]], **kwargs: Any) -> list[Any]:
        answers = await self.client.call_many(calls, **kwargs)
        return [
            None if method == "chain_getHeader" and params[0] in self.unknown else answer
            for (method, params), answer in zip(calls, answers, strict=True)
        ]

    async def call(self, method: str, *params: Any) -> Any:
        answer = await self.client.call(method, *params)
        if method == "chain_getBlockHash" and isinstance(params[0], list):
            return [
                OTHER_HASH if number in self.orphaned else found
                for number, found in zip(params[0], answer, strict=True)
            ]
        return answer


class DigestlessFetcher(BlockFetcher):
    """Fetches as the engine's own fetcher does, then drops the ``RGTR`` item's hash from
    the blocks numbered in ``digestless``: domain headers that name no consensus block."""

    digestless: frozenset[int] = frozenset()

    async def fetch(self, window: Span, landing: Landing | None = None) -> list[Block]:
        blocks = await super().fetch(window, landing)
        return [
            b._replace(facts=b.facts._replace(consensus_hash=None))
            if b.number in self.digestless
            else b
            for b in blocks
        ]


@dataclass
class Network:
    """The running simulator, a client for each chain, and the domain's last K-deep block."""

    devnet: Devnet
    consensus: RpcClient
    domain: RpcClient
    last: int

    def source(self, number: int) -> SimBlock:
        """The consensus block domain block ``number`` was built from."""
        link = self.devnet.network.domain.canonical[number].link
        assert link is not None
        return link

    @property
    def consensus_best(self) -> int:
        return self.devnet.network.consensus.best.number


@asynccontextmanager
async def network(faults: FaultParams = FAULTS) -> AsyncIterator[Network]:
    devnet = Devnet(PARAMS, faults)
    async with devnet as urls:
        consensus = RpcClient(RpcSettings(endpoints=(urls.consensus,)), "consensus")
        domain = RpcClient(RpcSettings(endpoints=(urls.domain,)), DOMAIN)
        async with consensus, domain:
            await consensus.wait_ready(10)
            await domain.wait_ready(10)
            last = devnet.network.domain.best.number - K
            yield Network(devnet, consensus, domain, last)


async def backfill(
    net: Network,
    data: Path,
    consensus: ConsensusMap | None,
    *,
    window: int = 32,
    digestless: frozenset[int] = frozenset(),
) -> ChainResult:
    reader = ChainReader(net.domain, ChainKind.AUTO_EVM, DOMAIN)
    async with ParquetWriter(data) as writer:
        engine = Backfill(
            reader, DOMAIN, K, writer, data, consensus=consensus,
            settings=BackfillSettings(window=window, blocks_per_task=16),
            retry=RetryPolicy(initial=0.05, cap=0.5),
        )  # fmt: skip
        fetcher = DigestlessFetcher(
            net.domain, DOMAIN, blocks_per_task=16, query_storage=engine.query_storage
        )
        fetcher.digestless = digestless
        engine.fetcher = fetcher
        return await engine.run(Span(1, net.last))


def rows(data: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted((data / "block_times" / f"chain={DOMAIN}").glob("date=*/*.parquet")):
        found.extend(pq.read_table(path).to_pylist())
    return sorted(found, key=lambda r: r["block_number"])


def records(data: Path) -> list[dict[str, Any]]:
    path = data / "reconciliation" / f"{DOMAIN}.jsonl"
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def expected_row(net: Network, number: int, mapped: bool) -> dict[str, Any]:
    block = net.devnet.network.domain.canonical[number]
    source = net.source(number)
    return {
        "block_number": number,
        "hash": block.hash_hex,
        "consensus_block_hash": source.hash_hex if mapped else None,
        "consensus_block_number": source.number if mapped else None,
    }


def row_view(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in ("block_number", "hash", "consensus_block_hash",
                                      "consensus_block_number")}  # fmt: skip


def record_view(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["chain"], record["block_number"], record["hash"],
            record["consensus_block_hash"], record["reason"])  # fmt: skip


async def test_each_unmapped_reason_ends_in_a_record_and_a_row_without_consensus_block(
    tmp_path: Path,
) -> None:
    async with network() as net:
        last = net.last
        assert last > 120
        digestless = frozenset({7, 8})
        unknown = {net.source(40).hash_hex}
        orphaned = {net.source(90).number}
        fake = ConsensusNode(net.consensus, unknown, orphaned)
        consensus = ConsensusMap(fake, net.consensus_best)  # type: ignore[arg-type]
        result = await backfill(net, tmp_path, consensus, digestless=digestless)

        want_rows, want_records = [], []
        for number in range(1, last + 1):
            block, source = net.devnet.network.domain.canonical[number], net.source(number)
            reason = (
                Unmapped.NO_DIGEST if number in digestless
                else Unmapped.UNKNOWN if source.hash_hex in unknown
                else Unmapped.ORPHANED if source.number in orphaned
                else None
            )  # fmt: skip
            want_rows.append(expected_row(net, number, reason is None))
            if reason is not None:
                named = None if reason is Unmapped.NO_DIGEST else source.hash_hex
                want_records.append((DOMAIN, number, block.hash_hex, named, reason.value))
    assert {r[4] for r in want_records} == {u.value for u in Unmapped} - {
        Unmapped.NO_CONSENSUS_CHAIN.value
    }
    assert [row_view(r) for r in rows(tmp_path)] == want_rows
    assert [record_view(r) for r in records(tmp_path)] == want_records
    assert result.written == last
    assert result.unresolved == len(want_records)
    assert result.stopped_at is None
    assert result.failed == ()


async def test_without_a_consensus_chain_every_domain_row_gets_a_record(tmp_path: Path) -> None:
    async with network() as net:
        result = await backfill(net, tmp_path, None)
        want_records = [
            (DOMAIN, n, net.devnet.network.domain.canonical[n].hash_hex, net.source(n).hash_hex,
             Unmapped.NO_CONSENSUS_CHAIN.value)
            for n in range(1, net.last + 1)
        ]  # fmt: skip
        want_rows = [expected_row(net, n, False) for n in range(1, net.last + 1)]
    assert [row_view(r) for r in rows(tmp_path)] == want_rows
    assert [record_view(r) for r in records(tmp_path)] == want_records
    assert result.unresolved == result.written == net.last


@pytest.mark.parametrize("at_window_start", [False, True])
async def test_a_domain_block_whose_consensus_block_is_not_k_deep_stops_the_run(
    tmp_path: Path, at_window_start: bool
) -> None:
    async with network() as net:
        # The confirmed consensus tip lies below the source of a domain block half-way.
        middle = net.last // 2
        confirmed = net.source(middle).number - 1
        stop = next(n for n in range(1, net.last + 1) if net.source(n).number > confirmed)
        assert 40 < stop <= middle
        window = stop - 1 if at_window_start else 32
        assert at_window_start or (stop - 1) % window != 0  # the stop is inside a window
        consensus = ConsensusMap(net.consensus, confirmed)
        result = await backfill(net, tmp_path, consensus, window=window)
        want_rows = [expected_row(net, n, True) for n in range(1, stop)]
    assert [row_view(r) for r in rows(tmp_path)] == want_rows
    assert records(tmp_path) == []
    assert result.stopped_at == stop
    assert result.written == stop - 1
    assert result.span == Span(1, net.last)
    assert result.failed == ()


async def test_a_stopped_domain_resumes_where_it_stopped(tmp_path: Path) -> None:
    async with network() as net:
        confirmed = net.source(net.last // 2).number - 1
        first = await backfill(net, tmp_path, ConsensusMap(net.consensus, confirmed))
        assert first.stopped_at is not None
        second = await backfill(net, tmp_path, ConsensusMap(net.consensus, net.consensus_best))
        want_rows = [expected_row(net, n, True) for n in range(1, net.last + 1)]
    assert second.skipped == first.stopped_at - 1
    assert second.written == net.last - first.stopped_at + 1
    assert second.stopped_at is None
    assert [row_view(r) for r in rows(tmp_path)] == want_rows


class DroppingNode(ConsensusNode):
    """Loses the connection under the first ``drops`` lookups asked of it."""

    def __init__(self, client: RpcClient, drops: int) -> None:
        super().__init__(client, set(), set())
        self.drops = drops
        self.lookups = 0

    async def call_many(self, calls: Sequence[tuple[str, list[Any]]], **kwargs: Any) -> list[Any]:
        self.lookups += 1
        if self.drops:
            self.drops -= 1
            raise ConnectionLost("consensus: connection lost (dropped under the lookup)")
        return await super().call_many(calls, **kwargs)


@pytest.mark.parametrize("drops", [1, IN_PLACE_ATTEMPTS - 1, IN_PLACE_ATTEMPTS])
async def test_a_lookup_cut_short_by_a_lost_connection_is_asked_again_in_place(
    drops: int,
) -> None:
    # A lost connection costs the lookup a re-ask, not the window a fetch: a bounded one.
    # The node drops only where told (its own drops would take tries at random).
    async with network(FaultParams()) as net:
        wanted = [net.source(n).hash_hex for n in range(1, 41)]
        expected = {h: Mapped(net.source(n).number) for n, h in enumerate(wanted, 1)}
        node = DroppingNode(net.consensus, drops)
        lookup = ConsensusMap(node, net.consensus_best)  # type: ignore[arg-type]
        if drops < IN_PLACE_ATTEMPTS:
            assert await lookup.resolve(wanted) == expected
            assert node.lookups == drops + 1
        else:
            with pytest.raises(ConnectionLost, match="dropped under the lookup"):
                await lookup.resolve(wanted)
            assert node.lookups == IN_PLACE_ATTEMPTS
