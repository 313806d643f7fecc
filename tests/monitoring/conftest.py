"""Fixtures of the monitoring controller tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from monitoring_lib import REPO, amtool_version


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/monitoring/render.yml's output: <variant>/alertmanager.yml + secrets/ for all,
    slack-email and none; grafana/; queries-full.yml and queries-apache.yml."""
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
    # The role's own filter (what each Alertmanager version can do), as the role loads it.
    env = {**os.environ, "ANSIBLE_FILTER_PLUGINS": str(REPO / "roles/alertmanager/filter_plugins")}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out_dir
