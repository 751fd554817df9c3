"""The start of a backfill: what it asks a node before the first block, and what it
loads before then."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from blocktimesd.aio.chain import ChainReader
from blocktimesd.aio.rpc import RpcClient, RpcSettings
from blocktimesd.backfill.engine import Backfill, BackfillSettings, ChainResult
from blocktimesd.commands import loading_modules
from blocktimesd.core.chains import ChainKind
from blocktimesd.core.ranges import Span
from blocktimesd.dataset.writer import ParquetWriter
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams
from blocktimesd.errors import ConnectionLost

K = 20
PARAMS = ChainParams(seed=11, history=300, fork_rate=0.0, upgrade_at=0, stall_every_s=0)


async def backfill_to(data: Path, tip: int | None) -> tuple[ChainResult, int]:
    """Backfill as much as there is, with ``tip`` given to the run (or not); the result
    and the node's best block."""
    devnet = Devnet(PARAMS)
    async with devnet as urls:
        best = devnet.network.consensus.best.number
        rpc = RpcSettings(endpoints=(urls.consensus,), max_inflight=16)
        async with RpcClient(rpc, "consensus") as client, ParquetWriter(data) as writer:
            await client.wait_ready(10)
            reader = ChainReader(client, ChainKind.CONSENSUS, "consensus")
            engine = Backfill(
                reader, "consensus", K, writer, data, settings=BackfillSettings(window=128)
            )
            return await engine.run(Span(1, 10**6), tip), best


async def test_the_tip_the_span_was_chosen_at_is_the_run_s(tmp_path: Path) -> None:
    # The command asks for the tip once, for the span and the run's clamp alike: a tip
    # given to the run is not asked for again (the node's best block is further on).
    given = PARAMS.history // 2
    result, best = await backfill_to(tmp_path / "given", given)
    assert best - K > given - K
    assert result.span == Span(1, given - K)
    assert result.written == given - K


async def test_without_a_tip_the_run_asks_for_it(tmp_path: Path) -> None:
    result, best = await backfill_to(tmp_path / "asked", None)
    assert result.span == Span(1, best - K)
    assert result.written == best - K


class Recording:
    """A client that notes, in order, each call as it is asked and as it is answered."""

    def __init__(self, client: RpcClient, log: list[tuple[str, str, Any]]) -> None:
        self._client = client
        self._log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def call(self, method: str, *params: Any) -> Any:
        self._log.append(("ask", method, params))
        try:
            return await self._client.call(method, *params)
        finally:
            self._log.append(("answered", method, params))

    async def call_many(self, calls: list[tuple[str, list[Any]]], **options: Any) -> Any:
        methods = ",".join(sorted({m for m, _ in calls}))
        self._log.append(("ask", methods, len(calls)))
        try:
            return await self._client.call_many(calls, **options)
        finally:
            self._log.append(("answered", methods, len(calls)))


async def recorded_backfill(
    data: Path, recording: type[Recording]
) -> tuple[ChainResult, list[tuple[str, str, Any]]]:
    """Backfill blocks 1..200 in chunks of 50 through ``recording``; the result and the
    calls noted."""
    log: list[tuple[str, str, Any]] = []
    devnet = Devnet(PARAMS)
    async with devnet as urls:
        rpc = RpcSettings(endpoints=(urls.consensus,), max_inflight=16)
        async with RpcClient(rpc, "consensus") as client, ParquetWriter(data) as writer:
            await client.wait_ready(10)
            noted: Any = recording(client, log)  # an RpcClient in all it is asked
            reader = ChainReader(noted, ChainKind.CONSENSUS, "consensus")
            settings = BackfillSettings(window=128, blocks_per_task=50)
            engine = Backfill(reader, "consensus", K, writer, data, settings=settings)
            result = await engine.run(Span(1, 200), devnet.network.consensus.best.number)
    return result, log


FIRST_CHUNK = ("ask", "chain_getBlockHash", (list(range(50)),))  # the window's parent on


async def test_the_first_hashes_are_asked_for_while_the_runtime_is_read(tmp_path: Path) -> None:
    # The first block request (the hashes of the first chunk) goes out before the
    # runtime's metadata is in, and the fetch takes its answer: it is asked for once.
    result, log = await recorded_backfill(tmp_path, Recording)
    assert result.written == 200
    asked = [i for i, entry in enumerate(log) if entry == FIRST_CHUNK]
    assert len(asked) == 1, log
    metadata = next(
        i for i, entry in enumerate(log) if entry[:2] == ("answered", "state_getMetadata")
    )
    assert asked[0] < metadata, log


class FailingFirst(Recording):
    """Fails the first list of hashes asked for: the connection was lost under it."""

    async def call(self, method: str, *params: Any) -> Any:
        first = not any(what == "ask" and m == method for what, m, _ in self._log)
        if first and method == "chain_getBlockHash" and params and isinstance(params[0], list):
            self._log.append(("ask", method, params))
            raise ConnectionLost("dropped under the first hashes")
        return await super().call(method, *params)


async def test_an_early_ask_that_failed_is_asked_again(tmp_path: Path) -> None:
    result, log = await recorded_backfill(tmp_path, FailingFirst)
    assert (result.written, result.failed) == (200, ())
    assert log.count(FIRST_CHUNK) == 2, log


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_paused_while_modules_load_and_then_as_it_was(enabled: bool) -> None:
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        with loading_modules():
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
        with pytest.raises(ImportError), loading_modules():
            import blocktimesd.no_such_module  # type: ignore[import-not-found]  # noqa: F401
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_the_result_is_a_value() -> None:
    result = ChainResult("consensus", Span(1, 5), written=5)
    assert result == ChainResult("consensus", Span(1, 5), written=5)
    assert result != ChainResult("consensus", Span(1, 5), written=4)
    with pytest.raises(AttributeError):
        result.written = 6  # type: ignore[misc]
