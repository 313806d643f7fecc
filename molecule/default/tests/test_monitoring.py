"""Monitoring on the converged host: services, configs, every scrape target up, no
dead metrics (every metric a loaded rule or a dashboard panel uses exists in Prometheus), and
end-to-end delivery (a real alert reaches a webhook receiver this test starts in the host).

The default scenario converges site.yml: everything is required there. A dev scenario
(molecule/monitoring) deploys part of the stack; a component it does not deploy (its scrape
job is not configured) is skipped with the reason, never silently passed.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from conftest import assert_running, collectors_catalogue, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "roles" / "alertmanager" / "filter_plugins"))
from alertmanager_features import alertmanager_features  # noqa: E402  (the role's own decision)

PROM = "http://127.0.0.1:9090/prometheus"
AM = "http://127.0.0.1:9093/alertmanager"
DASHBOARD_DIR = "/var/lib/grafana/dashboards/gept"
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
SCENARIO = os.environ.get("MOLECULE_SCENARIO_NAME", "default")
FULL_STACK = SCENARIO == "default"

CATALOGUE = collectors_catalogue()
COLLECTORS = [c["name"] for c in CATALOGUE if c["kind"] == "collector"]
# Scrape job -> systemd unit behind it (a collector's job is gept-collector-<name>, the
# dashboard's its unit name).
JOBS = {
    "prometheus": "prometheus",
    "alertmanager": "prometheus-alertmanager",
    "node": "prometheus-node-exporter",
    "postgres": "prometheus-postgres-exporter",
    "pgbouncer": "prometheus-pgbouncer-exporter",
    **{f"gept-collector-{c}": f"gept-collector-{c}" for c in COLLECTORS},
    **{c["unit"]: c["unit"] for c in CATALOGUE if c["kind"] == "dashboard"},
}


# --- helpers -------------------------------------------------------------------------------
def api(host, url: str) -> Any:
    """GET a JSON API inside the host (everything listens on 127.0.0.1 there)."""
    out = host.run(f"curl -fsS --max-time 10 '{url}'")
    assert out.rc == 0, f"GET {url}: {out.stderr}"
    return json.loads(out.stdout)


def configured_jobs(host) -> set[str]:
    return {t["labels"]["job"] for t in api(host, f"{PROM}/api/v1/targets")["data"]["activeTargets"]}


def require_job(host, job: str) -> None:
    """Skip (dev scenario only) when the job is not deployed; in the full stack it must be."""
    if job in configured_jobs(host):
        return
    if FULL_STACK:
        pytest.fail(f"scrape job {job} is not configured in Prometheus (site.yml must deploy it)")
    pytest.skip(f"{job} is not deployed in the {SCENARIO} scenario")


_PROMQL_NOT_METRICS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (strings, label matchers, ranges, label lists,
    functions and keywords removed)."""
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+\S+", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        name, call = m.group(1), m.group(2)
        if call or name in _PROMQL_NOT_METRICS:
            continue
        names.add(name)
    return names


def component_of(metric: str) -> str:
    """Which deployed part must export a metric (its scrape job, or a special component)."""
    if metric.startswith(("gept_backup_", "gept_restore_drill_")):
        return "backups"
    if metric.startswith(("gept_compression_", "gept_timescaledb_job_")):
        return "timescaledb-full"
    for c in COLLECTORS:
        if metric.startswith(f"gept_{c}_"):
            return f"gept-collector-{c}"
    if metric.startswith("gept_dashboard_"):
        return "gept-dashboard"
    if metric.startswith(("pg_", "gept_table_", "gept_hypertable_", "gept_schema_")):
        return "postgres"
    if metric.startswith("pgbouncer_"):
        return "pgbouncer"
    if metric.startswith("node_"):
        return "node"
    if metric.startswith("alertmanager_"):
        return "alertmanager"
    return "prometheus"  # prometheus_*, up, and anything else Prometheus itself knows


def used_metrics(host) -> dict[str, set[str]]:
    """metric -> where it is used ("rule <name>" / "dashboard <uid> panel <title>")."""
    used: dict[str, set[str]] = {}
    for group in api(host, f"{PROM}/api/v1/rules")["data"]["groups"]:
        for rule in group["rules"]:
            for name in metric_names(rule["query"]):
                used.setdefault(name, set()).add(f"rule {rule['name']}")
    for path in host.run(f"ls {DASHBOARD_DIR}/*.json").stdout.split():
        dash = json.loads(host.file(path).content_string)
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                for name in metric_names(target.get("expr", "")):
                    used.setdefault(name, set()).add(f"dashboard {dash['uid']} panel {panel['title']!r}")
    return used


def wait_targets_scraped(host, attempts: int = 30) -> list[dict[str, Any]]:
    """Targets once each has been scraped at least once (bounded wait)."""
    targets: list[dict[str, Any]] = []
    for _ in range(attempts):
        targets = api(host, f"{PROM}/api/v1/targets")["data"]["activeTargets"]
        if targets and all(t["health"] != "unknown" for t in targets):
            return targets
        time.sleep(2)
    return targets


# --- services and files -----------------------------------------------------------------------
@pytest.mark.parametrize("unit", ["prometheus", "prometheus-alertmanager", "prometheus-node-exporter"])
def test_core_services_running(host, unit):
    assert_running(host, unit)


@pytest.mark.parametrize("unit", ["prometheus-postgres-exporter", "prometheus-pgbouncer-exporter"])
def test_database_exporters_running(host, unit):
    job = {"prometheus-postgres-exporter": "postgres", "prometheus-pgbouncer-exporter": "pgbouncer"}[unit]
    require_job(host, job)
    assert_running(host, unit)


def test_listeners_are_loopback_only(host):
    """Every monitoring port listens on 127.0.0.1 only; Alertmanager's cluster port is closed."""
    listening = host.run("ss -ltnH").stdout
    ports = {"9090", "9093", "9100", "9187", "9127", "3000", "9094"}
    for line in listening.splitlines():
        local = line.split()[3]
        addr, _, port = local.rpartition(":")
        if port in ports:
            assert addr in ("127.0.0.1", "[::1]"), f"{local} is not loopback:\n{listening}"
    assert not re.search(r":9094\s", listening), "Alertmanager cluster port 9094 is open"


def test_prometheus_flags(host):
    flags = api(host, f"{PROM}/api/v1/status/flags")["data"]
    assert flags["storage.tsdb.retention.time"] == "30d"
    assert flags["web.listen-address"] == "127.0.0.1:9090"
    assert flags["web.route-prefix"] == "/prometheus"
    runtime = api(host, f"{PROM}/api/v1/status/runtimeinfo")["data"]
    assert runtime["reloadConfigSuccess"] is True


def test_prometheus_config_and_rules_pass_promtool(host):
    out = host.run("promtool check config /etc/prometheus/prometheus.yml")
    assert out.rc == 0, out.stdout + out.stderr


# The *_file field that carries each secret file (roles/alertmanager/filter_plugins).
SECRET_FILES_BY_FIELD = {
    "discord_webhook_url_file": ("discord_webhook_url",),
    "slack_api_url_file": ("slack_webhook_url",),
    "smtp_auth_password_file": ("smtp_password",),
    "webhook_url_file": ("webhook_url", "watchdog_url"),
}
FIELD_OF_SECRET_FILE = {name: field for field, names in SECRET_FILES_BY_FIELD.items() for name in names}


def test_alertmanager_config_passes_amtool_and_holds_no_secret(host):
    """Each secret is read from its file where the installed Alertmanager has the *_file
    field (0.28: every one), and is in the 0640 config only where it has not (0.25: the
    webhook URLs)."""
    features = alertmanager_features(host.package("prometheus-alertmanager").version)
    out = host.run("amtool check-config /etc/prometheus/alertmanager.yml")
    assert out.rc == 0, out.stdout + out.stderr
    conf = host.file("/etc/prometheus/alertmanager.yml")
    assert (conf.user, conf.group, conf.mode) == ("root", "prometheus", 0o640)
    secrets_dir = host.file("/etc/prometheus/alertmanager.d")
    assert (secrets_dir.user, secrets_dir.group, secrets_dir.mode) == ("root", "prometheus", 0o750)
    for name in secrets_dir.listdir():
        f = host.file(f"/etc/prometheus/alertmanager.d/{name}")
        assert (f.user, f.group, f.mode) == ("root", "prometheus", 0o640), name
        inline = f.content_string.strip() in conf.content_string
        assert inline is not features[FIELD_OF_SECRET_FILE[name]], (name, features)


def test_alertmanager_routes_by_severity(host):
    cmd = "amtool config routes test --config.file=/etc/prometheus/alertmanager.yml"
    assert host.run(f"{cmd} severity=critical alertname=X").stdout.strip() == "gept-critical"
    assert host.run(f"{cmd} severity=warning alertname=X").stdout.strip() == "gept-warning"
    assert host.run(f"{cmd} severity=none alertname=Watchdog").stdout.strip() == "watchdog"


def test_textfile_directory(host):
    d = host.file("/var/lib/prometheus/node-exporter")
    assert d.is_directory
    assert (d.user, d.group, d.mode) == ("root", "gept", 0o2775)
    args = host.file("/etc/default/prometheus-node-exporter").content_string
    assert "--collector.textfile.directory=/var/lib/prometheus/node-exporter" in args


def test_textfile_metric_is_exported(host):
    """A .prom file written to the textfile directory shows up on node_exporter's /metrics."""
    path = "/var/lib/prometheus/node-exporter/gept_monitoring_test.prom"
    host.run(f"printf 'gept_monitoring_textfile_probe 42\\n' > {path}.tmp && mv {path}.tmp {path}")
    try:
        probe = "curl -fsS 127.0.0.1:9100/metrics | grep -q '^gept_monitoring_textfile_probe 42$'"
        out = wait_for(host, probe, 10, 1)
        assert out.rc == 0, "textfile metric not exported"
    finally:
        host.run(f"rm -f {path}")


def test_postgres_exporter_secret_files(host):
    require_job(host, "postgres")
    f = host.file("/etc/prometheus/postgres_exporter.pass")
    assert (f.user, f.group, f.mode) == ("root", "prometheus", 0o640)
    env = host.file("/etc/default/prometheus-postgres-exporter").content_string
    assert f.content_string not in env
    env = host.file("/etc/default/prometheus-pgbouncer-exporter")
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)


def test_postgres_exporter_queries_run_without_errors(host):
    """Every custom query loads and runs (a failing one sets pg_exporter_last_scrape_error)."""
    require_job(host, "postgres")
    metrics = ""
    for _ in range(10):
        metrics = host.run("curl -fsS 127.0.0.1:9187/metrics").stdout
        if re.search(r"(?m)^pg_exporter_last_scrape_error 0$", metrics):
            break
        time.sleep(3)
    assert re.search(r"(?m)^pg_exporter_user_queries_load_error\{.*\} 0$", metrics), "queries file not loaded"
    errors = host.run(
        "journalctl -u prometheus-postgres-exporter -n 20 --no-pager | grep -i 'error' || true"
    ).stdout
    assert re.search(r"(?m)^pg_exporter_last_scrape_error 0$", metrics), f"scrape errors:\n{errors}"
    for metric in ("gept_table_newest_row_timestamp_seconds", "gept_table_size_bytes", "gept_schema_version"):
        assert re.search(rf"(?m)^{metric}\{{", metrics), f"{metric} not exported"


def test_grafana_files_rendered(host):
    """Provisioning and dashboards are rendered even where the package is not installed."""
    ini = host.file("/etc/grafana/grafana.ini")
    assert (ini.user, ini.group, ini.mode) == ("root", "grafana", 0o640)
    text = ini.content_string
    assert re.search(r"(?m)^\[auth\.anonymous\]\nenabled = false$", text)
    assert re.search(r"(?m)^http_addr = 127\.0\.0\.1$", text)
    assert "admin_password = $__file{/etc/grafana/secrets/admin_password}" in text
    pw = host.file("/etc/grafana/secrets/admin_password")
    assert (pw.user, pw.group, pw.mode) == ("root", "grafana", 0o640)
    assert pw.content_string and pw.content_string not in text
    ds_text = host.file(f"{GRAFANA_PROVISIONING}/datasources/gept.yml").content_string
    uids = set(re.findall(r"(?m)^\s+uid: (\S+)$", ds_text))
    assert uids == {"gept-prometheus", "gept-postgres"}
    assert "url: http://127.0.0.1:9090/prometheus" in ds_text
    seen = set()
    for path in host.run(f"ls {DASHBOARD_DIR}/*.json").stdout.split():
        dash = json.loads(host.file(path).content_string)
        assert dash["uid"] not in seen
        seen.add(dash["uid"])
        for panel in dash["panels"]:
            for ref in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
                if ref:
                    assert ref["uid"] in uids, f"{path}: panel {panel['title']!r} -> {ref}"
    assert seen == {"gept-collectors", "gept-database", "gept-host"}


def test_grafana_serves_when_installed(host):
    if host.run("systemctl is-enabled grafana-server").rc != 0:
        if FULL_STACK and host.run("test -e /etc/apt/sources.list.d/grafana.sources").rc == 0:
            pytest.fail("Grafana's repository is configured but grafana-server is not enabled")
        pytest.skip("grafana_install_enabled is false here (apt.grafana.com unreachable from the test host)")
    assert_running(host, "grafana-server")
    health = api(host, "http://127.0.0.1:3000/grafana/api/health")
    assert health["database"] == "ok"


# --- every target up ------------------------------------------------------------------------
@pytest.mark.parametrize("job", list(JOBS))
def test_scrape_target_up(host, job):
    require_job(host, job)
    targets = [t for t in wait_targets_scraped(host) if t["labels"]["job"] == job]
    bad = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets if t["health"] != "up"]
    if bad:
        pytest.fail(
            f"{job} targets not up: {bad}\n--- journal ---\n"
            + host.run(f"journalctl -u {JOBS[job]} -n 40 --no-pager").stdout
        )


def test_no_unknown_scrape_jobs(host):
    """Every configured job is one this test knows (so none escapes the checks above)."""
    assert configured_jobs(host) <= set(JOBS), configured_jobs(host) - set(JOBS)


def test_rules_loaded_and_healthy(host):
    groups = api(host, f"{PROM}/api/v1/rules")["data"]["groups"]
    names = {g["name"] for g in groups}
    assert {"gept-meta", "gept-host", "gept-collectors", "gept-database", "gept-backups"} <= names
    broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] == "err"]
    assert not broken, broken


def test_watchdog_reaches_alertmanager(host):
    """The always-firing Watchdog arrives in Alertmanager: Prometheus -> Alertmanager works."""
    for _ in range(45):
        alerts = api(host, f"{AM}/api/v2/alerts?filter={quote('alertname=Watchdog')}")
        if alerts:
            return
        time.sleep(2)
    pytest.fail("Watchdog never reached Alertmanager")


# --- no dead metrics --------------------------------------------------------------------------
COMPONENTS = [
    "prometheus",
    "alertmanager",
    "node",
    "postgres",
    "pgbouncer",
    "backups",
    "timescaledb-full",
    *[f"gept-collector-{c}" for c in COLLECTORS],
    "gept-dashboard",
]


@pytest.mark.parametrize("component", COMPONENTS)
def test_no_dead_metrics(host, component):
    """Every metric a loaded rule or a dashboard panel uses exists in Prometheus."""
    if component == "backups":
        # Written by the backup jobs into the textfile directory; exists once a backup ran.
        if not FULL_STACK:
            pytest.skip(f"backups are not deployed in the {SCENARIO} scenario")
    elif component == "timescaledb-full":
        groups = {g["name"] for g in api(host, f"{PROM}/api/v1/rules")["data"]["groups"]}
        if "gept-timescaledb-full" not in groups:
            pytest.skip("TimescaleDB Apache edition here: compression and job metrics do not exist")
        require_job(host, "postgres")
    else:
        require_job(host, component)
    wait_targets_scraped(host)
    used = {m: w for m, w in used_metrics(host).items() if component_of(m) == component}
    assert used, f"no rule or panel uses a {component} metric: the mapping is wrong"
    known: set[str] = set()
    for _ in range(10):  # series appear over the first scrapes
        known = set(api(host, f"{PROM}/api/v1/label/__name__/values")["data"])
        if set(used) <= known:
            break
        time.sleep(3)
    dead = {m: sorted(w) for m, w in used.items() if m not in known}
    listing = "\n".join(f"  {m}: {w}" for m, w in sorted(dead.items()))
    assert not dead, "metrics used but not exported:\n" + listing


def test_metric_name_extraction():
    """The extractor the dead-metrics test relies on (pure function, checked on real rule shapes)."""
    assert metric_names('sum by (instance, job) (rate(gept_latest_requests_total{status!="200"}[15m]))') == {
        "gept_latest_requests_total"
    }
    assert metric_names("time() - gept_items_last_success_timestamp_seconds > 26 * 3600") == {
        "gept_items_last_success_timestamp_seconds"
    }
    quantile = "histogram_quantile(0.95, sum by (le) (rate(x_bucket[$__rate_interval])))"
    assert metric_names(quantile) == {"x_bucket"}
    join = 'a / on (database) group_left max by (database) (label_replace(b, "d", "$1", "n", "(.*)"))'
    assert metric_names(join) == {"a", "b"}
    assert metric_names("absent(gept_backup_last_success_timestamp_seconds)") == {
        "gept_backup_last_success_timestamp_seconds"
    }
    assert metric_names("vector(1)") == set()


# --- end-to-end delivery (last: it stops a unit for a while) ------------------------------------
RECEIVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(sys.argv[2], "ab") as f:
            f.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(200); self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_zz_end_to_end_alert_delivery(host):
    """Stop node_exporter for real; Prometheus evaluates GeptE2ETargetDown (10 s for:), Alertmanager
    posts it to the webhook receiver this test runs inside the host."""
    if host.run("test -s /etc/prometheus/rules/gept-e2e.rules.yml").rc != 0:
        pytest.fail("prometheus_e2e_rule_enabled is not set for the test host (inventories/demo)")
    if host.run("grep -q 'e2e=\"true\"' /etc/prometheus/alertmanager.yml").rc != 0:
        pytest.fail("alertmanager_e2e_route_enabled is not set for the test host (inventories/demo)")
    url_file = host.file("/etc/prometheus/alertmanager.d/webhook_url")
    assert url_file.exists, "alertmanager_webhook_url is not set for the test host (inventories/demo)"
    port = urlsplit(url_file.content_string.strip()).port
    assert port, url_file.content_string
    work = "/run/gept-e2e"
    unit = "gept-e2e-webhook"
    host.run(f"mkdir -p {work} && rm -f {work}/alerts.jsonl")
    host.run(f"cat > {work}/receiver.py <<'EOF'\n{RECEIVER}\nEOF")
    started = host.run(
        f"systemd-run --unit={unit} --collect python3 {work}/receiver.py {port} {work}/alerts.jsonl"
    )
    assert started.rc == 0, started.stderr
    try:
        up = wait_for(host, f"curl -s -o /dev/null -X POST -d '' http://127.0.0.1:{port}/", 20, 0.5)
        assert up.rc == 0, "receiver did not start"
        host.run(f"rm -f {work}/alerts.jsonl")
        assert host.run("systemctl stop prometheus-node-exporter").rc == 0
        delivered = None
        # scrape 15 s + for 10 s + evaluation 15 s + the e2e route's group_wait 5 s; bounded at 4 min.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            lines = host.run(f"cat {work}/alerts.jsonl 2>/dev/null").stdout.splitlines()
            for line in lines:
                payload = json.loads(line)
                for alert in payload.get("alerts", []):
                    labels = alert["labels"]
                    if (
                        labels.get("alertname") == "GeptE2ETargetDown"
                        and labels.get("job") == "node"
                        and alert["status"] == "firing"
                    ):
                        delivered = payload
            if delivered:
                break
            time.sleep(3)
        assert delivered, (
            "no GeptE2ETargetDown notification reached the webhook receiver\n"
            + host.run("journalctl -u prometheus-alertmanager -n 30 --no-pager").stdout
        )
        assert delivered["receiver"] in ("gept-warning", "gept-critical")
        assert delivered["version"] == "4"
    finally:
        host.run("systemctl start prometheus-node-exporter")
        host.run(f"systemctl stop {unit}")
    back = wait_for(host, "curl -fsS 127.0.0.1:9100/metrics >/dev/null", 15, 1)
    assert back.rc == 0, "node_exporter did not come back"
