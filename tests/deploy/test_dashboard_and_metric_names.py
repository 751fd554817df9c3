"""The Grafana dashboard's shape, and every metric it and the alerts query is one the
daemon exports, checked against a live /metrics of the daemon following the devnet."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from blocktimesd.aio.app import App
from blocktimesd.devnet.app import Devnet
from blocktimesd.devnet.params import ChainParams
from tests.daemon import advance, config_for

yaml = pytest.importorskip("yaml", reason="pyyaml is a dev dependency: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "blocktimesd.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
NAME = re.compile(r"\bblocktimes_[a-z0-9_]+\b")


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[str]:
    board = dashboard()
    queries = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["definition"])
    return queries


def alert_queries() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_dashboard_shape() -> None:
    board = dashboard()
    assert board["uid"] == "blocktimesd"
    assert board["title"] == "blocktimesd"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["chain"]["includeAll"]
    titles = set()
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        titles.add(panel["title"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            if "blocktimes_up" not in target["expr"] and "writer" not in target["expr"]:
                assert 'chain=~"$chain"' in target["expr"], (panel["title"], target["expr"])
    # What an operator looks at, per chain.
    for wanted in (
        "Block time quantiles (last delta_window confirmed blocks)",
        "Block time distribution",
        "Head lag",
        "Seconds since last head",
        "Reorgs per hour",
        "Reorg depth",
        "RPC requests by outcome",
        "RPC error ratio",
        "RPC latency",
        "Rows written per minute",
        "Files written per hour",
        "Writer queue depth",
        "Seconds since the writer's last write",
    ):
        assert wanted in titles


def exported_names(exposition: str) -> set[str]:
    """Sample names as Prometheus stores them (with _total, _bucket, _count, _sum)."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.fixture(scope="module")
def live_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    data = tmp_path_factory.mktemp("names") / "data"

    async def scrape() -> str:
        devnet = Devnet(ChainParams(seed=81, history=40, fork_rate=0.3))
        async with devnet:
            app = App(config_for(devnet, data), registry=CollectorRegistry())
            await app.start()
            runner = asyncio.create_task(app.run())
            assert app.metrics_url is not None
            text = ""
            try:
                async with aiohttp.ClientSession() as session:
                    for _ in range(100):
                        await advance(devnet, 0.2)
                        async with session.get(app.metrics_url) as resp:
                            text = await resp.text()
                        if "blocktimes_block_delta_quantile_seconds{" in text:
                            break
            finally:
                runner.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await runner
            return text

    return exported_names(asyncio.run(scrape()))


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_queried_metrics_are_exported(source: str, live_names: set[str]) -> None:
    queries = dashboard_queries() if source == "dashboard" else alert_queries()
    referenced = {name for query in queries for name in NAME.findall(query)}
    assert len(referenced) >= 10
    missing = referenced - live_names
    assert not missing, f"the {source} queries metrics the daemon does not export: {missing}"


def test_the_dashboard_shows_every_metric_that_matters() -> None:
    shown = {name for query in dashboard_queries() for name in NAME.findall(query)}
    bases = {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in shown}
    assert bases >= {
        "blocktimes_block_delta_quantile_seconds",
        "blocktimes_block_delta_seconds",
        "blocktimes_head_lag_seconds",
        "blocktimes_seconds_since_last_head",
        "blocktimes_reorgs",
        "blocktimes_reorg_depth",
        "blocktimes_deep_reorgs",
        "blocktimes_rpc_requests",
        "blocktimes_rpc_request_duration_seconds",
        "blocktimes_rpc_reconnects",
        "blocktimes_rows_written",
        "blocktimes_files_written",
        "blocktimes_writer_queue_rows",
        "blocktimes_writer_errors",
        "blocktimes_writer_rows_pending",
        "blocktimes_writer_last_success_timestamp_seconds",
    }
