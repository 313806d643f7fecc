#!/usr/bin/env python3
"""GePT database runner: versioned migrations with a ledger, and idempotent SQL scripts.

Installed on the database host by the timescaledb role and run as the postgres OS user (peer
authentication over the local socket). The controller tests import this same file and point
it at a test server (PostgreSQL with TimescaleDB in a throwaway container), so there is one code path.

  gept_db.py migrate --dbname gept --dir /usr/local/lib/gept-timescaledb/migrations
      Applies every files/migrations/NNN_name.sql not yet in public.schema_migrations, in
      order, each in its own transaction together with its ledger row. A migration already
      applied whose file content changed is an error (write a new migration instead).
      Before each pending migration, every `CREATE [UNIQUE] INDEX IF NOT EXISTS name ON table`
      in it whose table already exists and holds rows (an adopted database) is built first
      with CREATE INDEX CONCURRENTLY in autocommit, so writers are never blocked by the
      migration's own build; an equivalent index under another name is renamed instead of
      built twice; a build the free disk cannot hold stops the run before it starts.
  gept_db.py apply --dbname gept FILE...
      Runs each file statement by statement in autocommit (so a DO block may COMMIT between
      chunks). Statements report what they changed with RAISE NOTICE 'gept-changed: ...' and
      what they deliberately left alone with RAISE NOTICE 'gept-skipped: ...'; no
      'gept-changed' notice means nothing changed.
  gept_db.py key --dbname osrs_data --table price_data_5min --columns item_id,timestamp [--apply]
      The primary key of a table that has none (an adopted table with duplicates): counts the
      rows sharing a key; with --apply, and only when the free disk holds the table plus the
      new index, deletes the duplicates (keeping one row per key, in batches) and adds the key
      (unique index built CONCURRENTLY, then ADD PRIMARY KEY USING INDEX).

Prints one JSON object: {"changed": bool, "applied": [...], "changes": [...], "skipped": [...]}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors

CHANGED_PREFIX = "gept-changed:"
SKIPPED_PREFIX = "gept-skipped:"
# CREATE [UNIQUE] INDEX IF NOT EXISTS name ON [public.]table (definition) [WHERE ...];
INDEX_STATEMENT = re.compile(
    r"CREATE\s+(?P<unique>UNIQUE\s+)?INDEX\s+IF\s+NOT\s+EXISTS\s+(?P<name>\w+)\s+ON\s+"
    r"(?:public\.)?(?P<table>\w+)\s*(?P<rest>\([^;]*)",
    re.I,
)
# Bytes per index entry assumed when estimating a btree index on one or two narrow columns
# (key + item header + line pointer, at the default fill factor), for the disk checks.
INDEX_BYTES_PER_ROW = 40
# Free space kept on top of every estimate.
DISK_MARGIN_BYTES = 256 * 1024 * 1024
MIGRATION_NAME = re.compile(r"^(\d{3,})_[A-Za-z0-9_]+\.sql$")
LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS public.schema_migrations (
    version     text PRIMARY KEY,
    name        text        NOT NULL,
    sha256      text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """A migration cannot be applied safely (changed after it was applied, bad name)."""


def split_statements(sql: str) -> list[str]:
    """Split SQL text on top-level semicolons, honouring quotes, $tag$ bodies and comments."""
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            buf.append(sql[i:end])
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
            buf.append(sql[i:end])
            i = end
        elif ch in ("'", '"'):
            end = i + 1
            while end < n:
                if sql[end] == ch and sql.startswith(ch * 2, end):
                    end += 2
                    continue
                if sql[end] == ch:
                    break
                end += 1
            buf.append(sql[i : end + 1])
            i = end + 1
        elif ch == "$" and (tag := re.match(r"\$[A-Za-z_]*\$", sql[i:])):
            close = sql.find(tag.group(0), i + len(tag.group(0)))
            end = n if close < 0 else close + len(tag.group(0))
            buf.append(sql[i:end])
            i = end
        elif ch == ";":
            statements.append("".join(buf))
            buf = []
            i += 1
        else:
            buf.append(ch)
            i += 1
    statements.append("".join(buf))
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    without_comments = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.S)
    return bool(without_comments.strip())


class ChangeCollector:
    """Stands in for connection.notices and keeps the 'gept-changed: ...' and
    'gept-skipped: ...' reports.

    (psycopg2 keeps only the last 50 notices in a plain list; any object with append() is
    used as is, so nothing is lost however chatty the server is.)
    """

    def __init__(self) -> None:
        self.changes: list[str] = []
        self.skipped: list[str] = []

    def append(self, notice: str) -> None:
        text = notice.split(":", 1)[1].strip() if notice.startswith(("NOTICE:", "WARNING:")) else notice
        if text.startswith(CHANGED_PREFIX):
            self.changes.append(text[len(CHANGED_PREFIX) :].strip())
        elif text.startswith(SKIPPED_PREFIX):
            self.skipped.append(text[len(SKIPPED_PREFIX) :].strip())


def pending_migrations(conn: Any, directory: Path) -> list[tuple[str, Path, str]]:
    """Return (version, path, sha256) of migrations not yet applied; check applied ones."""
    files = sorted(p for p in directory.iterdir() if p.suffix == ".sql")
    with conn.cursor() as cur:
        cur.execute(LEDGER_DDL)
        cur.execute("SELECT version, sha256 FROM public.schema_migrations")
        applied = dict(cur.fetchall())
    conn.commit()
    pending = []
    for path in files:
        match = MIGRATION_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNN_description.sql")
        version = match.group(1)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if version in applied:
            if applied[version] != digest:
                raise MigrationError(
                    f"{path.name} was changed after it was applied (ledger sha256 "
                    f"{applied[version][:12]}, file {digest[:12]}): add a new migration instead"
                )
            continue
        pending.append((version, path, digest))
    return pending


def migrate(conn: Any, directory: Path, changes: list[str] | None = None) -> list[str]:
    """Apply pending migrations in order, each atomically with its ledger row. Indexes a
    migration creates on tables that already hold rows are built CONCURRENTLY first (their
    reports go to `changes`)."""
    conn.autocommit = False
    done = []
    for version, path, digest in pending_migrations(conn, directory):
        text = path.read_text(encoding="utf-8")
        reports = prebuild_indexes(conn, text)
        if changes is not None:
            changes += [f"{path.name}: {r}" for r in reports]
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute(text)
            cur.execute(
                "INSERT INTO public.schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                (version, path.name, digest),
            )
        conn.commit()
        done.append(path.name)
    return done


def _normalise_index_columns(definition: str) -> str:
    """'("timestamp" DESC)' and 'btree ("timestamp" DESC)' -> 'timestampdesc' (for equality)."""
    body = definition[definition.index("(") :] if "(" in definition else definition
    return re.sub(r'[\s"]', "", body).lower()


def free_disk_bytes(conn: Any) -> int | None:
    """Free bytes on the filesystem of the data directory (None when it is not visible here:
    a server on another host, or no superuser to ask for the path)."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('data_directory')")
            data_dir = cur.fetchone()[0]
        return shutil.disk_usage(data_dir).free
    except (psycopg2.Error, OSError):
        if not conn.autocommit:
            conn.rollback()
        return None


def _mb(n: float) -> str:
    return f"{n / 1048576:.0f} MB"


def prebuild_indexes(conn: Any, migration_sql: str) -> list[str]:
    """Build the migration's CREATE INDEX IF NOT EXISTS on existing, non-empty tables with
    CREATE INDEX CONCURRENTLY (writers go on), or rename an equivalent index that already
    exists under another name. Returns what it did, one line each."""
    conn.commit()
    conn.autocommit = True
    reports: list[str] = []
    try:
        for stmt in split_statements(migration_sql):
            match = INDEX_STATEMENT.match(stmt)
            if not match:
                continue
            name, table = match.group("name"), match.group("table")
            unique = bool(match.group("unique"))
            rest = match.group("rest").strip()
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s)", (f"public.{table}",))
                if cur.fetchone()[0] is None:
                    continue  # the migration creates the table: nothing to adopt
                cur.execute(
                    "SELECT c.relname, i.indisvalid, pg_get_indexdef(i.indexrelid), i.indisunique,"
                    " i.indpred IS NOT NULL"
                    "  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE i.indrelid = %s::regclass",
                    (f"public.{table}",),
                )
                indexes = cur.fetchall()
                own = [r for r in indexes if r[0] == name]
                if own and own[0][1]:
                    continue  # built already
                if own:  # an invalid leftover of an interrupted concurrent build
                    cur.execute(f'DROP INDEX CONCURRENTLY IF EXISTS public."{name}"')
                    reports.append(f"dropped the invalid index {name} (an interrupted build)")
                wanted = _normalise_index_columns(rest)
                twin = [
                    r
                    for r in indexes
                    if r[0] != name
                    and r[1]
                    and r[3] == unique
                    and not r[4]
                    and _normalise_index_columns(r[2].split(" USING ", 1)[-1]) == wanted
                ]
                if twin and "where" not in wanted:
                    cur.execute(f'ALTER INDEX public."{twin[0][0]}" RENAME TO "{name}"')
                    reports.append(
                        f"index {twin[0][0]} on {table} renamed {name} (same definition, not built twice)"
                    )
                    continue
                # Identifiers come from the migration files and are quoted.
                cur.execute(f'SELECT EXISTS (SELECT 1 FROM public."{table}")')  # noqa: S608
                if not cur.fetchone()[0]:
                    continue  # empty: the migration's own build is instant
                cur.execute(
                    "SELECT greatest(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid)"
                    "  FROM pg_class c WHERE c.oid = %s::regclass",
                    (f"public.{table}",),
                )
                rows, size = cur.fetchone()
            need = rows * INDEX_BYTES_PER_ROW + DISK_MARGIN_BYTES
            free = free_disk_bytes(conn)
            if free is not None and free < need:
                raise MigrationError(
                    f"index {name} on {table} ({rows} rows, {_mb(size)}) needs about {_mb(need)} free, "
                    f"the data directory's filesystem has {_mb(free)}: free space first (nothing was changed)"
                )
            kind = "UNIQUE INDEX" if unique else "INDEX"
            create = f'CREATE {kind} CONCURRENTLY "{name}" ON public."{table}" {rest}'
            try:
                with conn.cursor() as cur:
                    cur.execute(create)
            except psycopg2.errors.UndefinedColumn:
                continue  # a column the migration adds first: it builds the index itself
            except psycopg2.Error as exc:
                # No invalid index may stay behind under the name the migration checks for.
                try:
                    with conn.cursor() as cur:
                        cur.execute(f'DROP INDEX CONCURRENTLY IF EXISTS public."{name}"')
                except psycopg2.Error:
                    pass
                raise MigrationError(
                    f"building index {name} CONCURRENTLY on {table} failed ({str(exc).strip()}); "
                    "an invalid index left by it is dropped on the next run"
                ) from exc
            reports.append(
                f"index {name} built CONCURRENTLY on {table} ({rows} rows, {_mb(size)}): writes went on"
            )
    finally:
        conn.autocommit = False
    return reports


def count_duplicates(conn: Any, table: str, columns: list[str]) -> tuple[int, int]:
    """(keys held by more than one row, surplus rows) of `table` over `columns`."""
    cols = ", ".join(f'"{c}"' for c in columns)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*), coalesce(sum(n - 1), 0)::bigint FROM ("  # noqa: S608  (quoted identifiers)
            f'SELECT count(*) AS n FROM public."{table}" GROUP BY {cols} HAVING count(*) > 1) d'
        )
        keys, surplus = cur.fetchone()
    return keys, surplus


def add_key(
    conn: Any,
    table: str,
    columns: list[str],
    apply: bool,
    batch: int = 50000,
    reserve_bytes: int = DISK_MARGIN_BYTES,
    concurrent: bool = True,
) -> dict[str, Any]:
    """Count duplicates over `columns`; with apply, delete them (one row per key is kept, the
    one stored first) and add the primary key, only when the free disk holds the table plus
    the new index. The unique index is built CONCURRENTLY (writers go on) unless `concurrent`
    is false (one blocking build: a maintenance window with the writers stopped). Returns a
    report (dict)."""
    for ident in (table, *columns):
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", ident):
            raise MigrationError(f"{ident!r}: a plain lower-case identifier is expected")
    conn.autocommit = True
    cols = ", ".join(f'"{c}"' for c in columns)
    name = f"{table}_pkey"
    with conn.cursor() as cur:
        cur.execute(
            "SELECT i.indexrelid::regclass::text FROM pg_index i"
            " WHERE i.indrelid = %s::regclass AND i.indisprimary",
            (f"public.{table}",),
        )
        existing = cur.fetchone()
        cur.execute(
            "SELECT greatest(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid) FROM pg_class c"
            " WHERE c.oid = %s::regclass",
            (f"public.{table}",),
        )
        rows, size = cur.fetchone()
    report: dict[str, Any] = {"table": table, "rows_estimate": rows, "bytes": size, "changes": []}
    if existing:
        report["primary_key"] = existing[0]
        return report
    keys, surplus = count_duplicates(conn, table, columns)
    report.update(duplicate_keys=keys, duplicate_rows=surplus)
    need = size + rows * INDEX_BYTES_PER_ROW + reserve_bytes
    free = free_disk_bytes(conn)
    report.update(free_bytes=free, needed_bytes=need)
    if not apply:
        return report
    if free is not None and free < need:
        raise MigrationError(
            f"{table}: the key needs about {_mb(need)} free (table {_mb(size)} + index), "
            f"the data directory's filesystem has {_mb(free)}; {surplus} duplicate row(s) counted, "
            "nothing was changed"
        )
    deleted = 0
    with conn.cursor() as cur:
        while surplus:
            cur.execute(
                f'DELETE FROM public."{table}" t USING ('  # noqa: S608  (quoted identifiers)
                "  SELECT ctid FROM (SELECT ctid,"
                f"  row_number() OVER (PARTITION BY {cols} ORDER BY ctid) AS rn"
                f'    FROM public."{table}" WHERE ({cols}) IN ('
                f'      SELECT {cols} FROM public."{table}" GROUP BY {cols} HAVING count(*) > 1 LIMIT %s)) d'
                "   WHERE rn > 1) dup WHERE t.ctid = dup.ctid",
                (batch,),
            )
            if cur.rowcount == 0:
                break
            deleted += cur.rowcount
        if deleted:
            report["changes"].append(f"{table}: {deleted} duplicate row(s) deleted")
        how = "CONCURRENTLY " if concurrent else ""
        cur.execute(f'DROP INDEX {how}IF EXISTS public."{name}"')  # an interrupted build
        cur.execute(f'CREATE UNIQUE INDEX {how}"{name}" ON public."{table}" ({cols})')
        cur.execute(f'ALTER TABLE public."{table}" ADD CONSTRAINT "{name}" PRIMARY KEY USING INDEX "{name}"')
    report["changes"].append(f"{table}: primary key ({', '.join(columns)}) added")
    report["primary_key"] = name
    return report


def apply_sql(conn: Any, sql: str, skipped: list[str] | None = None) -> list[str]:
    """Run SQL statement by statement in autocommit; return the changes it reported (what it
    reported as skipped is added to `skipped`)."""
    conn.autocommit = True
    saved, collector = conn.notices, ChangeCollector()
    conn.notices = collector
    try:
        with conn.cursor() as cur:
            for statement in split_statements(sql):
                cur.execute(statement)
    finally:
        conn.notices = saved
    if skipped is not None:
        skipped += collector.skipped
    return collector.changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["migrate", "apply", "key"])
    parser.add_argument("files", nargs="*", type=Path, help="SQL files (apply)")
    parser.add_argument("--dbname", required=True)
    parser.add_argument("--host", default="/var/run/postgresql")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", default=None)
    parser.add_argument("--dir", type=Path, help="migrations directory (migrate)")
    parser.add_argument("--table", help="table (key)")
    parser.add_argument("--columns", help="key columns, comma-separated (key)")
    parser.add_argument("--apply", action="store_true", help="delete duplicates and add the key (key)")
    parser.add_argument(
        "--blocking-index",
        action="store_true",
        help="build the key's index in one blocking statement, faster, writers stopped (key)",
    )
    parser.add_argument(
        "--reserve-mb", type=int, default=DISK_MARGIN_BYTES // 1048576, help="free space to keep on top (key)"
    )
    # Options may sit between the command and the files: Python before 3.12 (Debian 12's 3.11)
    # otherwise ends the files list at the first option.
    args = parser.parse_intermixed_args(argv)

    conn = psycopg2.connect(dbname=args.dbname, host=args.host, port=args.port, user=args.user)
    result: dict[str, Any] = {"changed": False, "applied": [], "changes": [], "skipped": []}
    try:
        if args.command == "migrate":
            if args.dir is None:
                parser.error("migrate needs --dir")
            result["applied"] = migrate(conn, args.dir, result["changes"])
        elif args.command == "key":
            if not args.table or not args.columns:
                parser.error("key needs --table and --columns")
            report = add_key(
                conn,
                args.table,
                args.columns.split(","),
                args.apply,
                reserve_bytes=args.reserve_mb * 1048576,
                concurrent=not args.blocking_index,
            )
            result["changes"] = report.pop("changes")
            result["key"] = report
        else:
            for path in args.files:
                skipped: list[str] = []
                result["changes"] += [f"{path.name}: {c}" for c in apply_sql(conn, path.read_text(), skipped)]
                result["skipped"] += [f"{path.name}: {s}" for s in skipped]
    except (MigrationError, psycopg2.Error) as exc:
        changed = bool(result["applied"] or result["changes"])
        print(json.dumps({"changed": changed, "error": str(exc).strip()}))
        return 1
    finally:
        conn.close()
    result["changed"] = bool(result["applied"] or result["changes"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
