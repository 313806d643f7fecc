#!/usr/bin/env python3
"""gept-dashboard: the status page a person reads at a glance, on port 8080.

  /            HTML (dashboard_page.py): tiles, coverage of the 5-minute and hourly windows
               from the collection_windows ledger, items per window, rows per minute of
               prices_latest_1m, storage per hypertable and the data filesystem, backups and
               restore drill, failed TimescaleDB jobs, alerts firing; the tables and collectors.
               ?range=7d zooms the coverage to 7 days (default 24h).
  /api/status  the same as JSON (?range=7d too).
  /health      200 when the database answers and 5-minute data is fresher than
               GEPT_DASHBOARD_FRESHNESS_SECONDS, else 503 with the reason (text/plain).
  /metrics     Prometheus: gept_dashboard_requests_total{path,code} and process metrics.
  /static/refresh.js  the page's only script: swaps in a fresh <main> every refresh period.
  /static/icon.svg    its icon.

Every path is also served under GEPT_DASHBOARD_PATH_PREFIX (the web proxy's route); the page
links relatively, so it works at / and behind a prefix alike.

It reads the database (as the read-only role when GEPT_DASHBOARD_DB_USER/PASSWORD are set),
each collector's metrics endpoint on 127.0.0.1, the backup role's textfile metrics, the data
filesystem (statvfs) and Alertmanager's API. Every query is bounded by a time range or LIMIT
and touches the ledger, catalogs and indexes only, never a scan of a price table.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import statistics
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import prometheus_client
import psycopg2
import psycopg2.extensions
from prometheus_client.parser import text_string_to_metric_families
from psycopg2 import sql

import dashboard_page
from dashboard_page import ago
from gept_collectors import config
from gept_collectors.config import DEFAULT_METRICS_PORTS
from gept_collectors.runner import setup_logging

log = logging.getLogger("gept.dashboard")
prometheus_client.disable_created_metrics()
REQUESTS = prometheus_client.Counter("gept_dashboard_requests", "Dashboard HTTP requests", ["path", "code"])
PATHS = ("/", "/api/status", "/health", "/metrics", "/static/refresh.js", "/static/icon.svg")
RANGES = {"24h": 86400, "7d": 7 * 86400}

# table -> (time column, age in seconds that is still "green"); amber up to 3x, red beyond.
# news: fetched_at (new stories are irregular); items: updated_at changes only when /mapping does.
TABLES: dict[str, tuple[str, float]] = {
    "price_data_5min": ("timestamp", 900),
    "prices_1h": ("timestamp", 2 * 3600 + 600),
    "prices_latest_1m": ("timestamp", 180),
    "player_counts": ("timestamp", 180),
    "osrs_news": ("fetched_at", 3600),
    "items": ("updated_at", 45 * 86400),
    "collection_windows": ("fetched_at", 900),
}
# Tables shown in the storage panel (hypertables on TimescaleDB, plain tables otherwise).
STORAGE_TABLES = ("price_data_5min", "prices_1h", "prices_latest_1m", "player_counts")
# Series of the ledger: (label, collector whose settings give the window and look-back, defaults).
SERIES = {"5m": ("fivemin", 300, 86400), "1h": ("hourly", 3600, 604800)}

# Errors that mean the database itself is gone (the page then says so and /health is 503);
# any other psycopg2 error only blanks the panel that raised it.
CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


def colour(age: float | None, green: float) -> str:
    if age is None:
        return "red"
    return "green" if age <= green else "amber" if age <= 3 * green else "red"


def _iso(epoch: float | None) -> str | None:
    """ISO UTC text; None for no time or an infinite one (PostgreSQL's -infinity: "never")."""
    if epoch is None or not math.isfinite(epoch):
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _error(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


# -- pure computations (no I/O), shared by the JSON and the page ------------------------------
def row_span(window: int, range_seconds: int) -> int:
    """Seconds one row of the coverage grid covers: 3 h of 5-minute windows in the 24 h view,
    one day otherwise."""
    return 3 * 3600 if window < 3600 and range_seconds <= 86400 else 86400


def classify(
    windows: dict[int, tuple[int, float]],
    *,
    window: int,
    start: int,
    end: int,
    now: float,
    first: int | None,
    lookback: float,
    backfilling: bool,
) -> list[dict[str, Any]]:
    """One cell per window start in [start, end): its state from the ledger rows
    {window_start: (item_count, fetched_at)}.

    stored / empty   in the ledger with items / with item_count 0 (late: fetched > 2 windows
                     after it closed, i.e. back-filled)
    missing          owed (closed at least a window ago, after the first ledger row) and absent
    backfill         owed, absent, within the collector's look-back while a back-fill runs
    pending          not owed yet (still open, or closed less than a window ago)
    untracked        before the ledger's first window (collection had not started)
    """
    cells = []
    for t in range(start, end, window):
        if t > now:  # not begun yet: no cell
            break
        row = windows.get(t)
        late = False
        if row is not None:
            items, fetched = row
            state = "stored" if items > 0 else "empty"
            late = fetched - (t + window) > 2 * window
        elif t + 2 * window > now:
            state = "pending"
        elif first is None or t < first:
            state = "untracked"
        elif backfilling and t >= now - lookback:
            state = "backfill"
        else:
            state = "missing"
        cells.append({"start": t, "state": state, "items": None if row is None else row[0], "late": late})
    return cells


def gaps(cells: list[dict[str, Any]], window: int) -> list[dict[str, Any]]:
    """Runs of owed cells (missing or backfill), oldest first."""
    out: list[dict[str, Any]] = []
    for c in cells:
        if c["state"] not in ("missing", "backfill"):
            continue
        last = out[-1] if out else None
        if last and last["end"] == c["start"] and last["state"] == c["state"]:
            last["end"] += window
            last["windows"] += 1
        else:
            out.append({"start": c["start"], "end": c["start"] + window, "windows": 1, "state": c["state"]})
    return out


def coverage_summary(series: dict[str, Any], now: float) -> str:
    owed = series["owed"]
    label = "window" if owed == 1 else "windows"
    if not owed:
        if series["newest_age_seconds"] is None:
            return f"nothing stored yet in the ledger ({series['range']} view)"
        newest = ago(series["newest_age_seconds"])
        return f"nothing owed in view ({series['range']}); the newest window stored began {newest} ago"
    oldest = series["gaps"][0]
    when = datetime.fromtimestamp(oldest["start"], UTC).strftime("%a %H:%M UTC")
    filling = f", {series['backfilling_windows']} being back-filled" if series["backfilling_windows"] else ""
    return (
        f"{owed} {label} owed in view{filling}; oldest gap {when} "
        f"({oldest['windows']} {'window' if oldest['windows'] == 1 else 'windows'}, "
        f"{ago(now - oldest['start'])} ago)"
    )


def parse_textfiles(directory: str) -> dict[str, Any]:
    """Backups and the restore drill from the node_exporter textfile metrics the backup role
    publishes (gept_backup_*.prom, gept_restore_drill.prom)."""
    out: dict[str, Any] = {"textfile_dir": directory, "backups": [], "drill": None}
    folder = Path(directory)
    backups: dict[str, dict[str, Any]] = {}
    now = time.time()
    try:
        files = sorted(folder.glob("gept_*.prom"))
    except OSError as exc:
        out["error"] = _error(exc)
        return out
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
            mtime = path.stat().st_mtime
        except OSError:
            continue
        try:
            families = list(text_string_to_metric_families(text))
        except ValueError:
            log.warning("unreadable metrics file %s", path)
            continue
        for family in families:
            for s in family.samples:
                if s.name.startswith("gept_backup_"):
                    kind = s.labels.get("kind", "?")
                    b = backups.setdefault(
                        kind, {"kind": kind, "last_run_ok": None, "last_success": None, "size_bytes": None}
                    )
                    b["last_run_at"] = _iso(mtime)
                    if s.name == "gept_backup_last_run_ok":
                        b["last_run_ok"] = s.value == 1
                    elif s.name == "gept_backup_last_success_timestamp_seconds":
                        b["last_success"] = s.value
                    elif s.name == "gept_backup_size_bytes":
                        b["size_bytes"] = int(s.value)
                elif s.name.startswith("gept_restore_drill"):
                    d = out["drill"] or {"ok": None, "last_success": None, "duration_seconds": None}
                    d["last_run_at"] = _iso(mtime)
                    d["last_run_age_seconds"] = round(now - mtime, 1)
                    if s.name == "gept_restore_drill_ok":
                        d["ok"] = s.value == 1
                    elif s.name == "gept_restore_drill_last_success_timestamp_seconds":
                        d["last_success"] = s.value
                    elif s.name == "gept_restore_drill_duration_seconds":
                        d["duration_seconds"] = round(s.value, 1)
                    out["drill"] = d
    for b in backups.values():
        ts = b.pop("last_success")
        b["last_success"] = _iso(ts)
        b["age_seconds"] = None if ts is None else round(now - ts, 1)
        out["backups"].append(b)
    if out["drill"]:
        ts = out["drill"].pop("last_success")
        out["drill"]["last_success"] = _iso(ts)
        out["drill"]["last_success_age_seconds"] = None if ts is None else round(now - ts, 1)
    return out


def filesystem(path: str, alert_percent: float, critical_percent: float) -> dict[str, Any]:
    """Use of the filesystem holding `path` (its nearest existing ancestor)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    info: dict[str, Any] = {
        "path": path,
        "alert_percent": alert_percent,
        "critical_percent": critical_percent,
    }
    try:
        st = os.statvfs(probe)
    except OSError as exc:
        info["error"] = _error(exc)
        return info
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    used = total - st.f_bfree * st.f_frsize
    info.update(
        {
            "measured_at": str(probe),
            "total_bytes": total,
            "used_bytes": used,
            "available_bytes": free,
            # As df and node_exporter count it: used / (used + available to users).
            "used_percent": round(100.0 * used / (used + free), 1) if used + free else 0.0,
        }
    )
    return info


class Status:
    """Gathers the status; cached briefly so a burst of requests costs one round of queries."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self.freshness = settings.get_float("FRESHNESS_SECONDS", 900)
        self.cache_seconds = settings.get_float("CACHE_SECONDS", 2)
        default_targets = ",".join(
            f"{n}=http://127.0.0.1:{port}/metrics" for n, port in DEFAULT_METRICS_PORTS.items()
        )
        targets = settings.get_str("COLLECTORS", default_targets)
        self.targets = dict(t.split("=", 1) for t in targets.split(",") if "=" in t)
        env = settings.env
        self.series = {
            name: (
                int(env.get(f"GEPT_{c.upper()}_WINDOW_SECONDS") or w),
                float(env.get(f"GEPT_{c.upper()}_LOOKBACK_SECONDS") or lb),
            )
            for name, (c, w, lb) in SERIES.items()
        }
        self.backfill_active = settings.get_float("BACKFILL_ACTIVE_SECONDS", 600)
        self.textfile_dir = settings.get_str("TEXTFILE_DIR", "/var/lib/prometheus/node-exporter")
        self.data_dir = settings.get_str("DATA_DIR", "/var/lib/postgresql")
        self.disk_alert = settings.get_float("DISK_ALERT_PERCENT", 85)
        self.disk_critical = settings.get_float("DISK_CRITICAL_PERCENT", 95)
        self.backup_max_age = settings.get_float("BACKUP_MAX_AGE_SECONDS", 93600)
        self.drill_max_age = settings.get_float("DRILL_MAX_AGE_SECONDS", 691200)
        self.alertmanager = settings.get_str("ALERTMANAGER_URL", "http://127.0.0.1:9093/alertmanager")
        self.http_timeout = settings.get_float("HTTP_TIMEOUT_SECONDS", 1.5)
        self._conn: psycopg2.extensions.connection | None = None
        self._lock = threading.Lock()
        self._cached: dict[str, tuple[float, dict[str, Any]]] = {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="gept-dashboard-http")
        # Every statement of the last collect(), as sent (tests EXPLAIN them on a large table).
        self.last_queries: list[str] = []

    # -- database -------------------------------------------------------------------------------
    def _db(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            s = self.settings
            self._conn = psycopg2.connect(
                host=s.db_host,
                port=s.db_port,
                dbname=s.db_name,
                user=s.db_user,
                password=s.db_password,
                sslmode=s.db_sslmode,
                connect_timeout=3,
                application_name="gept-dashboard",
            )
            self._conn.autocommit = True
            with self._conn.cursor() as cur:
                cur.execute("SET statement_timeout = 5000")
        return self._conn

    def _q(
        self, cur: psycopg2.extensions.cursor, query: str | sql.Composable, args: Any = None
    ) -> list[tuple]:
        text = cur.mogrify(query, args).decode()
        self.last_queries.append(text)
        cur.execute(text)
        return cur.fetchall() if cur.description else []

    def _panel(self, fn: Any, *args: Any) -> dict[str, Any]:
        """fn(cursor, *args); a query error (not a lost connection) blanks only this panel."""
        with self._db().cursor() as cur:
            try:
                return fn(cur, *args)
            except CONNECTION_ERRORS:
                raise
            except psycopg2.Error as exc:
                log.warning("%s: %s", fn.__name__, _error(exc))
                return {"error": _error(exc)}
            except Exception as exc:  # noqa: BLE001  (one panel's fault must not take the page down)
                log.exception("%s failed", fn.__name__)
                return {"error": f"{type(exc).__name__}: {_error(exc)}"}

    def _timescale(self, cur: psycopg2.extensions.cursor) -> dict[str, Any]:
        rows = self._q(
            cur,
            "SELECT extversion, current_setting('timescaledb.license', true) "
            "FROM pg_extension WHERE extname = 'timescaledb'",
        )
        if not rows:
            return {"installed": False, "version": None, "edition": None, "hypertables": []}
        hypertables = [
            r[0]
            for r in self._q(
                cur,
                "SELECT hypertable_name FROM timescaledb_information.hypertables "
                "WHERE hypertable_schema = 'public' ORDER BY 1 LIMIT 100",
            )
        ]
        return {
            "installed": True,
            "version": rows[0][0],
            "edition": "full" if rows[0][1] == "timescale" else "apache",
            "hypertables": hypertables,
        }

    def _tables(self, cur: psycopg2.extensions.cursor, hypertables: list[str]) -> list[dict[str, Any]]:
        out = []
        now = time.time()
        for table, (column, green) in TABLES.items():
            ident = sql.Identifier(table)
            if table in hypertables:
                rows, size = self._q(
                    cur,
                    "SELECT approximate_row_count(%s::regclass), hypertable_size(%s::regclass)",
                    (table, table),
                )[0]
            else:
                rows, size = self._q(
                    cur,
                    "SELECT reltuples::bigint, pg_total_relation_size(oid) FROM pg_class "
                    "WHERE oid = %s::regclass",
                    (table,),
                )[0]
            # Counted for real only when small (estimate below 200k); a big table never analysed
            # (reltuples -1) is not counted: its rows are unknown (null) until ANALYZE.
            if rows is not None and rows < 0 and (size or 0) > 64 * 2**20:
                rows = None
            exact = rows is not None and rows < 200_000
            if exact:
                rows = self._q(cur, sql.SQL("SELECT count(*) FROM {}").format(ident))[0][0]
            newest = self._q(cur, sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(column), ident))[0][
                0
            ]
            age = None if newest is None else max(0.0, now - newest.timestamp())
            out.append(
                {
                    "table": table,
                    "rows": None if rows is None else int(rows),
                    "rows_exact": exact,
                    "bytes": int(size or 0),
                    "newest": newest.isoformat() if newest else None,
                    "age_seconds": None if age is None else round(age, 1),
                    "colour": colour(age, green),
                }
            )
        return out

    def _coverage(self, cur: psycopg2.extensions.cursor, range_name: str) -> dict[str, Any]:
        range_seconds = RANGES[range_name]
        now = time.time()
        out: dict[str, Any] = {"range": range_name, "series": []}
        for name, (window, lookback) in self.series.items():
            span = row_span(window, range_seconds)
            start = int((now - range_seconds) // span * span)
            end = int(now // span * span + span)
            rows = self._q(
                cur,
                "SELECT extract(epoch FROM window_start)::bigint, item_count, "
                "extract(epoch FROM fetched_at)::float8 FROM collection_windows "
                "WHERE series = %s AND window_start >= to_timestamp(%s) AND window_start < to_timestamp(%s) "
                "ORDER BY window_start LIMIT %s",
                (name, start, end, (end - start) // window + 1),
            )
            windows = {r[0]: (r[1], r[2]) for r in rows}
            first = self._q(
                cur,
                "SELECT extract(epoch FROM min(window_start))::bigint FROM collection_windows "
                "WHERE series = %s",
                (name,),
            )[0][0]
            newest = self._q(
                cur,
                "SELECT extract(epoch FROM max(window_start))::bigint FROM collection_windows "
                "WHERE series = %s",
                (name,),
            )[0][0]
            # A back-fill runs when a window that closed long ago was stored a moment ago.
            late = self._q(
                cur,
                "SELECT extract(epoch FROM max(fetched_at))::float8 FROM collection_windows "
                "WHERE series = %s AND window_start >= to_timestamp(%s) "
                "AND fetched_at >= now() - make_interval(secs => %s) "
                "AND fetched_at > window_start + make_interval(secs => %s)",
                (name, int(now - max(lookback, range_seconds)), self.backfill_active, 3 * window),
            )[0][0]
            cells = classify(
                windows,
                window=window,
                start=start,
                end=end,
                now=now,
                first=first,
                lookback=lookback,
                backfilling=late is not None,
            )
            runs = gaps(cells, window)
            counts: dict[str, int] = {}
            for c in cells:
                counts[c["state"]] = counts.get(c["state"], 0) + 1
            series = {
                "series": name,
                "window_seconds": window,
                "lookback_seconds": lookback,
                "range": range_name,
                "row_seconds": span,
                "start": _iso(start),
                "end": _iso(end),
                "first_window": _iso(first),
                "newest_window": _iso(newest),
                "newest_age_seconds": None if newest is None else round(now - newest, 1),
                "backfilling": late is not None,
                "last_backfilled_at": _iso(late),
                "counts": counts,
                "owed": counts.get("missing", 0) + counts.get("backfill", 0),
                "backfilling_windows": counts.get("backfill", 0),
                "gaps": [
                    {**g, "start": _iso(g["start"]), "end": _iso(g["end"]), "start_epoch": g["start"]}
                    for g in runs[:50]
                ],
                "cells": cells,
            }
            series["summary"] = coverage_summary({**series, "gaps": runs}, now)
            out["series"].append(series)
        return out

    def _flow(self, cur: psycopg2.extensions.cursor) -> dict[str, Any]:
        """Items per 5-minute window (24 h, from the ledger) and rows per minute of the
        1-minute table (30 min, an index range scan of the newest rows)."""
        now = time.time()
        items = self._q(
            cur,
            "SELECT extract(epoch FROM window_start)::bigint, item_count FROM collection_windows "
            "WHERE series = '5m' AND window_start >= now() - interval '24 hours' "
            "ORDER BY window_start LIMIT 300",
        )
        per_minute = self._q(
            cur,
            "SELECT extract(epoch FROM date_trunc('minute', \"timestamp\"))::bigint, count(*) "
            "FROM prices_latest_1m "
            "WHERE \"timestamp\" >= date_trunc('minute', now()) - interval '30 minutes' "
            "GROUP BY 1 ORDER BY 1 LIMIT 32",
        )
        counts = [c for _, c in items if c > 0]
        median = statistics.median(counts) if counts else None
        drop_below = 0.8 * median if median else None
        drops = [t for t, c in items if drop_below is not None and 0 < c < drop_below]
        rpm = [c for _, c in per_minute]
        return {
            "items_per_window": {
                "series": "5m",
                "points": [[t, c] for t, c in items],
                "median": median,
                "last": items[-1][1] if items else None,
                "drop_threshold": drop_below,
                "drops": [_iso(t) for t in drops[-20:]],
                "drop_epochs": drops[-20:],
            },
            "latest_rows_per_minute": {
                "points": [[t, c] for t, c in per_minute],
                "median": statistics.median(rpm) if rpm else None,
                "last_minute": _iso(per_minute[-1][0]) if per_minute else None,
                "generated_epoch": now,
            },
        }

    def _storage(
        self, cur: psycopg2.extensions.cursor, ts: dict[str, Any], sizes: dict[str, int]
    ) -> dict[str, Any]:
        """Per price table: size (as the tables panel measured it: hypertable_size is slow, so
        once), chunks, compression and retention policy."""
        out: dict[str, Any] = {"edition": ts["edition"], "timescaledb": ts["version"], "hypertables": []}
        if not ts["installed"]:
            for table in STORAGE_TABLES:
                out["hypertables"].append(
                    {"table": table, "hypertable": False, "bytes": sizes.get(table, 0), "retention": None}
                )
            return out
        retention = dict(
            self._q(
                cur,
                "SELECT hypertable_name, config ->> 'drop_after' FROM timescaledb_information.jobs "
                "WHERE proc_name = 'policy_retention' AND hypertable_schema = 'public' LIMIT 100",
            )
        )
        chunks = {
            r[0]: r[1:]
            for r in self._q(
                cur,
                "SELECT hypertable_name, count(*), count(*) FILTER (WHERE is_compressed), "
                "extract(epoch FROM min(range_start))::bigint FROM timescaledb_information.chunks "
                "WHERE hypertable_schema = 'public' GROUP BY 1 LIMIT 100",
            )
        }
        for table in STORAGE_TABLES:
            if table not in ts["hypertables"]:
                out["hypertables"].append(
                    {"table": table, "hypertable": False, "bytes": sizes.get(table, 0), "retention": None}
                )
                continue
            total, compressed, oldest = chunks.get(table, (0, 0, None))
            entry: dict[str, Any] = {
                "table": table,
                "hypertable": True,
                "bytes": sizes.get(table, 0),
                "chunks": int(total),
                "compressed_chunks": int(compressed),
                "uncompressed_chunks": int(total - compressed),
                "oldest_chunk_start": _iso(oldest),
                "retention": retention.get(table),
                "compression_ratio": None,
            }
            if ts["edition"] == "full" and compressed:
                before, after = self._q(
                    cur,
                    "SELECT sum(before_compression_total_bytes), sum(after_compression_total_bytes) "
                    "FROM hypertable_compression_stats(%s::regclass)",
                    (table,),
                )[0]
                # sum() of bigint is numeric: a Decimal, which JSON cannot carry.
                before, after = int(before or 0), int(after or 0)
                entry["before_compression_bytes"] = before
                entry["after_compression_bytes"] = after
                entry["compression_ratio"] = round(before / after, 1) if before and after else None
            out["hypertables"].append(entry)
        return out

    def _jobs(self, cur: psycopg2.extensions.cursor, ts: dict[str, Any]) -> dict[str, Any]:
        """The policies' background jobs whose last run failed (the newest first, at most 20).
        Job ids below 1000 are TimescaleDB's own housekeeping (left out, as by the exporter's
        gept_timescaledb_job metrics: on the Apache edition one of them always fails)."""
        if not ts["installed"]:
            return {"available": False, "failed": []}
        rows = self._q(
            cur,
            "SELECT j.job_id, j.proc_name, j.hypertable_name, s.last_run_status, "
            "extract(epoch FROM s.last_run_started_at)::float8, "
            "extract(epoch FROM s.last_successful_finish)::float8, s.total_failures "
            "FROM timescaledb_information.jobs j JOIN timescaledb_information.job_stats s USING (job_id) "
            "WHERE j.job_id >= 1000 AND s.last_run_status = 'Failed' "
            "ORDER BY s.last_run_started_at DESC NULLS LAST LIMIT 20",
        )
        now = time.time()
        failed = [
            {
                "job_id": r[0],
                "proc_name": r[1],
                "hypertable": r[2],
                "last_run_status": r[3],
                "last_run_started_at": _iso(r[4]),
                "last_run_age_seconds": None if _iso(r[4]) is None else round(now - r[4], 1),
                "last_successful_finish": _iso(r[5]),
                "total_failures": r[6],
            }
            for r in rows
        ]
        return {"available": True, "failed": failed}

    # -- HTTP sources ---------------------------------------------------------------------------
    def _collector(self, name: str, url: str) -> dict[str, Any]:
        info: dict[str, Any] = {
            "collector": name,
            "up": False,
            "last_success": None,
            "age_seconds": None,
            "errors": {},
            "missing_windows": None,
            "rows_inserted": None,
        }
        try:
            with urllib.request.urlopen(url, timeout=self.http_timeout) as resp:  # noqa: S310  (127.0.0.1 URLs from config)
                text = resp.read().decode()
        except OSError as exc:
            info["error"] = str(exc)[:200]
            return info
        info["up"] = True
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == f"gept_{name}_last_success_timestamp_seconds" and s.value > 0:
                    info["last_success"] = datetime.fromtimestamp(s.value, UTC).isoformat()
                    info["age_seconds"] = round(time.time() - s.value, 1)
                elif s.name == f"gept_{name}_errors_total":
                    info["errors"][s.labels.get("kind", "")] = int(s.value)
                elif s.name == f"gept_{name}_missing_windows":
                    info["missing_windows"] = int(s.value)
                elif s.name == f"gept_{name}_rows_inserted_total":
                    info["rows_inserted"] = int(s.value)
        return info

    def _alerts(self) -> dict[str, Any]:
        """Alerts firing now (active, not silenced or inhibited), read-only from Alertmanager."""
        if not self.alertmanager:
            return {"configured": False, "ok": False, "error": "not configured", "firing": []}
        url = self.alertmanager.rstrip("/") + "/api/v2/alerts?active=true&silenced=false&inhibited=false"
        info: dict[str, Any] = {"configured": True, "url": self.alertmanager, "ok": False, "firing": []}
        try:
            with urllib.request.urlopen(url, timeout=self.http_timeout) as resp:  # noqa: S310  (config URL)
                alerts = json.loads(resp.read(2_000_000))
        except (OSError, ValueError) as exc:
            info["error"] = _error(exc)
            return info
        if not isinstance(alerts, list):
            info["error"] = "unexpected answer (not a list of alerts)"
            return info
        info["ok"] = True
        info["heartbeat"] = []
        for a in alerts[:50]:
            labels = a.get("labels", {}) if isinstance(a, dict) else {}
            alert = {
                "alertname": str(labels.get("alertname", "?")),
                "severity": str(labels.get("severity", "none")),
                "summary": str(a.get("annotations", {}).get("summary", ""))[:300],
                "starts_at": a.get("startsAt"),
            }
            # severity "none" (Watchdog): a heartbeat that always fires while alerting works.
            info["heartbeat" if alert["severity"] == "none" else "firing"].append(alert)
        info["firing"].sort(key=lambda x: (x["severity"] != "critical", x["alertname"]))
        return info

    # -- the whole status -----------------------------------------------------------------------
    def collect(self, range_name: str = "24h") -> dict[str, Any]:
        range_name = range_name if range_name in RANGES else "24h"
        with self._lock:
            cached = self._cached.get(range_name)
            if cached and time.monotonic() - cached[0] < self.cache_seconds:
                return cached[1]
            self.last_queries = []
            collectors = [self._pool.submit(self._collector, n, u) for n, u in self.targets.items()]
            alerts = self._pool.submit(self._alerts)
            status: dict[str, Any] = {
                "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "database": {"ok": True},
                "tables": [],
                "range": range_name,
            }
            jobs: dict[str, Any] = {"available": False, "failed": [], "error": "database unavailable"}
            try:
                ts = self._panel(self._timescale)
                if "error" in ts:
                    ts = {"installed": False, "version": None, "edition": None, "hypertables": [], **ts}
                status["database"]["timescaledb"] = ts["version"]
                with self._db().cursor() as cur:
                    status["tables"] = self._tables(cur, ts["hypertables"])
                status["coverage"] = self._panel(self._coverage, range_name)
                flow = self._panel(self._flow)
                status["items_per_window"] = flow.get("items_per_window", flow)
                status["latest_rows_per_minute"] = flow.get("latest_rows_per_minute", flow)
                sizes = {t["table"]: t["bytes"] for t in status["tables"]}
                status["storage"] = self._panel(self._storage, ts, sizes)
                jobs = self._panel(self._jobs, ts)
            except psycopg2.Error as exc:
                status["database"] = {"ok": False, "error": _error(exc)}
                status["tables"] = []
                for key in ("coverage", "items_per_window", "latest_rows_per_minute", "storage"):
                    status.pop(key, None)
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
            status.setdefault("storage", {"error": "database unavailable"})
            status["storage"]["filesystem"] = filesystem(self.data_dir, self.disk_alert, self.disk_critical)
            status["safety"] = {
                **parse_textfiles(self.textfile_dir),
                "backup_max_age_seconds": self.backup_max_age,
                "drill_max_age_seconds": self.drill_max_age,
                "jobs": jobs,
                "alerts": alerts.result(),
            }
            status["collectors"] = [f.result() for f in collectors]
            status["health"] = self.health(status)
            self._cached[range_name] = (time.monotonic(), status)
            return status

    def health(self, status: dict[str, Any]) -> dict[str, Any]:
        if not status["database"]["ok"]:
            return {"ok": False, "reason": f"database unavailable: {status['database']['error']}"}
        five = next((t for t in status["tables"] if t["table"] == "price_data_5min"), None)
        if five is None or five["age_seconds"] is None:
            return {"ok": False, "reason": "no 5-minute data yet"}
        if five["age_seconds"] > self.freshness:
            age = five["age_seconds"]
            return {
                "ok": False,
                "reason": f"5-minute data is stale: newest window {age:.0f}s old "
                f"(threshold {self.freshness:.0f}s)",
            }
        return {"ok": True, "reason": f"ok: newest 5-minute window {five['age_seconds']:.0f}s old"}


def public(status: dict[str, Any]) -> dict[str, Any]:
    """The status as /api/status serves it: the coverage cells stay on the page (the gaps and
    counts say the same in fewer bytes)."""
    out = dict(status)
    cov = status.get("coverage")
    if isinstance(cov, dict) and "series" in cov:
        out["coverage"] = {
            **cov,
            "series": [{k: v for k, v in s.items() if k != "cells"} for s in cov["series"]],
        }
    return out


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (base-class signature)
        log.debug("%s %s", self.address_string(), format % args)

    def _send(
        self, code: int, body: str, ctype: str, path: str, headers: dict[str, str] | None = None
    ) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        REQUESTS.labels(path if path in PATHS else "other", str(code)).inc()

    def do_GET(self) -> None:  # noqa: N802  (http.server naming)
        parsed = urllib.parse.urlsplit(self.path)
        path = parsed.path
        prefix = self.server.prefix
        if prefix != "/" and path + "/" == prefix:  # /status -> /status/ (relative links need it)
            self._send(301, "", "text/plain", "other", {"Location": prefix})
            return
        if prefix != "/" and path.startswith(prefix):
            path = "/" + path[len(prefix) :]
        query = urllib.parse.parse_qs(parsed.query)
        range_name = query.get("range", ["24h"])[0]
        status = self.server.status
        if path == "/metrics":
            body = prometheus_client.generate_latest().decode()
            self._send(200, body, prometheus_client.CONTENT_TYPE_LATEST, path)
        elif path == "/health":
            health = status.collect()["health"]
            self._send(
                200 if health["ok"] else 503, health["reason"] + "\n", "text/plain; charset=utf-8", path
            )
        elif path == "/api/status":
            body = json.dumps(public(status.collect(range_name)), indent=1)
            self._send(200, body, "application/json", path)
        elif path == "/static/refresh.js":
            self._send(200, dashboard_page.REFRESH_JS, "text/javascript; charset=utf-8", path)
        elif path == "/static/icon.svg":
            self._send(200, dashboard_page.ICON_SVG, "image/svg+xml", path)
        elif path == "/":
            page = dashboard_page.render(status.collect(range_name), self.server.refresh)
            # frame-ancestors in the policy stands for X-Frame-Options (nginx adds its own).
            headers = {"Content-Security-Policy": dashboard_page.CSP, "Referrer-Policy": "same-origin"}
            self._send(200, page, "text/html; charset=utf-8", path, headers)
        else:
            self._send(404, "not found\n", "text/plain; charset=utf-8", path)


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], status: Status, refresh: int, prefix: str = "/") -> None:
        super().__init__(address, Handler)
        self.status = status
        self.refresh = refresh
        self.prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"


def main() -> int:
    try:
        settings = config.load("dashboard")
    except config.ConfigError as exc:
        print(f"gept-dashboard: configuration error: {exc}", file=sys.stderr)
        return 78
    setup_logging(settings.log_level)
    host = settings.get_str("HOST", "127.0.0.1")
    port = settings.get_int("PORT", 8080)
    server = DashboardServer(
        (host, port),
        Status(settings),
        settings.get_int("REFRESH_SECONDS", 30),
        settings.get_str("PATH_PREFIX", "/"),
    )

    def stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("dashboard on http://%s:%d%s", host, port, server.prefix)
    server.serve_forever(poll_interval=0.5)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
