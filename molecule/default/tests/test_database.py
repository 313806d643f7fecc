"""The database host (roles timescaledb + pgbouncer) as converged: PostgreSQL + TimescaleDB
running with the computed tuning, scram-only access, the schema and hypertables, the
login roles' privileges through PgBouncer, and the edition's own work: on the full edition
(installed from the stand-in of Timescale's apt repository) the compression, retention and
refresh policies run by TimescaleDB's job scheduler; on the Apache edition the timers.

Linked from molecule/timescaledb/tests (the area's dev scenario); the default scenario runs
it against the whole site.yml.
"""

import itertools
import json
import shlex
import sys
from pathlib import Path

import pytest
from conftest import PG_MAJOR, assert_running, wait_for

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "roles" / "timescaledb" / "filter_plugins"))
import timescaledb_tune  # noqa: E402  (the very module the role's filter uses)

PG_UNIT = f"postgresql@{PG_MAJOR}-main"
DB = "gept"
SQL_DIR = "/etc/gept/timescaledb"
HYPERTABLES = {"price_data_5min", "prices_latest_1m", "prices_1h", "player_counts"}
# An item id no real item has, so the tests' rows are theirs alone (and removed after).
TEST_ITEM = 990001
MEMORY_SETTINGS = {
    "shared_buffers",
    "effective_cache_size",
    "maintenance_work_mem",
    "work_mem",
    "wal_buffers",
    "min_wal_size",
    "max_wal_size",
}


def psql(host, sql: str, db: str = DB):
    """Run SQL as the postgres superuser (peer over the local socket); return the result."""
    return host.run(f"runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -d {db} -c {shlex.quote(sql)}")


def q(host, sql: str, db: str = DB) -> str:
    out = psql(host, sql, db)
    assert out.rc == 0, out.stderr
    return out.stdout.strip()


def bouncer_password(host, user: str) -> str:
    """The user's password as PgBouncer holds it (so the test needs no vault)."""
    line = host.run(f"grep '^\"{user}\" ' /etc/pgbouncer/userlist.txt").stdout.strip()
    assert line, f"{user} missing from userlist.txt"
    return line.split(" ", 1)[1].strip().strip('"').replace('""', '"')


def as_user(host, user: str, sql: str, port: int = 6432, db: str = DB):
    """Run SQL as a login role over TCP (through PgBouncer by default)."""
    pw = bouncer_password(host, user)
    return host.run(
        f"PGPASSWORD={shlex.quote(pw)} psql -X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p {port} "
        f"-U {user} -d {db} -c {shlex.quote(sql)}"
    )


def edition(host) -> str:
    return q(host, "SHOW timescaledb.license")


def full_edition_only(host) -> None:
    if edition(host) != "timescale":
        pytest.skip("Apache edition: no policies, no Timescale repository")


def test_postgresql_running(host):
    assert_running(host, PG_UNIT)
    assert wait_for(host, "pg_isready -q -h /var/run/postgresql -p 5432", attempts=15).rc == 0


def test_listens_on_loopback_only(host):
    listening = host.run("ss -Htln").stdout
    for port in (5432, 6432):
        addrs = [line.split()[3] for line in listening.splitlines() if line.split()[3].endswith(f":{port}")]
        assert addrs, f"nothing listens on {port}"
        assert all(a.startswith(("127.0.0.1:", "[::1]:")) for a in addrs), addrs


def test_timescaledb_extension_present(host):
    assert q(host, "SHOW shared_preload_libraries").split(",")[0].strip() == "timescaledb"
    assert q(host, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    assert edition(host) in ("apache", "timescale")
    # The edition the role detected, as the local fact other roles and operators read.
    fact = json.loads(host.file("/etc/ansible/facts.d/timescaledb.fact").content_string)
    assert fact["edition"] == edition(host)
    if fact["edition"] == "apache":
        # Compression is reported unavailable; retention and rollups run from timers.
        assert (fact["compression"], fact["retention"], fact["rollups"]) == (False, "timer", "table")


def test_tuned_values_in_effect(host):
    memtotal_mb = int(host.run("awk '/^MemTotal:/ {print $2}' /proc/meminfo").stdout) // 1024
    cpus = int(host.run("grep -c ^processor /proc/cpuinfo").stdout)
    expected = timescaledb_tune.tune(memtotal_mb, cpus)
    assert host.file(f"/etc/postgresql/{PG_MAJOR}/main/conf.d/50-gept-tuning.conf").exists
    for name, value in expected.items():
        if name in MEMORY_SETTINGS:
            live = q(host, f"SELECT pg_size_bytes(current_setting('{name}'))")
            assert int(live) == int(q(host, f"SELECT pg_size_bytes('{value}')")), name
        else:
            assert float(q(host, f"SHOW {name}")) == float(value), name
    assert q(host, "SHOW password_encryption") == "scram-sha-256"


def test_pg_hba_is_scram_or_peer_only(host):
    methods = set(q(host, "SELECT DISTINCT auth_method FROM pg_hba_file_rules").split())
    assert methods <= {"scram-sha-256", "peer"}, methods
    assert q(host, "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL") == "0"
    hba = host.file(f"/etc/postgresql/{PG_MAJOR}/main/pg_hba.conf").content_string
    rules = [line.split() for line in hba.splitlines() if line.strip() and not line.startswith("#")]
    assert not [r for r in rules if r[-1] in ("trust", "md5", "password")]
    peer = [r for r in rules if r[-1] == "peer"]
    assert peer and all(r[0] == "local" and r[2] == "postgres" for r in peer), peer


def test_migrations_ledger(host):
    applied = q(host, "SELECT name FROM schema_migrations ORDER BY version").splitlines()
    shipped = sorted(
        Path(p).name for p in host.run("ls /usr/local/lib/gept-timescaledb/migrations/*.sql").stdout.split()
    )
    assert applied == shipped and applied[:2] == ["000_adopt_existing_tables.sql", "001_base_schema.sql"]


def test_hypertables_listed(host):
    names = set(q(host, "SELECT hypertable_name FROM timescaledb_information.hypertables").split())
    assert HYPERTABLES <= names
    interval = q(
        host,
        "SELECT time_interval FROM timescaledb_information.dimensions "
        "WHERE hypertable_name = 'price_data_5min'",
    )
    assert interval == "7 days"


def test_collector_writes_its_tables_through_pgbouncer(host):
    assert_running(host, "pgbouncer")
    out = as_user(
        host,
        "gept_collector",
        "BEGIN; "
        "CREATE TEMP TABLE stage (LIKE price_data_5min) ON COMMIT DROP; "
        "INSERT INTO stage VALUES (2, now(), 10, 1, 9, 1); "
        "INSERT INTO price_data_5min SELECT * FROM stage; "
        "INSERT INTO items (item_id, name) VALUES (2, 'Cannonball') "
        "  ON CONFLICT (item_id) DO UPDATE SET name = EXCLUDED.name; "
        "SELECT current_user || ':' || count(*) FROM price_data_5min WHERE item_id = 2; "
        "ROLLBACK;",
    )
    assert out.rc == 0, out.stderr
    assert "gept_collector:1" in out.stdout.split(), out.stdout


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO schema_migrations VALUES ('999', 'x', 'x')",
        "DELETE FROM price_data_5min",
        "UPDATE price_data_5min SET avg_high_price = 0",
        "TRUNCATE prices_latest_1m",
        "DROP TABLE price_data_5min",
        "CREATE TABLE public.collector_scratch (x int)",
    ],
)
def test_collector_cannot_write_what_it_does_not_own(host, sql):
    out = as_user(host, "gept_collector", sql)
    assert out.rc != 0
    assert "permission denied" in out.stderr or "must be owner" in out.stderr, out.stderr


def test_readonly_reads_but_cannot_write(host):
    assert as_user(host, "gept_readonly", "SELECT count(*) FROM price_data_5min").rc == 0
    out = as_user(host, "gept_readonly", "INSERT INTO items (item_id, name) VALUES (3, 'x')")
    assert out.rc != 0 and "permission denied" in out.stderr


def test_exporter_role_is_pg_monitor(host):
    assert q(host, "SELECT pg_has_role('gept_exporter', 'pg_monitor', 'MEMBER')") == "t"
    assert q(host, "SELECT has_table_privilege('gept_exporter', 'price_data_5min', 'SELECT')") == "t"
    assert q(host, "SELECT has_table_privilege('gept_exporter', 'price_data_5min', 'INSERT')") == "f"


def test_only_the_login_roles_connect_and_nobody_creates_in_public(host):
    assert q(host, "SELECT has_database_privilege('public', current_database(), 'CONNECT')") == "f"
    assert q(host, "SELECT has_database_privilege('public', current_database(), 'TEMPORARY')") == "f"
    assert q(host, "SELECT has_schema_privilege('public', 'public', 'CREATE')") == "f"
    rows = q(
        host,
        "SELECT rolname, rolcanlogin,"
        " rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls, rolconnlimit"
        " FROM pg_roles WHERE rolname IN ('gept_collector', 'gept_readonly', 'gept_exporter')"
        " ORDER BY rolname",
    )
    assert rows.splitlines() == ["gept_collector|t|f|40", "gept_exporter|t|f|5", "gept_readonly|t|f|20"]
    staging = "CREATE TEMP TABLE gept_test_staging (x int) ON COMMIT DROP"  # as the collectors stage COPY
    assert as_user(host, "gept_collector", staging).rc == 0


def test_login_passwords_are_not_written_to_the_host(host):
    """login_roles.sql reaches gept_db.py on stdin: none of the role's files holds a password."""
    assert not host.file(f"{SQL_DIR}/login_roles.sql").exists
    for user in ("gept_collector", "gept_readonly"):  # the passwords PgBouncer knows
        pw = bouncer_password(host, user)
        found = host.run(f"grep -rlF -- {shlex.quote(pw)} {SQL_DIR} /usr/local/lib/gept-timescaledb")
        assert found.rc == 1, found.stdout


def test_pgbouncer_stats_user(host):
    out = as_user(host, "gept_pgbouncer_stats", "SHOW POOLS", db="pgbouncer")
    assert out.rc == 0, out.stderr
    assert "transaction" in out.stdout
    assert host.file("/etc/pgbouncer/userlist.txt").mode == 0o600


def test_apache_edition_timers_exist_and_work(host):
    if edition(host) != "apache":
        pytest.skip("full edition: retention and rollups are database policies")
    for timer in ("gept-timescaledb-retention.timer", "gept-timescaledb-rollups.timer"):
        assert_running(host, timer)
    item = TEST_ITEM
    q(host, f"DELETE FROM prices_latest_1m WHERE item_id = {item}")
    # One row in a chunk past the 30-day retention of prices_latest_1m, one recent row.
    q(
        host,
        'INSERT INTO prices_latest_1m (item_id, "timestamp", high, low) VALUES '
        f"({item}, now() - interval '45 days', 100, 90), ({item}, now(), 100, 90)",
    )
    old_chunks = (
        "SELECT count(*) FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'prices_latest_1m' AND range_end < now() - interval '30 days'"
    )
    assert int(q(host, old_chunks)) >= 1
    run = host.run("systemctl start gept-timescaledb-retention.service")
    assert run.rc == 0, run.stderr
    assert q(host, old_chunks) == "0"
    assert q(host, f"SELECT count(*) FROM prices_latest_1m WHERE item_id = {item}") == "1"
    q(host, f"DELETE FROM prices_latest_1m WHERE item_id = {item}")


def test_apache_edition_rollups_refresh(host):
    if edition(host) != "apache":
        pytest.skip("full edition: continuous aggregates")
    item = TEST_ITEM
    # A fixed, complete hour inside the timer's look-back window (no race with the clock).
    bucket = q(host, "SELECT date_trunc('hour', now()) - interval '2 hours'")
    q(host, f"DELETE FROM price_data_5min WHERE item_id = {item}")
    q(
        host,
        "INSERT INTO price_data_5min VALUES "
        f"({item}, '{bucket}', 100, 3, 90, 4), "
        f"({item}, '{bucket}'::timestamptz + interval '5 minutes', 120, 1, 80, 2)",
    )
    run = host.run("systemctl start gept-timescaledb-rollups.service")
    assert run.rc == 0, run.stderr
    row = q(
        host,
        "SELECT open_high_price, max_high_price, close_high_price, high_price_volume, sample_count "
        f"FROM price_data_hourly WHERE item_id = {item} AND bucket = '{bucket}'",
    )
    assert row == "100|120|120|4|2"
    daily = q(host, f"SELECT sample_count FROM price_data_daily WHERE item_id = {item}")
    assert daily.split() and int(daily.split()[-1]) >= 1
    assert as_user(host, "gept_readonly", "SELECT count(*) FROM price_data_daily").rc == 0
    q(host, f"DELETE FROM price_data_5min WHERE item_id = {item}")


def test_invalid_settings_are_rejected_before_they_land(host):
    """The validate: checkers refuse what would leave a server (or PgBouncer) unable to start."""
    host.run("echo \"work_mem = '12kB'\" > /tmp/gept-bad.conf")
    cluster = (
        f"/etc/postgresql/{PG_MAJOR}/main /var/lib/postgresql/{PG_MAJOR}/main "
        f"/usr/lib/postgresql/{PG_MAJOR}/bin"
    )
    checkconf = "/usr/local/lib/gept-timescaledb/pg-checkconf"
    bad = host.run(f"{checkconf} /tmp/gept-bad.conf 50-gept-tuning.conf {cluster}")
    assert bad.rc != 0 and "work_mem" in bad.stderr
    tuning = f"/etc/postgresql/{PG_MAJOR}/main/conf.d/50-gept-tuning.conf"
    good = host.run(f"{checkconf} {tuning} 50-gept-tuning.conf {cluster}")
    assert good.rc == 0, good.stderr
    host.run("printf '[pgbouncer]\\nno_such_setting = 1\\n' > /tmp/gept-bad.ini")
    assert host.run("/usr/local/lib/gept-pgbouncer/pgbouncer-checkconf /tmp/gept-bad.ini").rc != 0
    assert host.run("/usr/local/lib/gept-pgbouncer/pgbouncer-checkconf /etc/pgbouncer/pgbouncer.ini").rc == 0
    assert_running(host, PG_UNIT)


# --- Full edition: installed like production, policies run by the job scheduler -------------

TSDB_PKG = f"timescaledb-2-postgresql-{PG_MAJOR}"


def test_full_edition_installed_from_the_timescale_repository(host):
    """What got installed, and from where (`apt-get update` exits 0 even when a signature
    check fails, so the proof is the package, its origin and the verified index)."""
    full_edition_only(host)
    sources = host.file("/etc/apt/sources.list.d/timescaledb.sources").content_string
    fields = dict(line.split(": ", 1) for line in sources.splitlines() if ": " in line)
    uri = fields["URIs"].rstrip("/")
    suite = host.system_info.codename
    debian = host.run(". /etc/os-release && echo $VERSION_ID").stdout.strip()
    assert fields["Suites"] == suite and fields["Signed-By"].startswith("/etc/apt/keyrings/"), sources
    assert host.file(fields["Signed-By"]).exists
    version, status = host.run(f"dpkg-query -W -f='${{Version}}|${{Status}}' {TSDB_PKG}").stdout.split("|")
    assert status.endswith("ok installed") and version.endswith(f"~debian{debian}"), (version, status)
    # apt keeps a repository's index only once its signature verified (InRelease, Signed-By key).
    mangled = uri.split("://", 1)[1].replace("/", "_")
    assert host.file(f"/var/lib/apt/lists/{mangled}_dists_{suite}_InRelease").exists
    policy = host.run(f"apt-cache policy {TSDB_PKG}").stdout
    # The origins listed under the installed version ("*** VERSION") include the repository.
    lines = policy.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith(f"*** {version} "))
    origins = list(itertools.takewhile(lambda line: line.startswith(" " * 8), lines[at + 1 :]))
    assert any(f"{uri} {suite}/main" in line for line in origins), policy
    # The TSL part is there and loaded; the role detected the same.
    ext = q(host, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    assert version.startswith(ext + "~"), (version, ext)
    assert host.file(f"/usr/lib/postgresql/{PG_MAJOR}/lib/timescaledb-tsl-{ext}.so").exists
    assert (
        json.loads(host.file("/etc/ansible/facts.d/timescaledb.fact").content_string)["compression"] is True
    )


def test_postgresql_held_at_the_minor_timescaledb_was_built_for(host):
    full_edition_only(host)
    depends = host.run(f"dpkg-query -W -f='${{Depends}}' {TSDB_PKG}").stdout
    built_for = depends.split(f"postgresql-{PG_MAJOR} (>= ", 1)[1].split(")", 1)[0]
    pg = host.run(f"dpkg-query -W -f='${{Version}}|${{Status}}' postgresql-{PG_MAJOR}").stdout.split("|")
    assert pg[0] == built_for, (pg, depends)
    assert pg[1].startswith("hold "), pg


POLICY_PROCS = ("policy_compression", "policy_retention", "policy_refresh_continuous_aggregate")


def test_policies_run_by_the_job_scheduler(host):
    """Rows placed for each policy, then TimescaleDB's scheduler (short schedules in the test
    inventory) does the work by itself: the chunk past the retention is dropped, the chunk
    past compress_after is compressed, the hourly aggregate is materialized and equals the raw
    rows, and job_stats shows each policy succeeded (bounded wait)."""
    full_edition_only(host)
    item = TEST_ITEM
    q(
        host,
        f"DELETE FROM price_data_5min WHERE item_id = {item}; "
        f"DELETE FROM prices_latest_1m WHERE item_id = {item}",
    )
    started = q(host, "SELECT now()")
    old = q(host, "SELECT date_trunc('day', now()) - interval '60 days'")
    hour = q(host, "SELECT date_trunc('hour', now()) - interval '2 days'")
    q(
        host,
        "INSERT INTO price_data_5min SELECT "
        f"{item}, ts, 100 + (extract(minute FROM ts))::int, 2, 90 - (extract(minute FROM ts))::int, 3 "
        f"FROM generate_series('{hour}'::timestamptz, '{hour}'::timestamptz + interval '55 minutes', "
        "interval '5 minutes') AS ts "
        f"UNION ALL SELECT {item}, '{old}'::timestamptz + interval '5 minutes' * g, 50, 1, 40, 1 "
        "FROM generate_series(0, 11) AS g",
    )
    q(
        host,
        'INSERT INTO prices_latest_1m (item_id, "timestamp", high, low) '
        f"VALUES ({item}, now() - interval '45 days', 1, 1)",
    )
    expired = (
        "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'prices_latest_1m' "
        "AND range_end < now() - interval '30 days'"
    )
    old_chunk_compressed = (
        "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks WHERE hypertable_name = "
        f"'price_data_5min' AND range_start <= '{old}' AND range_end > '{old}'"
    )
    mat = q(
        host,
        "SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) "
        "FROM timescaledb_information.continuous_aggregates WHERE view_name = 'price_data_hourly'",
    )
    materialized = f"SELECT count(*) FROM {mat} WHERE item_id = {item} AND bucket = '{hour}'"
    ran_since = (
        "SELECT count(DISTINCT j.proc_name) FROM timescaledb_information.jobs j "
        "JOIN timescaledb_information.job_stats s USING (job_id) "
        f"WHERE j.proc_name IN {POLICY_PROCS} AND s.last_run_status = 'Success' "
        f"AND s.last_run_started_at > '{started}'"
    )
    done = f"({expired}) = 0 AND ({old_chunk_compressed}) AND ({materialized}) = 1 AND ({ran_since}) = 3"
    wait_for(
        host,
        f"runuser -u postgres -- psql -X -At -d {DB} -c {shlex.quote('SELECT ' + done)} | grep -qx t",
        attempts=60,
        delay=3,
    )
    report = q(
        host,
        "SELECT string_agg(format('%s %s %s %s', j.proc_name, j.hypertable_name, s.last_run_status, "
        "s.last_run_started_at), E'\\n') FROM timescaledb_information.jobs j "
        f"JOIN timescaledb_information.job_stats s USING (job_id) WHERE j.proc_name IN {POLICY_PROCS}",
    )
    assert q(host, expired) == "0", report
    assert q(host, old_chunk_compressed) == "t", report
    assert q(host, materialized) == "1", report
    assert q(host, ran_since) == "3", report
    # Every run of every job succeeded (the scheduler's jobs fail on current PostgreSQL minors
    # without the patch in patches/timescaledb/), and the compressed rows are all still there.
    assert q(host, "SELECT coalesce(sum(total_failures), 0) FROM timescaledb_information.job_stats") == "0", (
        report
    )
    # A run cut off by a restart of the server (the converge restarts it once to turn on WAL
    # archiving) is reported by the scheduler after the restart as a failure without error data
    # (a "crash" in job_stats); that is the restart, not the job. Every other failure counts,
    # and so does any run without error data that started in the current server's life.
    real_errors = (
        "FROM timescaledb_information.job_errors WHERE NOT (sqlerrcode IS NULL "
        "AND coalesce(err_message, 'job crash detected') LIKE 'job crash detected%' "
        "AND coalesce(start_time, '-infinity') < pg_postmaster_start_time())"
    )
    assert q(host, f"SELECT count(*) {real_errors}") == "0", q(
        host,
        "SELECT string_agg(format('%s started %s finished %s: %s %s', proc_name, start_time, finish_time, "
        f"sqlerrcode, err_message), E'\\n') {real_errors}",
    )
    kept = f"SELECT count(*) FROM price_data_5min WHERE item_id = {item} AND \"timestamp\" < '{hour}'"
    assert q(host, kept) == "12"
    # The materialized hourly bucket equals the raw rows.
    raw = q(
        host,
        'SELECT first(avg_high_price, "timestamp"), max(avg_high_price), min(avg_low_price), '
        'last(avg_low_price, "timestamp"), sum(high_price_volume), count(*) FROM price_data_5min '
        f"WHERE item_id = {item} AND time_bucket('1 hour', \"timestamp\") = '{hour}'",
    )
    agg = q(
        host,
        "SELECT open_high_price, max_high_price, min_low_price, close_low_price, high_price_volume, "
        f"sample_count FROM {mat} WHERE item_id = {item} AND bucket = '{hour}'",
    )
    assert agg == raw == "100|155|35|35|24|12", (agg, raw)
    q(host, f"DELETE FROM price_data_5min WHERE item_id = {item}")
