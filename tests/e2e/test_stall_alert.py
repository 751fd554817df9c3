"""A real Prometheus with the shipped configuration and alerts scrapes the daemon; when
the simulated chains stop producing blocks, BlocktimesChainStalled goes pending, then
firing, and resolves once blocks come again."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from blocktimesd.aio.app import App
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams
from tests.daemon import advance, config_for
from tests.prometheus import running_prometheus

yaml = pytest.importorskip("yaml", reason="pyyaml is a dev dependency: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "prometheus"
ALERT = "BlocktimesChainStalled"
# The shipped rule waits 120 s (+30 s); this test waits 3 s (+1 s).
SHIPPED_THRESHOLD, TEST_THRESHOLD, TEST_FOR = "> 120", "> 3", "1s"


def prometheus_config(tmp_path: Path, target: str) -> Path:
    """The shipped prometheus.yml and alerts.yml; only target, intervals and the stall
    threshold changed."""
    groups = yaml.safe_load((SHIPPED / "alerts.yml").read_text())
    changed = 0
    for group in groups["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == ALERT:
                assert rule["expr"].count(SHIPPED_THRESHOLD) == 1, rule["expr"]
                rule["expr"] = rule["expr"].replace(SHIPPED_THRESHOLD, TEST_THRESHOLD)
                rule["for"] = TEST_FOR
                changed += 1
    assert changed == 1
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(groups, sort_keys=False))
    config = yaml.safe_load((SHIPPED / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "blocktimesd"
    job.update(scrape_interval="1s", scrape_timeout="1s")
    job["static_configs"] = [{"targets": [target]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def stall_alerts(session: aiohttp.ClientSession, api: str) -> dict[str, str]:
    """Chain -> state (pending, firing) of the stall alert, from Prometheus' alerts API."""
    with contextlib.suppress(aiohttp.ClientError):
        async with session.get(f"{api}/api/v1/alerts") as resp:
            if resp.status == 200:
                body: dict[str, Any] = await resp.json()
                return {
                    alert["labels"]["chain"]: alert["state"]
                    for alert in body["data"]["alerts"]
                    if alert["labels"]["alertname"] == ALERT
                }
    return {}


async def test_a_stalled_chain_fires_the_stall_alert(
    prometheus_binary: str, tmp_path: Path
) -> None:
    # Nearly frozen clock: the chains move only when the test advances them.
    devnet = Devnet(ChainParams(seed=91, history=40), speed=0.001)
    async with devnet:
        app = App(config_for(devnet, tmp_path / "data"), registry=CollectorRegistry())
        await app.start()
        runner = asyncio.create_task(app.run())
        assert app.metrics_url is not None
        target = app.metrics_url.removeprefix("http://").removesuffix("/metrics")
        config = prometheus_config(tmp_path, target)
        seen: list[dict[str, str]] = []
        try:
            async with (
                running_prometheus(prometheus_binary, config, tmp_path) as api,
                aiohttp.ClientSession() as session,
            ):
                # Blocks flow: Prometheus evaluates the rule and finds nothing to alert on.
                rules_loaded = False
                for _ in range(60):
                    await advance(devnet, 0.5)
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(f"{api}/api/v1/rules") as resp:
                            body = await resp.json() if resp.status == 200 else {}
                        rules = [
                            rule
                            for group in body.get("data", {}).get("groups", [])
                            for rule in group["rules"]
                        ]
                        stalled = [r for r in rules if r["name"] == ALERT]
                        rules_loaded = bool(stalled) and stalled[0].get("health") == "ok"
                        if rules_loaded and stalled[0].get("lastEvaluation", "").startswith("0001"):
                            rules_loaded = False  # not evaluated yet
                    if rules_loaded and app._ready()[0]:
                        break
                assert rules_loaded, "Prometheus did not load and evaluate the shipped rules"
                await advance(devnet, 2.0)
                assert await stall_alerts(session, api) == {}
                # The chains stop: no new head on either.
                for _ in range(120):
                    await asyncio.sleep(0.25)  # pending lasts one evaluation (1 s)
                    state = await stall_alerts(session, api)
                    seen.append(state)
                    if state == {"consensus": "firing", "auto-evm": "firing"}:
                        break
                assert seen[-1] == {"consensus": "firing", "auto-evm": "firing"}, seen
                assert any("pending" in s.values() for s in seen), seen
                # Blocks again: the alert resolves.
                for _ in range(60):
                    await advance(devnet, 0.5)
                    if await stall_alerts(session, api) == {}:
                        break
                assert await stall_alerts(session, api) == {}
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
