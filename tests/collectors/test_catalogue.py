"""The collector catalogue (group_vars/all gept_collectors) is the one list of the collectors:
the roles derive their units, ports, scrape jobs, status tables, per-collector alert rules
(roles/prometheus, templates/.../gept-collectors.rules.yml.j2) and the Collectors dashboard's
queries (roles/grafana, templates/.../gept-collectors.json.j2) from it. Rendering those with one
more catalogue entry proves the derivation; what cannot be derived (the collectors' own fallback
ports, the README's table, each entry's `collects` against its script) is checked against it
here, so a collector added to the catalogue but not to one of them fails a test instead of
going unwatched."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.monitoring import render_rules_and_dashboards
from support.roles import ROOT, collectors_catalogue

sys.path.insert(0, str(ROOT / "files" / "collectors"))
from gept_collectors import config  # noqa: E402

CATALOGUE = collectors_catalogue()
COLLECTORS = [c for c in CATALOGUE if c["kind"] == "collector"]
NAMES = [c["name"] for c in COLLECTORS]
WINDOW_NAMES = [c["name"] for c in COLLECTORS if c["collects"] == "window"]
# The base class of each `collects` kind (files/collectors/gept_collectors).
BASE_CLASSES = {"bucket": "BucketCollector", "window": "WindowCollector", "run": "Collector"}
PER_COLLECTOR_ALERTS = ["GeptCollectorStale", "GeptCollectorErrorRatioHigh"]

# A collector that is only a catalogue entry: the rules and the dashboard rendered with it.
NEW = {
    "name": "example",
    "kind": "collector",
    "unit": "gept-collector-example",
    "script": "collector_example.py",
    "description": "GePT collector: an example window collector",
    "port_name": "collector_example",
    "table": {"name": "example_rows", "column": "timestamp", "max_age_seconds": 1800},
    "collects": "window",
    "alerts": {
        "stale": {"after_seconds": 4321, "for": "7m", "severity": "critical"},
        "error_ratio_window": "45m",
        "missing_windows_for": "50m",
        "api_stalled": {"after_seconds": 1234, "for": "20m"},
    },
}


def _rules(rules_dir: Path) -> list[dict[str, Any]]:
    path = rules_dir / "gept-collectors.rules.yml"
    return [r for g in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"] for r in g["rules"]]


def _panels(dashboards_dir: Path) -> list[dict[str, Any]]:
    dashboard = json.loads((dashboards_dir / "gept-collectors.json").read_text(encoding="utf-8"))
    return [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]


def _shown(panel: dict[str, Any]) -> set[str]:
    """Names X of the gept_X_ series a panel's queries plot."""
    return {m for t in panel.get("targets", []) for m in re.findall(r"gept_([a-z0-9]+)_", t["expr"])}


@pytest.fixture(scope="module")
def with_new_collector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Rules and dashboards rendered for the repository's catalogue plus NEW."""
    group_vars = yaml.safe_load((ROOT / "group_vars" / "all" / "main.yml").read_text())
    catalogue = copy.deepcopy(group_vars["gept_collectors"])
    catalogue.insert(-1, NEW)  # before the dashboard entry, as a collector would be added
    return render_rules_and_dashboards(tmp_path_factory.mktemp("catalogue"), gept_collectors=catalogue)


def test_catalogue_entries_are_complete_and_unique() -> None:
    assert [c["kind"] for c in CATALOGUE].count("dashboard") == 1
    for field in ("name", "unit", "port"):
        values = [c[field] for c in CATALOGUE]
        assert len(values) == len(set(values)), f"duplicate {field}: {values}"
    for c in CATALOGUE:
        assert (ROOT / "files" / "collectors" / c["script"]).is_file(), c
    for c in COLLECTORS:
        assert {"name", "column", "max_age_seconds"} <= set(c["table"]), c
        assert {"after_seconds", "for", "severity"} <= set(c["alerts"]["stale"]), c
        assert c["alerts"]["error_ratio_window"], c
        if c["collects"] == "window":
            assert c["alerts"]["missing_windows_for"] and c["alerts"]["api_stalled"], c


@pytest.mark.parametrize("entry", COLLECTORS, ids=NAMES)
def test_collects_is_the_scripts_kind(entry: dict[str, Any]) -> None:
    """`collects` decides the metrics the rules and panels expect: it is the script's base class."""
    script = (ROOT / "files" / "collectors" / entry["script"]).read_text(encoding="utf-8")
    bases = re.findall(r"^class \w+\((\w+)\):", script, re.M)
    assert bases == [BASE_CLASSES[entry["collects"]]], (entry["name"], entry["collects"], bases)


def test_python_fallback_ports_are_the_catalogue_ports() -> None:
    """Without GEPT_<NAME>_METRICS_PORT (the role always writes it) a collector binds these."""
    assert config.DEFAULT_METRICS_PORTS == {c["name"]: c["port"] for c in COLLECTORS}


@pytest.mark.parametrize("alert", PER_COLLECTOR_ALERTS)
def test_every_collector_has_its_alert_rule(alert: str, monitoring_rendered: tuple[Path, Path]) -> None:
    rules = [r for r in _rules(monitoring_rendered[0]) if r.get("alert") == alert]
    by_collector = {r["labels"]["collector"]: r["expr"] for r in rules}
    assert sorted(by_collector) == sorted(NAMES)
    for name, expr in by_collector.items():
        assert f"gept_{name}_" in expr, (name, expr)


def test_every_per_collector_grafana_panel_shows_every_collector(
    monitoring_rendered: tuple[Path, Path],
) -> None:
    """A panel that plots gept_<collector>_* series plots one for each collector (and none
    for a name the catalogue does not have)."""
    known = {*NAMES, "dashboard", "table"}
    per_collector = 0
    for panel in _panels(monitoring_rendered[1]):
        shown = _shown(panel)
        assert shown <= known, (panel["title"], shown - known)
        if len(shown & set(NAMES)) > 2:  # a per-collector panel, not one about a few series
            per_collector += 1
            assert shown & set(NAMES) == set(NAMES), (panel["title"], sorted(set(NAMES) - shown))
    assert per_collector >= 5


def test_a_new_catalogue_entry_gets_its_alert_rules(with_new_collector: tuple[Path, Path]) -> None:
    """One more catalogue entry: its rules appear with the entry's own thresholds (and the
    window kind's extra rules, not the bucket kind's), the others' rules stay as they were."""
    rules = _rules(with_new_collector[0])
    new = {r["alert"]: r for r in rules if r.get("labels", {}).get("collector") == "example"}
    assert sorted(new) == [
        "GeptApiStalled",
        "GeptCollectorErrorRatioHigh",
        "GeptCollectorStale",
        "GeptMissingWindows",
    ]
    stale = new["GeptCollectorStale"]
    assert stale["expr"] == "time() - gept_example_last_success_timestamp_seconds > 4321"
    assert (stale["for"], stale["labels"]["severity"]) == ("7m", "critical")
    assert "rate(gept_example_requests_total[45m])" in new["GeptCollectorErrorRatioHigh"]["expr"]
    assert (new["GeptMissingWindows"]["expr"], new["GeptMissingWindows"]["for"]) == (
        "gept_example_missing_windows > 0",
        "50m",
    )
    assert new["GeptApiStalled"]["expr"] == "gept_example_api_newest_window_age_seconds > 1234"
    assert new["GeptApiStalled"]["for"] == "20m"
    others = [r for r in rules if r.get("labels", {}).get("collector") != "example"]
    assert len(others) == len(rules) - 4


def test_a_new_catalogue_entry_gets_its_dashboard_queries(with_new_collector: tuple[Path, Path]) -> None:
    """Every per-collector panel plots the new collector too, each of its queries a copy of
    the panel's query for the other collectors; the window panels show it (a window collector)."""
    changed = 0
    for panel in _panels(with_new_collector[1]):
        shown = _shown(panel)
        if len(shown & set(NAMES)) > 2 or shown & set(NAMES) == set(WINDOW_NAMES):
            assert "example" in shown, panel["title"]
            targets = panel["targets"]
            assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
            first, new = targets[0], next(t for t in targets if "gept_example_" in t["expr"])
            other = re.search(r"gept_([a-z0-9]+)_", first["expr"]).group(1)
            assert new["expr"] == first["expr"].replace(f"gept_{other}_", "gept_example_"), panel["title"]
            assert new["legendFormat"] == first["legendFormat"].replace(other, "example", 1)
            changed += 1
        else:
            assert "example" not in shown, panel["title"]
    assert changed >= 7


def test_readme_table_lists_every_service() -> None:
    readme = (ROOT / "files" / "collectors" / "README.md").read_text(encoding="utf-8")
    for c in CATALOGUE:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{c['script']}`")), None)
        assert row is not None, f"{c['script']} missing from files/collectors/README.md"
        assert f"`{c['unit']}`" in row and str(c["port"]) in row, row
