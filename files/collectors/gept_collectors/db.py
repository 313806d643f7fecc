"""PostgreSQL access through PgBouncer (transaction pooling).

* One transaction per batch (`with db.transaction() as cur:`): it commits whole or rolls back
  whole; no session state survives it (temporary tables are ON COMMIT DROP, settings are
  SET LOCAL), so any pooled server connection can serve the next one.
* A lost connection is reopened with exponential back-off and jitter, waiting as long as it
  takes (interruptible by SIGTERM): the loop and what it already fetched stay in memory.
* Bulk writes: COPY into a temporary table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING;
  the INSERT's row count is the number of rows actually inserted. `execute_values` is the
  alternative (GEPT_DB_WRITE_METHOD=values); benchmarks/collectors compares the two.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from .config import Settings
from .metrics import CollectorMetrics
from .shutdown import Shutdown

log = logging.getLogger(__name__)

# Failures that mean "the server or the pooler went away": reconnect, then retry the batch.
CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


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
                delay = min(self.settings.db_backoff_max, 0.5 * 2**attempt) * random.uniform(0.5, 1.5)  # noqa: S311
                attempt += 1
                log.warning(
                    "database unavailable (%s); retry %d in %.1fs", str(exc).strip()[:200], attempt, delay
                )
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
            with conn, conn.cursor() as cur:
                cur.execute("SET LOCAL statement_timeout = %s", (self.settings.db_statement_timeout_ms,))
                yield cur
        except CONNECTION_ERRORS as exc:
            self.metrics.errors.labels("database").inc()
            log.warning("database connection lost (%s); the batch rolled back", str(exc).strip()[:200])
            self.close()
            raise DatabaseUnavailable(str(exc)) from exc
        except psycopg2.Error:
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
    ) -> int:
        """Insert rows, skipping those whose key exists; return how many were inserted."""
        if not rows:
            return 0
        method = method or self.write_method
        if method == "values":
            return insert_values(cur, table, columns, rows)
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
    buf = io.StringIO()
    buf.writelines("\t".join(map(_copy_text, row)) + "\n" for row in rows)
    buf.seek(0)
    return buf


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


def insert_values(
    cur: psycopg2.extensions.cursor, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> int:
    query = sql.SQL("INSERT INTO {table} ({cols}) VALUES %s ON CONFLICT DO NOTHING RETURNING 1").format(
        table=sql.Identifier(table), cols=sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    return len(psycopg2.extras.execute_values(cur, query.as_string(cur), rows, page_size=1000, fetch=True))


def record_window(cur: psycopg2.extensions.cursor, series: str, start: datetime, item_count: int) -> bool:
    """Add the window to the ledger; False if it was already there."""
    cur.execute(
        "INSERT INTO collection_windows (series, window_start, item_count) VALUES (%s, %s, %s) "
        "ON CONFLICT DO NOTHING",
        (series, start, item_count),
    )
    return cur.rowcount == 1
