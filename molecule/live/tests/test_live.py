"""The live server after the owner's steps (molecule scenario `live`).

prepare.yml built the live server for real: PostgreSQL 15 with TimescaleDB 2.28.3 (TSL) from
Timescale's one-line source list, osrs_data with the seed's schema, weeks of 5-minute rows (with
duplicates) and the ML tables, the compose collectors and dashboard in a Docker engine writing
across their bridge and holding 9100-9103 and 8080, an inference stand-in reading and writing
as osrs_user, Oracle Cloud's rules.v4, the legacy process and its cron line, the DuckDB
services. It recorded the before-state in /srv/live-test/before. converge.yml then ran site.yml,
stop_legacy.yml, the cutover and the DuckDB migration, recording `apt-get update` after each.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
from conftest import assert_running, wait_for
from live_support import BEFORE, STATE, psql

WINDOW = 300  # live_test_window_seconds (host_vars)
DUCKDB_PLAYER_ROWS = 2000  # live_test_duckdb_player_rows
DUCKDB_ITEM_ROWS = 60  # live_test_duckdb_item_rows
COMPOSE = "docker compose -f /home/ubuntu/osrs_collector/docker-compose.yml"
COLUMNS = 'item_id, "timestamp", avg_high_price, high_price_volume, avg_low_price, low_price_volume'
OLD_PORTS = (9100, 9101, 9102, 9103, 8080)
APT_STEPS = ("prepare", "site", "stop_legacy", "cutover", "migrate_duckdb")


@pytest.fixture(scope="module")
def marks(host) -> dict:
    f = host.file(f"{BEFORE}/marks.json")
    if not f.exists:
        pytest.fail(f"{BEFORE} holds no before-state: prepare.yml did not run")
    return json.loads(f.content_string)


@pytest.fixture(scope="module")
def checksums(host, marks) -> tuple[dict, dict]:
    before = json.loads(host.file(f"{BEFORE}/checksums.json").content_string)
    args = " ".join(f"-v {k}={v}" for k, v in marks.items())
    out = host.run(
        f"PGTZ=UTC runuser -u postgres -- psql -d osrs_data -X -q -At {args} -f {STATE}/live_checksums.sql"
    )
    assert out.rc == 0, out.stderr
    return before, json.loads(out.stdout)


@pytest.fixture(scope="module")
def inference(host) -> dict:
    return json.loads(host.file("/var/lib/osrs-inference/state.json").content_string)


# --- one cluster, one database --------------------------------------------------------------
def test_one_cluster_online_on_5432(host):
    """One cluster serves: 15/main as adopted, or 17/main after the major upgrade (the old one
    then kept down until the operator removes it: test_upgrade.py)."""
    clusters = [c.split()[:4] for c in host.check_output("pg_lsclusters -h").splitlines()]
    online = [c for c in clusters if c[3] == "online"]
    assert len(online) == 1, f"not exactly one cluster online: {clusters}"
    ver, name, port, _ = online[0]
    assert (name, port) == ("main", "5432") and ver in ("15", "17")
    assert_running(host, f"postgresql@{ver}-main.service")


def test_timescaledb_still_the_full_edition(host):
    assert psql(host, "SHOW timescaledb.license") == "timescale"


def test_collectors_write_the_database_the_ml_pipeline_reads(host, inference):
    env_file = host.file("/etc/gept/collectors.env")
    assert env_file.exists, "the project's collectors are not installed"
    env = env_file.content_string
    assert re.search(r"^GEPT_DB_NAME=osrs_data$", env, re.M), (
        "the collectors are not configured for osrs_data"
    )
    assert_running(host, "gept-collector-fivemin.service")
    sessions = psql(
        host,
        "SELECT string_agg(DISTINCT datname || ':' || application_name, ' ') FROM pg_stat_activity"
        " WHERE application_name LIKE 'gept-%' OR application_name = 'osrs-inference'",
    )
    print(f"sessions: {sessions}")
    assert "osrs_data:osrs-inference" in sessions
    assert "osrs_data:gept-" in sessions, "no collector session in osrs_data"
    # The compose collectors are stopped: what is newest now, the project's collectors wrote,
    # and the inference stand-in read it.
    running = host.run(f"{COMPOSE} ps --status running --format '{{{{.Service}}}}'").stdout.split()
    assert not running, f"compose services still running: {running}"
    stopped = int(
        host.check_output("date -d \"$(docker inspect -f '{{.State.FinishedAt}}' osrs-5m-collector)\" +%s")
    )
    # A window that closed after the compose collectors stopped is stored (only the project's
    # collectors run now): bounded wait of one window and its fetch delay.
    sql = 'SELECT extract(epoch FROM max("timestamp"))::bigint FROM price_data_5min'
    got = wait_for(
        host,
        f"test $(runuser -u postgres -- psql -XAtd osrs_data -c '{sql}') -gt {stopped - WINDOW}",
        attempts=(WINDOW + 120) // 10,
        delay=10,
    )
    newest = int(psql(host, sql))
    assert got.rc == 0, f"no window newer than the compose collectors' stop was written (newest {newest})"
    read = max(inference["newest_timestamps"])
    assert read >= newest - WINDOW, (
        f"the inference stand-in's newest read ({read}) lags the newest window ({newest})"
    )


# --- the data -------------------------------------------------------------------------------
def test_no_5_minute_window_missing(host, marks):
    out = psql(
        host,
        f"""SELECT count(*), min(w), max(w) FROM generate_series(
              (SELECT min("timestamp") FROM price_data_5min), (SELECT max("timestamp") FROM price_data_5min),
              interval '{WINDOW} seconds') AS w
            WHERE NOT EXISTS (SELECT 1 FROM price_data_5min WHERE "timestamp" = w)""",
    )
    missing, first, last = out.split("|")
    assert missing == "0", f"{missing} windows missing, from {first} to {last}"
    age = float(psql(host, 'SELECT extract(epoch FROM now() - max("timestamp")) FROM price_data_5min'))
    print(f"newest window {age:.0f} s old; before-state cutoff {marks['cutoff']}")
    assert age < 3 * WINDOW, "the 5-minute data is not fresh"


def test_every_original_row_still_there_with_equal_values(host, marks):
    out = psql(
        host,
        f"""CREATE TEMP TABLE before (item_id integer, "timestamp" timestamptz, avg_high_price bigint,
              high_price_volume bigint, avg_low_price bigint, low_price_volume bigint);
            \\copy before FROM '{BEFORE}/price_data_5min.csv' WITH (FORMAT csv)
            SELECT (SELECT count(*) FROM before),
                   (SELECT count(*) FROM (SELECT * FROM before
                                          EXCEPT SELECT {COLUMNS} FROM price_data_5min) AS lost),
                   (SELECT count(*) FROM (SELECT {COLUMNS} FROM price_data_5min
                                          WHERE "timestamp" <= to_timestamp({marks["cutoff"]})
                                          EXCEPT SELECT * FROM before) AS foreign_rows);""",
    )
    rows, lost, foreign_rows = (int(x) for x in out.split("|"))
    print(
        f"before: {rows} distinct rows; lost {lost}; rows with other values in the old windows {foreign_rows}"
    )
    assert rows > 0
    assert lost == 0, f"{lost} original rows are gone or changed"
    assert foreign_rows == 0, f"{foreign_rows} rows with other values appeared in the windows before the run"


def test_price_data_5min_counts_and_sums(checksums):
    before, after = (c["price_data_5min"] for c in checksums)
    print(f"price_data_5min up to the cutoff, before: {before}")
    print(f"price_data_5min up to the cutoff, after:  {after}")
    assert {k: v for k, v in after.items() if k != "rows"} == {k: v for k, v in before.items() if k != "rows"}


@pytest.mark.parametrize("table", ["predictions", "actual_fills", "calibration_metrics"])
def test_ml_tables_unchanged(checksums, table):
    before, after = (c[table] for c in checksums)
    print(f"{table}: before {before}, after {after}")
    assert after == before


def test_ml_tables_still_osrs_users(host):
    owners = psql(
        host,
        "SELECT string_agg(tablename || ':' || tableowner, ' ' ORDER BY tablename) FROM pg_tables"
        " WHERE tablename IN ('predictions', 'actual_fills', 'calibration_metrics')",
    )
    assert owners == "actual_fills:osrs_user calibration_metrics:osrs_user predictions:osrs_user"


def test_duckdb_rows_in_osrs_data(host):
    """The DuckDB move landed the seed's known rows where the ML pipeline reads (seed columns)."""
    players = psql(
        host,
        f"""SELECT count(*) FROM generate_series(0, {DUCKDB_PLAYER_ROWS - 1}) AS i
            JOIN player_counts AS p
              ON p."timestamp" = timestamptz '2025-06-01 00:00:00+00' + make_interval(mins => i)
             AND p.count = 50000 + (i * 7919) % 40000""",
    )
    items = psql(
        host, f"SELECT count(*) FROM items WHERE id BETWEEN 900000 AND {900000 + DUCKDB_ITEM_ROWS - 1}"
    )
    assert (int(players), int(items)) == (DUCKDB_PLAYER_ROWS, DUCKDB_ITEM_ROWS)


# --- the ML pipeline's view of the run -----------------------------------------------------------
def test_inference_saw_no_error_and_no_stale_read(host, inference):
    assert_running(host, "osrs-inference.service")
    print(
        f"inference stand-in since {inference['started']}: {inference['reads']} reads,"
        f" {inference['writes']} writes,"
        f" worst staleness {inference['worst_staleness_seconds']} s (at {inference['worst_staleness_at']}),"
        f" {inference['error_count']} errors, {inference['stale_count']} stale reads"
    )
    # The PostgreSQL major upgrade's downtime windows are the only time it may fail
    # (test_upgrade.py measures them); none before it.
    windows = host.file("/var/lib/gept/postgresql-upgrade/windows.jsonl")
    first = (
        min(
            (json.loads(line)["start"] for line in windows.content_string.splitlines() if line.strip()),
            default=None,
        )
        if windows.exists
        else None
    )
    early = [
        e for e in inference["errors"] if first is None or datetime.fromisoformat(e["at"]).timestamp() < first
    ]
    assert not early, early
    assert inference["stale_count"] == 0, inference["stale_reads"]
    assert inference["reads"] > 0 and inference["writes"] > 0
    # Still reading now (the state file is rewritten every cycle).
    assert (
        wait_for(host, "test $(( $(date +%s) - $(stat -c %Y /var/lib/osrs-inference/state.json) )) -lt 60").rc
        == 0
    )


# --- the host ---------------------------------------------------------------------------------
@pytest.mark.parametrize("step", APT_STEPS)
def test_apt_update_clean(host, step):
    log = host.file(f"{STATE}/apt-update-{step}.log")
    assert log.exists, f"apt-get update was not recorded after {step}"
    bad = [line for line in log.content_string.splitlines() if re.match(r"^(W|E|Err):", line)]
    assert not bad, f"apt-get update after {step}:\n" + "\n".join(bad)


def test_apt_update_clean_now(host):
    out = host.run("apt-get update 2>&1")
    bad = [line for line in out.stdout.splitlines() if re.match(r"^(W|E|Err):", line)]
    assert out.rc == 0 and not bad, out.stdout


def test_one_apt_entry_for_timescales_repository(host):
    """The owner's timescaledb.list is adopted, not joined by a second entry for the same URI (on
    the real server both name the host's codename and apt then refuses every list)."""
    entries = host.check_output(
        "apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' | sort -u"
    ).splitlines()
    uri = host.file(f"{STATE}/timescale-uri").content_string.strip()
    timescale = [e for e in entries if e.split()[0].rstrip("/") == uri.rstrip("/")]
    print(f"Timescale entries: {timescale}")
    assert len(timescale) == 1, f"more than one apt entry for Timescale's repository: {timescale}"


def test_https_reachable_from_outside(host):
    """From the gept-wan namespace (a client outside the host) to the host's address on that link."""
    assert host.check_output("ip netns exec gept-wan security-test-connect 172.31.251.1 443") == "open"
    code = host.check_output(
        "ip netns exec gept-wan curl -sk -o /dev/null -w '%{http_code}' --max-time 5 https://172.31.251.1/"
    )
    assert code == "401", f"nginx did not answer over the outside link: {code}"


def test_old_stack_ports_belong_to_the_project_now(host):
    holders = {}
    for port in OLD_PORTS:
        out = host.run(f"ss -Hltnp 'sport = :{port}'").stdout
        holders[port] = sorted(set(re.findall(r'users:\(\("([^"]+)"', out)))
    print(f"port holders: {holders}")
    assert not [p for p, h in holders.items() if "docker-proxy" in h], "the old stack still holds ports"


def test_legacy_process_gone(host):
    procs = host.run("pgrep -af '^[^ ]*python[0-9.]* ([^ ]+ )*[^ ]*osrs_collector_pg\\.py( |$)'")
    assert procs.rc == 1, f"legacy processes still running:\n{procs.stdout}"
    assert "osrs_collector_pg.py" not in host.run("crontab -l -u root").stdout
