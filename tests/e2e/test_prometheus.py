"""A real Prometheus scrapes the running daemon, which follows the simulated network."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry

from blocktimesd.aio.app import App
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams
from tests.daemon import advance, config_for
from tests.prometheus import PROMETHEUS_CONFIG, query, running_prometheus

# Each series must reach Prometheus for both chains; "positive" ones with a value > 0.
EXPECTED = {
    "blocktimes_best_block": "positive",
    "blocktimes_confirmed_block": "positive",
    "blocktimes_head_lag_seconds": "present",  # negative: the simulated clock runs ahead
    "blocktimes_seconds_since_last_head": "present",
    "blocktimes_block_delta_seconds_count": "positive",
    'blocktimes_block_delta_quantile_seconds{quantile="0.99"}': "positive",
    "blocktimes_reorgs_total": "present",
    "blocktimes_rows_written_total": "positive",
}


async def test_prometheus_scrapes_the_daemon(prometheus_binary: str, tmp_path: Path) -> None:
    devnet = Devnet(ChainParams(seed=51, history=60, fork_rate=0.2))
    async with devnet:
        app = App(config_for(devnet, tmp_path / "data"), registry=CollectorRegistry())
        await app.start()
        runner = asyncio.create_task(app.run())
        assert app.metrics_url is not None
        target = app.metrics_url.removeprefix("http://").removesuffix("/metrics")
        config = tmp_path / "prometheus.yml"
        config.write_text(PROMETHEUS_CONFIG.format(target=target))
        try:
            missing = list(EXPECTED)
            async with (
                running_prometheus(prometheus_binary, config, tmp_path) as api,
                aiohttp.ClientSession() as session,
            ):
                for _ in range(120):
                    await advance(devnet, 0.5)
                    for promql in list(missing):
                        with contextlib.suppress(aiohttp.ClientError):
                            got = await query(session, api, promql)
                            positive = all(v > 0 for v in got.values())
                            if set(got) == {"consensus", "auto-evm"} and (
                                positive or EXPECTED[promql] == "present"
                            ):
                                missing.remove(promql)
                    if not missing:
                        break
                rpc = await query(
                    session, api, 'sum by (chain) (blocktimes_rpc_requests_total{outcome="ok"})'
                )
            assert not missing, f"Prometheus lacks {missing}"
            assert rpc["consensus"] > 0
            assert rpc["auto-evm"] > 0
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
