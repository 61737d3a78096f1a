"""The deploy/ files: the alert rules pass `promtool check rules` and their
own `promtool test rules` cases, and the rules and the Grafana dashboard
only use metrics a running turnout exports (every family is listed, with
its type, from the start)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support import ServerProcess

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "turnout-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "turnout-dashboard.json"


@pytest.mark.programs("promtool")
def test_promtool_accepts_the_rules_and_their_tests_pass() -> None:
    checked = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and "SUCCESS: 8 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = subprocess.run(
        ["promtool", "test", "rules", "turnout-rules.test.yml"],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def exported_families(server: ServerProcess) -> set[str]:
    text = httpx.get(f"{server.url}/metrics").text
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def used_metrics(expression: str) -> set[str]:
    names = set(re.findall(r"\b((?:turnout|process)_[a-z_]+)", expression))
    return {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in names}


def test_rules_and_dashboard_use_only_exported_metrics(server: ServerProcess) -> None:
    exported = {re.sub(r"_total$", "", name) for name in exported_families(server)}
    rule_exprs = re.findall(r"expr: [|]?\s*\n?(.*?)(?:\n\s+for:|\n\s+labels:)", RULES.read_text(), re.S)
    dashboard = json.loads(DASHBOARD.read_text())
    panel_exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(rule_exprs) == 8 and len(panel_exprs) >= 15
    used = set().union(*(used_metrics(e) for e in rule_exprs + panel_exprs))
    assert used - exported == set()
    assert {"turnout_requests", "turnout_request_duration_seconds", "turnout_queue_depth"} <= used
    assert dashboard["uid"] == "turnout-overview" and {p["id"] for p in dashboard["panels"]} == set(range(1, 13))
