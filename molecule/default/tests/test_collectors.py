"""Collectors area: every collector unit and the dashboard active and hardened,
every metrics endpoint answering, rows arriving from the bundled OSRS API standin (the demo
host's base URL), and the systemd-analyze security exposure of each unit printed."""

import json
import re

import pytest
from conftest import assert_running, collectors_catalogue, wait_for

CATALOGUE = collectors_catalogue()
COLLECTORS = {c["name"]: c["port"] for c in CATALOGUE if c["kind"] == "collector"}
UNITS = [c["unit"] for c in CATALOGUE]
TABLES = {c["name"]: c["table"]["name"] for c in CATALOGUE if c["kind"] == "collector"}
DASHBOARD = f"127.0.0.1:{next(c['port'] for c in CATALOGUE if c['kind'] == 'dashboard')}"
EXPOSURE_MAX = 2.0


def psql(host, sql: str) -> str:
    cmd = f"cd /tmp && runuser -u postgres -- psql -d gept -Atc {sql!r}"
    out = host.run(cmd)
    assert out.rc == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("unit", UNITS)
def test_unit_active_enabled_and_unprivileged(host, unit):
    assert_running(host, unit)
    user = host.run(f"systemctl show -P User {unit}").stdout.strip()
    assert user in ("gept-collector", "gept-dashboard")
    assert host.user(user).shell == "/usr/sbin/nologin"
    props = host.run(f"systemctl show -p Restart -p NoNewPrivileges -p ProtectSystem {unit}").stdout
    for expected in ("Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert expected in props, props


def test_security_exposure_of_every_unit(host, capsys):
    scores = {}
    for unit in UNITS + ["gept-osrs-standin"]:
        out = host.run(f"systemd-analyze security --no-pager {unit}.service")
        match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
        assert match, out.stdout + out.stderr
        scores[unit] = float(match.group(1))
    with capsys.disabled():  # shown in the Molecule output even when the test passes
        print("\nsystemd-analyze security exposure (lower is better, limit 2.0):")
        for unit, score in sorted(scores.items()):
            print(f"  {unit:32s} {score:.1f}")
    assert all(s <= EXPOSURE_MAX for s in scores.values()), scores


def test_env_file_is_private(host):
    env = host.file("/etc/gept/collectors.env")
    assert env.user == "gept-collector" and env.mode == 0o600
    dash = host.file("/etc/gept/dashboard.env")
    assert dash.user == "gept-dashboard" and dash.mode == 0o600


def test_release_layout(host):
    current = host.file("/opt/gept/collectors/current")
    assert current.is_symlink and current.linked_to.startswith("/opt/gept/collectors/releases/")
    assert host.file(f"{current.linked_to}/.complete").exists
    assert host.file(f"{current.linked_to}/venv/bin/python").exists
    assert not host.file(f"{current.linked_to}/app/tests").exists


@pytest.mark.parametrize("name,port", COLLECTORS.items())
def test_metrics_endpoint_answers_on_localhost(host, name, port):
    out = wait_for(
        host,
        f"curl -fsS http://127.0.0.1:{port}/metrics | grep -q '^gept_{name}_requests_total'",
        attempts=20,
        delay=2,
    )
    assert out.rc == 0, f"gept_{name} metrics not answering on 127.0.0.1:{port}"
    listen = host.socket(f"tcp://127.0.0.1:{port}")
    assert listen.is_listening


@pytest.mark.parametrize("name", COLLECTORS)
def test_rows_arrive_from_the_standin(host, name):
    table = TABLES[name]
    count = f"runuser -u postgres -- psql -d gept -Atc 'SELECT count(*) FROM {table}'"
    out = wait_for(host, f"cd /tmp && test $({count}) -gt 0", attempts=45, delay=2)
    journal = host.run(f"journalctl -u gept-collector-{name} -n 40 --no-pager").stdout
    assert out.rc == 0, f"no rows in {table}\n{journal}"
    # A successful cycle since the (re)start; rows_inserted_total counts what this process
    # inserted, so after a restart it may rightly be 0 (everything was already stored).
    port = COLLECTORS[name]
    ok = wait_for(
        host,
        f"curl -fsS http://127.0.0.1:{port}/metrics | "
        f"grep -Eq '^gept_{name}_last_success_timestamp_seconds [1-9]'",
        attempts=45,
        delay=2,
    )
    assert ok.rc == 0, f"gept-collector-{name}: no successful cycle\n{journal}"
    metrics = host.run(f"curl -fsS http://127.0.0.1:{port}/metrics").stdout
    assert re.search(rf"^gept_{name}_rows_inserted_total [0-9.e+]+$", metrics, re.M)


def test_fivemin_ledger_has_no_gap(host):
    wait_for(
        host,
        f"curl -fsS http://127.0.0.1:{COLLECTORS['fivemin']}/metrics"
        " | grep -q '^gept_fivemin_missing_windows 0.0'",
        attempts=60,
        delay=2,
    )
    gaps = psql(
        host,
        "SELECT count(*) FROM (SELECT window_start - lag(window_start) OVER "
        "(ORDER BY window_start) AS d FROM collection_windows WHERE series = '5m') s "
        "WHERE d <> interval '5 minutes'",
    )
    assert gaps == "0"
    assert int(psql(host, "SELECT count(*) FROM collection_windows WHERE series = '5m'")) >= 12


def test_dashboard_health_and_status(host):
    out = wait_for(host, f"curl -fsS http://{DASHBOARD}/health", attempts=30, delay=2)
    assert out.rc == 0 and out.stdout.startswith("ok"), out.stdout
    status = json.loads(host.run(f"curl -fsS http://{DASHBOARD}/api/status").stdout)
    assert status["database"]["ok"]
    assert {c["collector"] for c in status["collectors"] if c["up"]} == set(COLLECTORS)
    page = host.run(f"curl -fsS http://{DASHBOARD}/").stdout
    assert "price_data_5min" in page
    assert "gept_dashboard_requests_total" in host.run(f"curl -fsS http://{DASHBOARD}/metrics").stdout
    assert host.socket(f"tcp://{DASHBOARD}").is_listening


def test_dashboard_panels_on_timescaledb(host):
    """The TimescaleDB panels the controller (no TimescaleDB) cannot show: hypertables with
    their chunks, the jobs view readable by the read-only role, and the data filesystem and
    Alertmanager (where deployed) reached from inside the dashboard's sandbox."""
    status = json.loads(host.run(f"curl -fsS http://{DASHBOARD}/api/status").stdout)
    storage = status["storage"]
    assert "error" not in storage, storage
    assert storage["edition"] in ("apache", "full") and storage["timescaledb"]
    tables = {h["table"]: h for h in storage["hypertables"]}
    for table in ("price_data_5min", "prices_1h", "prices_latest_1m", "player_counts"):
        assert tables[table]["hypertable"] and tables[table]["chunks"] >= 0, tables[table]
    assert tables["price_data_5min"]["chunks"] >= 1
    assert "used_percent" in storage["filesystem"], storage["filesystem"]
    jobs = status["safety"]["jobs"]
    assert jobs["available"] and "error" not in jobs, jobs
    alerts = status["safety"]["alerts"]
    if host.socket("tcp://127.0.0.1:9093").is_listening:  # the whole site: Alertmanager is there
        assert alerts["ok"], alerts
    else:  # the collectors dev scenario has none: only that panel is grey
        assert not alerts["ok"] and alerts["error"], alerts
    five = next(s for s in status["coverage"]["series"] if s["series"] == "5m")
    assert five["counts"].get("stored", 0) >= 1, five
    headers = host.run(f"curl -fsS -D - -o /dev/null http://{DASHBOARD}/").stdout
    assert "Content-Security-Policy: default-src 'none'" in headers, headers


def test_sigterm_stops_a_collector_quickly(host):
    out = host.run(
        "systemctl restart gept-collector-latest && sleep 2 && s=$(date +%s%N) && "
        "systemctl stop gept-collector-latest && e=$(date +%s%N) && "
        "echo $(( (e - s) / 1000000 )) && systemctl start gept-collector-latest"
    )
    assert out.rc == 0, out.stderr
    assert int(out.stdout.strip().splitlines()[-1]) < 5000
    assert_running(host, "gept-collector-latest")


def test_the_earlier_names_unit_is_gone(host):
    """prepare.yml left the stand-in running under its earlier name (gept-osrs-replay, on the
    same port); site.yml removed it, its directory and user, and runs gept-osrs-standin."""
    assert not host.file("/etc/systemd/system/gept-osrs-replay.service").exists
    assert host.run("systemctl is-active gept-osrs-replay.service").stdout.strip() != "active"
    assert not host.file("/opt/gept/osrs_replay").exists
    assert not host.user("gept-replay").exists
    assert host.service("gept-osrs-standin").is_running
