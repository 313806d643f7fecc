"""The old server after phase 1, the DuckDB move and the cutover (molecule scenario `legacy`).

prepare built the seed's before-state (legacy process from a unit, cron, rc.local and a stray
copy ignoring SIGTERM; a running compose project with the seed's names holding 9100-9103 and
8080; DuckDB files with known rows in a 0750 directory of the ubuntu user, and the services
writing them); converge ran the database, collector and monitoring roles (node_exporter and the
dashboard left waiting for their ports), stop_legacy.yml, migrate_duckdb.yml and status.yml;
side_effect proved the phase-1 rollback, two refusals, the cutover, its rollback and the cutover
again. These tests check the result.
"""

import json

import pytest
from conftest import assert_running, wait_for

APP = "/home/ubuntu/osrs_collector"
LEGACY_PATTERN = r"^[^ ]*python[0-9.]*( [^ ]+)* [^ ]*osrs_collector_pg\.py( |$)"
PLAYER_ROWS = 2000  # legacy_test_player_rows (host_vars)
ITEM_ROWS = 60  # legacy_test_item_rows


def psql(host, sql: str) -> str:
    cmd = host.run("runuser -u postgres -- psql -d gept -XAtq -v ON_ERROR_STOP=1 -c %s", sql)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


# --- phase 1 -----------------------------------------------------------------------------
def test_no_legacy_process_left(host):
    procs = host.run("pgrep -a -f -- %s", LEGACY_PATTERN)
    assert procs.rc == 1, f"legacy processes still running:\n{procs.stdout}"


def test_legacy_unit_stopped_and_disabled(host):
    unit = host.service("osrs-collector-pg.service")
    assert not unit.is_running
    assert not unit.is_enabled


def test_start_lines_removed_and_unrelated_lines_kept(host):
    crontab = host.run("crontab -l -u root").stdout
    assert "osrs_collector_pg.py" not in crontab
    assert "/usr/bin/find /tmp" in crontab, "an unrelated cron line was removed"
    rc_local = host.file("/etc/rc.local").content_string
    assert "osrs_collector_pg.py" not in rc_local
    assert rc_local.rstrip().endswith("exit 0")


def test_phase1_record_names_what_it_disabled(host):
    record = json.loads(host.file("/var/lib/gept/legacy/stop_legacy.json").content_string)
    assert [u["name"] for u in record["units"]] == ["osrs-collector-pg.service"]
    assert any("osrs_collector_pg.py" in c["line"] for c in record["cron"])
    assert any(f["path"] == "/etc/rc.local" for f in record["files"])


def _compose(host) -> dict:
    out = host.run(
        "python3 -c 'import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))' %s",
        f"{APP}/docker-compose.yml",
    )
    assert out.rc == 0, out.stderr
    return json.loads(out.stdout)["services"]


def test_compose_dashboard_healthcheck_fixed_and_nothing_else_touched(host):
    services = _compose(host)
    assert services["ge-dashboard"]["healthcheck"]["test"][-1] == "http://localhost:8080/health"
    assert services["ge-dashboard"]["labels"]["prometheus.scrape.path"] == "/metrics"
    assert services["ge-5m-collector"]["healthcheck"]["test"][-1] == "http://localhost:9100/metrics"
    content = host.file(f"{APP}/docker-compose.yml").content_string
    assert "# The seed's bug" in content, "comments must survive the edit"
    backups = host.run("ls %s/docker-compose.yml.*~", APP)
    assert backups.rc == 0, "the edit keeps a backup copy"


def test_data_still_advancing(host):
    first = int(psql(host, 'SELECT extract(epoch FROM max("timestamp"))::bigint FROM price_data_5min'))
    query = 'SELECT extract(epoch FROM max("timestamp"))::bigint FROM price_data_5min'
    later = wait_for(
        host,
        f"test $(runuser -u postgres -- psql -d gept -XAtq -c '{query}') -gt {first}",
        attempts=30,
        delay=3,
    )
    assert later.rc == 0, "the newest price_data_5min timestamp did not advance within 90 s"


@pytest.mark.parametrize(
    "unit",
    ["gept-collector-fivemin.service", "gept-collector-latest.service", "gept-collector-playercount.service"],
)
def test_systemd_collectors_run(host, unit):
    assert_running(host, unit)


def test_cutover_recorded_and_no_window_missing(host):
    record = json.loads(host.file("/var/lib/gept/legacy/cutover.json").content_string)
    assert "gept-collector-fivemin.service" in record["units"]
    # The services the compose file defines, the dashboard too; the two the seed's file lacks
    # (player count, items) are skipped.
    assert record["compose_services"] == [
        "ge-5m-collector",
        "ge-1m-collector",
        "ge-1h-collector",
        "ge-news-collector",
        "ge-dashboard",
    ]
    assert record["port_units"] == ["prometheus-node-exporter.service", "gept-dashboard.service"]
    assert record["restart_policies"]["osrs-5m-collector"] == "unless-stopped"
    missing = psql(
        host,
        "WITH m AS (SELECT max(timestamp) AS t FROM price_data_5min)"
        " SELECT count(*) FROM m, generate_series(m.t - interval '3 minutes', m.t, interval '15 seconds') g"
        " WHERE NOT EXISTS (SELECT 1 FROM price_data_5min p WHERE p.timestamp = g)",
    )
    assert missing == "0"


@pytest.mark.parametrize(
    "container",
    ["osrs-5m-collector", "osrs-1m-collector", "osrs-1h-collector", "osrs-news-collector", "osrs-dashboard"],
)
def test_compose_services_stopped_and_kept_from_restarting(host, container):
    state = host.run(
        "docker inspect -f '{{.State.Running}} {{.HostConfig.RestartPolicy.Name}}' %s", container
    )
    assert state.rc == 0, state.stderr
    assert state.stdout.strip() == "false no"


@pytest.mark.parametrize(
    ("port", "unit"), [(9100, "prometheus-node-exporter.service"), (8080, "gept-dashboard.service")]
)
def test_freed_port_held_by_the_project_service(host, port, unit):
    assert_running(host, unit)
    # The socket's cgroup names its unit (ss -e; the process table of another user is hidden here).
    holders = host.run(
        "ss -ltneH 'sport = :%s' | grep -o 'cgroup:[^ ]*' | sed 's|.*/||' | sort -u", str(port)
    )
    assert holders.stdout.split() == [unit], holders.stdout
    assert host.service(unit).is_enabled


def test_prometheus_node_job_reads_node_exporter(host):
    query = "count(node_filesystem_avail_bytes{job=%22node%22})"
    got = wait_for(
        host,
        f"curl -gfsS 'http://127.0.0.1:9090/prometheus/api/v1/query?query={query}' | grep -q '\"value\"'",
        attempts=20,
        delay=3,
    )
    assert got.rc == 0, "Prometheus's node job has no node_filesystem_avail_bytes series"
    up = host.run("curl -gfsS 'http://127.0.0.1:9090/prometheus/api/v1/query?query=up{job=%22node%22}'")
    assert '"1"]' in up.stdout, up.stdout


# --- DuckDB -> PostgreSQL -------------------------------------------------------------------
def test_duckdb_directory_permissions_unchanged(host):
    data = host.file(f"{APP}/data")
    assert (data.user, data.group, data.mode) == ("ubuntu", "ubuntu", 0o750)
    assert host.run("runuser -u postgres -- ls %s/data", APP).rc != 0, "postgres must still not read it"


def test_every_known_player_count_in_postgresql(host):
    expected_sum = sum(50000 + (i * 7919) % 40000 for i in range(PLAYER_ROWS))
    got = psql(
        host,
        "SELECT count(*), sum(player_count) FROM player_counts WHERE timestamp >= '2025-06-01T00:00:00Z'"
        f" AND timestamp < '2025-06-01T00:00:00Z'::timestamptz + interval '{PLAYER_ROWS} minutes'",
    )
    assert got == f"{PLAYER_ROWS}|{expected_sum}"
    # The naive DuckDB times were read as UTC: row i is at minute i.
    assert psql(
        host, "SELECT player_count FROM player_counts WHERE timestamp = '2025-06-01T00:07:00Z'"
    ) == str(50000 + (7 * 7919) % 40000)


def test_every_known_item_in_postgresql(host):
    got = psql(
        host,
        "SELECT count(*), sum(value), sum(lowalch), sum(highalch), sum(ge_limit), count(ge_limit)"
        f" FROM items WHERE item_id BETWEEN 900000 AND {900000 + ITEM_ROWS - 1}",
    )
    limits = [100 + i for i in range(ITEM_ROWS) if i % 7 != 0]
    expected = [
        ITEM_ROWS,
        sum(i * 11 for i in range(ITEM_ROWS)),
        sum(2 * i for i in range(ITEM_ROWS)),
        sum(3 * i for i in range(ITEM_ROWS)),
        sum(limits),
        len(limits),
    ]
    assert got == "|".join(map(str, expected))
    assert psql(host, "SELECT name, members FROM items WHERE item_id = 900004") == "Legacy item 4|t"


def test_migration_verified_with_equal_sums(host):
    state = json.loads(host.file("/var/lib/gept/duckdb_migration/state.json").content_string)
    tables = [t for f in state["files"].values() for t in f["tables"]]
    assert {t["table"] for t in tables} == {"player_counts", "items"}
    for t in tables:
        assert t["verified"], t
        assert (
            t["duckdb_rows"] == t["staged_rows"] == t["present_in_postgresql"] == t["identical_in_postgresql"]
        )
        assert t["duckdb_sums"] == t["staged_sums"] == t["postgresql_sums"]
    pc = next(t for t in tables if t["table"] == "player_counts")
    assert pc["duckdb_rows"] >= PLAYER_ROWS, "the old service's own rows come along too"


def test_duckdb_files_archived_and_removed(host):
    for name in ("player_counts", "items"):
        assert not host.file(f"{APP}/data/{name}.duckdb").exists
        archives = host.run("ls /var/lib/gept/archive/duckdb/%s.duckdb.*.gz", name).stdout.split()
        assert archives, f"no archive of {name}.duckdb"
        assert host.run("gzip -t %s", archives[-1]).rc == 0
        # The archive holds a DuckDB file (header magic at byte 8).
        assert host.run("gzip -dc %s | head -c 12 | tail -c 4", archives[-1]).stdout == "DUCK"


@pytest.mark.parametrize("unit", ["osrs-player-counts.service", "osrs-items.service"])
def test_old_duckdb_services_disabled(host, unit):
    svc = host.service(unit)
    assert not svc.is_running and not svc.is_enabled


# --- status -----------------------------------------------------------------------------------
def _status(host):
    """gept-status as installed by status.yml, run as postgres (peer login over the socket)."""
    host.run("install -m 0644 /etc/gept/status.json /tmp/gept-status-test.json")
    return host.run(
        "runuser -u postgres -- env PGHOST=/var/run/postgresql PGDATABASE=gept"
        " gept-status --config /tmp/gept-status-test.json"
    )


def test_status_green_then_red_when_a_collector_stops(host):
    green = _status(host)
    assert green.rc == 0, green.stdout
    assert "price_data_5min" in green.stdout and "gept-collector-fivemin.service" in green.stdout
    host.run("systemctl stop gept-collector-news.service")
    try:
        red = _status(host)
    finally:
        host.run("systemctl start gept-collector-news.service")
    assert red.rc == 1, red.stdout
    assert any("[FAIL]" in line and "gept-collector-news.service" in line for line in red.stdout.splitlines())
