"""The full edition's SQL (hypertables, compression, retention, aggregates) on the adopted seed
database, on the real PostgreSQL 17 + TimescaleDB full (TSL) engine (tests/support/timescaledb.py):
price_data_5min, a plain table with rows and no key, is never converted, compressed or aggregated
by the role, and each of those is reported as skipped with its reason; a plain table bigger than
timescaledb_hypertable_convert_max_mb stays plain too; the ML tables never change; once the
separate key step has run, the same SQL converts it. A re-run changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from support import adopted_db, timescaledb
from support.adopted_db import duplicate_rows, ml_fingerprint

pytestmark = [pytest.mark.timescaledb, pytest.mark.slow]
MIGRATIONS = adopted_db.ROOT / "roles" / "timescaledb" / "files" / "migrations"
FULL = ["10-hypertables.sql", "20-compression.sql", "30-retention.sql", "40-aggregates.sql"]


@pytest.fixture
def seeded(gept_db: Any) -> Iterator[Any]:
    """The seed's schema and rows (duplicates included) in a fresh database of the full-edition engine."""
    conn = psycopg2.connect(**timescaledb.shared().database("gept_adoption_full"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS osrs_user")
    try:
        _build_in(conn, gept_db)
        yield conn
    finally:
        conn.close()


def _build_in(conn: Any, gept_db: Any) -> None:
    """The seed's schema, migrated while empty (tests/timescaledb/test_adoption.py covers the
    migration of filled tables, with its CONCURRENTLY index builds), then its rows, written with
    the seed's column names."""
    with conn.cursor() as cur:
        cur.execute(adopted_db.seed_sql(with_timescaledb=True))
    conn.autocommit = False
    gept_db.migrate(conn, MIGRATIONS)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO items (id, name, \"limit\") SELECT i, 'Item ' || i, 100 + i"
            " FROM generate_series(1, 20) i"
        )
        # 20 days of 5-minute rows for 3 items (chunks older than the compression age), and duplicates.
        cur.execute(
            "INSERT INTO price_data_5min SELECT i, ts, 1000 + i, 1, 990 + i, 1 FROM generate_series(1, 3) i,"
            " generate_series(date_trunc('hour', now()) - interval '20 days', date_trunc('hour', now()),"
            " interval '5 minutes') ts"
        )
        cur.execute('INSERT INTO price_data_5min SELECT * FROM price_data_5min ORDER BY "timestamp" LIMIT 25')
        cur.execute(
            "INSERT INTO prices_1h SELECT i, date_trunc('hour', now()) - h * interval '1 hour', 1, 1, 1, 1"
            " FROM generate_series(1, 3) i, generate_series(1, 48) h"
        )
        cur.execute(
            "INSERT INTO prices_latest_1m SELECT i, date_trunc('minute', now()) - m * interval '1 minute',"
            " 1, now(), 1, now() FROM generate_series(1, 3) i, generate_series(1, 60) m"
        )
        cur.execute(
            "INSERT INTO player_counts SELECT now() - m * interval '1 minute', m"
            " FROM generate_series(1, 60) m"
        )
        cur.execute(
            "INSERT INTO predictions (item_id, horizon_minutes, model_version) SELECT n, 60, 'v1'"
            " FROM generate_series(1, 10) n"
        )
        cur.execute(
            "INSERT INTO actual_fills (prediction_id, item_id, filled_at, price, quantity)"
            " VALUES (1, 1, now(), 5, 1)"
        )
        cur.execute(
            "INSERT INTO calibration_metrics (model_version, metric, value) VALUES ('v1', 'mae', 1.5)"
        )


def hypertables(conn: Any) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")
        return {r[0] for r in cur.fetchall()}


def run(gept_db: Any, conn: Any, sql: dict[str, str]) -> tuple[list[str], list[str]]:
    changes: list[str] = []
    skipped: list[str] = []
    for name in FULL:
        changes += gept_db.apply_sql(conn, sql[name], skipped)
    return changes, skipped


def test_adopted_plain_tables_are_reported_not_converted(seeded, gept_db, render_sql):
    conn = seeded
    with conn.cursor() as cur:
        ml_before = ml_fingerprint(cur)
        cur.execute("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)), count(*) FROM price_data_5min t")
        prices_before = cur.fetchone()

    # Every filled plain table above the size limit (here 0 MB) stays plain, each reported.
    changes, skipped = run(gept_db, conn, render_sql(timescaledb_hypertable_convert_max_mb=0))
    assert hypertables(conn) == set()
    assert changes == []
    assert any(
        s.startswith("hypertable prices_1h: a plain table of")
        and "timescaledb_hypertable_convert_max_mb" in s
        for s in skipped
    ), skipped

    # Default limit: the small keyed tables are converted; price_data_5min (no key) is not, and
    # neither its compression nor the aggregates on it happen.
    changes, skipped = run(gept_db, conn, render_sql())
    assert hypertables(conn) == {"prices_1h", "prices_latest_1m", "player_counts"}
    assert any(
        "hypertable price_data_5min: a plain table with rows" in s and "no unique key" in s for s in skipped
    )
    assert any(s.startswith("compression on price_data_5min: it is a plain table") for s in skipped)
    assert any(
        s.startswith("continuous aggregate price_data_hourly: price_data_5min is a plain table")
        for s in skipped
    )
    assert any("compression enabled on prices_1h" in c for c in changes)
    assert any("retention policy on prices_latest_1m" in c for c in changes)
    with conn.cursor() as cur:
        cur.execute("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)), count(*) FROM price_data_5min t")
        assert cur.fetchone() == prices_before
        assert duplicate_rows(cur) == 25
        assert ml_fingerprint(cur) == ml_before
    # A re-run: nothing changes, the same things are reported.
    again, skipped_again = run(gept_db, conn, render_sql())
    assert again == [] and skipped_again == skipped

    # The separate step: duplicates out, key in; then the same SQL converts it, compresses its
    # old chunks and builds the aggregates.
    # (The blocking variant, for a maintenance window; test_adoption.py covers the concurrent one.)
    report = gept_db.add_key(conn, "price_data_5min", ["item_id", "timestamp"], apply=True, concurrent=False)
    assert report["changes"][0] == "price_data_5min: 25 duplicate row(s) deleted"
    conn.autocommit = True
    changes, skipped = run(gept_db, conn, render_sql())
    assert "price_data_5min" in hypertables(conn)
    assert any("hypertable price_data_5min created" in c for c in changes)
    assert any("continuous aggregate price_data_hourly created" in c for c in changes)
    assert skipped == []
    with conn.cursor() as cur:
        assert duplicate_rows(cur) == 0
        assert ml_fingerprint(cur) == ml_before
