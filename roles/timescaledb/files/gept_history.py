#!/usr/bin/env python3
"""GePT price history: a keyless price table into a keyed, compressed hypertable, within the disk.

Installed beside gept_db.py on the database host by playbooks/adopt_price_history.yml and run
as the postgres OS user (peer authentication over the local socket), for hours on a big table:
in a transient systemd unit whose journal holds the progress lines. The controller tests run
this same file on the test server's host.

  gept_history.py status   --dbname osrs_data [--table price_data_5min] [--json]
  gept_history.py move     --dbname osrs_data [--table price_data_5min] [options]
  gept_history.py rollback --dbname osrs_data [--table price_data_5min]

`move` on a PLAIN table (the adopted seed table: no primary key, duplicates):
  1. prepare, in one transaction: a new hypertable `<table>_new` with the table's columns and
     defaults, PRIMARY KEY (item_id, "timestamp"), chunks of --chunk-interval, the role's
     compression settings (segmentby item_id, orderby "timestamp" DESC), the same owner and
     privileges; a statement trigger on the old table that copies every INSERT/UPDATE/DELETE
     to it in the writer's own transaction (the collectors' writes reach the new table at
     once, and their SQL does not change); the ledger of intervals (one per chunk interval
     between the oldest and newest row).
  2. oldest first, one interval per transaction: copy the interval's rows, one per key (the
     row stored first wins, as the collectors' own ON CONFLICT DO NOTHING keeps the first),
     compare counts and sums of both sides in one snapshot (old minus its duplicates = new),
     record it; then compress the interval's chunks (unless newer than --compress-after).
     Before each interval the data directory's filesystem must stay under --max-disk-percent
     with the interval added: otherwise it pauses (--pause-seconds, checking every
     --poll-seconds) and then stops with exit code 3, resumable.
  3. every interval compared again, then the swap at a short lock: the old table becomes
     `<table>_old`, the new one takes the name (readers and writers see one complete table,
     their SQL and connection settings unchanged), continuous aggregates on it refreshed over
     the moved history; then the old table is dropped (kept with --keep-old, for a rollback).
`move` on a table that IS a hypertable: in place, one chunk per transaction, oldest first:
  decompress it if compressed, delete the duplicates (first stored wins), check counts and sums,
  compress it again; then, at one lock, the recent chunks checked again and the primary key
  added; continuous aggregates refreshed over the chunks that changed.

Resumable: killed at any point, a re-run continues from the ledger (public.gept_history_state,
public.gept_history_intervals); after completion a re-run changes nothing. `rollback` puts the
original table back under its name while it exists (rows written since the swap copied back).
Progress lines go to stdout; --textfile writes them as node_exporter textfile metrics
(gept_history_*). Prints one JSON object at the end: {"changed": bool, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2 import sql

KEY = ("item_id", "timestamp")
EXIT_ERROR, EXIT_DISK = 1, 3
LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS public.gept_history_state (
    table_name          text PRIMARY KEY,
    mode                text        NOT NULL,            -- move | in_place
    phase               text        NOT NULL,            -- moving | swapped | done
    chunk_interval      interval    NOT NULL,
    threshold_percent   numeric     NOT NULL,
    started_at          timestamptz NOT NULL DEFAULT now(),
    swapped_at          timestamptz,
    finished_at         timestamptz,
    disk_total_bytes    bigint,
    disk_used_before    bigint,
    disk_used_after     bigint,
    disk_used_peak      bigint,
    table_bytes_before  bigint,
    table_bytes_after   bigint,
    new_bytes_peak      bigint,                          -- the keyed table's largest size during the move
    message             text
);
CREATE TABLE IF NOT EXISTS public.gept_history_intervals (
    table_name          text        NOT NULL,
    range_start         timestamptz NOT NULL,
    range_end           timestamptz NOT NULL,
    old_rows            bigint,
    duplicate_rows      bigint,
    differing_rows      bigint,
    moved_rows          bigint,
    sums                jsonb,
    seconds             numeric,
    moved_at            timestamptz,
    compressed_at       timestamptz,
    verified_at         timestamptz,
    PRIMARY KEY (table_name, range_start)
);
"""


class HistoryError(RuntimeError):
    """The move cannot go on safely; the message says why and what to do."""


class DiskFull(HistoryError):
    """The data filesystem would pass the threshold."""


def log(message: str) -> None:
    print(f"gept-history: {message}", flush=True)


def q(ident: str) -> sql.Identifier:
    return sql.Identifier(ident)


class Disk:
    """The data directory's filesystem: usage, the threshold, and the peak (sampled every
    second by a thread while the move runs, so a peak inside a statement is seen)."""

    def __init__(self, path: str, max_percent: float) -> None:
        self.path = path
        self.max_percent = max_percent
        usage = shutil.disk_usage(path)
        self.total = usage.total
        self.peak = usage.used
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def used(self) -> int:
        used = shutil.disk_usage(self.path).used
        self.peak = max(self.peak, used)
        return used

    def percent(self, used: int | None = None) -> float:
        return 100.0 * (self.used() if used is None else used) / self.total

    def limit_bytes(self) -> int:
        return int(self.total * self.max_percent / 100.0)

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.used()
            except OSError:
                pass

    def __enter__(self) -> Disk:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


class Mover:
    def __init__(self, conn: Any, args: argparse.Namespace) -> None:
        self.conn = conn
        self.args = args
        self.table = args.table
        self.new = f"{self.table}_new"
        self.old = f"{self.table}_old"
        self.changes: list[str] = []
        self.metrics_path = Path(args.textfile) if getattr(args, "textfile", None) else None
        self.started = time.monotonic()
        self.rows_done_run = 0

    # ----- small helpers -----------------------------------------------------------------
    def one(self, query: Any, params: Any = None) -> Any:
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            row = cur.fetchone()
        return row

    def all(self, query: Any, params: Any = None) -> list[Any]:
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()

    def exec(self, query: Any, params: Any = None) -> int:
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            return cur.rowcount

    def regclass(self, name: str) -> Any:
        return self.one("SELECT to_regclass(%s)", (f"public.{name}",))[0]

    def is_hypertable(self, name: str) -> bool:
        return bool(
            self.one(
                "SELECT 1 FROM timescaledb_information.hypertables"
                " WHERE hypertable_schema = 'public' AND hypertable_name = %s",
                (name,),
            )
        )

    def has_primary_key(self, name: str) -> bool:
        return bool(
            self.one(
                "SELECT 1 FROM pg_index WHERE indrelid = %s::regclass AND indisprimary",
                (f"public.{name}",),
            )
        )

    def state(self) -> dict[str, Any] | None:
        if self.regclass("gept_history_state") is None:
            return None
        with self.conn.cursor() as cur:
            cur.execute("SELECT * FROM public.gept_history_state WHERE table_name = %s", (self.table,))
            row = cur.fetchone()
            if row is None:
                return None
            return dict(zip([d.name for d in cur.description], row, strict=True))

    def intervals(self) -> list[dict[str, Any]]:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT * FROM public.gept_history_intervals WHERE table_name = %s ORDER BY range_start",
                (self.table,),
            )
            names = [d.name for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def columns(self, name: str) -> list[tuple[str, str]]:
        return self.all(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
            " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (f"public.{name}",),
        )

    # ----- checks --------------------------------------------------------------------------
    def check_references(self) -> None:
        """Views and foreign keys follow a table's OID, not its name: the swap would leave them
        on the original table (in place, nothing is renamed)."""
        deps = self.all(
            "SELECT DISTINCT c.oid::regclass::text FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid"
            " JOIN pg_class c ON c.oid = r.ev_class"
            " WHERE d.refobjid = %s::regclass AND c.oid <> d.refobjid",
            (f"public.{self.table}",),
        )
        fks = self.all(
            "SELECT conname FROM pg_constraint WHERE confrelid = %s::regclass", (f"public.{self.table}",)
        )
        if deps or fks:
            raise HistoryError(
                f"public.{self.table} is referenced by "
                f"{', '.join([d[0] for d in deps] + [f[0] for f in fks])} "
                "(views or foreign keys follow the table, not its name): drop or recreate them around the "
                "move; nothing was changed"
            )

    def check_input(self) -> None:
        """Bad input stops here, before anything changes."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", self.table):
            raise HistoryError(f"{self.table!r}: a plain lower-case table name is expected")
        if self.regclass(self.table) is None:
            raise HistoryError(
                f"table public.{self.table} does not exist in {self.args.dbname}: nothing was changed"
            )
        cols = dict(self.columns(self.table))
        for col in KEY:
            if col not in cols:
                raise HistoryError(
                    f"public.{self.table} has no column {col!r} (columns: {', '.join(cols)}): the key is "
                    f'(item_id, "timestamp"); nothing was changed'
                )
        if cols["timestamp"] != "timestamp with time zone":
            raise HistoryError(
                f'public.{self.table}."timestamp" is {cols["timestamp"]}, timestamptz expected; nothing '
                "was changed"
            )

    def wait_for_room(self, disk: Disk, need: int, what: str) -> None:
        """Pause while `need` more bytes would take the filesystem past the threshold; stop
        after --pause-seconds."""
        deadline = time.monotonic() + self.args.pause_seconds
        announced = False
        while True:
            used = disk.used()
            if used + need <= disk.limit_bytes():
                if announced:
                    log(f"disk: room again ({disk.percent(used):.1f}% used), going on")
                return
            message = (
                f"disk: {what} needs about {_gb(need)}; the data filesystem is {disk.percent(used):.1f}% "
                "used "
                f"({_gb(disk.total - used)} free) and must stay under {disk.max_percent:g}% "
                f"(--max-disk-percent / price_history_max_disk_percent)"
            )
            if time.monotonic() >= deadline:
                self.set_state(message=f"stopped: {message}")
                self.metrics(disk, paused=1)
                raise DiskFull(
                    f"{message}: paused {self.args.pause_seconds:g} s without room, stopped. Nothing is "
                    "lost; "
                    "free space (or raise the threshold) and run again: it resumes from the ledger"
                )
            if not announced:
                log(
                    f"{message}: PAUSED, checking every {self.args.poll_seconds:g} s for "
                    f"{self.args.pause_seconds:g} s"
                )
                self.metrics(disk, paused=1)
                announced = True
            time.sleep(self.args.poll_seconds)

    # ----- ledger ----------------------------------------------------------------------------
    def set_state(self, **values: Any) -> None:
        if not values or self.regclass("gept_history_state") is None:
            return
        autocommit = self.conn.autocommit
        self.conn.autocommit = True
        try:
            sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(q(k)) for k in values)
            self.exec(
                sql.SQL("UPDATE public.gept_history_state SET {} WHERE table_name = %s").format(sets),
                [*values.values(), self.table],
            )
        finally:
            self.conn.autocommit = autocommit

    def metrics(self, disk: Disk | None, paused: int = 0) -> None:
        """Progress as node_exporter textfile metrics (written whole, then renamed)."""
        if self.metrics_path is None:
            return
        rows = self.intervals() if self.regclass("gept_history_intervals") is not None else []
        state = self.state() or {}
        done = sum(1 for r in rows if r["verified_at"] or r["moved_at"])
        moved = sum(r["moved_rows"] or 0 for r in rows)
        dups = sum(r["duplicate_rows"] or 0 for r in rows)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.rows_done_run / elapsed
        left = sum(r["old_rows"] or 0 for r in rows if not r["moved_at"])
        lab = f'table="{self.table}"'
        lines = [
            "# HELP gept_history_intervals Intervals (chunks) of the price history move, by state.",
            "# TYPE gept_history_intervals gauge",
            f'gept_history_intervals{{{lab},state="total"}} {len(rows)}',
            f'gept_history_intervals{{{lab},state="done"}} {done}',
            "# HELP gept_history_rows_moved Rows in the keyed hypertable from the moved intervals.",
            "# TYPE gept_history_rows_moved gauge",
            f"gept_history_rows_moved{{{lab}}} {moved}",
            "# HELP gept_history_duplicate_rows Duplicate rows found (and not copied).",
            "# TYPE gept_history_duplicate_rows gauge",
            f"gept_history_duplicate_rows{{{lab}}} {dups}",
            "# HELP gept_history_rows_per_second Rows moved per second in this run.",
            "# TYPE gept_history_rows_per_second gauge",
            f"gept_history_rows_per_second{{{lab}}} {rate:.1f}",
            "# HELP gept_history_eta_seconds Estimated seconds left (rows left / rows per second).",
            "# TYPE gept_history_eta_seconds gauge",
            f"gept_history_eta_seconds{{{lab}}} {left / rate if rate else -1:.0f}",
            "# HELP gept_history_paused 1 while the move waits for disk room.",
            "# TYPE gept_history_paused gauge",
            f"gept_history_paused{{{lab}}} {paused}",
            "# HELP gept_history_done 1 once the table is a keyed hypertable and the move is finished.",
            "# TYPE gept_history_done gauge",
            f"gept_history_done{{{lab}}} {1 if state.get('phase') == 'done' else 0}",
            "# HELP gept_history_last_update_timestamp_seconds When these figures were written.",
            "# TYPE gept_history_last_update_timestamp_seconds gauge",
            f"gept_history_last_update_timestamp_seconds{{{lab}}} {time.time():.0f}",
        ]
        if disk is not None:
            lines += [
                "# HELP gept_history_disk_used_ratio_peak Peak use of the data filesystem during the move.",
                "# TYPE gept_history_disk_used_ratio_peak gauge",
                f"gept_history_disk_used_ratio_peak{{{lab}}} {disk.peak / disk.total:.4f}",
            ]
        tmp = self.metrics_path.with_name(f".{self.metrics_path.name}.tmp")
        text = "\n".join(lines) + "\n"
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.metrics_path)
        except PermissionError:
            # A directory this user may not create files in: the file itself (made writable
            # for it by the playbook), rewritten in one write.
            try:
                with open(self.metrics_path, "r+", encoding="utf-8") as fh:
                    fh.write(text)
                    fh.truncate()
            except OSError as exc:
                log(f"metrics not written to {self.metrics_path}: {exc}")
        except OSError as exc:
            log(f"metrics not written to {self.metrics_path}: {exc}")

    def progress(self, disk: Disk, label: str, rows: int, dups: int, seconds: float) -> None:
        rows_all = self.intervals()
        done = sum(1 for r in rows_all if r["moved_at"])
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.rows_done_run / elapsed
        left = sum(r["old_rows"] or 0 for r in rows_all if not r["moved_at"])
        if left == 0:
            left = sum(1 for r in rows_all if not r["moved_at"]) * (rows or 1)
        eta = f"{left / rate / 60:.1f} min" if rate and left else "0 min"
        used = disk.used()
        log(
            f"{label}: {rows} rows ({dups} duplicate) in {seconds:.1f} s; intervals {done}/{len(rows_all)}, "
            f"{rate:,.0f} rows/s, disk {disk.percent(used):.1f}% used ({_gb(disk.total - used)} free, "
            f"peak {100.0 * disk.peak / disk.total:.1f}%), ETA {eta}"
        )
        self.set_state(disk_used_peak=disk.peak)
        self.metrics(disk)

    # ----- comparison ------------------------------------------------------------------------
    def value_columns(self) -> list[str]:
        return [
            c for c, _ in self.columns(self.table if self.regclass(self.table) else self.old) if c not in KEY
        ]

    def _figures_query(
        self, source: sql.Composable, cols: list[str], dedupe: bool
    ) -> tuple[sql.Composed, list]:
        """The query of `_figures` (parameters: start, end) and its numeric columns."""
        allcols = [*KEY, *cols]
        rowhash = sql.SQL("hashtextextended(ROW({})::text, 0)::numeric").format(
            sql.SQL(", ").join(map(q, allcols))
        )
        numeric = [
            c
            for c, t in self.columns(self.table if self.regclass(self.table) else self.old)
            if c in cols and t in ("integer", "bigint", "smallint", "numeric", "real", "double precision")
        ]
        sums = sql.SQL("").join(sql.SQL(", sum({}) FILTER (WHERE rn = 1)").format(q(c)) for c in numeric)
        if dedupe:
            query = sql.SQL(
                "SELECT count(*), count(*) FILTER (WHERE rn > 1), count(*) FILTER (WHERE rn > 1 AND h <> h1),"
                " count(*) FILTER (WHERE rn = 1), sum(h) FILTER (WHERE rn = 1){sums} FROM ("
                " SELECT *, first_value(h) OVER w AS h1, row_number() OVER w AS rn FROM ("
                "  SELECT {cols}, {rowhash} AS h, ctid AS c, tableoid AS o FROM {src}"
                '  WHERE "timestamp" >= %s AND "timestamp" < %s) s'
                ' WINDOW w AS (PARTITION BY item_id, "timestamp" ORDER BY o, c)) d'
            )
        else:
            query = sql.SQL(
                "SELECT count(*), 0, 0, count(*), sum(h){sums} FROM ("
                " SELECT {cols}, {rowhash} AS h, 1 AS rn FROM {src}"
                ' WHERE "timestamp" >= %s AND "timestamp" < %s) s'
            )
        return query.format(
            sums=sums, cols=sql.SQL(", ").join(map(q, allcols)), rowhash=rowhash, src=source
        ), numeric

    @staticmethod
    def _figures_row(row: Any, numeric: list[str]) -> dict:
        out = {
            "rows": row[0],
            "duplicates": row[1],
            "differing": row[2],
            "kept": row[3],
            "hash": str(row[4] or 0),
        }
        out.update({c: str(v or 0) for c, v in zip(numeric, row[5:], strict=True)})
        return out

    def _figures(self, source: sql.Composable, cols: list[str], dedupe: bool, start: Any, end: Any) -> dict:
        """Counts and sums of `source` over [start, end); with dedupe, also of the surplus
        duplicates (row_number over the key in storage order) and the kept rows."""
        query, numeric = self._figures_query(source, cols, dedupe)
        return self._figures_row(self.one(query, (start, end)), numeric)

    def _compare(self, start: Any, end: Any) -> tuple[dict, dict]:
        """The original (de-duplicated) and the keyed table over [start, end), in ONE statement:
        one snapshot, so a write committed meanwhile (in both, by the triggers) is in both or
        in neither."""
        cols = self.value_columns()
        old_q, numeric = self._figures_query(q(self.table), cols, True)
        new_q, _ = self._figures_query(q(self.new), cols, False)
        row = self.one(
            sql.SQL("SELECT * FROM ({}) a CROSS JOIN ({}) b").format(old_q, new_q), (start, end, start, end)
        )
        width = 5 + len(numeric)
        return self._figures_row(row[:width], numeric), self._figures_row(row[width:], numeric)

    @staticmethod
    def _same(old: dict, new: dict) -> bool:
        keys = [k for k in old if k not in ("rows", "duplicates", "differing", "kept")]
        return old["kept"] == new["rows"] and all(old[k] == new[k] for k in keys)

    # ----- the plain-table move ---------------------------------------------------------------
    def prepare_move(self, disk: Disk) -> None:
        t, new, old = self.table, self.new, self.old
        self.check_references()
        if self.regclass(new) is not None or self.regclass(old) is not None:
            raise HistoryError(
                f"public.{new} or public.{old} exists but the ledger knows no move of {t}: "
                "a table the move did not create; rename it first (nothing was changed)"
            )
        nulls = self.one(sql.SQL('SELECT count(*) FROM {} WHERE "timestamp" IS NULL').format(q(t)))[0]
        if nulls:
            raise HistoryError(
                f'{t} has {nulls} row(s) with a NULL "timestamp": they cannot be keyed; nothing was changed'
            )
        self.conn.autocommit = False
        ci, after = self.args.chunk_interval, self.args.compress_after
        size = self.one("SELECT pg_total_relation_size(%s::regclass)", (f"public.{t}",))[0]
        self.exec(sql.SQL("SET LOCAL lock_timeout = '30s'"))
        self.exec(
            sql.SQL("CREATE TABLE {new} (LIKE {t} INCLUDING DEFAULTS INCLUDING GENERATED)").format(
                new=q(new), t=q(t)
            )
        )
        self.exec(
            sql.SQL('ALTER TABLE {new} ADD CONSTRAINT {pk} PRIMARY KEY (item_id, "timestamp")').format(
                new=q(new), pk=q(f"{new}_pkey")
            )
        )
        self.exec(
            "SELECT create_hypertable(%s::regclass, by_range('timestamp', %s::interval))",
            (f"public.{new}", ci),
        )
        self.exec(
            sql.SQL(
                "ALTER TABLE {new} SET (timescaledb.compress, timescaledb.compress_segmentby = 'item_id',"
                " timescaledb.compress_orderby = '\"timestamp\" DESC')"
            ).format(new=q(new))
        )
        # Same owner and privileges as the table it replaces (the ML login reads it unchanged).
        owner = self.one(
            "SELECT relowner::regrole::text FROM pg_class WHERE oid = %s::regclass", (f"public.{t}",)
        )[0]
        self.exec(sql.SQL("ALTER TABLE {} OWNER TO {}").format(q(new), sql.SQL(owner)))
        for grantee, privilege, grantable in self.all(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, "
            "a.privilege_type,"
            " a.is_grantable FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = %s::regclass",
            (f"public.{t}",),
        ):
            self.exec(
                sql.SQL("GRANT {} ON {} TO {}{}").format(
                    sql.SQL(privilege),
                    q(new),
                    sql.SQL(grantee),
                    sql.SQL(" WITH GRANT OPTION" if grantable else ""),
                )
            )
        # Every write to the old table reaches the new one in the writer's own transaction.
        cols = sql.SQL(", ").join(q(c) for c, _ in self.columns(t))
        sets = sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=q(c)) for c, _ in self.columns(t) if c not in KEY
        )
        body = sql.SQL(
            "BEGIN\n"
            " IF TG_OP = 'INSERT' THEN\n"
            '  INSERT INTO public.{new} ({cols}) SELECT DISTINCT ON (item_id, "timestamp") {cols} FROM '
            "gept_rows"
            " ON CONFLICT DO NOTHING;\n"
            " ELSIF TG_OP = 'UPDATE' THEN\n"
            "  DELETE FROM public.{new} n USING gept_old_rows o"
            ' WHERE n.item_id = o.item_id AND n."timestamp" = o."timestamp";\n'
            '  INSERT INTO public.{new} ({cols}) SELECT DISTINCT ON (item_id, "timestamp") {cols} FROM '
            "gept_rows"
            ' ON CONFLICT (item_id, "timestamp") DO UPDATE SET {sets};\n'
            " ELSE\n"
            "  DELETE FROM public.{new} n USING gept_old_rows o"
            ' WHERE n.item_id = o.item_id AND n."timestamp" = o."timestamp";\n'
            " END IF;\n"
            " RETURN NULL;\n"
            "END"
        ).format(new=q(new), cols=cols, sets=sets)
        body_text = body.as_string(self.conn)
        self.exec(
            sql.SQL(
                "CREATE FUNCTION public.{fn}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"
                " SET search_path = pg_catalog, public AS {body}"
            ).format(fn=q(f"gept_history_forward_{t}"), body=sql.Literal(body_text))
        )
        for op, refs in (
            ("INSERT", "NEW TABLE AS gept_rows"),
            ("UPDATE", "OLD TABLE AS gept_old_rows NEW TABLE AS gept_rows"),
            ("DELETE", "OLD TABLE AS gept_old_rows"),
        ):
            self.exec(
                sql.SQL(
                    "CREATE TRIGGER {name} AFTER {op} ON {t} REFERENCING {refs}"
                    " FOR EACH STATEMENT EXECUTE FUNCTION public.{fn}()"
                ).format(
                    name=q(f"gept_history_forward_{op.lower()}"),
                    op=sql.SQL(op),
                    t=q(t),
                    refs=sql.SQL(refs),
                    fn=q(f"gept_history_forward_{t}"),
                )
            )
        # The triggers hold the old table's lock from here: every row not forwarded is older
        # than this snapshot's newest one, so the intervals below cover it.
        lo, hi = self.one(sql.SQL('SELECT min("timestamp"), max("timestamp") FROM {}').format(q(t)))
        self.exec(
            "INSERT INTO public.gept_history_state (table_name, mode, phase, chunk_interval, "
            "threshold_percent,"
            " disk_total_bytes, disk_used_before, disk_used_peak, table_bytes_before)"
            " VALUES (%s, 'move', 'moving', %s, %s, %s, %s, %s, %s)",
            (t, ci, self.args.max_disk_percent, disk.total, disk.used(), disk.peak, size),
        )
        if lo is not None:
            # Intervals aligned as TimescaleDB aligns chunks (multiples of the interval since the epoch).
            self.exec(
                "INSERT INTO public.gept_history_intervals (table_name, range_start, range_end)"
                " SELECT %s, s, s + %s::interval FROM generate_series("
                "  to_timestamp(floor(extract(epoch FROM %s::timestamptz) / extract(epoch FROM %s::interval))"
                "   * extract(epoch FROM %s::interval)), %s::timestamptz, %s::interval) s",
                (t, ci, lo, ci, ci, hi, ci),
            )
        self.conn.commit()
        self.conn.autocommit = True
        n = self.one("SELECT count(*) FROM public.gept_history_intervals WHERE table_name = %s", (t,))[0]
        self.changes.append(
            f"{new} created (keyed hypertable, compression on), writes to {t} forwarded to it, {n} "
            "interval(s) to move"
        )
        log(
            f"prepared: {new} keyed hypertable ({ci} chunks, compressed after {after}), {n} interval(s) "
            f"of {t} ({_gb(size)})"
        )
        del old

    def estimate_interval_bytes(self, start: Any, end: Any, analysed: bool = False) -> int:
        """An upper bound of what the interval takes on disk while it is moved: its share of the
        old table's size by the timestamp's statistics, plus the key's index."""
        rows = self.one(
            sql.SQL(
                'EXPLAIN (FORMAT JSON) SELECT 1 FROM {} WHERE "timestamp" >= %s AND "timestamp" < %s'
            ).format(q(self.table)),
            (start, end),
        )[0][0]["Plan"]["Plan Rows"]
        size, tuples = self.one(
            "SELECT pg_relation_size(oid), reltuples FROM pg_class WHERE oid = %s::regclass",
            (f"public.{self.table}",),
        )
        if tuples < 1 and not analysed:
            # Never analysed (pg_upgrade does not carry the statistics over: reltuples is -1),
            # so neither the planner's rows nor the bytes per row mean anything yet.
            self.exec(sql.SQL("ANALYZE {}").format(q(self.table)))
            return self.estimate_interval_bytes(start, end, analysed=True)
        # Heap share twice (the copy, and the sort by key that may spill to temporary files on
        # the same disk) plus the key's index entries.
        return int(rows * (2 * size / max(tuples, 1) + 40)) + 64 * 1024 * 1024

    def move_interval(self, disk: Disk, row: dict[str, Any], index: int, total: int) -> None:
        t, new = self.table, self.new
        start, end = row["range_start"], row["range_end"]
        label = f"interval {index}/{total} {start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M}"
        if row["moved_at"] is None:
            self.wait_for_room(disk, self.estimate_interval_bytes(start, end), label)
            t0 = time.monotonic()
            cols = sql.SQL(", ").join(q(c) for c, _ in self.columns(t))
            self.conn.autocommit = False
            self.exec(
                sql.SQL(
                    'INSERT INTO {new} ({cols}) SELECT DISTINCT ON (item_id, "timestamp") {cols} FROM {t}'
                    ' WHERE "timestamp" >= %s AND "timestamp" < %s ORDER BY item_id, "timestamp", ctid'
                    " ON CONFLICT DO NOTHING"
                ).format(new=q(new), cols=cols, t=q(t)),
                (start, end),
            )
            old_f, new_f = self._compare(start, end)
            if not self._same(old_f, new_f):
                self.conn.rollback()
                raise HistoryError(
                    f"{label}: the copy does not match the original (old {old_f}, new {new_f}); rolled back"
                )
            seconds = time.monotonic() - t0
            self.exec(
                "UPDATE public.gept_history_intervals SET old_rows = %s, duplicate_rows = %s, "
                "differing_rows = %s,"
                " moved_rows = %s, sums = %s, seconds = %s, moved_at = now(), verified_at = now()"
                " WHERE table_name = %s AND range_start = %s",
                (
                    old_f["rows"],
                    old_f["duplicates"],
                    old_f["differing"],
                    new_f["rows"],
                    json.dumps(new_f),
                    round(seconds, 3),
                    t,
                    start,
                ),
            )
            # The keyed table at its largest: this interval still uncompressed, the rest compressed.
            self.exec(
                "UPDATE public.gept_history_state SET new_bytes_peak = greatest(coalesce(new_bytes_peak, 0),"
                " hypertable_size(%s::regclass)) WHERE table_name = %s",
                (f"public.{new}", t),
            )
            self.conn.commit()
            self.conn.autocommit = True
            self.rows_done_run += old_f["rows"]
            if old_f["rows"]:
                self.changes.append(
                    f"{label}: {new_f['rows']} rows moved, {old_f['duplicates']} duplicate(s) left out"
                )
            self.progress(disk, label, old_f["rows"], old_f["duplicates"], seconds)
        self.compress_range(row, label)
        self.checkpoint()

    def checkpoint(self) -> None:
        """A CHECKPOINT after each interval: the WAL the interval wrote is recycled (archived
        first where archiving is on) instead of piling up to max_wal_size on the data disk."""
        if not self.args.checkpoint:
            return
        try:
            self.exec("CHECKPOINT")
        except psycopg2.errors.InsufficientPrivilege:
            self.args.checkpoint = False
            log(
                "no CHECKPOINT privilege (superuser or pg_checkpoint): WAL is left to the server's own "
                "checkpoints"
            )

    def compress_range(self, row: dict[str, Any], label: str) -> None:
        if row.get("compressed_at") is not None:
            return
        if not self.one(
            "SELECT %s::timestamptz <= now() - %s::interval", (row["range_end"], self.args.compress_after)
        )[0]:
            return  # recent: the role's compression policy compresses it when it is old enough
        target = self.new if self.regclass(self.new) is not None else self.table
        chunks = self.all(
            "SELECT format('%%I.%%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = 'public' AND hypertable_name = %s AND NOT is_compressed"
            " AND range_start >= %s AND range_end <= %s",
            (target, row["range_start"], row["range_end"]),
        )
        for (chunk,) in chunks:
            self.exec("SELECT compress_chunk(%s::regclass, if_not_compressed => true)", (chunk,))
        self.exec(
            "UPDATE public.gept_history_intervals SET compressed_at = now() WHERE table_name = %s AND "
            "range_start = %s",
            (self.table, row["range_start"]),
        )
        if chunks:
            log(f"{label}: compressed ({len(chunks)} chunk(s))")

    def verify_all(self) -> None:
        """Every interval compared again (the old table minus its duplicates = the new one)."""
        rows = self.intervals()
        for i, row in enumerate(rows, 1):
            old_f, new_f = self._compare(row["range_start"], row["range_end"])
            if not self._same(old_f, new_f):
                raise HistoryError(
                    f"final check, interval {row['range_start']}: old {old_f}, new {new_f} differ; "
                    "nothing was swapped or dropped (run `rollback`, or look at the rows of that interval)"
                )
            if i % 10 == 0 or i == len(rows):
                log(f"final check: {i}/{len(rows)} intervals equal")
        # Rows newer than the last interval (written during the move) went to both tables.
        last = rows[-1]["range_end"] if rows else None
        if last is not None:
            old_f, new_f = self._compare(last, "infinity")
            if not self._same(old_f, new_f):
                raise HistoryError(
                    f"final check after {last}: old {old_f}, new {new_f} differ; nothing was swapped"
                )

    def swap(self) -> None:
        """The new table takes the name, at a short lock (lock_timeout, retried)."""
        t, new, old = self.table, self.new, self.old
        for attempt in range(1, 31):
            self.conn.autocommit = False
            try:
                self.exec(sql.SQL("SET LOCAL lock_timeout = '5s'"))
                self.exec(sql.SQL("LOCK TABLE {}, {} IN ACCESS EXCLUSIVE MODE").format(q(t), q(new)))
                break
            except psycopg2.errors.LockNotAvailable:
                self.conn.rollback()
                log(f"swap: the tables are busy, attempt {attempt}/30 again in 2 s")
                time.sleep(2)
        else:
            self.conn.autocommit = True
            raise HistoryError("swap: could not take the lock in 30 attempts (long transactions?); run again")
        # Rows copied since the final check (the triggers kept them equal) need nothing here.
        for trig in ("insert", "update", "delete"):
            self.exec(
                sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(q(f"gept_history_forward_{trig}"), q(t))
            )
        self.exec(sql.SQL("DROP FUNCTION IF EXISTS public.{}()").format(q(f"gept_history_forward_{t}")))
        for (idx,) in self.all(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = "
            "%s::regclass",
            (f"public.{t}",),
        ):
            self.exec(sql.SQL("ALTER INDEX {} RENAME TO {}").format(q(idx), q(f"{idx[:55]}_old")))
        self.exec(sql.SQL("ALTER TABLE {} RENAME TO {}").format(q(t), q(old)))
        self.exec(sql.SQL("ALTER TABLE {} RENAME TO {}").format(q(new), q(t)))
        self.exec(
            sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                q(t), q(f"{new}_pkey"), q(f"{t}_pkey")
            )
        )
        self.exec(
            sql.SQL("ALTER INDEX IF EXISTS {} RENAME TO {}").format(
                q(f"{new}_timestamp_idx"), q(f"{t}_timestamp_idx")
            )
        )
        self.exec(
            "UPDATE public.gept_history_state SET phase = 'swapped', swapped_at = now() WHERE table_name "
            "= %s",
            (t,),
        )
        self.conn.commit()
        self.conn.autocommit = True
        self.changes.append(f"{t} is now the keyed hypertable; the original table is {old}")
        log(
            f"swapped: {t} is the keyed, compressed hypertable; the original table is {old} until it is "
            "dropped"
        )

    def refresh_aggregates(self) -> None:
        aggs = self.all(
            "SELECT format('%%I.%%I', view_schema, view_name) FROM "
            "timescaledb_information.continuous_aggregates"
            " WHERE hypertable_schema = 'public' AND hypertable_name = %s",
            (self.table,),
        )
        if not aggs:
            return
        rows = self.intervals()
        for (agg,) in aggs:
            for row in rows:
                if (
                    self.table == self.args.table
                    and self.state_mode == "in_place"
                    and not row["duplicate_rows"]
                ):
                    continue  # in place only the chunks that lost duplicates changed
                self.exec(
                    "CALL refresh_continuous_aggregate(%s, %s, %s)",
                    (agg, row["range_start"], row["range_end"]),
                )
            log(f"continuous aggregate {agg} refreshed over the moved history")
            self.changes.append(f"{agg} refreshed over the moved history")

    def drop_old(self, disk: Disk) -> None:
        if self.regclass(self.old) is not None:
            self.exec(sql.SQL("DROP TABLE {}").format(q(self.old)))
            self.changes.append(f"{self.old} (the original table, verified interval by interval) dropped")
            log(f"{self.old} dropped")
        self.checkpoint()
        size = self.one("SELECT hypertable_size(%s::regclass)", (f"public.{self.table}",))[0]
        self.set_state(
            phase="done",
            finished_at=datetime.now(UTC),
            disk_used_after=disk.used(),
            disk_used_peak=disk.peak,
            table_bytes_after=size,
            message="done",
        )

    # ----- in place (the table is already a hypertable) ---------------------------------------
    def prepare_in_place(self, disk: Disk) -> None:
        t = self.table
        self.conn.autocommit = False
        if not self.one(
            "SELECT compression_enabled FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = 'public' AND hypertable_name = %s",
            (t,),
        )[0]:
            self.exec(
                sql.SQL(
                    "ALTER TABLE {t} SET (timescaledb.compress, timescaledb.compress_segmentby = 'item_id',"
                    " timescaledb.compress_orderby = '\"timestamp\" DESC')"
                ).format(t=q(t))
            )
        interval = self.one(
            "SELECT time_interval FROM timescaledb_information.dimensions"
            " WHERE hypertable_schema = 'public' AND hypertable_name = %s AND dimension_number = 1",
            (t,),
        )[0]
        size = self.one("SELECT hypertable_size(%s::regclass)", (f"public.{t}",))[0]
        self.exec(
            "INSERT INTO public.gept_history_state (table_name, mode, phase, chunk_interval, "
            "threshold_percent,"
            " disk_total_bytes, disk_used_before, disk_used_peak, table_bytes_before)"
            " VALUES (%s, 'in_place', 'moving', %s, %s, %s, %s, %s, %s)",
            (t, interval, self.args.max_disk_percent, disk.total, disk.used(), disk.peak, size),
        )
        self.exec(
            "INSERT INTO public.gept_history_intervals (table_name, range_start, range_end)"
            " SELECT %s, range_start, range_end FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = 'public' AND hypertable_name = %s",
            (t, t),
        )
        self.conn.commit()
        self.conn.autocommit = True
        n = len(self.intervals())
        self.changes.append(f"{t}: {n} chunk(s) to de-duplicate and compress in place")
        log(f"prepared: {t} is a hypertable; {n} chunk(s) to de-duplicate, key and compress in place")

    def dedupe_chunk(self, disk: Disk, row: dict[str, Any], index: int, total: int) -> None:
        t = self.table
        start, end = row["range_start"], row["range_end"]
        label = f"chunk {index}/{total} {start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M}"
        if row["moved_at"] is None:
            chunk = self.one(
                "SELECT format('%%I.%%I', chunk_schema, chunk_name), is_compressed FROM "
                "timescaledb_information.chunks"
                " WHERE hypertable_schema = 'public' AND hypertable_name = %s AND range_start = %s",
                (t, start),
            )
            t0 = time.monotonic()
            if chunk and chunk[1]:
                # Decompressed it takes about its raw size again: room first.
                raw = self.one(
                    "SELECT coalesce(before_compression_total_bytes, 0) FROM "
                    "chunk_compression_stats(%s::regclass)"
                    " WHERE format('%%I.%%I', chunk_schema, chunk_name) = %s",
                    (f"public.{t}", chunk[0]),
                )
                self.wait_for_room(disk, int(raw[0] if raw else 0) + 64 * 1024 * 1024, label)
            self.conn.autocommit = False
            # One snapshot for the counts before and after (a collector may add a row meanwhile).
            self.exec("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            if chunk and chunk[1]:
                self.exec("SELECT decompress_chunk(%s::regclass, if_compressed => true)", (chunk[0],))
            before = self._figures(q(t), self.value_columns(), True, start, end)
            deleted = self._delete_duplicates(start, end)
            after = self._figures(q(t), self.value_columns(), False, start, end)
            if deleted != before["duplicates"] or not self._same(before, after):
                self.conn.rollback()
                raise HistoryError(
                    f"{label}: after de-duplication {after} differs from {before}; rolled back"
                )
            seconds = time.monotonic() - t0
            self.exec(
                "UPDATE public.gept_history_intervals SET old_rows = %s, duplicate_rows = %s, "
                "differing_rows = %s,"
                " moved_rows = %s, sums = %s, seconds = %s, moved_at = now(), verified_at = now(),"
                " compressed_at = NULL WHERE table_name = %s AND range_start = %s",
                (
                    before["rows"],
                    deleted,
                    before["differing"],
                    after["rows"],
                    json.dumps(after),
                    round(seconds, 3),
                    t,
                    start,
                ),
            )
            self.conn.commit()
            self.conn.autocommit = True
            self.rows_done_run += before["rows"]
            if deleted or (chunk and chunk[1]):
                self.changes.append(f"{label}: {deleted} duplicate(s) deleted")
            self.progress(disk, label, before["rows"], deleted, seconds)
            row = {**row, "compressed_at": None}
        self.compress_range(row, label)
        self.checkpoint()

    def _delete_duplicates(self, start: Any, end: Any) -> int:
        return self.exec(
            sql.SQL(
                "DELETE FROM {t} x USING (SELECT tableoid AS o, ctid AS c, row_number() OVER"
                ' (PARTITION BY item_id, "timestamp" ORDER BY tableoid, ctid) AS rn FROM {t}'
                ' WHERE "timestamp" >= %s AND "timestamp" < %s) d'
                " WHERE x.tableoid = d.o AND x.ctid = d.c AND d.rn > 1"
                ' AND x."timestamp" >= %s AND x."timestamp" < %s'
            ).format(t=q(self.table)),
            (start, end, start, end),
        )

    def key_in_place(self) -> None:
        """At one lock: recent (uncompressed) chunks checked again, then the primary key."""
        t = self.table
        self.conn.autocommit = False
        self.exec(sql.SQL("SET LOCAL lock_timeout = '60s'"))
        self.exec(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(q(t)))
        late = 0
        for start, end in self.all(
            "SELECT range_start, range_end FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = 'public' AND hypertable_name = %s AND NOT is_compressed",
            (t,),
        ):
            late += self._delete_duplicates(start, end)
        self.exec(
            sql.SQL('ALTER TABLE {t} ADD CONSTRAINT {pk} PRIMARY KEY (item_id, "timestamp")').format(
                t=q(t), pk=q(f"{t}_pkey")
            )
        )
        self.conn.commit()
        self.conn.autocommit = True
        self.changes.append(
            f"{t}: primary key (item_id, timestamp) added"
            + (f", {late} late duplicate(s) deleted" if late else "")
        )
        log(f"{t}: primary key added ({late} duplicate(s) written during the run deleted first)")

    # ----- entry points --------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.conn.autocommit = True
        self.exec("SET max_parallel_workers_per_gather = 0")  # storage order decides which duplicate wins
        self.exec(sql.SQL("SET work_mem = {}").format(sql.Literal(self.args.work_mem)))
        self.exec("SET timezone = 'UTC'")
        data_dir = self.args.data_dir or self.one("SELECT current_setting('data_directory')")[0]
        state = self.state()
        if state and state["phase"] == "done":
            if not (self.is_hypertable(self.table) and self.has_primary_key(self.table)):
                raise HistoryError(
                    f"the ledger says the move of {self.table} is done, but it is no keyed hypertable"
                )
            log(
                f"{self.table} is a keyed hypertable; the move finished "
                f"{state['finished_at']:%Y-%m-%d %H:%M} UTC: nothing to do"
            )
            return self.summary(state)
        if state is None:
            self.check_input()
            if self.is_hypertable(self.table) and self.has_primary_key(self.table):
                log(f"{self.table} is already a keyed hypertable: nothing to do")
                return {"changed": False, "table": self.table, "phase": "keyed"}
        with Disk(data_dir, self.args.max_disk_percent) as disk:
            self.exec(LEDGER_DDL)
            try:
                if state is None:
                    (self.prepare_in_place if self.is_hypertable(self.table) else self.prepare_move)(disk)
                    state = self.state()
                self.state_mode = state["mode"]
                rows = self.intervals()
                if state["mode"] == "move" and state["phase"] == "moving":
                    for i, row in enumerate(rows, 1):
                        self.move_interval(disk, row, i, len(rows))
                    self.verify_all()
                    self.swap()
                    self.refresh_aggregates()
                elif state["mode"] == "in_place" and state["phase"] == "moving":
                    for i, row in enumerate(rows, 1):
                        self.dedupe_chunk(disk, row, i, len(rows))
                    if not self.has_primary_key(self.table):
                        self.key_in_place()
                    self.set_state(phase="swapped", swapped_at=datetime.now(UTC))
                    self.refresh_aggregates()
                if self.args.keep_old and self.regclass(self.old) is not None:
                    log(
                        f"{self.old} kept (--keep-old): `rollback` puts it back; run without --keep-old "
                        "to drop it"
                    )
                    self.set_state(disk_used_peak=disk.peak)
                else:
                    self.drop_old(disk)
            finally:
                self.set_state(disk_used_peak=disk.peak) if self.state() else None
                self.metrics(disk)
        return self.summary(self.state())

    def summary(self, state: dict[str, Any] | None) -> dict[str, Any]:
        rows = self.intervals() if state else []
        out = {
            "changed": bool(self.changes),
            "changes": self.changes,
            "table": self.table,
            "phase": state["phase"] if state else None,
            "mode": state["mode"] if state else None,
            "intervals": len(rows),
            "intervals_done": sum(1 for r in rows if r["moved_at"]),
            "old_rows": sum(r["old_rows"] or 0 for r in rows),
            "duplicate_rows": sum(r["duplicate_rows"] or 0 for r in rows),
            "differing_duplicates": sum(r["differing_rows"] or 0 for r in rows),
            "moved_rows": sum(r["moved_rows"] or 0 for r in rows),
            "seconds": float(sum(r["seconds"] or 0 for r in rows)),
        }
        if state:
            for k in (
                "disk_total_bytes",
                "disk_used_before",
                "disk_used_peak",
                "disk_used_after",
                "threshold_percent",
                "table_bytes_before",
                "table_bytes_after",
                "new_bytes_peak",
                "message",
            ):
                out[k] = float(state[k]) if k == "threshold_percent" else state[k]
        if out["seconds"]:
            out["rows_per_second"] = round(out["old_rows"] / out["seconds"], 1)
        return out

    def status(self) -> dict[str, Any]:
        state = self.state()
        out = self.summary(state)
        out["keyed_hypertable"] = bool(
            self.regclass(self.table) and self.is_hypertable(self.table) and self.has_primary_key(self.table)
        )
        out["original_kept"] = self.regclass(self.old) is not None
        return out

    def rollback(self) -> dict[str, Any]:
        self.conn.autocommit = True
        self.exec("SET timezone = 'UTC'")
        state = self.state()
        t, new, old = self.table, self.new, self.old
        if state is None:
            log(f"no move of {t} in the ledger: nothing to roll back")
            return {"changed": False, "table": t}
        if state["mode"] == "in_place":
            if self.has_primary_key(t):
                self.exec(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(q(t), q(f"{t}_pkey")))
            self.exec("DELETE FROM public.gept_history_intervals WHERE table_name = %s", (t,))
            self.exec("DELETE FROM public.gept_history_state WHERE table_name = %s", (t,))
            log(
                f"{t}: primary key removed and ledger cleared (the deleted duplicates were counted, not kept)"
            )
            return {"changed": True, "table": t, "changes": [f"{t}: primary key removed"]}
        if state["phase"] == "done":
            raise HistoryError(
                f"the original {t} was dropped after every interval matched: nothing to go back to. The "
                "keyed "
                "hypertable holds every original row (one per key); restore from the backup for the old "
                "layout"
            )
        self.conn.autocommit = False
        self.exec(sql.SQL("SET LOCAL lock_timeout = '30s'"))
        if state["phase"] == "swapped":
            # The keyed table (now under the name) took writes since the swap: copy to the
            # original every row it lacks, then put the names back.
            self.exec(sql.SQL("LOCK TABLE {}, {} IN ACCESS EXCLUSIVE MODE").format(q(t), q(old)))
            cols = sql.SQL(", ").join(q(c) for c, _ in self.columns(old))
            back = self.exec(
                sql.SQL(
                    "INSERT INTO {old} ({cols}) SELECT {ncols} FROM {t} n WHERE n.\"timestamp\" >= %s AND "
                    "NOT EXISTS"
                    ' (SELECT 1 FROM {old} o WHERE o.item_id = n.item_id AND o."timestamp" = n."timestamp")'
                ).format(
                    old=q(old), cols=cols, t=q(t),
                    ncols=sql.SQL(", ").join(sql.SQL("n.{}").format(q(c)) for c, _ in self.columns(old)),
                ),
                (self._since_swap_from(),),
            )  # fmt: skip
            # Continuous aggregates the role made on the keyed table go with it (derived data;
            # the role makes none while the table is plain again).
            for (agg,) in self.all(
                "SELECT format('%%I.%%I', view_schema, view_name)"
                " FROM timescaledb_information.continuous_aggregates"
                " WHERE hypertable_schema = 'public' AND hypertable_name = %s",
                (t,),
            ):
                self.exec(sql.SQL("DROP MATERIALIZED VIEW {}").format(sql.SQL(agg)))
                log(f"rollback: continuous aggregate {agg} on the keyed table dropped")
            # The keyed copy goes (its index names are free again).
            self.exec(sql.SQL("DROP TABLE {}").format(q(t)))
            self.exec(sql.SQL("ALTER TABLE {} RENAME TO {}").format(q(old), q(t)))
            for (idx,) in self.all(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE "
                "i.indrelid = %s::regclass",
                (f"public.{t}",),
            ):
                if idx.endswith("_old"):
                    self.exec(sql.SQL("ALTER INDEX {} RENAME TO {}").format(q(idx), q(idx[: -len("_old")])))
            log(f"rollback: {back} row(s) written since the swap copied back to the original table")
        for trig in ("insert", "update", "delete"):
            self.exec(
                sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(q(f"gept_history_forward_{trig}"), q(t))
            )
        self.exec(sql.SQL("DROP FUNCTION IF EXISTS public.{}()").format(q(f"gept_history_forward_{t}")))
        self.exec(sql.SQL("DROP TABLE IF EXISTS {}").format(q(new)))
        self.exec("DELETE FROM public.gept_history_intervals WHERE table_name = %s", (t,))
        self.exec("DELETE FROM public.gept_history_state WHERE table_name = %s", (t,))
        self.conn.commit()
        self.conn.autocommit = True
        log(f"rolled back: {t} is the original table again; the keyed copy and the ledger are gone")
        return {"changed": True, "table": t, "changes": [f"{t}: the original table is back under its name"]}

    def _since_swap_from(self) -> Any:
        """The oldest interval whose count in the keyed table grew after it was moved (writes
        since the swap, gap fills included), else the end of the last interval."""
        rows = self.intervals()
        for row in rows:
            n = self.one(
                sql.SQL('SELECT count(*) FROM {} WHERE "timestamp" >= %s AND "timestamp" < %s').format(
                    q(self.table)
                ),
                (row["range_start"], row["range_end"]),
            )[0]
            if n != (row["moved_rows"] or 0):
                return row["range_start"]
        return rows[-1]["range_end"] if rows else "-infinity"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["status", "move", "rollback"])
    parser.add_argument("--dbname", required=True)
    parser.add_argument("--host", default="/var/run/postgresql")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", default=None)
    parser.add_argument("--password", default=os.environ.get("PGPASSWORD"))
    parser.add_argument("--table", default="price_data_5min")
    parser.add_argument("--chunk-interval", default="7 days", help="chunk interval of the new hypertable")
    parser.add_argument(
        "--compress-after", default="7 days", help="intervals newer than this stay uncompressed"
    )
    parser.add_argument(
        "--max-disk-percent", type=float, default=90.0, help="data filesystem use never to pass"
    )
    parser.add_argument(
        "--pause-seconds", type=float, default=1800.0, help="wait this long for room, then stop"
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=30.0, help="check the disk this often while paused"
    )
    parser.add_argument(
        "--work-mem", default="256MB", help="work_mem of the move's session (the per-interval sort)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="path whose filesystem is checked (default: data_directory)"
    )
    parser.add_argument(
        "--textfile", default=None, help="node_exporter textfile (.prom) for the progress metrics"
    )
    parser.add_argument(
        "--keep-old", action="store_true", help="keep the original table after the swap (rollback)"
    )
    parser.add_argument(
        "--no-checkpoint",
        dest="checkpoint",
        action="store_false",
        help="no CHECKPOINT after each interval (by default one recycles the interval's WAL at once)",
    )
    parser.add_argument("--json", action="store_true", help="status: JSON only")
    args = parser.parse_args(argv)
    if not 0 < args.max_disk_percent <= 100:
        parser.error("--max-disk-percent must be in (0, 100]")

    try:
        conn = psycopg2.connect(
            dbname=args.dbname, host=args.host, port=args.port, user=args.user, password=args.password
        )
    except psycopg2.Error as exc:
        print(json.dumps({"changed": False, "error": f"cannot connect: {str(exc).strip()}"}))
        return EXIT_ERROR
    mover = Mover(conn, args)
    mover.state_mode = None
    try:
        if args.command == "status":
            result = mover.status()
        elif args.command == "rollback":
            result = mover.rollback()
        else:
            result = mover.run()
    except DiskFull as exc:
        log(str(exc))
        print(
            json.dumps(
                {"changed": bool(mover.changes), "changes": mover.changes, "error": str(exc), "paused": True}
            )
        )
        return EXIT_DISK
    except (HistoryError, psycopg2.Error) as exc:
        if not conn.closed and not conn.autocommit:
            conn.rollback()
        message = str(exc).strip()
        log(f"ERROR: {message}")
        try:
            conn.autocommit = True
            mover.set_state(message=f"error: {message}")
        except psycopg2.Error:
            pass
        print(json.dumps({"changed": bool(mover.changes), "changes": mover.changes, "error": message}))
        return EXIT_ERROR
    finally:
        conn.close()
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
