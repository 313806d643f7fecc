"""The timescaledb role's full-edition SQL, rendered by the role's own task file, run
against the real full-edition engine (PostgreSQL 17 + TimescaleDB incl. TSL, the package
the test hosts install, in a throwaway container: tests/support/timescaledb.py): hypertables,
compression (+ one-time compression of old chunks), retention and continuous aggregates
with their policies, idempotence (a second run changes nothing) and rollback by flag.

The server runs no background workers here: policies register, and the tests call the work
the policies would do (refresh_continuous_aggregate) directly; the Molecule scenario proves
the job scheduler runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.timescaledb, pytest.mark.slow]

FULL = ["10-hypertables.sql", "20-compression.sql", "30-retention.sql", "40-aggregates.sql"]
ALL_OFF = {
    "timescaledb_compression_enabled": False,
    "timescaledb_retention_enabled": False,
    "timescaledb_aggregates_enabled": False,
}


def rows(conn: Any, sql: str, params: tuple = ()) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def value(conn: Any, sql: str, params: tuple = ()) -> Any:
    return rows(conn, sql, params)[0][0]


def apply(gept_db: Any, conn: Any, sql: dict[str, str], files: list[str] = FULL) -> list[str]:
    changes: list[str] = []
    for name in files:
        changes += gept_db.apply_sql(conn, sql[name])
    return changes


def seed_prices(conn: Any, days: int = 20, items: int = 3) -> None:
    """5-minute rows for a few items over `days` days ending now (some chunks > 7 days old)."""
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO price_data_5min
            SELECT i, ts, 1000 + i * 10 + (extract(epoch FROM ts)::bigint / 300) %% 7,
                   (extract(epoch FROM ts)::bigint / 300) %% 5,
                   CASE WHEN (extract(epoch FROM ts)::bigint / 300) %% 11 = 0 THEN NULL
                        ELSE 990 + i * 10 END,
                   1
              FROM generate_series(1, %s) AS i,
                   generate_series(date_trunc('hour', now()) - make_interval(days => %s),
                                   date_trunc('hour', now()), interval '5 minutes') AS ts
            """,
            (items, days),
        )


def checksum(conn: Any) -> tuple:
    return rows(
        conn,
        "SELECT count(*), sum(avg_high_price), sum(avg_low_price), "
        "sum(high_price_volume) FROM price_data_5min",
    )[0]


def test_runner_applies_each_migration_once(conn, gept_db):
    # The conn fixture applied every migration; a second run applies none.
    assert gept_db.migrate(conn, gept_db_migrations()) == []
    conn.autocommit = True
    assert [r[0] for r in rows(conn, "SELECT name FROM schema_migrations")] == sorted(
        p.name for p in gept_db_migrations().glob("*.sql")
    )


def gept_db_migrations() -> Path:
    # Not imported from this directory's conftest: another area's conftest may hold that name.
    return Path(__file__).resolve().parents[2] / "roles" / "timescaledb" / "files" / "migrations"


def test_rendered_full_edition_sql_is_the_full_set(render_sql):
    sql = render_sql()
    assert sorted(sql) == sorted([*FULL, "logins.sql", "privileges.sql"])  # these two: either edition
    assert "compress_segmentby = 'item_id'" in sql["20-compression.sql"]
    assert "compress_orderby = '\"timestamp\" DESC'" in sql["20-compression.sql"]


def test_full_edition_rollout_and_idempotence(conn, gept_db, render_sql):
    assert value(conn, "SHOW timescaledb.license") == "timescale"
    seed_prices(conn)
    before = checksum(conn)
    changes = apply(gept_db, conn, render_sql())
    assert any("hypertable price_data_5min created" in c for c in changes)
    assert any("compression enabled on price_data_5min" in c for c in changes)
    assert any("continuous aggregate price_data_hourly created" in c for c in changes)

    hypertables = {
        r[0] for r in rows(conn, "SELECT hypertable_name FROM timescaledb_information.hypertables")
    }
    assert {"price_data_5min", "prices_latest_1m", "prices_1h", "player_counts"} <= hypertables
    assert (
        value(
            conn,
            "SELECT time_interval FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = 'price_data_5min'",
        ).days
        == 7
    )

    settings = rows(
        conn,
        "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc "
        "FROM timescaledb_information.compression_settings "
        "WHERE hypertable_name = 'price_data_5min' ORDER BY attname",
    )
    assert ("item_id", 1, None, None) in settings
    assert ("timestamp", None, 1, False) in settings

    jobs = dict(
        rows(
            conn,
            "SELECT hypertable_name || ':' || proc_name, config::text "
            "FROM timescaledb_information.jobs "
            "WHERE proc_name IN ('policy_compression', 'policy_retention')",
        )
    )
    assert '"7 days"' in jobs["price_data_5min:policy_compression"]
    assert '"30 days"' in jobs["prices_latest_1m:policy_retention"]
    assert "price_data_5min:policy_retention" not in jobs  # 5-minute data is kept
    caggs = {r[0] for r in rows(conn, "SELECT view_name FROM timescaledb_information.continuous_aggregates")}
    assert caggs == {"price_data_hourly", "price_data_daily"}
    assert (
        value(
            conn,
            "SELECT count(*) FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_refresh_continuous_aggregate'",
        )
        == 2
    )

    # One-time compression: every chunk wholly older than 7 days is compressed, data intact.
    old = rows(
        conn,
        "SELECT is_compressed FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'price_data_5min' AND range_end < now() - interval '7 days'",
    )
    assert old and all(c for (c,) in old)
    assert checksum(conn) == before

    # Idempotence: the same SQL again changes nothing.
    assert apply(gept_db, conn, render_sql()) == []


def test_policy_change_is_applied(conn, gept_db, render_sql):
    apply(gept_db, conn, render_sql())
    changes = apply(
        gept_db,
        conn,
        render_sql(
            timescaledb_compression_after="14 days", timescaledb_retention={"prices_latest_1m": "60 days"}
        ),
    )
    assert any("compression policy on price_data_5min after 14 days" in c for c in changes)
    assert any("prices_latest_1m: drop chunks older than 60 days" in c for c in changes)
    assert '"60 days"' in value(
        conn, "SELECT config::text FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
    )


def test_aggregates_match_raw_rows(conn, gept_db, render_sql):
    seed_prices(conn, days=3)
    apply(gept_db, conn, render_sql())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CALL refresh_continuous_aggregate('price_data_hourly', NULL, now() - interval '1 hour')")
        cur.execute("CALL refresh_continuous_aggregate('price_data_daily', NULL, now() - interval '1 day')")
    raw = rows(
        conn,
        """
        SELECT time_bucket('1 hour', "timestamp") AS b, item_id, first(avg_high_price, "timestamp"),
               max(avg_high_price), min(avg_low_price), last(avg_high_price, "timestamp"),
               sum(high_price_volume), count(*)
          FROM price_data_5min WHERE "timestamp" < date_trunc('hour', now()) - interval '1 hour'
         GROUP BY 1, 2 ORDER BY 1, 2""",
    )
    agg = rows(
        conn,
        """
        SELECT bucket, item_id, open_high_price, max_high_price, min_low_price, close_high_price,
               high_price_volume, sample_count
          FROM price_data_hourly WHERE bucket < date_trunc('hour', now()) - interval '1 hour'
         ORDER BY 1, 2""",
    )
    assert len(raw) > 100
    assert agg == raw
    daily = value(conn, "SELECT sum(sample_count) FROM price_data_daily")
    assert daily == value(conn, "SELECT count(*) FROM price_data_5min")


def test_rollback_by_flag(conn, gept_db, render_sql):
    seed_prices(conn)
    apply(gept_db, conn, render_sql())
    before = checksum(conn)
    assert value(conn, "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed") > 0

    changes = apply(gept_db, conn, render_sql(**ALL_OFF))
    assert any("decompressed chunk" in c for c in changes)
    assert value(conn, "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed") == 0
    assert (
        value(conn, "SELECT count(*) FROM timescaledb_information.hypertables WHERE compression_enabled") == 0
    )
    assert (
        value(
            conn,
            "SELECT count(*) FROM timescaledb_information.jobs "
            "WHERE proc_name IN ('policy_compression', 'policy_retention', "
            "'policy_refresh_continuous_aggregate')",
        )
        == 0
    )
    assert value(conn, "SELECT count(*) FROM timescaledb_information.continuous_aggregates") == 0
    assert checksum(conn) == before
    # Rolled back is a steady state too; and turning everything on again works.
    assert apply(gept_db, conn, render_sql(**ALL_OFF)) == []
    assert apply(gept_db, conn, render_sql()) != []
    assert checksum(conn) == before
