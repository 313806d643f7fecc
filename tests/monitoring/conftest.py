"""Fixtures of the monitoring controller tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from monitoring_lib import REPO, amtool_version


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/monitoring/render.yml's output, written by the roles' own render task files:
    <variant>/alertmanager.yml + secrets/ for all, all-amtool, slack-email and none; grafana/;
    queries-full.yml and queries-apache.yml."""
    out_dir = tmp_path_factory.mktemp("render")
    playbook = REPO / ".venv/bin/ansible-playbook"
    cmd = [
        str(playbook) if playbook.exists() else "ansible-playbook",
        "-i",
        "localhost,",
        "tests/monitoring/render.yml",
        "-e",
        f"out_dir={out_dir}",
        "-e",
        f"amtool_version={amtool_version()}",
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out_dir
