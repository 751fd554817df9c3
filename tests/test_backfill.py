"""``blocktimesd backfill`` against the simulated network: the dataset it writes equals
the network's canonical chains, whatever was on disk before and however it was stopped."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import itertools
import random
import weakref
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from blocktimesd.aio.chain import ChainReader
from blocktimesd.aio.rpc import RpcClient, RpcSettings
from blocktimesd.backfill.engine import Backfill, BackfillSettings, ChainResult
from blocktimesd.backfill.fetch import Block, BlockFetcher, Landing
from blocktimesd.backfill.reads import choose_batch_size
from blocktimesd.commands.backfill import (
    add_backfill_arguments,
    backfill_args_from_range,
    rewrite_backfill_range,
    run_backfill,
    split_range,
    summary,
)
from blocktimesd.core.chains import ChainKind
from blocktimesd.core.ranges import Span
from blocktimesd.dataset.layout import parse_file_name
from blocktimesd.dataset.writer import ParquetWriter
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.content import ConsensusFacts
from blocktimesd.devnet.network import Network
from blocktimesd.devnet.params import ChainParams, FaultParams
from blocktimesd.errors import ConfigError, MalformedAnswer, RetryPolicy, RpcError
from tests.chopsticks import conftest as chopsticks
from tests.daemon import row_of

chopsticks_spec = chopsticks.chopsticks_spec  # the fixture, for the chopsticks test below

K = 20  # --k for both chains
PARAMS = ChainParams(seed=7, history=700, fork_rate=0.3, upgrade_at=300, stall_every_s=0)
# A node that misbehaves a little all the time: error answers, dropped connections, jitter.
FAULTS = FaultParams(error_rate=0.01, drop_connections_every_s=0.5, latency_jitter_ms=2)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_backfill_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("DATA_DIR", "K_CONSENSUS", "K_AUTO_EVM", "CONSENSUS_RPC_WS", "AUTO_EVM_RPC_WS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def point_at(devnet: Devnet, env: pytest.MonkeyPatch) -> None:
    assert devnet.urls is not None
    env.setenv("CONSENSUS_RPC_WS", devnet.urls.consensus)
    env.setenv("AUTO_EVM_RPC_WS", devnet.urls.domain)


async def backfill(data: Path, *argv: str) -> int:
    return await run_backfill(parse("--data", str(data), "--window", "128", *argv))


def read_rows(data: Path, chain: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted((data / "block_times" / f"chain={chain}").glob("date=*/*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return sorted(rows, key=lambda r: r["block_number"])


def without_ingestion(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "ingestion_ts_ms"} for r in rows]


def check_no_duplicates(data: Path, chain: str) -> list[int]:
    numbers = [r["block_number"] for r in read_rows(data, chain)]
    assert len(numbers) == len(set(numbers)), "duplicate rows"
    spans = sorted(
        (s.first, s.last)
        for p in (data / "block_times" / f"chain={chain}").glob("date=*/*.parquet")
        if (s := parse_file_name(p.name)) is not None
    )
    for (_, last), (first, _) in itertools.pairwise(spans):
        assert first > last, "files overlap"
    return numbers


def check_consensus(rows: list[dict[str, Any]], network: Network) -> None:
    canonical = network.consensus.canonical
    for row in rows:
        block = canonical[row["block_number"]]
        assert row["hash"] == block.hash_hex
        parent = block.parent
        assert parent is not None
        assert row["parent_hash"] == parent.hash_hex
        assert row["timestamp_ms"] == block.timestamp_ms
        expected = None if parent.timestamp_ms is None else block.timestamp_ms - parent.timestamp_ms  # type: ignore[operator]
        assert row["delta_since_parent_ms"] == expected
        facts = block.facts
        assert isinstance(facts, ConsensusFacts)
        assert row["bundle_count"] == facts.bundles
        assert row["contained_store_segment_headers"] == bool(facts.segments)
        assert row["slot"] == facts.slot
        assert row["spec_version"] == facts.body_spec
        assert row["consensus_block_hash"] is None
        assert row["consensus_block_number"] is None


def check_domain(rows: list[dict[str, Any]], network: Network) -> None:
    for row in rows:
        block = network.domain.canonical[row["block_number"]]
        assert row["hash"] == block.hash_hex
        assert block.link is not None
        assert block.parent is not None
        assert row["timestamp_ms"] == block.link.timestamp_ms
        if block.parent.timestamp_ms is not None:
            assert row["delta_since_parent_ms"] == block.timestamp_ms - block.parent.timestamp_ms  # type: ignore[operator]
        assert row["consensus_block_hash"] == block.link.hash_hex
        assert row["consensus_block_number"] == block.link.number
        assert row["spec_version"] == block.facts.body_spec
        assert row["bundle_count"] is None
        assert row["slot"] is None


async def test_backfill_equals_the_canonical_chains_and_range_storage_agrees(
    tmp_path: Path, env: pytest.MonkeyPatch
) -> None:
    devnet = Devnet(PARAMS, dataclasses.replace(FAULTS, unsafe_rpc=True))
    async with devnet:
        point_at(devnet, env)
        network = devnet.network
        tip = network.consensus.best.number
        args = ("--start", "1", "--end", str(tip), "--k", str(K))
        assert await backfill(tmp_path / "a", *args, "--storage", "per-block") == 0
        assert await backfill(tmp_path / "b", *args, "--storage", "range") == 0
    consensus = read_rows(tmp_path / "a", "consensus")
    assert [r["block_number"] for r in consensus] == list(range(1, tip - K + 1))  # K clamp
    check_consensus(consensus, network)
    assert len({r["spec_version"] for r in consensus}) == 2  # across the runtime upgrade
    assert sum(r["contained_store_segment_headers"] for r in consensus) >= 1
    domain = read_rows(tmp_path / "a", "auto-evm")
    assert len(domain) > 300
    assert [r["block_number"] for r in domain] == list(range(1, len(domain) + 1))
    check_domain(domain, network)
    for chain in ("consensus", "auto-evm"):
        # The chain moves on meanwhile (the faults slow both runs): the second run may
        # reach further below the later tip; where both wrote, they agree.
        per_block = without_ingestion(read_rows(tmp_path / "a", chain))
        by_range = without_ingestion(read_rows(tmp_path / "b", chain))
        assert len(by_range) >= len(per_block)
        assert by_range[: len(per_block)] == per_block
        assert [r["block_number"] for r in by_range] == list(range(1, len(by_range) + 1))
    check_consensus(read_rows(tmp_path / "b", "consensus"), network)
    check_domain(read_rows(tmp_path / "b", "auto-evm"), network)


def data_files(data: Path) -> list[Path]:
    return sorted(data.glob("block_times/**/*.parquet"))


async def test_rerun_and_overlap_with_the_daemon_never_duplicate(
    tmp_path: Path, env: pytest.MonkeyPatch
) -> None:
    devnet = Devnet(dataclasses.replace(PARAMS, history=400))
    async with devnet:
        point_at(devnet, env)
        canonical = devnet.network.consensus.canonical
        # Rows the daemon wrote: 100..149, and a lone 200.
        writer = ParquetWriter(tmp_path)
        await writer.start()
        await writer.put([row_of(canonical[n]) for n in range(100, 150)])
        await writer.flush()
        await writer.put([row_of(canonical[200])])
        await writer.close()
        args = ("--chain", "consensus", "--start", "50", "--count", "250", "--k", str(K))
        assert await backfill(tmp_path, *args) == 0
        first = read_rows(tmp_path, "consensus")
        files = data_files(tmp_path)
        assert await backfill(tmp_path, *args) == 0
        assert data_files(tmp_path) == files  # a no-op re-run writes nothing
        assert await backfill(tmp_path, "--chain", "consensus", "--start", "1", "--end", "320",
                              "--k", str(K)) == 0  # fmt: skip
    assert read_rows(tmp_path, "consensus")[49:299] == first
    numbers = check_no_duplicates(tmp_path, "consensus")
    assert numbers == list(range(1, 321))
    check_consensus(read_rows(tmp_path, "consensus"), devnet.network)


async def test_interrupted_backfill_flushes_and_resumes(
    tmp_path: Path, env: pytest.MonkeyPatch
) -> None:
    devnet = Devnet(dataclasses.replace(PARAMS, history=1200), FaultParams(latency_ms=5))
    async with devnet:
        point_at(devnet, env)
        # One connection: a pool of several would fetch the range before the interrupt.
        args = ("--chain", "consensus", "--start", "1", "--end", "1100", "--k", str(K),
                "--max-inflight", "4", "--batch-size", "1", "--window", "64",
                "--connections", "1")  # fmt: skip
        task = asyncio.create_task(backfill(tmp_path, *args))
        await asyncio.sleep(1.5)  # a window takes ~0.2 s, the range ~5 s
        task.cancel()
        assert await task == 130
        done = check_no_duplicates(tmp_path, "consensus")
        assert 0 < len(done) < 1100
        assert done == list(range(1, len(done) + 1))  # flushed in order, up to the stop
        assert await backfill(tmp_path, *args) == 0
    numbers = check_no_duplicates(tmp_path, "consensus")
    assert numbers == list(range(1, 1101))
    check_consensus(read_rows(tmp_path, "consensus"), devnet.network)


async def test_pruned_node_says_use_an_archive_node(
    tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    devnet = Devnet(dataclasses.replace(PARAMS, history=400), FaultParams(prune_state=100))
    async with devnet:
        point_at(devnet, env)
        code = await backfill(tmp_path, "--chain", "consensus", "--start", "10", "--end", "50")
    assert code == 1
    assert "this node is pruned; use an archive node" in capsys.readouterr().err
    assert read_rows(tmp_path, "consensus") == []


async def test_date_times_resolve_to_blocks(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    devnet = Devnet(dataclasses.replace(PARAMS, history=400, fork_rate=0.0))
    async with devnet:
        point_at(devnet, env)
        canonical = devnet.network.consensus.canonical

        def iso(ms: int) -> str:
            return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")

        start, end = canonical[120].timestamp_ms, canonical[180].timestamp_ms
        assert start is not None
        assert end is not None
        code = await backfill(tmp_path, "--chain", "consensus", "--start", iso(start - 1),
                              "--end", iso(end), "--k", str(K))  # fmt: skip
    assert code == 0
    numbers = [r["block_number"] for r in read_rows(tmp_path, "consensus")]
    assert numbers == list(range(120, 180))  # an end date-time is exclusive


class FlakyFetcher(BlockFetcher):
    """Fetches over blocks 150..160 fail with ``error``: the first ``failures`` of them
    (``None``: all)."""

    error: Exception = RpcError(-32603, "Internal error", "injected")  # transient
    failures: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failed = 0

    async def _fetch_chunk(self, first: int, last: int, **kwargs: Any) -> Any:
        if first <= 160 and last >= 150 and (self.failures is None or self.failed < self.failures):
            self.failed += 1
            raise self.error
        return await super()._fetch_chunk(first, last, **kwargs)


class RecordingRng(random.Random):
    """Jitter that records the ranges it was asked for, and answers their low end."""

    def __init__(self) -> None:
        super().__init__(0)
        self.asked: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.asked.append((a, b))
        return a


@pytest.mark.parametrize(
    ("error", "kind", "tries"),
    [
        (MalformedAnswer("injected: a header that is not one"), "node fault", 3),
        (RpcError(-32603, "Internal error", "injected"), "transient error", 5),
    ],
)
async def flaky_backfill(
    data: Path, settings: BackfillSettings, retry: RetryPolicy, **flaws: Any
) -> tuple[ChainResult, FlakyFetcher, Devnet]:
    """Blocks 1-250 backfilled through a :class:`FlakyFetcher` with ``flaws``."""
    devnet = Devnet(dataclasses.replace(PARAMS, history=300))
    async with devnet as urls:
        rpc = RpcSettings(endpoints=(urls.consensus,), max_inflight=16)
        async with RpcClient(rpc, "consensus") as client, ParquetWriter(data) as writer:
            await client.wait_ready(10)
            reader = ChainReader(client, ChainKind.CONSENSUS, "consensus")
            engine = Backfill(reader, "consensus", K, writer, data, settings=settings, retry=retry)
            fetcher = FlakyFetcher(client, "consensus", blocks_per_task=25,
                                   query_storage=engine.query_storage)  # fmt: skip
            for name, value in flaws.items():
                setattr(fetcher, name, value)
            engine.fetcher = fetcher
            return await engine.run(Span(1, 250)), fetcher, devnet


@pytest.mark.parametrize(
    ("error", "kind", "tries"),
    [
        (MalformedAnswer("injected: a header that is not one"), "node fault", 3),
        (RpcError(-32603, "Internal error", "injected"), "transient error", 5),
    ],
)
async def test_failed_windows_are_retried_then_listed(
    tmp_path: Path, error: Exception, kind: str, tries: int
) -> None:
    """Node faults and transient errors each have their own bound (3 and 5 here): a
    window is fetched that many times, with the policy's delays, then listed."""
    rng = RecordingRng()
    settings = BackfillSettings(window=50, blocks_per_task=25, attempts=3, transient_attempts=5)
    result, _, devnet = await flaky_backfill(
        tmp_path, settings, RetryPolicy(initial=0.02, cap=0.08, rng=rng), error=error
    )
    assert result.failed == (Span(101, 200),)
    assert "FAILED blocks: 101-200" in summary(result)
    assert len(result.errors) == 2
    assert all(f"({tries} tries: " in line for line in result.errors)
    assert all(f"{tries} {kind}(s) of {tries} allowed" in line for line in result.errors)
    # Two windows (101-150, 151-200), each fetched ``tries`` times: ``tries - 1`` waits
    # each, with the policy's jitter, doubling up to the cap.
    waits = [(0.01, 0.02), (0.02, 0.04), (0.04, 0.08), (0.04, 0.08)][: tries - 1]
    assert rng.asked == waits * 2
    numbers = check_no_duplicates(tmp_path, "consensus")
    assert numbers == [*range(1, 101), *range(201, 251)]
    check_consensus(read_rows(tmp_path, "consensus"), devnet.network)


async def test_transient_errors_beyond_the_node_fault_bound_are_ridden_out(
    tmp_path: Path,
) -> None:
    """A node that fails the fetches over blocks 150..160 eight times with a transient
    error (so one of the two windows over them at least four times: more than the 3
    node faults allowed) loses no block."""
    settings = BackfillSettings(window=50, blocks_per_task=25, attempts=3)
    result, fetcher, devnet = await flaky_backfill(
        tmp_path, settings, RetryPolicy(initial=0.01, cap=0.02), failures=8
    )
    assert result.failed == ()
    assert fetcher.failed == 8
    assert check_no_duplicates(tmp_path, "consensus") == list(range(1, 251))
    check_consensus(read_rows(tmp_path, "consensus"), devnet.network)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--start", "soon", "--end", "5"), "neither a block number nor a date-time"),
        (("--chain", "nope", "--start", "1", "--end", "5"), "not a configured chain"),
        (("--start", "1", "--end", "5", "--rpc", "ws://127.0.0.1:1"), "--chain NAME"),
        (("--start", "1", "--end", "5", "--kind", "generic"), "add --rpc URL"),
    ],
)
async def test_usage_errors_exit_2(
    tmp_path: Path,
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    message: str,
) -> None:
    assert await backfill(tmp_path, *argv) == 2
    assert message in capsys.readouterr().err


def test_backfill_range_becomes_the_subcommand() -> None:
    assert backfill_args_from_range("10:20", ["--chain", "consensus"]) == [
        "backfill", "--backfill-range", "10:20", "--chain", "consensus",
    ]  # fmt: skip
    assert split_range("2025-08-01T00:00:00Z:2025-08-02") == ("2025-08-01T00:00:00Z", "2025-08-02")
    assert rewrite_backfill_range(["--log-level", "DEBUG", "--backfill-range", "1:2"]) == [
        "backfill", "--backfill-range", "1:2", "--log-level", "DEBUG",
    ]  # fmt: skip
    assert rewrite_backfill_range(["run"]) is None
    assert rewrite_backfill_range(["backfill", "--backfill-range", "1:2"]) is None
    with pytest.raises(ConfigError):
        backfill_args_from_range("10-20")


@pytest.fixture
def chopsticks_url(chopsticks_spec: Path, tmp_path: Path) -> Iterator[str]:
    """A chopsticks node of this test's own (it makes blocks)."""
    with chopsticks.running_chopsticks(chopsticks_spec, tmp_path) as url:
        yield url


@pytest.mark.chopsticks
async def test_ad_hoc_generic_chain_on_chopsticks(
    chopsticks_url: str, tmp_path: Path, env: pytest.MonkeyPatch
) -> None:
    settings = RpcSettings(endpoints=(chopsticks_url,), request_timeout=60)
    async with RpcClient(settings, "rococo-ah") as client:
        await client.wait_ready(60)
        await client.call("dev_newBlock", {"count": 30}, timeout=120)
    code = await run_backfill(
        parse("--chain", "rococo-ah", "--rpc", chopsticks_url, "--kind", "generic",
              "--start", "1", "--end", "30", "--k", "0", "--data", str(tmp_path / "data"))
    )  # fmt: skip
    assert code == 0
    rows = read_rows(tmp_path / "data", "rococo-ah")
    assert [r["block_number"] for r in rows] == list(range(1, 31))
    assert all(r["delta_since_parent_ms"] == 12_000 for r in rows[1:])
    assert all(r["bundle_count"] is None and r["slot"] is None for r in rows)


async def test_batches_follow_how_long_the_node_takes_per_call() -> None:
    # A node answering in microseconds gets the largest batches; one that takes tens of
    # milliseconds per call (run one after another within a batch) gets single calls.
    net = Devnet(ChainParams(seed=3, history=20), FaultParams())
    async with net:
        assert net.urls is not None
        for batch_size, latency_ms, expected in ((64, 0, {64}), (64, 40, {1, 2}), (1, 0, {1})):
            net.set_faults(latency_ms=latency_ms)
            settings = RpcSettings((net.urls.consensus,), batch_size=batch_size)
            async with RpcClient(settings, "consensus") as client:
                await client.wait_ready(5)
                assert await choose_batch_size(client, "consensus") in expected


class TimedNode:
    """A node whose answers take the times scripted, in order, on a clock of its own."""

    def __init__(self, batch_size: int, durations: list[float]) -> None:
        self.settings = RpcSettings(("ws://127.0.0.1:9",), batch_size=batch_size)
        self.durations = durations
        self.now = 0.0
        self.asked: list[int] = []

    def clock(self) -> float:
        return self.now

    async def call_many(self, calls: list[Any], batch_size: int) -> list[Any]:
        self.asked.append(len(calls))
        self.now += self.durations.pop(0)
        return ["0x00"] * len(calls)


async def test_a_single_call_slowed_by_a_reconnect_is_timed_again() -> None:
    # The first single call waited for a reconnect (174 ms); the batch of 4 took 12 ms,
    # faster than that one call: the single call is timed again (2 ms), so calls cost
    # about 3.3 ms each and batches hold 6, not the largest (64).
    node = TimedNode(64, [0.174, 0.012, 0.002])
    size = await choose_batch_size(node, "consensus", clock=node.clock)  # type: ignore[arg-type]
    assert node.asked == [1, 4, 1]
    assert 5 <= size <= 6  # 20 ms of budget / 3.3 ms a call (without the re-timing: 64)


def test_storage_answers_are_read_whatever_the_order_of_keys() -> None:
    client = RpcClient(RpcSettings(("ws://127.0.0.1:9",)), "consensus")  # never started
    fetcher = BlockFetcher(client, "consensus", blocks_per_task=1, query_storage=False)
    fetcher.keys = ["0xaa", "0xbb"]
    answers = [
        [{"block": "0x01", "changes": [["0xaa", "0x01"], ["0xbb", None]]}],
        [{"block": "0x02", "changes": [["0xbb", "0x02"], ["0xaa", "0x03"]]}],
        [{"block": "0x03", "changes": [["0xaa", "0x04"]]}],
        [],
    ]
    values = fetcher._values([1, 2, 3, 4], ["0x01", "0x02", "0x03", "0x04"], answers)
    assert [list(v) for v in values] == [
        ["0x01", None],
        ["0x03", "0x02"],
        ["0x04", None],
        [None, None],
    ]
    with pytest.raises(MalformedAnswer, match="state_queryStorageAt answered"):
        fetcher._values([1], ["0x01"], [[{"block": "0x01"}]])


class Recorder:
    """A progress sink that keeps what it was told, and how many rows were written then."""

    def __init__(self, total: int, written: Callable[[], int]) -> None:
        self.total = total
        self.written = written
        self.seen: list[tuple[int, int]] = []  # (blocks reported so far, rows written then)
        self.closed: int | None = None

    def advance(self, count: int) -> None:
        done = (self.seen[-1][0] if self.seen else 0) + count
        self.seen.append((done, self.written()))

    def close(self, done: int) -> None:
        self.closed = done


class CountingWriter(ParquetWriter):
    rows = 0

    async def put(self, item: Any) -> None:
        if isinstance(item, list):
            self.rows += len(item)
        await super().put(item)


async def test_progress_counts_blocks_as_they_arrive_and_ends_on_the_rows_written(
    tmp_path: Path,
) -> None:
    devnet = Devnet(dataclasses.replace(PARAMS, history=400), FaultParams(latency_ms=2))
    recorders: list[Recorder] = []
    async with devnet as urls:
        settings = RpcSettings(endpoints=(urls.consensus,), max_inflight=2, batch_size=1)
        async with RpcClient(settings, "consensus") as client, CountingWriter(tmp_path) as writer:
            await client.wait_ready(10)

            def progress(label: str, total: int) -> Recorder:
                recorders.append(Recorder(total, lambda: writer.rows))
                return recorders[-1]

            engine = Backfill(
                ChainReader(client, ChainKind.CONSENSUS, "consensus"), "consensus", K, writer,
                tmp_path, settings=BackfillSettings(window=128), progress=progress,
            )  # fmt: skip
            result = await engine.run(Span(1, 300))
    (recorder,) = recorders
    assert recorder.total == 300
    done = [count for count, _ in recorder.seen]
    assert done == sorted(done)
    # Counted as blocks arrive (16 at a time with single calls), not as windows are written.
    assert len(done) >= 300 // 16
    assert any(count > 0 and rows == 0 for count, rows in recorder.seen)
    assert done[-1] == 300
    assert recorder.closed == result.written == 300


async def test_progress_of_a_domain_stopped_early_ends_on_the_rows_written(
    tmp_path: Path, env: pytest.MonkeyPatch
) -> None:
    recorders: dict[str, Recorder] = {}

    def progress(label: str, total: int) -> Recorder:
        recorders[label] = Recorder(total, lambda: 0)
        return recorders[label]

    env.setattr("blocktimesd.commands.backfill_app._progress", progress)
    devnet = Devnet(PARAMS)
    async with devnet:
        point_at(devnet, env)
        # Domain blocks K deep whose consensus blocks are not yet K_CONSENSUS deep: the
        # domain's backfill stops at the first of them.
        env.setenv("K_CONSENSUS", "200")
        env.setenv("K_AUTO_EVM", str(K))
        tip = devnet.network.consensus.best.number
        code = await backfill(tmp_path, "--start", "1", "--end", str(tip), "--batch-size", "1")
    assert code == 0
    for chain in ("consensus", "auto-evm"):
        recorder = recorders[chain]
        assert recorder.closed == len(read_rows(tmp_path, chain))
        assert len(recorder.seen) > recorder.total // 128  # more often than once a window
    domain = recorders["auto-evm"]
    assert domain.closed is not None
    assert domain.closed < domain.total  # stopped early: not "325/325 (100.0%)"


async def test_an_interrupt_keeps_the_rows_of_a_large_window_fetched_so_far(
    tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    devnet = Devnet(dataclasses.replace(PARAMS, history=1200), FaultParams(latency_ms=5))
    async with devnet:
        point_at(devnet, env)
        args = ("--chain", "consensus", "--start", "1", "--end", "1100", "--k", str(K),
                "--max-inflight", "1", "--batch-size", "1", "--window", "4096")  # fmt: skip
        task = asyncio.create_task(run_backfill(parse("--data", str(tmp_path), *args)))
        await asyncio.sleep(2.0)  # the one window takes ~12 s
        task.cancel()
        assert await task == 130
    done = check_no_duplicates(tmp_path, "consensus")
    assert len(done) > 16
    assert done == list(range(1, len(done) + 1))
    check_consensus(read_rows(tmp_path, "consensus"), devnet.network)
    err = capsys.readouterr().err
    assert f"consensus: blocks 1-1100: {len(done):,} rows written" in err


class HeldBlocks(list[Block]):
    """A window's blocks as the fetcher returns them, in a list weak references follow."""


async def test_a_written_window_is_let_go_before_another_is_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Memory holds ``lookahead`` windows of blocks: when a window's fetch starts, the
    # windows written ``lookahead`` windows before it are no longer referenced.
    window, lookahead = 32, 2
    devnet = Devnet(dataclasses.replace(PARAMS, history=400), FaultParams())
    returned: dict[int, weakref.ref[HeldBlocks]] = {}
    alive: dict[int, list[int]] = {}  # a window's first block -> windows alive at its start
    async with devnet as urls:
        settings = RpcSettings(endpoints=(urls.consensus,))
        async with RpcClient(settings, "consensus") as client, ParquetWriter(tmp_path) as writer:
            await client.wait_ready(10)
            engine = Backfill(
                ChainReader(client, ChainKind.CONSENSUS, "consensus"), "consensus", K, writer,
                tmp_path, settings=BackfillSettings(window=window, lookahead=lookahead),
            )  # fmt: skip
            fetch = engine.fetcher.fetch

            async def recording(span: Span, landing: Landing | None = None) -> list[Block]:
                gc.collect()
                alive[span.first] = sorted(n for n, ref in returned.items() if ref() is not None)
                blocks = HeldBlocks(await fetch(span, landing))
                returned[span.first] = weakref.ref(blocks)
                return blocks

            monkeypatch.setattr(engine.fetcher, "fetch", recording)
            result = await engine.run(Span(1, 300))
    assert result.written == 300
    assert not result.failed
    starts = sorted(alive)
    assert starts == list(range(1, 301, window))
    for first in starts[lookahead:]:
        assert all(n > first - lookahead * window for n in alive[first]), (first, alive[first])
