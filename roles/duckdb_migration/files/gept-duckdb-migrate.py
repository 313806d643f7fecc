#!/usr/bin/env python3
"""gept-duckdb-migrate: copy tables from the old DuckDB files into PostgreSQL, then prove it.

Usage: gept-duckdb-migrate --config /etc/gept/duckdb_migration.json [--check-only] [--run-as USER]

The config (rendered by the duckdb_migration role) lists tables:
  {"tables": [{"name": "player_counts", "file": ".../player_counts.duckdb",
               "source_table": "player_counts", "target_table": "player_counts",
               "columns": {"<target column>": "<DuckDB SQL expression>", ...},
               "key": ["timestamp"], "on_conflict": "nothing" | "update",
               "sum_columns": ["player_count"], "source_timezone": "UTC"}]}
The PostgreSQL connection comes from the libpq environment (PGHOST, PGUSER, PGPASSWORD...).

Started as root with --run-as USER (the role runs it so), it opens every DuckDB file read-only
first - the seed keeps them in a 0750 directory of its own user that the database's OS user
cannot read, and their permissions stay as they are - and then drops to USER (e.g. postgres,
for a peer login over the socket) before it reads a row or connects to PostgreSQL.

Steps, all or nothing:
  1. Every file is opened read-only and every source column is read (LIMIT 0) before anything
     is written, and every target column must exist in PostgreSQL: a missing, unreadable or
     malformed file, or a column missing on either side, stops the run with exit code 2 and a
     clear message naming it, and nothing is written.
  2. In ONE PostgreSQL transaction, for each table: the DuckDB rows are loaded into a
     temporary staging table, then INSERT ... ON CONFLICT (key) DO NOTHING | DO UPDATE (only
     rows that differ are updated, so a re-run writes nothing).
  3. Verification, still inside the transaction: the DuckDB row count and the sum of each
     sum column, computed by DuckDB, must equal the staging table's (the transfer) and the
     target rows with the same keys (the result); and every staged row must be present in
     the target with identical values. Any difference rolls everything back (exit code 3).
A JSON report is printed on stdout (one object, "changed" true when rows were written).
Naive DuckDB TIMESTAMPs are read as "source_timezone"; TIMESTAMP WITH TIME ZONE as is.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import psycopg2
import psycopg2.extras
from psycopg2 import sql

BATCH_ROWS = 5000
EXIT_INPUT = 2
EXIT_VERIFY = 3


class MigrationInputError(Exception):
    """A source file or table is missing or unreadable: nothing has been written."""


class VerificationError(Exception):
    """The copied rows do not match their source: the transaction is rolled back."""


@dataclass
class TableSpec:
    name: str
    file: str
    source_table: str
    target_table: str
    columns: dict[str, str]
    key: list[str]
    on_conflict: str = "nothing"
    sum_columns: list[str] = field(default_factory=list)
    source_timezone: str = "UTC"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableSpec:
        spec = cls(**d)
        if spec.on_conflict not in ("nothing", "update"):
            raise MigrationInputError(f"{spec.name}: on_conflict must be 'nothing' or 'update'")
        missing = [c for c in spec.key + spec.sum_columns if c not in spec.columns]
        if missing:
            raise MigrationInputError(f"{spec.name}: key/sum columns {missing} are not in 'columns'")
        return spec


def _duck_select_list(spec: TableSpec, types: dict[str, str]) -> str:
    """SELECT list for DuckDB; TIMESTAMPTZ values travel as epoch microseconds (no pytz needed)."""
    parts = []
    for target, expr in spec.columns.items():
        if types[target].upper().startswith("TIMESTAMP WITH TIME ZONE"):
            parts.append(f"epoch_us({expr})")
        else:
            parts.append(f"({expr})")
    return ", ".join(parts)


_CONNECTIONS: dict[str, Any] = {}


def open_duckdb(spec: TableSpec):
    """The file's read-only connection, opened once and kept open: opened while the process
    may still read the file's directory (root), it stays usable after the privilege drop."""
    if spec.file in _CONNECTIONS:
        return _CONNECTIONS[spec.file]
    if not os.path.isfile(spec.file):
        raise MigrationInputError(f"{spec.name}: DuckDB file {spec.file} does not exist (or is not a file)")
    try:
        con = duckdb.connect(spec.file, read_only=True)
    except duckdb.Error as exc:
        raise MigrationInputError(
            f"{spec.name}: {spec.file} is not a readable DuckDB database: {exc}"
        ) from exc
    _CONNECTIONS[spec.file] = con
    return con


def close_duckdb() -> None:
    while _CONNECTIONS:
        _CONNECTIONS.popitem()[1].close()


def drop_privileges(user: str) -> None:
    """Become USER (groups, gid, uid) for good; a no-op when already running as USER."""
    pw = pwd.getpwnam(user)
    if os.geteuid() == pw.pw_uid:
        return
    if os.geteuid() != 0:
        raise MigrationInputError(
            f"--run-as {user}: only root can switch users (running as uid {os.geteuid()})"
        )
    os.setgroups(os.getgrouplist(user, pw.pw_gid))
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    os.environ["HOME"] = pw.pw_dir
    os.chdir("/")


def inspect_source(spec: TableSpec) -> dict[str, Any]:
    """Read the column types, count and sums of the source table. Read-only."""
    con = open_duckdb(spec)
    exprs = ", ".join(f'({e}) AS "{t}"' for t, e in spec.columns.items())
    try:
        described = con.execute(f"DESCRIBE SELECT {exprs} FROM {spec.source_table}").fetchall()  # noqa: S608
    except duckdb.Error as exc:
        try:
            have = [r[0] for r in con.execute(f"DESCRIBE {spec.source_table}").fetchall()]
        except duckdb.Error:
            have = None
        where = (
            f"table {spec.source_table} has columns {have}"
            if have is not None
            else f"there is no table {spec.source_table}"
        )
        raise MigrationInputError(
            f"{spec.name}: cannot read {list(spec.columns.values())} from {spec.file}: {where} "
            f"(set the mapping in duckdb_migration_tables, entry {spec.name!r}: source_table / columns)"
            f" - {exc}"
        ) from exc
    types = {row[0]: row[1] for row in described}
    sums = ", ".join(f"CAST(sum({spec.columns[c]}) AS VARCHAR)" for c in spec.sum_columns)
    # Identifiers and expressions come from the operator's config, not from data.
    row = con.execute(f"SELECT count(*){', ' + sums if sums else ''} FROM {spec.source_table}").fetchone()  # noqa: S608
    if row is None:
        raise MigrationInputError(f"{spec.name}: counting rows of {spec.source_table} returned nothing")
    return {
        "types": types,
        "rows": int(row[0]),
        "sums": {c: _norm_sum(v) for c, v in zip(spec.sum_columns, row[1:], strict=True)},
    }


def _norm_sum(value: Any) -> str:
    """Sums compared as exact decimal strings ('0' for an empty table)."""
    if value is None:
        return "0"
    return str(Decimal(str(value)).normalize()) if "." in str(value) else str(int(value))


def _converter(duck_type: str, tz: ZoneInfo):
    t = duck_type.upper()
    if t.startswith("TIMESTAMP WITH TIME ZONE"):
        return lambda v: None if v is None else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=v)
    if t.startswith("TIMESTAMP"):
        return lambda v: None if v is None else (v if v.tzinfo else v.replace(tzinfo=tz))
    return lambda v: v


def read_rows(spec: TableSpec, types: dict[str, str]):
    """Yield batches of converted rows from DuckDB (read-only)."""
    tz = ZoneInfo(spec.source_timezone)
    convs = [_converter(types[c], tz) for c in spec.columns]
    cur = open_duckdb(spec).cursor()
    try:
        cur.execute(f"SELECT {_duck_select_list(spec, types)} FROM {spec.source_table}")  # noqa: S608
        while batch := cur.fetchmany(BATCH_ROWS):
            yield [tuple(conv(v) for conv, v in zip(convs, r, strict=True)) for r in batch]
    finally:
        cur.close()


def check_target(pg, spec: TableSpec) -> None:
    """Every target column must exist in PostgreSQL before anything is written."""
    with pg.cursor() as cur:
        cur.execute(
            "SELECT attname FROM pg_attribute"
            " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
            (spec.target_table,),
        )
        have = [r[0] for r in cur.fetchall()]
    if not have:
        raise MigrationInputError(
            f"{spec.name}: PostgreSQL has no table {spec.target_table} in this database "
            f"(target_table of duckdb_migration_tables entry {spec.name!r};"
            " the database is duckdb_migration_db_name)"
        )
    missing = [c for c in spec.columns if c not in have]
    if missing:
        raise MigrationInputError(
            f"{spec.name}: PostgreSQL table {spec.target_table} has no column(s) {missing} (it has {have}); "
            f"set the target column names in duckdb_migration_tables, entry {spec.name!r}: columns"
        )


def migrate_table(pg, spec: TableSpec, source: dict[str, Any]) -> dict[str, Any]:
    """Stage, upsert and verify one table inside the caller's transaction."""
    cols = list(spec.columns)
    ident = sql.Identifier
    col_list = sql.SQL(", ").join(map(ident, cols))
    stage = ident(f"_gept_stage_{spec.name}")
    target = ident(spec.target_table)
    with pg.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                stage, col_list, target
            )
        )
        insert_stage = sql.SQL("INSERT INTO {} ({}) VALUES %s").format(stage, col_list).as_string(pg)
        for batch in read_rows(spec, source["types"]):
            psycopg2.extras.execute_values(cur, insert_stage, batch, page_size=1000)

        key_list = sql.SQL(", ").join(map(ident, spec.key))
        non_key = [c for c in cols if c not in spec.key]
        if spec.on_conflict == "update" and non_key:
            conflict = sql.SQL("DO UPDATE SET ({}) = ROW({}) WHERE ({}) IS DISTINCT FROM ({})").format(
                sql.SQL(", ").join(map(ident, non_key)),
                sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(ident(c)) for c in non_key),
                sql.SQL(", ").join(sql.SQL("{}.{}").format(target, ident(c)) for c in non_key),
                sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(ident(c)) for c in non_key),
            )
        else:
            conflict = sql.SQL("DO NOTHING")
        cur.execute(
            sql.SQL(
                "WITH w AS (INSERT INTO {t} ({c}) SELECT {c} FROM {s} ON CONFLICT ({k}) {conflict} "
                "RETURNING (xmax = 0) AS inserted) "
                "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM w"
            ).format(t=target, c=col_list, s=stage, k=key_list, conflict=conflict)
        )
        inserted, updated = cur.fetchone()

        # Verification: transfer (DuckDB vs staging) and result (staging vs target rows).
        join_on = sql.SQL(" AND ").join(sql.SQL("t.{c} = s.{c}").format(c=ident(k)) for k in spec.key)
        same_row = sql.SQL(" AND ").join(
            sql.SQL("t.{c} IS NOT DISTINCT FROM s.{c}").format(c=ident(c)) for c in cols
        )
        sums_s = [sql.SQL("coalesce(sum(s.{}), 0)::text").format(ident(c)) for c in spec.sum_columns]
        sums_t = [sql.SQL("coalesce(sum(t.{}), 0)::text").format(ident(c)) for c in spec.sum_columns]
        cur.execute(
            sql.SQL(
                "SELECT count(*), count(t.{k0}), count(*) FILTER (WHERE t.{k0} IS NOT NULL AND {same})"
                " {sums} FROM {s} s LEFT JOIN {t} t ON {on}"
            ).format(
                k0=ident(spec.key[0]),
                same=same_row,
                sums=sql.SQL("").join(sql.SQL(", ") + x for x in sums_s + sums_t),
                s=stage,
                t=target,
                on=join_on,
            )
        )
        row = cur.fetchone()
    staged, present, identical = int(row[0]), int(row[1]), int(row[2])
    n = len(spec.sum_columns)
    stage_sums = {c: _norm_sum(v) for c, v in zip(spec.sum_columns, row[3 : 3 + n], strict=True)}
    target_sums = {c: _norm_sum(v) for c, v in zip(spec.sum_columns, row[3 + n :], strict=True)}
    report = {
        "table": spec.name,
        "file": spec.file,
        "target": spec.target_table,
        "duckdb_rows": source["rows"],
        "staged_rows": staged,
        "present_in_postgresql": present,
        "identical_in_postgresql": identical,
        "inserted": int(inserted),
        "updated": int(updated),
        "duckdb_sums": source["sums"],
        "staged_sums": stage_sums,
        "postgresql_sums": target_sums,
    }
    problems = []
    if not (source["rows"] == staged == present == identical):
        problems.append(
            f"rows: DuckDB {source['rows']}, staged {staged}, present in PostgreSQL {present}, "
            f"identical {identical}"
            + (
                " (on_conflict=nothing kept PostgreSQL's differing rows; use 'update' if DuckDB should win)"
                if identical < present and spec.on_conflict == "nothing"
                else ""
            )
        )
    for c in spec.sum_columns:
        if not (source["sums"][c] == stage_sums[c] == target_sums[c]):
            problems.append(
                f"sum({c}): DuckDB {source['sums'][c]}, staged {stage_sums[c]}, PostgreSQL {target_sums[c]}"
            )
    report["verified"] = not problems
    if problems:
        raise VerificationError(f"{spec.name}: " + "; ".join(problems) + f" | report: {json.dumps(report)}")
    return report


def run(config_path: str, check_only: bool, run_as: str | None = None) -> dict[str, Any]:
    with open(config_path, encoding="utf-8") as fh:
        config = json.load(fh)
    specs = [TableSpec.from_dict(t) for t in config["tables"]]
    for s in specs:  # every file opened (as the starting user) before any privilege drop
        open_duckdb(s)
    if run_as:
        drop_privileges(run_as)
    sources = {s.name: inspect_source(s) for s in specs}  # every file checked before any write
    if check_only:
        return {
            "changed": False,
            "check_only": True,
            "tables": [
                {
                    "table": s.name,
                    "file": s.file,
                    "duckdb_rows": sources[s.name]["rows"],
                    "duckdb_sums": sources[s.name]["sums"],
                }
                for s in specs
            ],
        }
    pg = psycopg2.connect("")  # libpq environment: PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD
    try:
        for s in specs:  # every target checked before any write
            check_target(pg, s)
        with pg:  # one transaction: everything or nothing
            reports = [migrate_table(pg, s, sources[s.name]) for s in specs]
    finally:
        pg.close()
    return {"changed": any(r["inserted"] or r["updated"] for r in reports), "tables": reports}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON file listing the tables to migrate")
    parser.add_argument("--check-only", action="store_true", help="only read and check the DuckDB files")
    parser.add_argument(
        "--run-as",
        metavar="USER",
        help="started as root: open the DuckDB files, then become USER before reading or connecting",
    )
    args = parser.parse_args()
    try:
        result = run(args.config, args.check_only, args.run_as)
    except MigrationInputError as exc:
        print(json.dumps({"changed": False, "error": "input", "message": str(exc)}))
        print(f"ERROR (nothing changed): {exc}", file=sys.stderr)
        return EXIT_INPUT
    except VerificationError as exc:
        print(json.dumps({"changed": False, "error": "verification", "message": str(exc)}))
        print(f"ERROR (rolled back, nothing changed): {exc}", file=sys.stderr)
        return EXIT_VERIFY
    finally:
        close_duckdb()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
