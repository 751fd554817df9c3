"""Every metric the alerts, their unit tests, the dashboard and the docs name is one the
daemon defines, and the runbook's metrics table lists every one it defines, with its
type and labels.

Checked against the metric families :class:`Metrics` registers on a fresh registry, so
series that appear only at their first event (a second label such as ``outcome`` or
``kind``) count too; ``test_dashboard_and_metric_names`` checks the same queries
against a live ``/metrics`` of the daemon following the devnet.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from blocktimesd.aio.metrics import Metrics

yaml = pytest.importorskip("yaml", reason="pyyaml is a dev dependency: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "tests" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "blocktimesd.json"
RUNBOOK = ROOT / "docs" / "runbook" / "operations.md"
DOCS = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
NAME = re.compile(r"\bblocktimes_[a-z0-9_]+\b")
# | `name` | type | `label`, `label` | what |
ROW = re.compile(r"^\| `(blocktimes_[a-z0-9_]+)` \| (\w+) \|([^|]*)\|", re.MULTILINE)
CHAIN = "consensus"


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    type: str
    labels: frozenset[str] | None  # None: no sample to read them from

    @property
    def queried(self) -> set[str]:
        """The names PromQL queries it by (no ``_created``: the daemon disables them)."""
        if self.type == "counter":
            return {f"{self.name}_total"}
        if self.type == "histogram":
            return {self.name, *(f"{self.name}_{s}" for s in ("bucket", "count", "sum"))}
        if self.type == "info":
            return {f"{self.name}_info"}
        return {self.name}

    @property
    def documented(self) -> str:
        """The name the runbook's table lists it under."""
        return self.name if self.type == "histogram" else min(self.queried)


def _exercised() -> CollectorRegistry:
    """A registry whose metrics have seen one event each, so their labels show."""
    now = 1_700_000_000.0
    registry = CollectorRegistry()
    m = Metrics(registry, chains=[CHAIN], clock=lambda: now)
    m.observe_head(CHAIN, 10, int(now * 1000) - 6000)
    m.observe_confirmed(CHAIN, 5, 6000)
    m.observe_reorg(CHAIN, 2, deep=True)
    m.observe_retry(CHAIN, "transient")
    m.observe_anomaly(CHAIN, "non_positive_delta")
    rpc = m.rpc_observer(CHAIN)
    rpc.request_done("chain_getHeader", "ok", 0.01)
    rpc.connect_failed("ws://node", "refused")
    rpc.dropped("ws://node", "stalled")
    return registry


def families() -> dict[str, Family]:
    found = {}
    for metric in _exercised().collect():
        labels = {k for s in metric.samples for k in s.labels} - {"le"}
        found[metric.name] = Family(
            metric.name, metric.type, frozenset(labels) if metric.samples else None
        )
    return found


def queryable() -> set[str]:
    return {name for family in families().values() for name in family.queried}


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def unit_test_series() -> list[str]:
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    return [series["series"] for test in tests for series in test.get("input_series", [])]


def dashboard_exprs() -> Iterator[str]:
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        for inner in (panel, *panel.get("panels", [])):
            yield from (target["expr"] for target in inner.get("targets", []))
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["definition"]


def table() -> dict[str, tuple[str, frozenset[str]]]:
    text = RUNBOOK.read_text()
    section = text[text.index("\n## Metrics\n") :]
    section = section[: section.index("\n## ", 1)]
    rows = {}
    for name, kind, labels in ROW.findall(section):
        assert name not in rows, f"{name} is listed twice in the metrics table"
        rows[name] = (kind, frozenset(re.findall(r"`([a-z_]+)`", labels)))
    return rows


def test_the_code_defines_the_metrics_this_test_relies_on() -> None:
    names = queryable()
    assert len(families()) >= 25
    assert {
        "blocktimes_writer_rows_pending",
        "blocktimes_writer_last_success_timestamp_seconds",
        "blocktimes_follower_retries_total",
        "blocktimes_block_anomalies_total",
    } <= names


@pytest.mark.parametrize(
    ("source", "texts"),
    [
        ("alerts.yml", rule_exprs),
        ("alerts_test.yml", unit_test_series),
        ("the dashboard", lambda: list(dashboard_exprs())),
    ],
)
def test_deployed_queries_name_only_defined_metrics(source: str, texts: object) -> None:
    assert callable(texts)
    named = {name for text in texts() for name in NAME.findall(text)}
    assert named, f"{source} names no metric"
    unknown = named - queryable()
    assert not unknown, f"{source} names metrics the daemon does not define: {sorted(unknown)}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_name_only_defined_metrics(doc: Path) -> None:
    unknown = set(NAME.findall(doc.read_text())) - queryable()
    assert not unknown, f"{doc.name} names metrics the daemon does not define: {sorted(unknown)}"


def test_the_writer_stuck_alert_follows_failed_writes_not_the_queue() -> None:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    rule = next(r for g in groups for r in g["rules"] if r.get("alert") == "BlocktimesWriterStuck")
    named = set(NAME.findall(rule["expr"]))
    # Both rise while writes fail; the queue can be empty or full either way.
    assert named == {
        "blocktimes_writer_rows_pending",
        "blocktimes_writer_last_success_timestamp_seconds",
    }


def test_the_runbook_lists_every_metric_with_its_type_and_labels() -> None:
    rows = table()
    defined = families()
    by_documented = {family.documented: family for family in defined.values()}
    missing = set(by_documented) - set(rows)
    assert not missing, f"the runbook's metrics table lacks {sorted(missing)}"
    unknown = set(rows) - set(by_documented)
    assert not unknown, f"the runbook's metrics table lists undefined {sorted(unknown)}"
    for name, (kind, labels) in rows.items():
        family = by_documented[name]
        assert kind == family.type, f"{name}: the table says {kind}, the code {family.type}"
        if family.labels is not None:
            assert labels == family.labels, f"{name}: labels {sorted(labels)} in the table"
