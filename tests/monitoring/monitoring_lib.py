"""Shared paths and loaders for the monitoring tests (rules, dashboards, Alertmanager config)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# The rule files and dashboards themselves are rendered by the roles' own task files (the
# session fixture monitoring_rendered, tests/conftest.py): some are generated from the
# collector catalogue.
RULE_TESTS_DIR = Path(__file__).resolve().parent / "rules"
RUNBOOK = REPO / "docs/runbook.md"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules(path: Path) -> list[dict[str, Any]]:
    return [r for g in load_yaml(path)["groups"] for r in g["rules"] if "alert" in r]


def require_tool(name: str) -> str:
    """Path of a controller tool; fail (not skip) when missing: setup-controller.sh installs it."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} not found on PATH: run scripts/setup-controller.sh "
            "(apt: prometheus, prometheus-alertmanager)"
        )
    return found


def amtool_version() -> str:
    """The controller's amtool version, X.Y.Z."""
    out = subprocess.run([require_tool("amtool"), "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"version (\d+\.\d+\.\d+)", out.stdout + out.stderr)
    assert match, out.stdout + out.stderr
    return match.group(1)
