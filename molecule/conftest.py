"""Shared Testinfra helpers for every Molecule scenario (pytest finds this conftest for all
tests below molecule/). The pattern: when a service is not what a test expects, print its
journal before failing, so a red CI run says why."""

import os
from pathlib import Path

import pytest
import yaml

# The PostgreSQL major the scenario's host runs (gept_postgresql_version): 17 unless the
# scenario's verifier env says otherwise (the bookworm scenario: 15).
PG_MAJOR = os.environ.get("GEPT_PG_MAJOR", "17")

GROUP_VARS_ALL = Path(__file__).resolve().parents[1] / "group_vars" / "all" / "main.yml"


def collectors_catalogue() -> list[dict]:
    """The collector catalogue (group_vars/all gept_collectors), each entry with its port
    (gept_ports[port_name]) as the roles derive it: what the tests expect on the host."""
    group_vars = yaml.safe_load(GROUP_VARS_ALL.read_text(encoding="utf-8"))
    return [{**c, "port": group_vars["gept_ports"][c["port_name"]]} for c in group_vars["gept_collectors"]]


def _journal(host, unit: str, lines: int = 60) -> str:
    out = host.run(
        f"journalctl -u {unit} -n {lines} --no-pager 2>&1; "
        f"systemctl status {unit} --no-pager 2>&1 | head -n 20"
    )
    return out.stdout


def assert_running(host, unit: str, enabled: bool = True) -> None:
    """Assert a systemd unit is active (and enabled); on failure print its journal."""
    svc = host.service(unit)
    if not svc.is_running or (enabled and not svc.is_enabled):
        pytest.fail(
            f"{unit}: running={svc.is_running} enabled={svc.is_enabled}\n"
            f"--- journal of {unit} ---\n{_journal(host, unit)}"
        )


@pytest.fixture
def running():
    return assert_running


def wait_for(host, command: str, attempts: int = 30, delay: float = 2.0):
    """Run `command` in the host until it exits 0, at most `attempts` times (bounded)."""
    result = None
    for _ in range(attempts):
        result = host.run(command)
        if result.rc == 0:
            return result
        host.run(f"sleep {delay}")
    return result
