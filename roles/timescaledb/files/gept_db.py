#!/usr/bin/env python3
"""GePT database runner: versioned migrations with a ledger, and idempotent SQL scripts.

Installed on the database host by the timescaledb role and run as the postgres OS user (peer
authentication over the local socket). The controller tests import this same file and point
it at a test server (PGlite / PostgreSQL on 127.0.0.1), so there is one code path.

  gept_db.py migrate --dbname gept --dir /usr/local/lib/gept-timescaledb/migrations
      Applies every files/migrations/NNN_name.sql not yet in public.schema_migrations, in
      order, each in its own transaction together with its ledger row. A migration already
      applied whose file content changed is an error (write a new migration instead).
  gept_db.py apply --dbname gept FILE...
      Runs each file statement by statement in autocommit (so a DO block may COMMIT between
      chunks). Statements report what they changed with RAISE NOTICE 'gept-changed: ...';
      no such notice means nothing changed.

Prints one JSON object: {"changed": bool, "applied": [...], "changes": [...]}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import psycopg2

CHANGED_PREFIX = "gept-changed:"
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
    """Stands in for connection.notices and keeps the 'gept-changed: ...' reports.

    (psycopg2 keeps only the last 50 notices in a plain list; any object with append() is
    used as is, so nothing is lost however chatty the server is.)
    """

    def __init__(self) -> None:
        self.changes: list[str] = []

    def append(self, notice: str) -> None:
        text = notice.split(":", 1)[1].strip() if notice.startswith(("NOTICE:", "WARNING:")) else notice
        if text.startswith(CHANGED_PREFIX):
            self.changes.append(text[len(CHANGED_PREFIX) :].strip())


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


def migrate(conn: Any, directory: Path) -> list[str]:
    """Apply pending migrations in order, each atomically with its ledger row."""
    conn.autocommit = False
    done = []
    for version, path, digest in pending_migrations(conn, directory):
        with conn.cursor() as cur:
            cur.execute(path.read_text(encoding="utf-8"))
            cur.execute(
                "INSERT INTO public.schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                (version, path.name, digest),
            )
        conn.commit()
        done.append(path.name)
    return done


def apply_sql(conn: Any, sql: str) -> list[str]:
    """Run SQL statement by statement in autocommit; return the changes it reported."""
    conn.autocommit = True
    saved, collector = conn.notices, ChangeCollector()
    conn.notices = collector
    try:
        with conn.cursor() as cur:
            for statement in split_statements(sql):
                cur.execute(statement)
    finally:
        conn.notices = saved
    return collector.changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["migrate", "apply"])
    parser.add_argument("files", nargs="*", type=Path, help="SQL files (apply)")
    parser.add_argument("--dbname", required=True)
    parser.add_argument("--host", default="/var/run/postgresql")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", default=None)
    parser.add_argument("--dir", type=Path, help="migrations directory (migrate)")
    # Options may sit between the command and the files: Python before 3.12 (Debian 12's 3.11)
    # otherwise ends the files list at the first option.
    args = parser.parse_intermixed_args(argv)

    conn = psycopg2.connect(dbname=args.dbname, host=args.host, port=args.port, user=args.user)
    result: dict[str, Any] = {"changed": False, "applied": [], "changes": []}
    try:
        if args.command == "migrate":
            if args.dir is None:
                parser.error("migrate needs --dir")
            result["applied"] = migrate(conn, args.dir)
        else:
            for path in args.files:
                result["changes"] += [f"{path.name}: {c}" for c in apply_sql(conn, path.read_text())]
    except (MigrationError, psycopg2.Error) as exc:
        print(json.dumps({"changed": bool(result["applied"]), "error": str(exc).strip()}))
        return 1
    finally:
        conn.close()
    result["changed"] = bool(result["applied"] or result["changes"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
