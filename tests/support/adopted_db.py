"""The live server's database as a before-state, built for real from
molecule/live/files/seed_schema.sql: database owned by osrs_user, its tables created by
osrs_user (public schema owned by postgres with CREATE for PUBLIC, as on PostgreSQL 14),
rows in every table, duplicate rows in price_data_5min (no primary key), the ML tables with
rows. `ml_fingerprint` is what must never change on the tables the project does not own."""

from __future__ import annotations

import hashlib
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "molecule" / "live" / "files" / "seed_schema.sql"
ML_USER = "osrs_user"
ML_PASSWORD = "osrs-user-test-password"  # noqa: S105  (throwaway cluster)
ML_TABLES = ("predictions", "actual_fills", "calibration_metrics")
ITEMS = 40


def seed_sql(with_timescaledb: bool) -> str:
    """The seed's DDL; without its CREATE EXTENSION line on a server without TimescaleDB."""
    text = SEED.read_text()
    if not with_timescaledb:
        text = text.replace("CREATE EXTENSION IF NOT EXISTS timescaledb;", "")
    return text


def window_starts(now: int, count: int, step: int) -> list[int]:
    last = now // step * step - step
    return [last - i * step for i in range(count)][::-1]


def build(
    connect: Any,
    dbname: str,
    windows: list[int] | None = None,
    with_timescaledb: bool = False,
    duplicates: int = 25,
) -> None:
    """Create `dbname` as the live server has it. `connect(db, user=None, password=None)`
    returns an autocommit connection (postgres when user is None). `windows`: epoch starts of
    the price_data_5min windows to fill (default: 48 windows of 300 s before now)."""
    now = int(datetime.now(UTC).timestamp())
    windows = windows if windows is not None else window_starts(now, 48, 300)
    with closing(connect("postgres")) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ML_USER,))
        if not cur.fetchone():
            cur.execute(f"CREATE ROLE {ML_USER} LOGIN PASSWORD '{ML_PASSWORD}'")
        cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{dbname}" OWNER {ML_USER}')
    with closing(connect(dbname)) as conn, conn.cursor() as cur:
        # PostgreSQL 14's public schema (the live server's): owned by postgres, CREATE for PUBLIC.
        cur.execute("ALTER SCHEMA public OWNER TO postgres")
        cur.execute("GRANT CREATE, USAGE ON SCHEMA public TO PUBLIC")
        if with_timescaledb:
            cur.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    with closing(connect(dbname, ML_USER, ML_PASSWORD)) as conn, conn.cursor() as cur:
        cur.execute(seed_sql(False))
        cur.execute(
            'INSERT INTO items (id, name, examine, members, lowalch, highalch, "limit", value, icon) '
            "SELECT i, 'Item ' || i, 'An item.', i %% 2 = 0, i * 4, i * 6, 100 + i, i * 10,"
            " 'i' || i || '.png' FROM generate_series(1, %s) i",
            (ITEMS,),
        )
        cur.execute(
            "INSERT INTO price_data_5min SELECT i, to_timestamp(w), 1000 + i + w %% 97, i + 3, 900 + i, i + 1"
            " "
            "FROM unnest(%s::bigint[]) w, generate_series(1, %s) i",
            (windows, ITEMS),
        )
        # Duplicates: some (item, window) rows written twice, as the old collectors did.
        cur.execute(
            'INSERT INTO price_data_5min SELECT * FROM price_data_5min ORDER BY "timestamp", item_id'
            " LIMIT %s",
            (duplicates,),
        )
        cur.execute(
            "INSERT INTO prices_1h SELECT i, date_trunc('hour', now()) - h * interval '1 hour',"
            " 1000 + i, 5, 950, 4 FROM generate_series(1, %s) i, generate_series(1, 12) h",
            (ITEMS,),
        )
        cur.execute(
            "INSERT INTO prices_latest_1m SELECT i, date_trunc('minute', now()) - m * interval '1 minute', "
            "1000 + i, now() - interval '2 minutes', 990, now() - interval '3 minutes' "
            "FROM generate_series(1, %s) i, generate_series(1, 30) m",
            (ITEMS,),
        )
        cur.execute(
            "INSERT INTO osrs_news (guid, title, link, category, description, pub_date, created_at) "
            "SELECT 'news-' || n, 'News ' || n, 'https://secure.runescape.com/m=news/' || n, 'Game Updates', "
            "'Text ' || n, now() - n * interval '1 day', now() - n * interval '1 day' + interval '5 minutes' "
            "FROM generate_series(1, 8) n"
        )
        cur.execute(
            "INSERT INTO player_counts SELECT date_trunc('minute', now()) - m * interval '1 minute',"
            " 90000 + m FROM generate_series(1, 60) m"
        )
        cur.execute(
            "INSERT INTO predictions (item_id, created_at, horizon_minutes, predicted_high, predicted_low, "
            "confidence, model_version) SELECT 1 + n %% %s, now() - n * interval '5 minutes', 60,"
            " 1100 + n, 900 + n, 0.5 + n / 100.0, 'v1' FROM generate_series(1, 30) n",
            (ITEMS,),
        )
        cur.execute(
            "INSERT INTO actual_fills (prediction_id, item_id, filled_at, price, quantity) "
            "SELECT id, item_id, created_at + interval '1 hour', predicted_high, 3 FROM predictions"
            " WHERE id % 3 = 0"
        )
        cur.execute(
            "INSERT INTO calibration_metrics (model_version, metric, value) "
            "VALUES ('v1', 'mae', 12.5), ('v1', 'coverage', 0.91), ('v1', 'brier', 0.2)"
        )


def duplicate_rows(cur: Any, table: str = "price_data_5min") -> int:
    cur.execute(
        "SELECT coalesce(sum(n - 1), 0) FROM ("  # noqa: S608  (a constant table name)
        f'SELECT count(*) n FROM {table} GROUP BY item_id, "timestamp") d'
    )
    return int(cur.fetchone()[0])


def ml_fingerprint(cur: Any) -> dict[str, Any]:
    """Rows (checksum), owner, ACL, columns, indexes, constraints and triggers of each ML
    table, and owner/ACL of their sequences."""
    out: dict[str, Any] = {}
    for table in ML_TABLES:
        cur.execute(f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM {table} t")  # noqa: S608
        rows_md5 = cur.fetchone()[0]
        cur.execute(
            "SELECT pg_get_userbyid(c.relowner), c.relacl::text, c.relkind, c.relhastriggers FROM pg_class c "
            "WHERE c.oid = %s::regclass",
            (table,),
        )
        meta = cur.fetchone()
        cur.execute(
            "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod) || ' ' || attnotnull"
            " || ' ' || coalesce(attacl::text, ''), ', ' ORDER BY attnum) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (table,),
        )
        columns = cur.fetchone()[0]
        cur.execute(
            "SELECT string_agg(pg_get_indexdef(indexrelid), '; ' ORDER BY indexrelid::regclass::text) "
            "FROM pg_index WHERE indrelid = %s::regclass",
            (table,),
        )
        indexes = cur.fetchone()[0]
        cur.execute(
            "SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), '; ' ORDER BY conname) "
            "FROM pg_constraint WHERE conrelid = %s::regclass",
            (table,),
        )
        constraints = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass", (table,))
        triggers = cur.fetchone()[0]
        cur.execute(
            "SELECT string_agg(c.relname || ' ' || pg_get_userbyid(c.relowner) || ' '"
            " || coalesce(c.relacl::text, ''), '; ') FROM pg_class c JOIN pg_depend d ON d.objid = c.oid"
            " WHERE c.relkind = 'S' AND d.refobjid = %s::regclass",
            (table,),
        )
        sequences = cur.fetchone()[0]
        definition = repr((meta, columns, indexes, constraints, triggers, sequences))
        digest = hashlib.sha256(definition.encode()).hexdigest()
        out[table] = {"rows_md5": rows_md5, "owner": meta[0], "acl": meta[1], "definition": digest}
    return out


def connector(host: str, port: int, password: str) -> Any:
    """connect(db, user=None, password=None) for `build`: autocommit connections over TCP."""

    def connect(db: str, user: str | None = None, pw: str | None = None) -> Any:
        conn = psycopg2.connect(
            host=host,
            port=port,
            dbname=db,
            user=user or "postgres",
            password=pw or password,
            connect_timeout=5,
        )
        conn.autocommit = True
        return conn

    return connect
