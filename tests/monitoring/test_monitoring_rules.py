"""Alert rules: valid for promtool, unit-tested by `promtool test rules` (fires when it should,
silent when it should not), and each carries for:, severity, summary and a runbook anchor that
exists in docs/runbook.md. The rule files are the ones the prometheus role deploys, rendered
through its own task file (some are generated from the collector catalogue)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from monitoring_lib import RULE_TESTS_DIR, RUNBOOK, alert_rules, load_yaml, require_tool
from support.monitoring import rule_file_names

RULE_FILES = rule_file_names()
SEVERITIES = {"critical", "warning"}
# Alerts that legitimately have no `for:` and no "silent" case.
ALWAYS_FIRING = {"Watchdog"}


@pytest.fixture
def path(monitoring_rendered: tuple[Path, Path], name: str) -> Path:
    """The rendered rule file <name>."""
    return monitoring_rendered[0] / name


def _anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of the markdown headings."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def test_there_are_rule_files():
    assert len(RULE_FILES) >= 6, RULE_FILES


@pytest.mark.parametrize("name", RULE_FILES)
def test_promtool_check_rules(path: Path):
    promtool = require_tool("promtool")
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", RULE_FILES)
def test_promtool_unit_tests(path: Path):
    test_file = RULE_TESTS_DIR / path.name.replace(".rules.yml", ".test.yml")
    assert test_file.is_file(), f"{path.name} has no promtool test file {test_file}"
    promtool = require_tool("promtool")
    # The test file names its rule file by name: run it beside the rendered rules.
    shutil.copy(test_file, path.parent / test_file.name)
    out = subprocess.run(
        [promtool, "test", "rules", test_file.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", RULE_FILES)
def test_every_alert_is_tested_firing_and_silent(path: Path):
    """Each alert name has a test case where it fires and (except Watchdog) one where it is silent."""
    test_file = RULE_TESTS_DIR / path.name.replace(".rules.yml", ".test.yml")
    fires: set[str] = set()
    silent: set[str] = set()
    for case in load_yaml(test_file)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {r["alert"] for r in alert_rules(path)}
    assert names - fires == set(), f"never tested firing: {sorted(names - fires)}"
    assert names - silent - ALWAYS_FIRING == set(), f"never tested silent: {sorted(names - silent)}"


@pytest.mark.parametrize("name", RULE_FILES)
def test_alerts_have_for_severity_summary_and_runbook(path: Path):
    anchors = _anchors(RUNBOOK.read_text(encoding="utf-8"))
    for rule in alert_rules(path):
        name = rule["alert"]
        labels = rule.get("labels", {})
        annotations = rule.get("annotations", {})
        if name in ALWAYS_FIRING:
            assert labels.get("severity") == "none", name
        else:
            assert rule.get("for"), f"{name}: no for:"
            assert labels.get("severity") in SEVERITIES, f"{name}: severity {labels.get('severity')!r}"
        assert annotations.get("summary"), f"{name}: no summary"
        runbook = annotations.get("runbook_url", "")
        assert runbook == f"docs/runbook.md#{name.lower()}", f"{name}: runbook_url {runbook!r}"
        assert name.lower() in anchors, f"{name}: docs/runbook.md has no section '## {name}'"
