"""The alert rules shipped in deploy/monitoring/, checked by Prometheus' own
promtool: they parse, and the cases in alerts_test.yaml fire (or stay
silent) as intended. That every metric they name is really exposed is
checked against running daemons in tests/tests/operability.rs."""

import json
import shutil
import subprocess

from conftest import REPO

MONITORING = REPO / "deploy" / "monitoring"


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: scripts/install-deps.sh installs it (Debian package prometheus)"
    out = subprocess.run([tool, *args], cwd=REPO / "tests" / "deploy", capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_alert_rules_parse():
    assert "SUCCESS" in promtool("check", "rules", str(MONITORING / "kcred-alerts.yaml"))


def test_alerts_fire_when_they_should_and_only_then():
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yaml")


def test_dashboard_queries_only_prometheus_and_every_panel_has_a_query():
    dashboard = json.loads((MONITORING / "kcred-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
