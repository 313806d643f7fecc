"""Row counts and sample-window checksums of tables, and the catalog look-ups they need:
the same fingerprint taken on the source and on a restored copy proves the copy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from backup_base import LOG
from psycopg2 import sql


@dataclass
class Fingerprint:
    rows: int
    checksum: str
    time_column: str | None = None
    window: list[str] | None = None  # [start, end] as ISO text, both inclusive

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "checksum": self.checksum,
            "time_column": self.time_column,
            "window": self.window,
        }


def time_column(cur, qualified: str) -> str | None:
    """The first date/time column of the table's primary key (the hypertable's time column for
    every GePT price table); None when there is none (the checksum then covers every row)."""
    cur.execute(
        """
        SELECT a.attname
          FROM pg_index i
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = %s::regclass AND i.indisprimary
           AND a.atttypid IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype)
         ORDER BY array_position(i.indkey::int2[], a.attnum)
         LIMIT 1
        """,
        (qualified,),
    )
    row = cur.fetchone()
    return row[0] if row else None


def fingerprint(
    cur, qualified: str, sample_window: timedelta, like: Fingerprint | None = None
) -> Fingerprint:
    """Row count of the whole table and an order-independent checksum (sum of row-text
    hashes) over a sample window: the newest `sample_window` of rows by the time column, or
    the very window of `like` when comparing a restored copy with its source."""
    schema, table = qualified.split(".", 1)
    ident = sql.Identifier(schema, table)
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident))
    rows = cur.fetchone()[0]
    tcol = like.time_column if like else time_column(cur, qualified)
    window = like.window if like else None
    if tcol and like is None:
        cur.execute(
            sql.SQL("SELECT max({c})::text, (max({c}) - %s)::text FROM {t}").format(
                c=sql.Identifier(tcol), t=ident
            ),
            (sample_window,),
        )
        hi, lo = cur.fetchone()
        window = [lo, hi] if hi is not None else None
    where = sql.SQL("")
    params: tuple[Any, ...] = ()
    if tcol and window:
        where = sql.SQL(" WHERE {c} BETWEEN %s AND %s").format(c=sql.Identifier(tcol))
        params = (window[0], window[1])
    cur.execute(
        sql.SQL("SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text FROM {} t").format(
            ident
        )
        + where,
        params,
    )
    sampled, digest = cur.fetchone()
    return Fingerprint(rows=rows, checksum=f"{sampled}:{digest}", time_column=tcol, window=window)


def compare(expected: dict[str, dict[str, Any]], cur, sample_window: timedelta) -> list[str]:
    """Fingerprint every expected table in the restored copy; return the differences."""
    problems: list[str] = []
    for qualified, want in sorted(expected.items()):
        cur.execute("SELECT to_regclass(%s)", (quote_qualified(qualified),))
        if cur.fetchone()[0] is None:
            problems.append(f"{qualified}: missing in the restored copy")
            continue
        like = Fingerprint(**want)
        got = fingerprint(cur, qualified, sample_window, like=like)
        if got.rows != like.rows:
            problems.append(f"{qualified}: {got.rows} rows restored, {like.rows} in the source")
        elif got.checksum != like.checksum:
            problems.append(f"{qualified}: sample-window checksum {got.checksum} != source {like.checksum}")
        else:
            LOG.info("%s: %d rows, sample %s match", qualified, got.rows, got.checksum)
    return problems


def quote_qualified(qualified: str) -> str:
    schema, table = qualified.split(".", 1)
    return '"{}"."{}"'.format(schema.replace('"', '""'), table.replace('"', '""'))


def timescaledb_version(cur) -> str | None:
    cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    row = cur.fetchone()
    return row[0] if row else None


def user_tables(cur, schemas: list[str]) -> list[str]:
    """Ordinary and partitioned tables in `schemas` that no extension owns, as schema.table."""
    cur.execute(
        """
        SELECT n.nspname || '.' || c.relname
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY (%s) AND NOT c.relispartition
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                            AND d.objid = c.oid AND d.deptype = 'e')
         ORDER BY 1
        """,
        (schemas,),
    )
    return [r[0] for r in cur.fetchall()]


# --- catalog look-ups of the dump: which tables' data it keeps ------------------------------


def resolve_tables(cur, names: list[str]) -> list[str]:
    """The configured critical tables that exist, as schema.table (unqualified: search_path)."""
    found: list[str] = []
    for name in names:
        cur.execute(
            "SELECT n.nspname || '.' || c.relname"
            "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = to_regclass(%s) AND c.relkind IN ('r', 'p')",
            (name,),
        )
        row = cur.fetchone()
        if row:
            found.append(row[0])
        else:
            LOG.info("critical table %s does not exist here; not dumped", name)
    return found


def data_exclusions(cur, keep: list[str], tsdb: bool) -> list[str]:
    """Every user table whose data stays out of the dump: all but the critical tables and,
    for a critical hypertable, its chunks (and its compressed chunks). Extension catalog
    tables (TimescaleDB's own) are always dumped: pg_dump needs them for a restorable copy."""
    cur.execute(
        """
        SELECT n.nspname || '.' || c.relname
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                            AND d.objid = c.oid AND d.deptype = 'e')
        """
    )
    every = {r[0] for r in cur.fetchall()}
    kept = set(keep)
    if tsdb and keep:
        cur.execute(
            """
            SELECT n.nspname || '.' || c.relname
              FROM _timescaledb_catalog.chunk ch
              JOIN _timescaledb_catalog.hypertable h ON h.id = ch.hypertable_id
              -- The catalog names a chunk by schema_name/table_name before 2.2x and by relid
              -- since; read whichever this version has.
              JOIN pg_class c ON c.oid = coalesce(
                       (to_jsonb(ch) ->> 'relid')::regclass,
                       to_regclass(format('%%I.%%I', to_jsonb(ch) ->> 'schema_name',
                                          to_jsonb(ch) ->> 'table_name')))
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE h.schema_name || '.' || h.table_name = ANY (%s)
                OR h.id IN (SELECT compressed_hypertable_id FROM _timescaledb_catalog.hypertable
                             WHERE schema_name || '.' || table_name = ANY (%s))
            """,
            (keep, keep),
        )
        kept |= {r[0] for r in cur.fetchall()}
    return sorted(every - kept)
