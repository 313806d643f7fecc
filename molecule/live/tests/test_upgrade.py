"""The live server after its PostgreSQL major upgrade (molecule scenario `live`).

converge.yml, after the DuckDB move: a fresh backup; a rehearsal of the rollback (an upgrade in
copy mode, rolled back with upgrade_postgresql_rollback, the rolled-back 17/main removed by the
operator); the upgrade that stays (playbooks/upgrade_postgresql.yml, 15 -> 17, link mode); then
site.yml again, which adopts 17/main. The inference stand-in ran throughout. The upgrade's
helper kept its state (/var/lib/gept/postgresql-upgrade/state.json: steps, times, counts before
and after) and every downtime window (windows.jsonl); prepare.yml recorded the before-state in
/srv/live-test/before.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
from conftest import assert_running
from live_support import BEFORE, STATE, UPGRADE_DIR, psql

HELPER = "/usr/local/lib/gept/upgrade_postgresql/gept-pg-upgrade"
TEXTFILE = "/var/lib/prometheus/node-exporter/gept-postgresql-upgrade.prom"
WINDOW = 300  # live_test_window_seconds (host_vars)
INFERENCE_INTERVAL = 5  # live_test_inference_interval
# An error is inside a downtime window when it was recorded between the window's start and its
# end plus one inference cycle and its connect timeout (the stand-in notices on its next cycle).
SLACK = INFERENCE_INTERVAL + 5 + 2
ML_TABLES = ("predictions", "actual_fills", "calibration_metrics")
ML_WRITTEN = {"public.predictions"}  # the inference stand-in writes it throughout


@pytest.fixture(scope="module")
def state(host) -> dict:
    f = host.file(f"{UPGRADE_DIR}/state.json")
    if not f.exists:
        pytest.fail("the upgrade left no state: playbooks/upgrade_postgresql.yml did not run")
    return json.loads(f.content_string)


@pytest.fixture(scope="module")
def windows(host) -> list[dict]:
    f = host.file(f"{UPGRADE_DIR}/windows.jsonl")
    assert f.exists, "no downtime window was recorded"
    return [json.loads(line) for line in f.content_string.splitlines() if line.strip()]


def test_one_cluster_17_online_on_5432_and_15_down_without_autostart(host):
    clusters = [line.split()[:4] for line in host.check_output("pg_lsclusters -h").splitlines()]
    print(f"clusters: {clusters}")
    online = [c for c in clusters if c[3].startswith("online")]
    assert online == [["17", "main", "5432", "online"]], f"online clusters: {online}"
    old = [c for c in clusters if c[0] == "15"]
    assert len(old) == 1 and old[0][3] == "down" and old[0][2] != "5432", f"the old cluster: {old}"
    assert host.file("/etc/postgresql/15/main/start.conf").content_string.split("\n")[-2].strip() == "manual"
    # Debian starts clusters at boot through its systemd generator's links (from start.conf).
    assert not host.service("postgresql@15-main.service").is_running
    assert not host.file("/run/systemd/generator/postgresql.service.wants/postgresql@15-main.service").exists
    assert_running(host, "postgresql@17-main.service")
    # No cluster beside them (the package installs were guarded).
    assert len(clusters) == 2


def test_full_edition_and_extension_updated_to_the_newest_package(host, state):
    assert psql(host, "SHOW timescaledb.license") == "timescale"
    have, newest = psql(
        host,
        "SELECT e.extversion, a.default_version FROM pg_extension e JOIN pg_available_extensions a"
        " ON a.name = e.extname WHERE e.extname = 'timescaledb'",
    ).split("|")
    madison = host.check_output("apt-cache madison timescaledb-2-postgresql-17")
    packaged = sorted({line.split("|")[1].strip().split("~")[0] for line in madison.splitlines()})
    before = state["before"]["osrs_data"]["timescaledb"]
    print(f"timescaledb before {before}, now {have}; packages for 17: {packaged}")
    assert have == newest == "2.29.2"
    assert before == "2.28.3" and "2.28.3" in packaged


def test_server_is_17_on_the_port_the_ml_pipeline_uses(host):
    assert psql(host, "SHOW server_version_num")[:2] == "17"
    assert psql(host, "SHOW port") == "5432"
    # The ML pipeline's own connection settings (unchanged) reach it.
    env = host.file("/etc/osrs-ml.env").content_string
    assert re.search(r"^PGPORT=5432$", env, re.M)


def test_row_counts_equal_before_and_after(state):
    before, after = state["before"], state["after"]
    assert before.keys() == after.keys()
    differ = {}
    for db, b in before.items():
        for table, n in b["counts"].items():
            m = after[db]["counts"].get(table)
            if m != n and not (f"{table}" in ML_WRITTEN and m > n):
                differ[f"{db}.{table}"] = (n, m)
    total = sum(sum(b["counts"].values()) for b in before.values())
    print(
        f"{sum(len(b['counts']) for b in before.values())} tables, {total} rows before; differing: {differ}"
    )
    print(f"rows the inference stand-in wrote meanwhile: {state.get('grown')}")
    assert not differ, f"row counts changed across the upgrade: {differ}"
    assert before["osrs_data"]["counts"]["public.price_data_5min"] > 1_000_000


def test_jobs_present(host, state):
    jobs = int(psql(host, "SELECT count(*) FROM timescaledb_information.jobs"))
    print(f"jobs before {state['before']['osrs_data']['jobs']}, after {jobs}")
    assert jobs >= state["before"]["osrs_data"]["jobs"] > 0


@pytest.mark.parametrize("table", ML_TABLES)
def test_ml_tables_unchanged(host, table):
    marks = json.loads(host.file(f"{BEFORE}/marks.json").content_string)
    before = json.loads(host.file(f"{BEFORE}/checksums.json").content_string)
    args = " ".join(f"-v {k}={v}" for k, v in marks.items())
    out = host.run(
        f"PGTZ=UTC runuser -u postgres -- psql -d osrs_data -X -q -At {args} -f {STATE}/live_checksums.sql"
    )
    assert out.rc == 0, out.stderr
    after = json.loads(out.stdout)
    print(f"{table}: before {before[table]}, after {after[table]}")
    assert after[table] == before[table]
    owner = psql(host, f"SELECT tableowner FROM pg_tables WHERE tablename = '{table}'")
    assert owner == "osrs_user"


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_downtime_measured(state, windows):
    """The figures the docs quote: the writers' stop and the cluster's unavailability."""
    for w in windows:
        extra = ""
        if "cluster_down" in w and "extension_updated" in w:
            extra = f", cluster unavailable {w['extension_updated'] - w['cluster_down']:.1f} s"
        print(f"{w['kind']} ({w.get('method', '-')}): writers stopped {w['end'] - w['start']:.1f} s{extra}")
    print(f"last upgrade measured: {state['measured']}")
    kinds = [(w["kind"], w.get("method")) for w in windows]
    assert ("upgrade", "copy") in kinds and ("rollback", None) in kinds and ("upgrade", "link") in kinds
    assert state["state"] == "done" and state["method"] == "link"


def test_inference_errors_only_inside_the_downtime_windows(host, windows):
    inference = json.loads(host.file("/var/lib/osrs-inference/state.json").content_string)
    errors = inference["errors"]
    outside = [
        e for e in errors if not any(w["start"] - 1 <= _epoch(e["at"]) <= w["end"] + SLACK for w in windows)
    ]
    print(
        f"inference stand-in: {inference['reads']} reads, {inference['error_count']} errors"
        f" ({len(errors)} kept), {inference['stale_count']} stale reads,"
        f" worst staleness {inference['worst_staleness_seconds']} s"
    )
    for e in errors[-10:]:
        print(f"  {e['at']}: {e['error'][:150]}")
    assert inference["error_count"] == len(errors), (
        "more errors than the stand-in keeps: some were not checked"
    )
    assert not outside, f"inference errors outside every downtime window: {outside}"
    assert inference["stale_count"] == 0, inference["stale_reads"]
    # Its errors span at most the window each (what the ML pipeline saw as downtime).
    if errors:
        first, last = _epoch(errors[0]["at"]), _epoch(errors[-1]["at"])
        print(
            f"inference errors from {errors[0]['at']} to {errors[-1]['at']}"
            f" ({last - first:.0f} s across all windows)"
        )


def test_no_5_minute_window_missing_around_the_downtime(host, windows):
    start = min(w["start"] for w in windows) - 3600
    end = max(w["end"] for w in windows)
    out = psql(
        host,
        f"""SELECT count(*), string_agg(w::text, ', ') FROM generate_series(
              to_timestamp(floor({start} / {WINDOW}) * {WINDOW}),
              to_timestamp(floor({end} / {WINDOW}) * {WINDOW} - {WINDOW}), interval '{WINDOW} seconds') AS w
            WHERE NOT EXISTS (SELECT 1 FROM price_data_5min WHERE "timestamp" = w)""",
    )
    missing, which = out.split("|")
    assert missing == "0", f"5-minute windows missing around the upgrade: {which}"


def test_rollback_rehearsal_brought_15_back(host):
    rows = [
        line.split()[:4] for line in host.file(f"{STATE}/clusters-after-rollback").content_string.splitlines()
    ]
    print(f"clusters after the rollback: {rows}")
    assert ["15", "main", "5432", "online"] in rows
    assert any(r[0] == "17" and r[3] == "down" and r[2] != "5432" for r in rows)


def test_progress_metric_says_done(host):
    text = host.file(TEXTFILE).content_string
    assert re.search(r'^gept_postgresql_upgrade_state\{from="15",to="17",state="done"\} 1$', text, re.M), text
    done = re.search(r"^gept_postgresql_upgrade_steps_done\{[^}]*\} (\d+)$", text, re.M)
    total = re.search(r"^gept_postgresql_upgrade_steps_total\{[^}]*\} (\d+)$", text, re.M)
    assert done and total and done.group(1) == total.group(1)


def test_planner_statistics_after_the_upgrade(host, state):
    """pg_upgrade carries no statistics; the upgrade's statistics step analysed every table.
    (An ANALYZE by autovacuum or by the history move would also fill pg_stats, so the step's
    own record is checked too.)"""
    assert "statistics" in state["steps_done"], state["steps_done"]
    print(f"analyze in stages: {state['measured'].get('statistics_seconds')} s")
    tables = psql(
        host,
        """SELECT count(*) FROM pg_stat_user_tables
            WHERE relname IN ('predictions', 'actual_fills', 'calibration_metrics')
              AND last_analyze IS NOT NULL""",
    )
    assert int(tables) == 3


def test_site_adopted_17(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/gept_postgresql.fact").content_string)
    print(f"local fact: {fact}")
    assert str(fact["version"]) == "17"


@pytest.mark.parametrize("step", ["upgrade_postgresql", "site_after_upgrade", "adopt_price_history"])
def test_apt_update_clean_after_the_upgrade(host, step):
    log = host.file(f"{STATE}/apt-update-{step}.log")
    assert log.exists, f"apt-get update was not recorded after {step}"
    bad = [line for line in log.content_string.splitlines() if re.match(r"^(W|E|Err):", line)]
    assert not bad, f"apt-get update after {step}:\n" + "\n".join(bad)


def test_rollback_refused_after_the_link_upgrade(host):
    """The same helper the playbook's rollback mode runs: after a link-mode upgrade it refuses
    (the clusters share their files and 17 has run), and nothing changes."""
    before = host.check_output("pg_lsclusters -h")
    out = host.run(f"{HELPER} rollback --old=15 --new=17 --port=5432 --state-dir={UPGRADE_DIR}")
    print(out.stdout)
    assert out.rc == 2
    assert "link mode" in json.loads(out.stdout)["msg"]
    assert host.check_output("pg_lsclusters -h") == before
