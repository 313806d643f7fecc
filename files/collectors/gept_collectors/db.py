"""PostgreSQL access through PgBouncer (transaction pooling).

* One transaction per batch (`with db.transaction() as cur:`): it commits whole or rolls back
  whole; no session state survives it (temporary tables are ON COMMIT DROP, settings are
  SET LOCAL), so any pooled server connection can serve the next one.
* A lost connection is reopened with "full jitter" back-off (backoff.full_jitter: each pause
  uniform in [0, min(GEPT_DB_BACKOFF_MAX_SECONDS, 0.5 s * 2^n)], so the first retries are quick
  and no pause exceeds the maximum), waiting as long as it takes (interruptible by SIGTERM):
  the loop and what it already fetched stay in memory. The log line and the exception carry the
  server's own error, not the secondary "connection already closed" of the rollback.
* Bulk writes: COPY into a temporary table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING;
  the INSERT's row count is the number of rows actually inserted. Rows that are almost surely
  new (a window whose ledger row was just added) are COPied straight into the table under a
  savepoint, falling back to the staging path if any key already exists. `execute_values` is the
  alternative (GEPT_DB_WRITE_METHOD=values); benchmarks/collectors compares the two.
* A table without a unique index on its key (an adopted price_data_5min whose primary key is
  added later) would take duplicates from ON CONFLICT DO NOTHING. When the caller names the
  key and no valid unique index covers exactly it, rows are staged the same way and only those
  whose key is not in the table yet are inserted, under a transaction-level advisory lock on
  the table (our writers never race each other); the catalog is asked on every batch, so the
  plain path comes back by itself once the key exists.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from .backoff import full_jitter
from .config import Settings
from .metrics import CollectorMetrics
from .shutdown import Shutdown

log = logging.getLogger(__name__)

# Failures that mean "the server or the pooler went away": reconnect, then retry the batch.
CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)
# The first reconnect pause is at most this long; each next one's ceiling doubles up to the max.
RECONNECT_BASE_SECONDS = 0.5


def describe(exc: BaseException) -> str:
    """The server's (or libpq's) message of a database error, on one line."""
    return " ".join(str(exc).split())[:300] or exc.__class__.__name__


class DatabaseUnavailable(Exception):  # noqa: N818  (a state, reported to the loop)
    """The batch did not commit because the connection was lost; it rolled back whole."""


class Database:
    def __init__(self, settings: Settings, metrics: CollectorMetrics, shutdown: Shutdown) -> None:
        self.settings = settings
        self.metrics = metrics
        self.shutdown = shutdown
        self.write_method = settings.get_str("DB_WRITE_METHOD", "copy")
        self._conn: psycopg2.extensions.connection | None = None
        self._stage = 0

    def _open(self) -> psycopg2.extensions.connection:
        s = self.settings
        conn = psycopg2.connect(
            host=s.db_host,
            port=s.db_port,
            dbname=s.db_name,
            user=s.db_user,
            password=s.db_password,
            sslmode=s.db_sslmode,
            connect_timeout=5,
            application_name=f"gept-{s.name}",
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        conn.autocommit = False
        return conn

    def connect(self) -> psycopg2.extensions.connection:
        """The open connection, or a new one after waiting with back-off (until stopped)."""
        attempt = 0
        while self._conn is None or self._conn.closed:
            try:
                self._conn = self._open()
                if attempt:
                    log.info("database connection restored after %d attempt(s)", attempt)
            except CONNECTION_ERRORS as exc:
                self.metrics.errors.labels("database").inc()
                delay = full_jitter(attempt, RECONNECT_BASE_SECONDS, self.settings.db_backoff_max)
                attempt += 1
                log.warning("database unavailable (%s); retry %d in %.2fs", describe(exc), attempt, delay)
                self.shutdown.wait(delay)
        return self._conn

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extensions.cursor]:
        """One transaction; commits when the block ends, rolls back on any exception."""
        conn = self.connect()
        self._stage = 0
        try:
            with conn.cursor() as cur:
                cur.execute("SET LOCAL statement_timeout = %s", (self.settings.db_statement_timeout_ms,))
                yield cur
            conn.commit()
        except BaseException as exc:
            # Roll back here rather than in `with conn`, whose rollback on a dead connection
            # raises "connection already closed" and hides the server's own error.
            try:
                conn.rollback()
            except CONNECTION_ERRORS:
                pass  # the connection is gone: the server has rolled the transaction back itself
            if isinstance(exc, CONNECTION_ERRORS):
                self.metrics.errors.labels("database").inc()
                log.warning("database connection lost (%s); the batch rolled back", describe(exc))
                self.close()
                raise DatabaseUnavailable(describe(exc)) from exc
            if isinstance(exc, psycopg2.Error):
                self.metrics.errors.labels("database").inc()
            raise

    def run(self, fn: Any, *args: Any) -> Any:
        """Run fn(cursor, *args) in one transaction, reconnecting and retrying the whole batch
        while the database is unavailable (bounded only by a stop request)."""
        while True:
            try:
                with self.transaction() as cur:
                    return fn(cur, *args)
            except DatabaseUnavailable:
                self.shutdown.check()

    # -- batched writes -----------------------------------------------------------------
    def insert(
        self,
        cur: psycopg2.extensions.cursor,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        method: str | None = None,
        fresh: bool = False,
        key: Sequence[str] | None = None,
    ) -> int:
        """Insert rows, skipping those whose key exists; return how many were inserted.
        `fresh`: the rows are almost surely new (try one direct COPY first).
        `key`: the table's key columns; when no unique index enforces them, only rows whose
        key is absent are inserted (never a duplicate)."""
        if not rows:
            return 0
        if key and not has_unique_key(cur, table, key):
            self._stage += 1
            return insert_absent(cur, table, columns, rows, key, stage=f"_gept_stage_{self._stage}")
        method = method or self.write_method
        if method == "values":
            return insert_values(cur, table, columns, rows)
        if fresh:
            cur.execute("SAVEPOINT gept_direct")
            try:
                copy_into(cur, table, columns, rows)
            except psycopg2.errors.UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT gept_direct")
            else:
                cur.execute("RELEASE SAVEPOINT gept_direct")
                return len(rows)
        self._stage += 1
        return insert_copy(cur, table, columns, rows, stage=f"_gept_stage_{self._stage}")


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | float):
        return str(value)
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_buffer(rows: Iterable[Sequence[Any]]) -> io.StringIO:
    """Rows in COPY text format. Fast path for the common values (ints, None, a window's one
    timestamp repeated on every row); anything else goes through _copy_text."""
    stamps: dict[datetime, str] = {}
    lines = []
    for row in rows:
        out = []
        for value in row:
            kind = type(value)
            if kind is int:
                out.append(str(value))
            elif value is None:
                out.append("\\N")
            elif kind is datetime:
                text = stamps.get(value)
                if text is None:
                    text = stamps[value] = value.isoformat()
                out.append(text)
            else:
                out.append(_copy_text(value))
        lines.append("\t".join(out))
    lines.append("")
    return io.StringIO("\n".join(lines))


def copy_into(
    cur: psycopg2.extensions.cursor, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """COPY rows straight into `table` (fails whole on any existing key)."""
    copy = sql.SQL("COPY {table} ({cols}) FROM STDIN").format(
        table=sql.Identifier(table), cols=sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    cur.copy_expert(copy, copy_buffer(rows))


def insert_copy(
    cur: psycopg2.extensions.cursor,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    stage: str = "_gept_stage",
) -> int:
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    cur.execute(
        sql.SQL("CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM {table} WITH NO DATA").format(
            stage=sql.Identifier(stage), cols=cols, table=sql.Identifier(table)
        )
    )
    copy = sql.SQL("COPY {stage} ({cols}) FROM STDIN").format(stage=sql.Identifier(stage), cols=cols)
    cur.copy_expert(copy, copy_buffer(rows))
    cur.execute(
        sql.SQL("INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT DO NOTHING").format(
            table=sql.Identifier(table), cols=cols, stage=sql.Identifier(stage)
        )
    )
    return cur.rowcount


def has_unique_key(cur: psycopg2.extensions.cursor, table: str, key: Sequence[str]) -> bool:
    """Whether a valid, non-partial unique index of `table` covers exactly the `key` columns."""
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass(%s) AND i.indisunique"
        " AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL"
        " AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a"
        "      WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)) = %s::text[])",
        (table, sorted(key)),
    )
    return bool(cur.fetchone()[0])


def insert_absent(
    cur: psycopg2.extensions.cursor,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    key: Sequence[str],
    stage: str = "_gept_stage",
) -> int:
    """Insert the rows whose key is not in `table` yet (a table with no unique index on it)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"gept-insert-absent:{table}",))
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    keys = sql.SQL(", ").join(map(sql.Identifier, key))
    cur.execute(
        sql.SQL("CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM {table} WITH NO DATA").format(
            stage=sql.Identifier(stage), cols=cols, table=sql.Identifier(table)
        )
    )
    cur.copy_expert(
        sql.SQL("COPY {stage} ({cols}) FROM STDIN").format(stage=sql.Identifier(stage), cols=cols),
        copy_buffer(rows),
    )
    match = sql.SQL(" AND ").join(sql.SQL("t.{c} = s.{c}").format(c=sql.Identifier(c)) for c in key)
    cur.execute(
        sql.SQL(
            "INSERT INTO {table} ({cols}) SELECT DISTINCT ON ({keys}) {cols} FROM {stage} s "
            "WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {match})"
        ).format(table=sql.Identifier(table), cols=cols, keys=keys, stage=sql.Identifier(stage), match=match)
    )
    return cur.rowcount


def insert_values(
    cur: psycopg2.extensions.cursor, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> int:
    query = sql.SQL("INSERT INTO {table} ({cols}) VALUES %s ON CONFLICT DO NOTHING RETURNING 1").format(
        table=sql.Identifier(table), cols=sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    import psycopg2.extras  # noqa: PLC0415  (only this alternative needs it; not loaded otherwise)

    return len(psycopg2.extras.execute_values(cur, query.as_string(cur), rows, page_size=1000, fetch=True))


def record_window(cur: psycopg2.extensions.cursor, series: str, start: datetime, item_count: int) -> bool:
    """Add the window to the ledger; False if it was already there."""
    cur.execute(
        "INSERT INTO collection_windows (series, window_start, item_count) VALUES (%s, %s, %s) "
        "ON CONFLICT DO NOTHING",
        (series, start, item_count),
    )
    return cur.rowcount == 1
