"""The start of a backfill: what it asks a node before the first block, and what it
loads before then."""

from __future__ import annotations

import gc
from pathlib import Path

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
