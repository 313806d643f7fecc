"""The timescaledb role's login roles and privileges (templates login_roles.sql and
privileges.sql, applied by the role's own runner gept_db.py) against a real PostgreSQL: roles
created with working scram-sha-256 passwords, a password set again only when it differs from
the stored verifier (checked in SQL against the SCRAM secret), drifted attributes brought back,
PUBLIC without CONNECT/TEMPORARY, each login with exactly its table privileges, and a second
pass that changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from support.pg import PgCluster

MIGRATIONS = Path(__file__).resolve().parents[2] / "roles" / "timescaledb" / "files" / "migrations"

PASSWORDS = {
    "vault_db_collector_password": "collector-pw",  # pragma: allowlist secret
    # A quote (SQL literal) and a non-ASCII letter (normalised as PostgreSQL's SASLprep does).
    "vault_db_readonly_password": "read'only-pässword",  # pragma: allowlist secret
    "vault_db_exporter_password": "exporter-pw",  # pragma: allowlist secret
}
ML_USER = "osrs_user"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    pg = PgCluster(prefix="gept-login-roles-pg-")
    try:
        pg.init()
        pg.start()
        pg.execute("postgres", f"CREATE ROLE {ML_USER} LOGIN PASSWORD 'ml-old-password'")
        pg.execute("postgres", "CREATE DATABASE gept", autocommit=True)
        yield pg
    finally:
        pg.cleanup()


def apply(gept_db: Any, conn: Any, sql: str) -> tuple[list[str], list[str]]:
    skipped: list[str] = []
    return gept_db.apply_sql(conn, sql, skipped), skipped


def can_login(cluster: PgCluster, user: str, password: str) -> bool:
    try:
        cluster.connect("gept", user=user, password=password).close()
    except psycopg2.OperationalError:
        return False
    return True


def test_login_roles_then_privileges_converge_and_a_second_pass_changes_nothing(cluster, gept_db, render_sql):
    sql = render_sql(
        "apache",
        **PASSWORDS,
        timescaledb_ml_login_passwords={ML_USER: "ml-new-password", "absent_login": "x", "unset_login": ""},
    )
    with closing(cluster.connect("postgres")) as conn:
        changes, skipped = apply(gept_db, conn, sql["login_roles.sql"])
        assert "login gept_collector created (connection limit 40)" in changes
        assert "login gept_exporter made a member of pg_monitor" in changes
        assert f"login {ML_USER} password set" in changes
        assert skipped == ["login absent_login does not exist (timescaledb_ml_login_passwords)"]
        assert apply(gept_db, conn, sql["login_roles.sql"]) == ([], skipped)

        # Drift: attributes, a connection limit and a password changed by hand come back, and
        # only what drifted is reported.
        with conn.cursor() as cur:
            cur.execute("ALTER ROLE gept_readonly CREATEDB CONNECTION LIMIT 99 PASSWORD 'changed'")
        changes, _ = apply(gept_db, conn, sql["login_roles.sql"])
        assert sorted(changes) == [
            "login gept_readonly connection limit 99 -> 20",
            "login gept_readonly password set",
            "login gept_readonly set to LOGIN without SUPERUSER, CREATEDB, CREATEROLE, REPLICATION,"
            " BYPASSRLS",
        ]
        assert apply(gept_db, conn, sql["login_roles.sql"]) == ([], skipped)
    for key, user in (
        ("vault_db_collector_password", "gept_collector"),
        ("vault_db_readonly_password", "gept_readonly"),
    ):
        assert can_login(cluster, user, PASSWORDS[key])
    assert can_login(cluster, ML_USER, "ml-new-password")
    assert not can_login(cluster, "gept_exporter", "wrong")

    with closing(cluster.connect("gept")) as conn:
        gept_db.migrate(conn, MIGRATIONS)
        conn.autocommit = True
        changes, _ = apply(gept_db, conn, sql["privileges.sql"])
        assert "PUBLIC loses CONNECT, TEMPORARY on DATABASE gept" in changes
        assert "gept_collector granted CONNECT, TEMPORARY on DATABASE gept" in changes
        assert "gept_collector granted INSERT on TABLE public.price_data_5min" in changes
        # The rollups do not exist on a database the feature SQL has not run on: skipped.
        assert not [c for c in changes if "price_data_hourly" in c]
        assert apply(gept_db, conn, sql["privileges.sql"]) == ([], [])
        with conn.cursor() as cur:
            cur.execute(
                "SELECT has_database_privilege('public', 'gept', 'CONNECT'),"
                " has_schema_privilege('public', 'public', 'CREATE'),"
                " has_table_privilege('gept_collector', 'price_data_5min', 'INSERT'),"
                " has_table_privilege('gept_collector', 'items', 'UPDATE'),"
                " has_table_privilege('gept_collector', 'price_data_5min', 'UPDATE'),"
                " has_table_privilege('gept_readonly', 'price_data_5min', 'SELECT'),"
                " has_table_privilege('gept_readonly', 'price_data_5min', 'INSERT'),"
                " has_table_privilege('gept_exporter', 'items', 'SELECT')"
            )
            assert cur.fetchone() == (False, False, True, True, False, True, False, True)
    # Without CONNECT through PUBLIC, a login the role does not know cannot connect.
    cluster.execute("postgres", "CREATE ROLE stranger LOGIN PASSWORD 'stranger-pw'")
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        cluster.connect("gept", user="stranger", password="stranger-pw")  # noqa: S106
    with closing(
        cluster.connect("gept", user="gept_readonly", password=PASSWORDS["vault_db_readonly_password"])
    ) as c:
        with c.cursor() as cur:
            cur.execute("SELECT count(*) FROM items")
            assert cur.fetchone() == (0,)
