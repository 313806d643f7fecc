#!/usr/bin/env python3
"""gept-dashboard: the status page a person reads at a glance, on port 8080.

  /            HTML: per table rows, size, newest timestamp and its age (green/amber/red);
               per collector last success, errors, missing windows; refreshes itself.
  /api/status  the same as JSON.
  /health      200 when the database answers and 5-minute data is fresher than
               GEPT_DASHBOARD_FRESHNESS_SECONDS, else 503 with the reason (text/plain).
  /metrics     Prometheus: gept_dashboard_requests_total{path,code} and process metrics.

It reads the database (as the read-only role when GEPT_DASHBOARD_DB_USER/PASSWORD are set)
and each collector's metrics endpoint on 127.0.0.1.
"""

from __future__ import annotations

import html
import json
import logging
import signal
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import prometheus_client
import psycopg2
import psycopg2.extensions
from prometheus_client.parser import text_string_to_metric_families
from psycopg2 import sql

from gept_collectors import config
from gept_collectors.config import DEFAULT_METRICS_PORTS
from gept_collectors.runner import setup_logging

log = logging.getLogger("gept.dashboard")
prometheus_client.disable_created_metrics()
REQUESTS = prometheus_client.Counter("gept_dashboard_requests", "Dashboard HTTP requests", ["path", "code"])
PATHS = ("/", "/api/status", "/health", "/metrics")

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


def colour(age: float | None, green: float) -> str:
    if age is None:
        return "red"
    return "green" if age <= green else "amber" if age <= 3 * green else "red"


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
        self._conn: psycopg2.extensions.connection | None = None
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

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
        return self._conn

    def _tables(self) -> list[dict[str, Any]]:
        conn = self._db()
        out = []
        now = time.time()
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = 5000")
            cur.execute("SELECT extname FROM pg_extension WHERE extname = 'timescaledb'")
            hypertables: set[str] = set()
            if cur.fetchone():
                cur.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")
                hypertables = {r[0] for r in cur.fetchall()}
            for table, (column, green) in TABLES.items():
                ident = sql.Identifier(table)
                if table in hypertables:
                    cur.execute(
                        "SELECT approximate_row_count(%s::regclass), hypertable_size(%s::regclass)",
                        (table, table),
                    )
                else:
                    cur.execute(
                        "SELECT reltuples::bigint, pg_total_relation_size(oid) FROM pg_class "
                        "WHERE oid = %s::regclass",
                        (table,),
                    )
                rows, size = cur.fetchone()
                exact = rows is None or rows < 200_000
                if exact:  # small, or never analysed: count for real
                    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident))
                    rows = cur.fetchone()[0]
                cur.execute(sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(column), ident))
                newest = cur.fetchone()[0]
                age = None if newest is None else max(0.0, now - newest.timestamp())
                out.append(
                    {
                        "table": table,
                        "rows": int(rows or 0),
                        "rows_exact": exact,
                        "bytes": int(size or 0),
                        "newest": newest.isoformat() if newest else None,
                        "age_seconds": None if age is None else round(age, 1),
                        "colour": colour(age, green),
                    }
                )
        return out

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
            with urllib.request.urlopen(url, timeout=1.5) as resp:  # noqa: S310  (127.0.0.1 URLs from config)
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

    def collect(self) -> dict[str, Any]:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.cache_seconds:
                return self._cached[1]
            status: dict[str, Any] = {
                "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "database": {"ok": True},
                "tables": [],
            }
            try:
                status["tables"] = self._tables()
            except psycopg2.Error as exc:
                status["database"] = {"ok": False, "error": " ".join(str(exc).split())[:300]}
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
            status["collectors"] = [self._collector(n, u) for n, u in self.targets.items()]
            status["health"] = self.health(status)
            self._cached = (time.monotonic(), status)
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


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    return f"{s // 60}m" if s < 7200 else f"{s // 3600}h" if s < 172800 else f"{s // 86400}d"


def render(status: dict[str, Any], refresh: int) -> str:
    e = html.escape
    health = status["health"]
    rows = "".join(
        f"<tr><td>{e(t['table'])}</td><td class=num>{'' if t['rows_exact'] else '~'}{t['rows']:,}</td>"
        f"<td class=num>{_size(t['bytes'])}</td><td>{e(t['newest'] or '-')}</td>"
        f"<td class='age {t['colour']}'>{_age(t['age_seconds'])}</td></tr>"
        for t in status["tables"]
    )
    if not status["database"]["ok"]:
        error = e(status["database"]["error"])
        rows = f"<tr><td colspan=5 class='red'>database unavailable: {error}</td></tr>"
    crow = []
    for c in status["collectors"]:
        state = "green" if c["up"] and c["age_seconds"] is not None else "red" if not c["up"] else "amber"
        errors = ", ".join(f"{k} {v}" for k, v in sorted(c["errors"].items()) if v) or "none"
        missing = "-" if c["missing_windows"] is None else str(c["missing_windows"])
        crow.append(
            f"<tr><td>gept-collector-{e(c['collector'])}</td><td class='age {state}'>"
            f"{'up' if c['up'] else 'down'}</td><td>{e(c['last_success'] or '-')}</td>"
            f"<td class=num>{_age(c['age_seconds'])}</td><td>{e(errors)}</td>"
            f"<td class='num {'amber' if c['missing_windows'] else ''}'>{missing}</td></tr>"
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh}">
<title>GePT status</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; background: #fafafa; }}
h1 {{ font-size: 1.4rem; margin: 0 0 .3rem; }} h2 {{ font-size: 1.1rem; margin: 1.6rem 0 .4rem; }}
table {{ border-collapse: collapse; background: #fff; min-width: 48rem; }}
th, td {{ padding: .35rem .7rem; border-bottom: 1px solid #e4e4e4; text-align: left; }}
th {{ background: #f0f0f0; font-weight: 600; }}
.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.green {{ background: #d9f2dd; color: #14532d; }} .amber {{ background: #fdf0c8; color: #713f12; }}
.red {{ background: #fbd5d5; color: #7f1d1d; }} .age {{ font-weight: 600; text-align: center; }}
.banner {{ padding: .6rem 1rem; border-radius: .4rem; display: inline-block; font-weight: 600; }}
small {{ color: #666; }}
</style></head><body>
<h1>GePT market-data host</h1>
<div class="banner {"green" if health["ok"] else "red"}">{e(health["reason"])}</div>
<p><small>Generated {e(status["generated_at"])} &middot; refreshes every {refresh}s &middot;
<a href="/api/status">JSON</a> &middot; <a href="/metrics">metrics</a></small></p>
<h2>Tables</h2>
<table><tr><th>table</th><th>rows</th><th>size</th><th>newest</th><th>age</th></tr>{rows}</table>
<h2>Collectors</h2>
<table><tr><th>unit</th><th>state</th><th>last success</th><th>ago</th><th>errors</th>
<th>missing windows</th></tr>
{"".join(crow)}</table>
</body></html>
"""


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (base-class signature)
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, code: int, body: str, ctype: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)
        path = self.path.split("?", 1)[0]
        REQUESTS.labels(path if path in PATHS else "other", str(code)).inc()

    def do_GET(self) -> None:  # noqa: N802  (http.server naming)
        path = self.path.split("?", 1)[0]
        status = self.server.status
        if path == "/metrics":
            body = prometheus_client.generate_latest().decode()
            self._send(200, body, prometheus_client.CONTENT_TYPE_LATEST)
        elif path == "/health":
            health = status.collect()["health"]
            self._send(200 if health["ok"] else 503, health["reason"] + "\n", "text/plain; charset=utf-8")
        elif path == "/api/status":
            self._send(200, json.dumps(status.collect(), indent=1), "application/json")
        elif path == "/":
            self._send(200, render(status.collect(), self.server.refresh), "text/html; charset=utf-8")
        else:
            self._send(404, "not found\n", "text/plain; charset=utf-8")


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], status: Status, refresh: int) -> None:
        super().__init__(address, Handler)
        self.status = status
        self.refresh = refresh


def main() -> int:
    try:
        settings = config.load("dashboard")
    except config.ConfigError as exc:
        print(f"gept-dashboard: configuration error: {exc}", file=sys.stderr)
        return 78
    setup_logging(settings.log_level)
    host = settings.get_str("HOST", "127.0.0.1")
    port = settings.get_int("PORT", 8080)
    server = DashboardServer((host, port), Status(settings), settings.get_int("REFRESH_SECONDS", 30))

    def stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("dashboard on http://%s:%d", host, port)
    server.serve_forever(poll_interval=0.5)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
