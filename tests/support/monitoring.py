"""The Prometheus alert rules and Grafana dashboards as the roles deploy them: rendered on the
controller through the roles' own task files (tests/monitoring/render-rules-dashboards.yml),
some of them generated from the collector catalogue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from support.roles import ROOT

PLAYBOOK = ROOT / "tests" / "monitoring" / "render-rules-dashboards.yml"
RULE_SOURCES = ROOT / "roles" / "prometheus"
DASHBOARD_SOURCES = ROOT / "roles" / "grafana"


def rule_file_names() -> list[str]:
    """Every rule file the prometheus role can deploy (<name>.rules.yml), static or generated."""
    static = (RULE_SOURCES / "files/etc/prometheus/rules").glob("*.rules.yml")
    generated = (RULE_SOURCES / "templates/etc/prometheus/rules").glob("*.rules.yml.j2")
    return sorted([p.name for p in static] + [p.name.removesuffix(".j2") for p in generated])


def dashboard_names() -> list[str]:
    """Every dashboard file the grafana role ships (<name>.json), static or generated."""
    static = (DASHBOARD_SOURCES / "files/var/lib/grafana/dashboards/gept").glob("*.json")
    generated = (DASHBOARD_SOURCES / "templates/var/lib/grafana/dashboards/gept").glob("*.json.j2")
    return sorted([p.name for p in static] + [p.name.removesuffix(".j2") for p in generated])


def render_rules_and_dashboards(out_dir: Path, **extra_vars: Any) -> tuple[Path, Path]:
    """Render into out_dir/rules and out_dir/dashboards (extra_vars win over group_vars/all,
    e.g. gept_collectors=[...]); returns both directories."""
    vars_file = out_dir / "extra-vars.json"
    vars_file.write_text(json.dumps({"out_dir": str(out_dir), **extra_vars}))
    playbook = Path(sys.executable).parent / "ansible-playbook"
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.timer",
        "ANSIBLE_NOCOLOR": "1",
    }
    run = subprocess.run(
        [
            str(playbook) if playbook.exists() else "ansible-playbook",
            "-i",
            "localhost,",
            str(PLAYBOOK),
            "-e",
            f"@{vars_file}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-3000:]
    return out_dir / "rules", out_dir / "dashboards"
