"""Alertmanager and Grafana configuration, rendered on the controller by the roles' own task files
(tests/monitoring/render.yml: tasks/render_config.yml of each role): amtool accepts it and routes
by severity; Grafana's provisioning files parse and define the datasources the dashboards
reference."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from monitoring_lib import REPO, amtool_version, load_yaml, require_tool

sys.path.insert(0, str(REPO / "roles" / "alertmanager" / "filter_plugins"))
from alertmanager_features import alertmanager_features  # noqa: E402


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("amtool"), *args], capture_output=True, text=True, check=False)


def test_amtool_accepts_slack_and_email_config(rendered: Path):
    out = _amtool("check-config", str(rendered / "slack-email/alertmanager.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_amtool_accepts_config_with_every_receiver(rendered: Path):
    # Rendered for the controller's own Alertmanager version (0.25 on Debian 12: Discord and
    # webhook URLs inline, as the role writes them for that version). The 0.28 rendering is
    # checked by the Molecule host's amtool at converge (validate:).
    out = _amtool("check-config", str(rendered / "all-amtool/alertmanager.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_secret_fields_follow_the_alertmanager_version(rendered: Path):
    """Every receiver's secret through a file where the version has the field, else inline."""
    features = alertmanager_features(amtool_version())
    conf = load_yaml(rendered / "all-amtool/alertmanager.yml")
    critical = next(r for r in conf["receivers"] if r["name"] == "gept-critical")
    expected = {
        ("discord_configs", "webhook_url"): features["discord_webhook_url_file"],
        ("slack_configs", "api_url"): features["slack_api_url_file"],
        ("webhook_configs", "url"): features["webhook_url_file"],
    }
    for (section, field), by_file in expected.items():
        config = critical[section][0]
        assert (f"{field}_file" in config, field in config) == (by_file, not by_file), (section, config)
    assert ("smtp_auth_password_file" in conf["global"]) == features["smtp_auth_password_file"]


def test_every_receiver_reads_its_secret_from_a_file(rendered: Path):
    conf = load_yaml(rendered / "all/alertmanager.yml")
    text = (rendered / "all/alertmanager.yml").read_text()
    for secret in (rendered / "all/secrets").iterdir():
        assert secret.read_text() not in text, f"secret {secret.name} is inline in alertmanager.yml"
    critical = next(r for r in conf["receivers"] if r["name"] == "gept-critical")
    assert critical["discord_configs"][0]["webhook_url_file"].endswith("/discord_webhook_url")
    assert critical["slack_configs"][0]["api_url_file"].endswith("/slack_webhook_url")
    assert critical["webhook_configs"][0]["url_file"].endswith("/webhook_url")
    assert conf["global"]["smtp_auth_password_file"].endswith("/smtp_password")


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=GeptPostgresDown", "severity=critical"], "gept-critical"),
        (["alertname=GeptDiskSpaceLow", "severity=warning"], "gept-warning"),
        (["alertname=Watchdog", "severity=none"], "watchdog"),
        (["alertname=Unlabelled"], "gept-warning"),
    ],
)
def test_routing_by_severity(rendered: Path, labels: list[str], receiver: str):
    config = rendered / "slack-email/alertmanager.yml"
    out = _amtool("config", "routes", "test", f"--config.file={config}", *labels)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == receiver


def test_critical_inhibits_warning_of_the_same_alert(rendered: Path):
    conf = load_yaml(rendered / "slack-email/alertmanager.yml")
    rule = conf["inhibit_rules"][0]
    assert rule["source_matchers"] == ['severity="critical"']
    assert rule["target_matchers"] == ['severity="warning"']
    assert {"alertname", "instance"} <= set(rule["equal"])


def test_disabled_receivers_have_no_configs(rendered: Path):
    out_dir = rendered / "none"
    conf = load_yaml(out_dir / "alertmanager.yml")
    for receiver in conf["receivers"]:
        assert set(receiver) == {"name"}, receiver
    assert not list((out_dir / "secrets").iterdir())
    out = _amtool("check-config", str(out_dir / "alertmanager.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_grafana_ini_is_locked_down(rendered: Path):
    ini = (rendered / "grafana/grafana.ini").read_text()
    sections: dict[str, dict[str, str]] = {}
    current = ""
    for line in ini.splitlines():
        if m := re.match(r"^\[(.+)\]$", line):
            current = m.group(1)
        elif m := re.match(r"^(\w+) = (.*)$", line):
            sections.setdefault(current, {})[m.group(1)] = m.group(2)
    assert sections["auth.anonymous"]["enabled"] == "false"
    assert sections["users"]["allow_sign_up"] == "false"
    assert sections["server"]["http_addr"] == "127.0.0.1"
    assert sections["server"]["root_url"] == "https://gept-test.example.invalid/grafana/"
    assert sections["server"]["serve_from_sub_path"] == "true"
    # A file reference, not a password.
    assert sections["security"]["admin_password"] == "$__file{/etc/grafana/secrets/admin_password}"  # noqa: S105
    assert "test-admin-password" not in ini


def test_grafana_datasources(rendered: Path):
    ds = load_yaml(rendered / "grafana/provisioning/datasources/gept.yml")
    by_uid = {d["uid"]: d for d in ds["datasources"]}
    assert by_uid["gept-prometheus"]["type"] == "prometheus"
    assert by_uid["gept-prometheus"]["url"] == "http://127.0.0.1:9090/prometheus"
    pg = by_uid["gept-postgres"]
    assert pg["type"] == "grafana-postgresql-datasource"
    assert pg["user"] == "gept_readonly"
    assert pg["jsonData"]["database"] == "gept"
    assert pg["secureJsonData"]["password"] == "$__file{/etc/grafana/secrets/postgres_password}"  # noqa: S105
    provider = load_yaml(rendered / "grafana/provisioning/dashboards/gept.yml")["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/gept"
    assert provider["allowUiUpdates"] is False
