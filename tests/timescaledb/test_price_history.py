"""The price history move (roles/timescaledb/files/gept_history.py) on the real engine: the
live server's osrs_data built for real (tests/support/adopted_db.py: keyless price_data_5min
with duplicates, owned by osrs_user) on PostgreSQL 17 + TimescaleDB full edition
(tests/support/timescaledb.py). The script runs where production runs it: on the database's
host as the postgres OS user over the local socket (docker exec into the test server), so its
disk check sees the real data filesystem, and a kill is a real SIGKILL."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from contextlib import closing
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
    server = timescaledb.shared()
    # The script's one dependency on the host (the role installs python3-psycopg2 there).
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
