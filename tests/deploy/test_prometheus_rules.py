"""The shipped Prometheus configuration and alerts: promtool's checks and unit tests, and
the alerts' links into the runbook."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import debian_tool

yaml = pytest.importorskip("yaml", reason="pyyaml is a dev dependency: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "tests" / "alerts_test.yml"
RUNBOOK = ROOT / "docs" / "runbook" / "operations.md"


@pytest.fixture
def promtool() -> str:
    return debian_tool("promtool", "prometheus")


def run(*argv: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_check_config(promtool: str) -> None:
    output = run(promtool, "check", "config", "prometheus.yml", cwd=PROMETHEUS)
    assert "SUCCESS: 1 rule files found" in output


def test_promtool_check_rules(promtool: str) -> None:
    output = run(promtool, "check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(rules())} rules found" in output


def test_promtool_unit_tests_pass(promtool: str, capsys: pytest.CaptureFixture[str]) -> None:
    output = run(promtool, "test", "rules", str(ALERTS_TEST))
    assert "SUCCESS" in output
    with capsys.disabled():
        print(f"\n{output.strip()}")


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = [
        case
        for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for rule in rules():
        name = rule["alert"]
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name} is never tested firing"
        assert any(not case["exp_alerts"] for case in mine), f"{name} is never tested quiet"


def github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_alert_links_to_its_runbook_section() -> None:
    anchors = github_anchors(RUNBOOK.read_text())
    for rule in rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert annotations["summary"], name
        assert annotations["description"], name
        url = annotations["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbook/operations.md", name
        assert anchor == name.lower(), name
        assert anchor in anchors, f"{name}: no heading for #{anchor} in {RUNBOOK.name}"


def test_the_stall_threshold_suits_mainnet() -> None:
    stalled = next(rule for rule in rules() if rule["alert"] == "BlocktimesChainStalled")
    assert stalled["expr"] == "blocktimes_seconds_since_last_head > 120"
