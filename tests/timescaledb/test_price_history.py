"""The price history move (roles/timescaledb/files/gept_history.py) on the real engine: the
live server's osrs_data built for real (tests/support/adopted_db.py: keyless price_data_5min
with duplicates, owned by osrs_user) on PostgreSQL 17 + TimescaleDB full edition
(tests/support/timescaledb.py). The script runs where production runs it: on the database's
host as the postgres OS user over the local socket (docker exec into the test server), so its
disk check sees the real data filesystem, and a kill is a real SIGKILL."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from support import adopted_db, modules, timescaledb

pytestmark = [pytest.mark.timescaledb, pytest.mark.slow]

FILES = Path(__file__).resolve().parents[2] / "roles" / "timescaledb" / "files"
REMOTE = "/srv/gept-history"
VALUES = 'item_id, "timestamp", avg_high_price, high_price_volume, avg_low_price, low_price_volume'
DAY = 86400


@pytest.fixture(scope="module")
def server() -> timescaledb.Server:
    return install(timescaledb.shared())


def install(server: timescaledb.Server) -> timescaledb.Server:
    """gept_history.py and its one dependency on the server's host (the role installs
    python3-psycopg2 there)."""
    subprocess.run(
        [
            "docker",
            "exec",
            server.name,
            "bash",
            "-c",
            "command -v python3 >/dev/null && python3 -c 'import psycopg2' 2>/dev/null || "
            "apt-get install -y -qq --no-install-recommends python3-psycopg2 >/dev/null",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    subprocess.run(["docker", "exec", server.name, "mkdir", "-p", REMOTE], check=True)
    subprocess.run(["docker", "cp", str(FILES / "gept_history.py"), f"{server.name}:{REMOTE}/"], check=True)
    return server


def run(server: timescaledb.Server, db: str, *args: str, timeout: float = 600) -> tuple[int, dict, str]:
    """gept_history.py as postgres on the server's host: (exit code, final JSON, all output)."""
    proc = subprocess.run(
        [
            "docker",
            "exec",
            "-u",
            "postgres",
            server.name,
            "python3",
            f"{REMOTE}/gept_history.py",
            *args,
            "--dbname",
            db,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return proc.returncode, result, proc.stdout + proc.stderr


def connect(server: timescaledb.Server, db: str, user: str | None = None, pw: str | None = None) -> Any:
    return adopted_db.connector(server.host, 5432, server.password)(db, user, pw)


def build(server: timescaledb.Server, db: str, days: int = 6, step: int = 900, items: int = 40) -> dict:
    """The seed database with `days` of windows ending 1 day ago, migrated as site.yml does,
    duplicates in every day (one in ten of them with other values); returns the original rows
    by key, the first stored winning."""
    now = int(time.time())
    windows = list(range((now - (days + 1) * DAY) // step * step, now - DAY, step))
    adopted_db.build(
        lambda d, u=None, p=None: connect(server, d, u, p), db, windows, with_timescaledb=True, duplicates=0
    )
    conn = psycopg2.connect(**server.params(db))
    with closing(conn):
        modules.load("gept_db", FILES / "gept_db.py").migrate(conn, FILES / "migrations")
    with (
        closing(connect(server, db, adopted_db.ML_USER, adopted_db.ML_PASSWORD)) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(
            f"INSERT INTO price_data_5min SELECT {VALUES} FROM price_data_5min"
            ' WHERE item_id % 7 = 0 AND extract(minute FROM "timestamp") = 0'
        )
        cur.execute(
            'INSERT INTO price_data_5min SELECT item_id, "timestamp", avg_high_price + 1, high_price_volume,'
            " avg_low_price, low_price_volume FROM price_data_5min"
            ' WHERE item_id = 3 AND extract(hour FROM "timestamp") = 6 AND extract(minute FROM '
            '"timestamp") = 0'
        )
    return originals(server, db)


def originals(server: timescaledb.Server, db: str) -> dict:
    """Key -> values of price_data_5min, the row stored first for each key."""
    with closing(connect(server, db)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = "
            "'price_data_5min'"
        )
        # Storage order (ctid) decides among duplicates; a hypertable has one row per key.
        order = "" if cur.fetchone()[0] else ", ctid"
        cur.execute(
            f'SELECT DISTINCT ON (item_id, "timestamp") {VALUES} FROM price_data_5min'
            f' ORDER BY item_id, "timestamp"{order}'
        )
        return {(r[0], r[1]): r[2:] for r in cur.fetchall()}


def scalar(server: timescaledb.Server, db: str, query: str, params: Any = None) -> Any:
    with closing(connect(server, db)) as conn, conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()[0]


def surplus(server: timescaledb.Server, db: str) -> int:
    with closing(connect(server, db)) as conn, conn.cursor() as cur:
        return adopted_db.duplicate_rows(cur)


def test_move_keyed_compressed_every_row_equal_and_rerun_is_a_no_op(
    server: timescaledb.Server, tmp_path: Path
) -> None:
    db = "history_move"
    before = build(server, db)
    dups = surplus(server, db)
    differing = scalar(
        server,
        db,
        "SELECT count(*) / 2 FROM price_data_5min WHERE item_id = 3"
        ' AND extract(hour FROM "timestamp") = 6 AND extract(minute FROM "timestamp") = 0',
    )
    with closing(connect(server, db)) as conn, conn.cursor() as cur:
        ml_before = adopted_db.ml_fingerprint(cur)
    assert dups > 100

    code, result, out = run(
        server,
        db,
        "move",
        "--chunk-interval",
        "1 day",
        "--compress-after",
        "2 days",
        "--textfile",
        "/var/lib/postgresql/history_move.prom",
    )
    assert code == 0, out
    assert result["changed"] is True
    assert result["duplicate_rows"] == dups, out
    assert result["differing_duplicates"] == differing > 0, out
    assert result["moved_rows"] == len(before)
    assert "rows/s" in out and "ETA" in out and "disk" in out
    assert result["disk_used_peak"] <= result["disk_total_bytes"] * 0.9
    # The keyed table at its largest (one interval uncompressed, the others compressed) stayed
    # below the original's size, which an in-place migrate_data would need a second time.
    assert 0 < result["new_bytes_peak"] < result["table_bytes_before"], result

    assert originals(server, db) == before  # every original key, first stored values
    assert surplus(server, db) == 0
    assert scalar(
        server,
        db,
        "SELECT count(*) FROM timescaledb_information.hypertables"
        " WHERE hypertable_name = 'price_data_5min' AND compression_enabled",
    )
    assert (
        scalar(
            server,
            db,
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'price_data_5min'::regclass AND contype = 'p'",
        )
        == 'PRIMARY KEY (item_id, "timestamp")'
    )
    compressed = scalar(
        server,
        db,
        "SELECT count(*) FILTER (WHERE is_compressed) || '/' || count(*)"
        " FROM timescaledb_information.chunks WHERE hypertable_name = 'price_data_5min'",
    )
    assert compressed.split("/")[0] != "0" and compressed.split("/")[0] != compressed.split("/")[1], (
        compressed
    )
    assert scalar(
        server,
        db,
        "SELECT to_regclass('price_data_5min_old') IS NULL AND to_regclass('price_data_5min_new') IS NULL",
    )
    assert (
        scalar(
            server,
            db,
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'price_data_5min'::regclass",
        )
        == "osrs_user"
    )
    # The ML login reads it as before; the ML tables are untouched.
    with (
        closing(connect(server, db, adopted_db.ML_USER, adopted_db.ML_PASSWORD)) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT count(*) FROM price_data_5min")
        assert cur.fetchone()[0] == len(before)
        assert adopted_db.ml_fingerprint(cur) == ml_before
    prom = subprocess.run(
        ["docker", "exec", server.name, "cat", "/var/lib/postgresql/history_move.prom"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'gept_history_done{table="price_data_5min"} 1' in prom
    assert f'gept_history_duplicate_rows{{table="price_data_5min"}} {dups}' in prom
    # What the status playbook's gept-status makes of it.
    status = modules.load(
        "gept_status", Path(__file__).resolve().parents[2] / "roles/status/files/gept-status.py"
    )
    (tmp_path / "gept_price_history.prom").write_text(prom)
    (check,) = status.check_history(str(tmp_path))
    assert check.level == status.OK and f"{dups} duplicates" in check.detail, check

    code, again, out = run(server, db, "move", "--chunk-interval", "1 day", "--compress-after", "2 days")
    assert code == 0, out
    assert again["changed"] is False and "nothing to do" in out
    assert originals(server, db) == before


def test_killed_mid_move_resumes_while_writers_write_and_readers_see_all(server: timescaledb.Server) -> None:
    db = "history_kill"
    before = build(server, db, days=20, step=300, items=40)
    baseline = len(before)
    stop = threading.Event()
    written: list[tuple[int, int]] = []
    seen: list[int] = []

    def writer() -> None:  # the collectors: one window after another, key absent only
        with closing(connect(server, db)) as conn, conn.cursor() as cur:
            w = int(time.time()) // 300 * 300
            while not stop.is_set():
                w += 300
                cur.execute(
                    'INSERT INTO price_data_5min (item_id, "timestamp", avg_high_price, high_price_volume,'
                    " avg_low_price, low_price_volume) SELECT i, to_timestamp(%s), 5, 1, 4, 1"
                    " FROM generate_series(1, 40) i WHERE NOT EXISTS (SELECT 1 FROM price_data_5min p"
                    ' WHERE p.item_id = i AND p."timestamp" = to_timestamp(%s))',
                    (w, w),
                )
                written.append((w, cur.rowcount))
                time.sleep(0.2)

    def reader() -> None:  # the ML pipeline: the whole history, by keys
        with (
            closing(connect(server, db, adopted_db.ML_USER, adopted_db.ML_PASSWORD)) as conn,
            conn.cursor() as cur,
        ):
            while not stop.is_set():
                try:
                    cur.execute(
                        'SELECT count(DISTINCT (item_id, "timestamp")) FROM price_data_5min'
                        ' WHERE "timestamp" < now()'
                    )
                    seen.append(cur.fetchone()[0])
                except psycopg2.Error:
                    seen.append(-1)
                time.sleep(0.1)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    try:
        args = ["move", "--chunk-interval", "1 day", "--compress-after", "2 days", "--work-mem", "64MB"]
        proc = subprocess.Popen(  # noqa: S603
            [
                "docker",
                "exec",
                "-u",
                "postgres",
                server.name,
                "bash",
                "-c",
                f"echo $$ > /tmp/history_kill.pid; exec python3 {REMOTE}/gept_history.py "
                f"{' '.join(repr(a) for a in args)} --dbname {db}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline and done < 3:
            time.sleep(0.3)
            try:
                done = scalar(
                    server, db, "SELECT count(*) FROM gept_history_intervals WHERE moved_at IS NOT NULL"
                )
            except psycopg2.Error:
                done = 0
        assert done >= 3, "the move did not get going"
        subprocess.run(
            ["docker", "exec", server.name, "bash", "-c", "kill -9 $(cat /tmp/history_kill.pid)"], check=True
        )
        first = proc.communicate(timeout=30)[0]
        assert proc.returncode != 0 and "swapped" not in first
        total = scalar(server, db, "SELECT count(*) FROM gept_history_intervals")
        moved = scalar(server, db, "SELECT count(*) FROM gept_history_intervals WHERE moved_at IS NOT NULL")
        assert 3 <= moved < total, first

        code, result, out = run(server, db, *args)
        assert code == 0, out
        assert result["phase"] == "done"
        assert result["intervals_done"] == total
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    after = originals(server, db)
    for key, values in before.items():
        assert after.get(key) == values, key
    fresh = scalar(
        server, db, "SELECT count(*) FROM price_data_5min WHERE \"timestamp\" > now() - interval '1 hour'"
    )
    assert fresh == sum(n for _, n in written), "a write during the move is missing"
    assert len(after) == baseline + fresh
    assert seen and min(seen) >= baseline and -1 not in seen, "readers saw an incomplete history or an error"


def test_disk_threshold_pauses_then_stops_and_rollback_restores(server: timescaledb.Server) -> None:
    db = "history_disk"
    before = build(server, db, days=3)
    raw = scalar(server, db, "SELECT count(*) FROM price_data_5min")
    # A threshold below what the data filesystem already uses: it trips for real.
    code, result, out = run(
        server,
        db,
        "move",
        "--chunk-interval",
        "1 day",
        "--max-disk-percent",
        "1",
        "--pause-seconds",
        "3",
        "--poll-seconds",
        "1",
    )
    assert code == 3, out
    assert "PAUSED" in out and "stopped" in result["error"] and "resumes" in result["error"]
    assert scalar(server, db, "SELECT count(*) FROM price_data_5min") == raw
    assert scalar(server, db, "SELECT count(*) FROM gept_history_intervals WHERE moved_at IS NOT NULL") == 0
    assert "stopped: disk" in scalar(server, db, "SELECT message FROM gept_history_state")

    # Rolled back mid-move: the original table as it was, nothing of the move left.
    code, result, out = run(server, db, "rollback")
    assert code == 0 and result["changed"], out
    assert originals(server, db) == before
    assert scalar(server, db, "SELECT count(*) FROM price_data_5min") == raw
    assert (
        scalar(server, db, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'price_data_5min'::regclass") == 0
    )
    assert scalar(server, db, "SELECT to_regclass('price_data_5min_new') IS NULL")

    # Moved and swapped, original kept; a collector writes to the keyed table; rolled back.
    code, result, out = run(server, db, "move", "--chunk-interval", "1 day", "--keep-old")
    assert code == 0 and result["phase"] == "swapped", out
    with closing(connect(server, db)) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO price_data_5min VALUES (1, date_trunc('minute', now()), 7, 7, 7, 7)")
        # What the role adds once the table is a hypertable: a continuous aggregate on it.
        cur.execute(
            "CREATE MATERIALIZED VIEW hourly WITH (timescaledb.continuous) AS SELECT item_id,"
            " time_bucket('1 hour', \"timestamp\") AS bucket, count(*) AS n FROM price_data_5min GROUP BY "
            "1, 2"
        )
    code, result, out = run(server, db, "rollback")
    assert code == 0, out
    assert "1 row(s) written since the swap copied back" in out
    assert "continuous aggregate public.hourly on the keyed table dropped" in out
    assert scalar(server, db, "SELECT count(*) FROM price_data_5min") == raw + 1
    assert (
        scalar(
            server,
            db,
            "SELECT count(*) FROM timescaledb_information.hypertables"
            " WHERE hypertable_name = 'price_data_5min'",
        )
        == 0
    )
    after = originals(server, db)
    assert {k: v for k, v in after.items() if k in before} == before


def test_bad_input_is_refused_and_loses_nothing(server: timescaledb.Server) -> None:
    db = "history_bad"
    build(server, db, days=1, items=5)
    code, result, out = run(server, db, "move", "--table", "price_data_missing")
    assert code == 1 and "does not exist" in result["error"] and "nothing was changed" in result["error"], out
    with closing(connect(server, db)) as conn, conn.cursor() as cur:
        cur.execute('CREATE TABLE prices_wrong (item integer, "timestamp" timestamptz, v bigint)')
        cur.execute("INSERT INTO prices_wrong SELECT i, now(), i FROM generate_series(1, 10) i")
    code, result, out = run(server, db, "move", "--table", "prices_wrong")
    assert code == 1 and "no column 'item_id'" in result["error"], out
    assert scalar(server, db, "SELECT count(*) FROM prices_wrong") == 10
    assert scalar(server, db, "SELECT to_regclass('gept_history_state') IS NULL")  # nothing created
    code, result, out = run(server, db, "move", "--table", "Robert'); DROP TABLE items;--")
    assert code == 1 and "plain lower-case" in result["error"], out
    assert scalar(server, db, "SELECT count(*) FROM items") == adopted_db.ITEMS


def test_hypertable_deduplicated_keyed_and_compressed_in_place(server: timescaledb.Server) -> None:
    db = "history_inplace"
    build(server, db, days=4, items=10)
    with closing(connect(server, db)) as conn, conn.cursor() as cur:
        # The other shape the live table may have: already a hypertable (keyless, duplicates),
        # part of it compressed; a continuous aggregate on it.
        cur.execute("DROP INDEX IF EXISTS price_data_5min_timestamp_idx")
        cur.execute(
            "SELECT create_hypertable('price_data_5min', by_range('timestamp', interval '1 day'),"
            " migrate_data => true)"
        )
        cur.execute(
            "ALTER TABLE price_data_5min SET (timescaledb.compress, timescaledb.compress_segmentby = "
            "'item_id')"
        )
        cur.execute(
            "SELECT compress_chunk(c) FROM show_chunks('price_data_5min', older_than => now() - interval "
            "'3 days') c"
        )
        cur.execute(
            "CREATE MATERIALIZED VIEW hourly WITH (timescaledb.continuous) AS SELECT item_id,"
            " time_bucket('1 hour', \"timestamp\") AS bucket, count(*) AS n FROM price_data_5min GROUP BY "
            "1, 2 WITH DATA"
        )
    # Compression stored the rows in its own order: "stored first" is the order decompression
    # gives back, so among duplicates with other values any one of them may stay.
    with closing(connect(server, db)) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {VALUES} FROM price_data_5min")
        versions: dict = {}
        for r in cur.fetchall():
            versions.setdefault((r[0], r[1]), set()).add(r[2:])
    dups = surplus(server, db)
    assert dups > 0
    code, result, out = run(server, db, "move", "--compress-after", "2 days")
    assert code == 0, out
    assert result["mode"] == "in_place" and result["duplicate_rows"] == dups, out
    after = originals(server, db)
    assert after.keys() == versions.keys()
    assert all(after[k] in versions[k] for k in versions)
    before = after
    assert surplus(server, db) == 0
    assert (
        scalar(
            server,
            db,
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'price_data_5min'::regclass"
            " AND contype = 'p'",
        )
        == 1
    )
    assert (
        scalar(
            server,
            db,
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'price_data_5min'"
            " AND is_compressed AND range_end < now() - interval '2 days'",
        )
        >= 2
    )
    # The aggregate counts one row per key again.
    assert scalar(server, db, "SELECT sum(n) FROM hourly") == len(before)
    code, again, out = run(server, db, "move")
    assert code == 0 and again["changed"] is False, out


# The cluster's whole directory (WAL included) on a tmpfs of its own, mounted inside the
# container before the cluster first starts: the filesystem the move's Disk class watches,
# resizable with `mount -o remount,size=`.
DATA_DIR = f"/var/lib/postgresql/{timescaledb.PG_MAJOR}/main"
ON_TMPFS = f"""
d={DATA_DIR}
mv "$d" "$d.initdb"
mkdir "$d"
mount -t tmpfs -o size=3g,mode=0700 gept-history-data "$d"
chown postgres:postgres "$d"
cp -a "$d.initdb/." "$d/"
rm -rf "$d.initdb"
"""
# The filesystem's used bytes sampled every 20 ms until the stop file appears (at most
# 200000 samples); prints the largest.
SAMPLER = """
import os, sys, time
path, stop, peak = sys.argv[1], sys.argv[2], 0
for _ in range(200000):
    s = os.statvfs(path)
    peak = max(peak, (s.f_blocks - s.f_bfree) * s.f_frsize)
    if os.path.exists(stop):
        break
    time.sleep(0.02)
print(peak)
"""
# Count and an order-independent checksum of rows: one per key is what the keyed table keeps
# (the row stored first among duplicates).
FINGERPRINT = (
    "SELECT count(*), count(DISTINCT (item_id, \"timestamp\")), coalesce(sum(('x' || left(md5(row("
    + VALUES
    + ")::text), 15))::bit(60)::bigint), 0) FROM ({rows}) r"
)
FIRST_STORED = (
    f'SELECT DISTINCT ON (item_id, "timestamp") {VALUES} FROM price_data_5min'
    ' ORDER BY item_id, "timestamp", ctid'
)


def usage(server: timescaledb.Server) -> tuple[int, int]:
    """(total, used) bytes of the data directory's filesystem, as the move's Disk class sees it."""
    out = subprocess.run(
        [
            "docker",
            "exec",
            server.name,
            "python3",
            "-c",
            f"import shutil; u = shutil.disk_usage('{DATA_DIR}'); print(u.total, u.used)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), int(out[1])


def sql(server: timescaledb.Server, db: str, *statements: str, params: Any = None) -> Any:
    """Run `statements` as postgres in one autocommit session; the last one's first row."""
    with closing(connect(server, db)) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement, params if statement is statements[-1] else None)
        return cur.fetchone() if cur.description else None


@contextmanager
def peak_used(server: timescaledb.Server, tag: str) -> Iterator[list[int]]:
    """The data filesystem's largest used bytes while the block runs (sampled every 20 ms in
    the container), appended to the yielded list at its end."""
    stop_file = f"/tmp/{tag}.stop"  # noqa: S108  (inside the throwaway container)
    sampler = subprocess.Popen(  # noqa: S603
        ["docker", "exec", server.name, "python3", "-c", SAMPLER, DATA_DIR, stop_file],
        stdout=subprocess.PIPE,
        text=True,
    )
    peak: list[int] = []
    try:
        yield peak
    finally:
        subprocess.run(["docker", "exec", server.name, "touch", stop_file], check=True)
        peak.append(int(sampler.communicate(timeout=60)[0]))


def test_move_completes_on_a_filesystem_too_small_for_migrate_data() -> None:
    """The proof the move's design rests on: on a data filesystem whose free space is well
    below what an in-place create_hypertable(migrate_data => true) of the same table takes
    (measured here on an identical copy, not estimated), the move finishes under the
    threshold with every original key and value."""
    name = f"gept-timescaledb-history-fit-{os.getpid()}"
    t0 = time.monotonic()
    try:
        server = timescaledb.start(
            name,
            # Bounded WAL (production's full-page writes on): WAL is part of what both need.
            settings={"max_wal_size": "64MB", "min_wal_size": "32MB", "full_page_writes": "on"},
            docker_args=("--cap-add", "SYS_ADMIN"),
            setup=ON_TMPFS,
        )
    except timescaledb.Unavailable as exc:
        pytest.skip(str(exc))
    try:
        install(server)
        times = {"server": time.monotonic() - t0}
        db, probe = "history_fit", "history_fit_migrate_data"
        t0 = time.monotonic()
        build(server, db, days=1)
        # The bulk: 300 more items over 30 days of 5-minute windows before it, prices with noise
        # and gaps (NULL) as traded items have, written window after window as the collectors
        # did; then duplicates of about one row in 80.
        first = int(
            scalar(server, db, 'SELECT extract(epoch FROM min("timestamp"))::bigint FROM price_data_5min')
        )
        sql(
            server,
            db,
            "SELECT setseed(0.15)",
            "INSERT INTO price_data_5min SELECT i, to_timestamp(w),"
            " CASE WHEN random() < 0.08 THEN NULL ELSE 100 * i + (random() * 40)::int END,"
            " (random() * 500)::int,"
            " CASE WHEN random() < 0.08 THEN NULL ELSE 97 * i + (random() * 40)::int END,"
            " (random() * 500)::int"
            " FROM generate_series(%(first)s - 30 * 86400, %(first)s - 300, 300) w,"
            " generate_series(41, 340) i",
            params={"first": first},
        )
        sql(
            server,
            db,
            f"INSERT INTO price_data_5min SELECT {VALUES} FROM price_data_5min"
            ' WHERE item_id % 13 = 0 AND extract(minute FROM "timestamp") IN (0, 30)',
        )
        sql(server, db, "ANALYZE price_data_5min")
        dups = surplus(server, db)
        expected = sql(server, db, "SET work_mem = '512MB'", FINGERPRINT.format(rows=FIRST_STORED))
        table_bytes = scalar(server, db, "SELECT pg_total_relation_size('price_data_5min')")
        assert dups > 10000 and expected[0] > 2_000_000, (dups, expected)
        times["load"] = time.monotonic() - t0

        # What an in-place migrate_data takes: measured on an identical copy of the database.
        t0 = time.monotonic()
        sql(server, "postgres", f'CREATE DATABASE "{probe}" TEMPLATE "{db}" STRATEGY FILE_COPY', "CHECKPOINT")
        _, probe_before = usage(server)
        with peak_used(server, probe) as probe_peak:
            sql(
                server,
                probe,
                "SELECT create_hypertable('price_data_5min', by_range('timestamp', interval '1 day'),"
                " migrate_data => true)",
            )
        assert scalar(server, probe, "SELECT count(*) FROM show_chunks('price_data_5min')") > 30
        need = probe_peak[0] - probe_before
        sql(server, "postgres", f'DROP DATABASE "{probe}"', "CHECKPOINT")
        sql(server, "postgres", "CHECKPOINT")
        times["migrate_data"] = time.monotonic() - t0

        # The data filesystem shrunk so that its free space is 80 % of that need.
        _, used = usage(server)
        size = (used + int(need * 0.8)) // 4096 * 4096
        subprocess.run(
            ["docker", "exec", server.name, "mount", "-o", f"remount,size={size}", DATA_DIR],
            check=True,
            capture_output=True,
        )
        total, used = usage(server)
        free = total - used
        mb = 1e6
        print(
            f"\nprice_data_5min {expected[0]} keys + {dups} duplicates, {table_bytes / mb:.0f} MB with"
            f" indexes; migrate_data in place took {need / mb:.0f} MB more at its peak; the data"
            f" filesystem shrunk to {total / mb:.0f} MB, {used / mb:.0f} MB used, {free / mb:.0f} MB"
            f" free ({100 * free / need:.0f} % of migrate_data's need)"
        )
        assert need > table_bytes / 2, (need, table_bytes)
        assert free < need * 0.9, (free, need)

        t0 = time.monotonic()
        with peak_used(server, "history_fit_move") as move_peak:
            code, result, out = run(
                server,
                db,
                "move",
                "--chunk-interval",
                "1 day",
                "--compress-after",
                "2 days",
                "--max-disk-percent",
                "90",
                "--pause-seconds",
                "0",
                timeout=1800,
            )
        times["move"] = time.monotonic() - t0
        assert code == 0, out
        assert result["phase"] == "done", result
        assert result["disk_total_bytes"] == total
        before, after = result["disk_used_before"], result["disk_used_after"]
        print(
            f"the move: {result['intervals']} intervals, {result['moved_rows']} rows moved,"
            f" {result['duplicate_rows']} duplicates left out; peak {(move_peak[0] - before) / mb:.0f} MB"
            f" over its start sampled every 20 ms ({(result['disk_used_peak'] - before) / mb:.0f} MB by"
            f" its own 1 s sampling), {100 * move_peak[0] / total:.1f} % of the filesystem (threshold"
            f" 90 %); {free / mb:.0f} MB were free, migrate_data needed {need / mb:.0f} MB; finally"
            f" {after / mb:.0f} MB used vs {before / mb:.0f} MB before; seconds: "
            + ", ".join(f"{k} {v:.0f}" for k, v in times.items())
        )
        assert max(move_peak[0], result["disk_used_peak"]) <= total * 0.9, (move_peak, result)
        assert move_peak[0] - before < free < need, (move_peak, before, free, need)
        assert after < before, result
        assert result["duplicate_rows"] == dups, out
        assert result["moved_rows"] == expected[0]
        assert sql(server, db, FINGERPRINT.format(rows=f"SELECT {VALUES} FROM price_data_5min")) == expected
        assert surplus(server, db) == 0
        compressed = scalar(
            server,
            db,
            "SELECT count(*) FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'price_data_5min' AND is_compressed",
        )
        assert compressed >= 25, compressed
    finally:
        timescaledb.stop(name)
