"""The collector catalogue (group_vars/all gept_collectors) is the one list of the collectors:
the roles derive their units, ports, scrape jobs and status tables from it. What cannot be
derived (the collectors' own fallback ports, the per-collector alert rules with their own
thresholds, the Grafana panels, the README's table) is checked against it here, so a collector
added to the catalogue but not to one of them fails a test instead of going unwatched."""

from __future__ import annotations

import json
import re
import sys

import pytest
import yaml
from support.roles import ROOT, collectors_catalogue

sys.path.insert(0, str(ROOT / "files" / "collectors"))
from gept_collectors import config  # noqa: E402

CATALOGUE = collectors_catalogue()
COLLECTORS = [c for c in CATALOGUE if c["kind"] == "collector"]
NAMES = [c["name"] for c in COLLECTORS]
RULES = ROOT / "roles/prometheus/files/etc/prometheus/rules/gept-collectors.rules.yml"
GRAFANA = ROOT / "roles/grafana/files/var/lib/grafana/dashboards/gept/gept-collectors.json"


def test_catalogue_entries_are_complete_and_unique() -> None:
    assert [c["kind"] for c in CATALOGUE].count("dashboard") == 1
    for field in ("name", "unit", "port"):
        values = [c[field] for c in CATALOGUE]
        assert len(values) == len(set(values)), f"duplicate {field}: {values}"
    for c in CATALOGUE:
        assert (ROOT / "files" / "collectors" / c["script"]).is_file(), c
    for c in COLLECTORS:
        assert {"name", "column", "max_age_seconds"} <= set(c["table"]), c


def test_python_fallback_ports_are_the_catalogue_ports() -> None:
    """Without GEPT_<NAME>_METRICS_PORT (the role always writes it) a collector binds these."""
    assert config.DEFAULT_METRICS_PORTS == {c["name"]: c["port"] for c in COLLECTORS}


@pytest.mark.parametrize("alert", ["GeptCollectorStale", "GeptCollectorErrorRatioHigh"])
def test_every_collector_has_its_alert_rule(alert: str) -> None:
    rules = [
        r
        for g in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
        for r in g["rules"]
        if r.get("alert") == alert
    ]
    by_collector = {r["labels"]["collector"]: r["expr"] for r in rules}
    assert sorted(by_collector) == sorted(NAMES)
    for name, expr in by_collector.items():
        assert f"gept_{name}_" in expr, (name, expr)


def test_every_per_collector_grafana_panel_shows_every_collector() -> None:
    """A panel that plots gept_<collector>_* series plots one for each collector (and none
    for a name the catalogue does not have)."""
    dashboard = json.loads(GRAFANA.read_text(encoding="utf-8"))
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]
    known = {*NAMES, "dashboard", "table"}
    per_collector = 0
    for panel in panels:
        exprs = [t["expr"] for t in panel.get("targets", [])]
        shown = {m for e in exprs for m in re.findall(r"gept_([a-z0-9]+)_", e)}
        assert shown <= known, (panel["title"], shown - known)
        if len(shown & set(NAMES)) > 2:  # a per-collector panel, not one about a few series
            per_collector += 1
            assert shown & set(NAMES) == set(NAMES), (panel["title"], sorted(set(NAMES) - shown))
    assert per_collector >= 5


def test_readme_table_lists_every_service() -> None:
    readme = (ROOT / "files" / "collectors" / "README.md").read_text(encoding="utf-8")
    for c in CATALOGUE:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{c['script']}`")), None)
        assert row is not None, f"{c['script']} missing from files/collectors/README.md"
        assert f"`{c['unit']}`" in row and str(c["port"]) in row, row
