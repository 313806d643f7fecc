"""Grafana dashboards (as the grafana role writes them: JSON in roles/grafana/files/..., the
Collectors dashboard rendered from its template and the collector catalogue): valid JSON, unique
uids, every datasource reference resolves to a provisioned datasource, and every panel query is
PromQL that promtool accepts (checked as recording rules, Grafana's $__ variables replaced by
durations)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring_lib import REPO, load_yaml, require_tool
from support.monitoring import dashboard_names

DASHBOARDS = dashboard_names()
GRAFANA_VARS = load_yaml(REPO / "roles/grafana/vars/main.yml")
# Grafana's built-in interval variables -> a duration promtool can parse.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def _datasources(rendered: Path) -> dict[str, str]:
    """uid -> type of each datasource the grafana role provisions (its provisioning file as
    tests/monitoring/render.yml renders it through the role's tasks/render_config.yml)."""
    provisioning = load_yaml(rendered / "grafana/provisioning/datasources/gept.yml")
    types = {d["uid"]: d["type"] for d in provisioning["datasources"]}
    assert types, "no datasources in the provisioning file"
    return types


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows carry their panels
    return out


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def path(monitoring_rendered: tuple[Path, Path], name: str) -> Path:
    """The rendered dashboard <name>."""
    return monitoring_rendered[1] / name


def test_every_dashboard_file_is_shipped_by_the_role(monitoring_rendered: tuple[Path, Path]):
    assert DASHBOARDS == sorted(GRAFANA_VARS["_grafana_dashboards"])
    assert sorted(p.name for p in monitoring_rendered[1].glob("*.json")) == DASHBOARDS
    assert len(DASHBOARDS) >= 3


@pytest.mark.parametrize("name", DASHBOARDS)
def test_dashboard_is_valid_json_with_uid_title_and_no_runtime_ids(path: Path):
    dash = _load(path)
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dash["uid"]), dash["uid"]
    assert dash["title"].startswith("GePT / ")
    assert "id" not in dash or dash["id"] is None, "a database id in a provisioned dashboard"
    assert dash["editable"] is False
    ids = [p["id"] for p in _panels(dash)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"


def test_dashboard_uids_and_titles_are_unique(monitoring_rendered: tuple[Path, Path]):
    dashes = [_load(monitoring_rendered[1] / name) for name in DASHBOARDS]
    uids = [d["uid"] for d in dashes]
    titles = [d["title"] for d in dashes]
    assert len(uids) == len(set(uids)), uids
    assert len(titles) == len(set(titles)), titles


@pytest.mark.parametrize("name", DASHBOARDS)
def test_datasource_references_resolve(path: Path, rendered: Path):
    provisioned = _datasources(rendered)
    for panel in _panels(_load(path)):
        if panel["type"] == "row":
            continue
        refs = [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]
        for ref in refs:
            assert isinstance(ref, dict), f"{panel['title']!r}: datasource by name or missing: {ref!r}"
            assert ref["uid"] in provisioned, f"{panel['title']!r}: unknown datasource uid {ref['uid']}"
            assert ref["type"] == provisioned[ref["uid"]], f"{panel['title']!r}: type {ref['type']}"
        assert panel.get("targets"), f"{panel['title']!r} has no query"


@pytest.mark.parametrize("name", DASHBOARDS)
def test_panel_promql_is_accepted_by_promtool(path: Path, tmp_path: Path):
    promtool = require_tool("promtool")
    rules = []
    for panel in _panels(_load(path)):
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("type") != "prometheus":
                assert target.get("rawSql"), f"{panel['title']!r}: non-Prometheus target without SQL"
                continue
            expr = target["expr"]
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            assert "$" not in expr.replace('"$1"', ""), f"{panel['title']!r}: unknown variable in {expr}"
            rules.append({"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": expr})
    assert rules
    rule_file = tmp_path / "dashboard.rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]}))
    out = subprocess.run(
        [promtool, "check", "rules", str(rule_file)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
