"""Adopting the live server's database (roles/timescaledb migration 000, gept_db.py, logins.sql)
against a real PostgreSQL: the seed's schema and rows built for real (tests/support/adopted_db.py),
then the role's own runner and SQL. Proves that the ML pipeline's queries keep working, that
writers of the old and of the new column names both land in both, that nothing the project
does not own changes (checksums, owners, ACLs, definitions), that the ML login keeps every
privilege and reads every new relation, that price_data_5min's key is added only by the
separate `key` step and only where the disk allows it, and that a re-run applies nothing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import closing
from types import ModuleType
from typing import Any

import psycopg2
import psycopg2.extras
import pytest
from support import adopted_db, modules
from support.adopted_db import ML_PASSWORD, ML_USER, duplicate_rows, ml_fingerprint
from support.pg import PgCluster

MIGRATIONS = adopted_db.ROOT / "roles" / "timescaledb" / "files" / "migrations"
COLLECTOR = "gept_collector"
COLLECTOR_PASSWORD = "adopt-collector-password"  # noqa: S105  (throwaway cluster)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    pg = PgCluster(prefix="gept-adopt-pg-")
    try:
        pg.init()
        pg.start()
        pg.execute("postgres", f"CREATE ROLE {COLLECTOR} LOGIN PASSWORD '{COLLECTOR_PASSWORD}'")
        yield pg
    finally:
        pg.cleanup()


@pytest.fixture
def osrs_data(cluster: PgCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = "osrs_data_" + request.node.name.lower().replace("test_", "")[:30]
    adopted_db.build(adopted_db.connector("127.0.0.1", cluster.port, cluster.password), name)
    yield name
    cluster.execute("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', autocommit=True)


def as_postgres(cluster: PgCluster, db: str) -> Any:
    conn = cluster.connect(db)
    conn.autocommit = False
    return conn


def ml_conn(cluster: PgCluster, db: str) -> Any:
    return cluster.connect(db, user=ML_USER, password=ML_PASSWORD)


def one(conn: Any, sql: str, args: tuple = ()) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, args or None)
        return cur.fetchone()


def migrate(gept_db: ModuleType, cluster: PgCluster, db: str) -> tuple[list[str], list[str]]:
    changes: list[str] = []
    with closing(as_postgres(cluster, db)) as conn:
        applied = gept_db.migrate(conn, MIGRATIONS, changes)
    return applied, changes


def grant_collector(cluster: PgCluster, db: str) -> None:
    """The grants roles/timescaledb/tasks/access.yml + grants.yml give the collector."""
    with closing(cluster.connect(db)) as conn, conn.cursor() as cur:
        cur.execute(f'GRANT CONNECT, TEMPORARY ON DATABASE "{db}" TO {COLLECTOR}')
        cur.execute(f"GRANT USAGE ON SCHEMA public TO {COLLECTOR}")
        cur.execute(f"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {COLLECTOR}")
        cur.execute(f"GRANT UPDATE ON items TO {COLLECTOR}")


def test_migrations_adopt_the_seed_and_keep_the_ml_pipeline_working(cluster, osrs_data, gept_db):
    with closing(ml_conn(cluster, osrs_data)) as conn, conn.cursor() as cur:
        before = ml_fingerprint(cur)
        dups_before = duplicate_rows(cur)
        cur.execute("SELECT count(*) FROM price_data_5min")
        rows_before = cur.fetchone()[0]
        cur.execute("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM price_data_5min t")
        prices_md5 = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM pg_index WHERE indrelid = 'price_data_5min'::regclass")
        price_indexes = cur.fetchone()[0]
    assert dups_before == 25

    applied, changes = migrate(gept_db, cluster, osrs_data)
    assert applied == sorted(p.name for p in MIGRATIONS.glob("*.sql"))
    assert applied[0] == "000_adopt_existing_tables.sql"
    # The seed's equal index is renamed, not built twice; the two tables without a time index
    # get theirs built CONCURRENTLY (they hold rows).
    assert any(
        "idx_price_data_5min_time on price_data_5min renamed price_data_5min_timestamp_idx" in c
        for c in changes
    )
    assert any("prices_1h_timestamp_idx built CONCURRENTLY on prices_1h" in c for c in changes)
    assert any("prices_latest_1m_timestamp_idx built CONCURRENTLY" in c for c in changes)

    with closing(ml_conn(cluster, osrs_data)) as conn, conn.cursor() as cur:
        # Nothing the project does not own changed.
        assert ml_fingerprint(cur) == before
        # price_data_5min: every row as it was, duplicates included (removing them is the
        # separate key step), no key, no index added (the equal one renamed).
        cur.execute("SELECT count(*) FROM price_data_5min")
        assert cur.fetchone()[0] == rows_before
        cur.execute("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM price_data_5min t")
        assert cur.fetchone()[0] == prices_md5
        assert duplicate_rows(cur) == dups_before
        cur.execute(
            "SELECT count(*), bool_or(indisprimary) FROM pg_index"
            " WHERE indrelid = 'price_data_5min'::regclass"
        )
        assert cur.fetchone() == (price_indexes, False)
        # The seed's tables keep their owner.
        cur.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relname IN "
            "('items', 'price_data_5min', 'prices_1h', 'prices_latest_1m', 'osrs_news', 'player_counts')"
        )
        assert cur.fetchall() == [(ML_USER,)]
        # The ML pipeline's queries, with the seed's column names, still work.
        cur.execute('SELECT id, name, "limit" FROM items WHERE id = 7')
        assert cur.fetchone() == (7, "Item 7", 107)
        cur.execute(
            'SELECT item_id, "timestamp", avg_high_price, avg_low_price FROM price_data_5min '
            'WHERE item_id = 3 ORDER BY "timestamp" DESC LIMIT 1'
        )
        assert cur.fetchone()[0] == 3
        cur.execute("SELECT count(*) FROM osrs_news WHERE pub_date IS NOT NULL")
        assert cur.fetchone()[0] == 8
        cur.execute("SELECT max(count) FROM player_counts")
        assert cur.fetchone()[0] == 90060
        cur.execute(
            "INSERT INTO predictions (item_id, horizon_minutes, predicted_high, predicted_low, confidence,"
            " model_version) VALUES (1, 60, 1, 1, 0.5, 'v2') RETURNING id"
        )
        assert cur.fetchone()[0] > 0
        # The project's columns are filled from the seed's.
        cur.execute(
            "SELECT count(*) FROM items"
            ' WHERE item_id IS DISTINCT FROM id OR ge_limit IS DISTINCT FROM "limit"'
        )
        assert cur.fetchone()[0] == 0
        cur.execute(
            "SELECT count(*) FROM osrs_news WHERE published_at IS DISTINCT FROM pub_date"
            " OR fetched_at IS DISTINCT FROM created_at OR source <> 'osrs_news'"
        )
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM player_counts WHERE player_count IS DISTINCT FROM count")
        assert cur.fetchone()[0] == 0

    # A re-run applies nothing and changes nothing.
    assert migrate(gept_db, cluster, osrs_data) == ([], [])


def test_old_and_new_writers_land_in_both_names(cluster, osrs_data, gept_db):
    migrate(gept_db, cluster, osrs_data)
    grant_collector(cluster, osrs_data)
    # The old compose collectors (osrs_user, the seed's names) go on writing until the cutover.
    with closing(ml_conn(cluster, osrs_data)) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO items (id, name, \"limit\") VALUES (500, 'Old', 70) "
            'ON CONFLICT (id) DO UPDATE SET "limit" = EXCLUDED."limit"'
        )
        cur.execute('UPDATE items SET "limit" = 71 WHERE id = 1')
        cur.execute("INSERT INTO player_counts VALUES ('2030-01-01 00:00+00', 123)")
        cur.execute(
            "INSERT INTO osrs_news (guid, title, pub_date)"
            " VALUES ('old-1', 'Old feed', '2030-01-02 00:00+00')"
        )
    # The project's collectors (gept_collector, the project's names, their own statements).
    conn = cluster.connect(osrs_data, user=COLLECTOR, password=COLLECTOR_PASSWORD)
    with closing(conn), conn.cursor() as cur:
        import sys  # noqa: PLC0415

        collectors = adopted_db.ROOT / "files" / "collectors"
        sys.path.insert(0, str(collectors))
        items = modules.load("collector_items", collectors / "collector_items.py")
        psycopg2.extras.execute_values(
            cur,
            items.UPSERT,
            [
                (501, "New", None, True, 1, 2, 80, 3, "n.png"),
                (2, "Item 2", "An item.", True, 8, 12, 999, 20, "i2.png"),
            ],
        )
        cur.execute(
            "INSERT INTO player_counts (\"timestamp\", player_count) VALUES ('2030-01-01 00:01+00', 456)"
        )
        cur.execute(
            "INSERT INTO osrs_news (guid, source, title, published_at) "
            "VALUES ('new-1', 'wiki_recent_changes', 'New feed', '2030-01-03 00:00+00')"
        )
    with closing(ml_conn(cluster, osrs_data)) as conn, conn.cursor() as cur:
        cur.execute(
            'SELECT id, item_id, "limit", ge_limit FROM items WHERE id IN (1, 2, 500, 501) ORDER BY id'
        )
        assert cur.fetchall() == [(1, 1, 71, 71), (2, 2, 999, 999), (500, 500, 70, 70), (501, 501, 80, 80)]
        cur.execute(
            "SELECT count, player_count FROM player_counts WHERE \"timestamp\" >= '2030-01-01' ORDER BY 1"
        )
        assert cur.fetchall() == [(123, 123), (456, 456)]
        cur.execute(
            "SELECT guid, source, pub_date = published_at,"
            " created_at IS NOT NULL AND created_at = fetched_at "
            "FROM osrs_news WHERE guid IN ('old-1', 'new-1') ORDER BY guid"
        )
        assert cur.fetchall() == [
            ("new-1", "wiki_recent_changes", True, True),
            ("old-1", "osrs_news", True, True),
        ]


def test_logins_keep_every_privilege_and_read_new_relations(cluster, osrs_data, gept_db, render_sql):
    sql = render_sql("timescale", timescaledb_ml_logins=[ML_USER, "absent_login"])["logins.sql"]
    # The harder case: a database created by postgres, where osrs_user connects, makes
    # temporary tables and creates tables only through what PUBLIC holds.
    cluster.execute("postgres", f'ALTER DATABASE "{osrs_data}" OWNER TO postgres', autocommit=True)
    with closing(ml_conn(cluster, osrs_data)) as conn, conn.cursor() as cur:
        before = ml_fingerprint(cur)
    migrate(gept_db, cluster, osrs_data)
    with closing(cluster.connect(osrs_data)) as conn:
        skipped: list[str] = []
        changes = gept_db.apply_sql(conn, sql, skipped)
        assert any("keeps CONNECT on the database" in c for c in changes)
        assert any("keeps TEMPORARY on the database" in c for c in changes)
        assert any("keeps CREATE on schema public" in c for c in changes)
        assert any("may read collection_windows" in c for c in changes)
        assert any("may read schema_migrations" in c for c in changes)
        assert skipped == ["login absent_login does not exist (timescaledb_ml_logins)"]
        # What access.yml then takes from PUBLIC.
        with conn.cursor() as cur:
            cur.execute(f'REVOKE CONNECT, TEMPORARY ON DATABASE "{osrs_data}" FROM PUBLIC')
            cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            # A relation the role creates later (e.g. a rollup) is readable by default.
            cur.execute("CREATE TABLE later_relation (x int)")
        # A second run grants nothing more.
        assert gept_db.apply_sql(conn, sql) == []
    with closing(ml_conn(cluster, osrs_data)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE scratch (x int)")
        cur.execute("CREATE TABLE ml_owned_later (x int)")  # the ML pipeline may still create tables
        cur.execute("DROP TABLE ml_owned_later")
        for relation in ("collection_windows", "schema_migrations", "later_relation", "predictions"):
            cur.execute(f"SELECT count(*) FROM {relation}")  # noqa: S608
        assert ml_fingerprint(cur) == before


def test_key_step_counts_refuses_without_disk_then_removes_duplicates(cluster, osrs_data, gept_db):
    migrate(gept_db, cluster, osrs_data)
    with closing(ml_conn(cluster, osrs_data)) as conn, conn.cursor() as cur:
        cur.execute('SELECT DISTINCT item_id, "timestamp" FROM price_data_5min ORDER BY 1, 2')
        keys = cur.fetchall()
        ml_before = ml_fingerprint(cur)
    with closing(cluster.connect(osrs_data)) as conn:
        report = gept_db.add_key(conn, "price_data_5min", ["item_id", "timestamp"], apply=False)
        assert (report["duplicate_keys"], report["duplicate_rows"]) == (25, 25)
        assert report["changes"] == [] and "primary_key" not in report
        # More room asked for than the disk has: refused, nothing changed.
        free = shutil.disk_usage(cluster.data).free
        with pytest.raises(gept_db.MigrationError, match="nothing was changed"):
            gept_db.add_key(
                conn, "price_data_5min", ["item_id", "timestamp"], apply=True, reserve_bytes=free + 2**40
            )
        with conn.cursor() as cur:
            assert duplicate_rows(cur) == 25
        report = gept_db.add_key(conn, "price_data_5min", ["item_id", "timestamp"], apply=True)
        assert report["changes"] == [
            "price_data_5min: 25 duplicate row(s) deleted",
            "price_data_5min: primary key (item_id, timestamp) added",
        ]
        with conn.cursor() as cur:
            assert duplicate_rows(cur) == 0
            cur.execute('SELECT item_id, "timestamp" FROM price_data_5min ORDER BY 1, 2')
            assert cur.fetchall() == keys  # every key still there, once
            cur.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'price_data_5min_pkey'"
            )
            assert cur.fetchone()[0] == 'PRIMARY KEY (item_id, "timestamp")'
        # Again: the key exists, nothing to do.
        assert gept_db.add_key(conn, "price_data_5min", ["item_id", "timestamp"], apply=True)["changes"] == []
    with closing(ml_conn(cluster, osrs_data)) as conn, conn.cursor() as cur:
        assert ml_fingerprint(cur) == ml_before


def test_fresh_database_gets_the_project_schema_unchanged(cluster, gept_db):
    """On an empty database 000 does nothing: 001 builds the project's own tables."""
    cluster.execute("postgres", "DROP DATABASE IF EXISTS gept_fresh WITH (FORCE)", autocommit=True)
    cluster.execute("postgres", "CREATE DATABASE gept_fresh", autocommit=True)
    try:
        applied, changes = migrate(gept_db, cluster, "gept_fresh")
        assert applied[:2] == ["000_adopt_existing_tables.sql", "001_base_schema.sql"] and changes == []
        cols = cluster.execute(
            "gept_fresh",
            "SELECT table_name, string_agg(column_name, ',' ORDER BY ordinal_position)"
            " FROM information_schema.columns"
            " WHERE table_name IN ('items', 'player_counts') GROUP BY 1 ORDER BY 1",
        )
        assert cols == [
            ("items", "item_id,name,examine,members,lowalch,highalch,ge_limit,value,icon,updated_at"),
            ("player_counts", "timestamp,player_count"),
        ]
        assert cluster.execute("gept_fresh", "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal") == [
            (0,)
        ]
    finally:
        cluster.execute("postgres", "DROP DATABASE IF EXISTS gept_fresh WITH (FORCE)", autocommit=True)


def test_command_line_reports_json(cluster, osrs_data, gept_db, monkeypatch, capsys):
    """The runner as the role calls it: migrate (with the index reports), then key (count only)."""
    import json  # noqa: PLC0415

    monkeypatch.setenv("PGPASSWORD", cluster.password)
    common = [f"--dbname={osrs_data}", "--host=127.0.0.1", f"--port={cluster.port}", "--user=postgres"]
    assert gept_db.main(["migrate", *common, f"--dir={MIGRATIONS}"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] and out["applied"][0] == "000_adopt_existing_tables.sql"
    assert any("renamed price_data_5min_timestamp_idx" in c for c in out["changes"])
    assert gept_db.main(["migrate", *common, f"--dir={MIGRATIONS}"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "changed": False,
        "applied": [],
        "changes": [],
        "skipped": [],
    }
    assert gept_db.main(["key", *common, "--table=price_data_5min", "--columns=item_id,timestamp"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert not out["changed"] and out["key"]["duplicate_rows"] == 25 and out["key"]["free_bytes"] > 0
    assert (
        gept_db.main(
            [
                "key",
                *common,
                "--table=price_data_5min",
                "--columns=item_id,timestamp",
                "--apply",
                "--reserve-mb=100000000",
            ]
        )
        == 1
    )
    assert "nothing was changed" in json.loads(capsys.readouterr().out)["error"]
