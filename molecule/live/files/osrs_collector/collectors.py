#!/usr/bin/env python3
"""The live server's compose collectors and dashboard, as they behave (stand-in, one file).

    python3 collectors.py latest|5m|1h|news|dashboard

Each runs in its own container of the compose project, reads the OSRS API (API_BASE, NEWS_URL)
and writes to PostgreSQL (DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_PASSWORD) across the compose
bridge, and serves /metrics on METRICS_PORT (9100-9103; the dashboard serves 8080) - the ports
the old stack holds on the host through Docker's port publishing.

  5m        price_data_5min, plain INSERT (the table has no key): on start it continues from
            the newest stored window, so no window is skipped while it runs.
  latest    prices_latest_1m, one row per item per minute
  1h        prices_1h, the newest closed hour
  news      osrs_news, by guid
  dashboard /health (a database query), / (the newest windows), /metrics (slow: the seed's
            health check on /metrics times out, so compose marks the container unhealthy)
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
from psycopg2.extras import execute_values

USER_AGENT = "osrs-ge-collector/1.0 (GE price history; owner@example.org)"
WINDOW = int(os.environ.get("WINDOW_SECONDS", "300"))
STATS = {"cycles": 0, "errors": 0, "rows": 0, "last_success": 0.0}


def log(msg: str) -> None:
    print(f"{datetime.now(UTC).isoformat(timespec='seconds')} {msg}", flush=True)


def connect():
    return psycopg2.connect(
        host=os.environ["DB_HOST"],
        port=int(os.environ.get("DB_PORT", "5432")),
        dbname=os.environ["DB_NAME"],
        user=os.environ["DB_USER"],
        password=os.environ["DB_PASSWORD"],
        connect_timeout=5,
        application_name=f"osrs-{sys.argv[1]}-collector",
    )


def fetch(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310  (configured URL)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310  (configured URL)
        return response.read()


def api(path: str) -> dict:
    return json.loads(fetch(os.environ["API_BASE"].rstrip("/") + path))


def serve_metrics(port: int, routes: dict | None = None) -> None:
    routes = routes or {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (http.server's name)
            if self.path in routes:
                status, body = routes[self.path]()
            elif self.path == "/metrics":
                status = 200
                body = "".join(f"osrs_collector_{k} {v}\n" for k, v in STATS.items())
            else:
                status, body = 404, "not found\n"
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)  # noqa: S104  (inside the container)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def rows_of(window: dict, ts: int) -> list[tuple]:
    at = datetime.fromtimestamp(ts, UTC)
    return [
        (
            int(i),
            at,
            d.get("avgHighPrice"),
            d.get("highPriceVolume"),
            d.get("avgLowPrice"),
            d.get("lowPriceVolume"),
        )
        for i, d in window.get("data", {}).items()
    ]


class FiveMinute:
    def __init__(self) -> None:
        self.last: int | None = None

    def cycle(self, db) -> int:
        newest = api("/5m")["timestamp"]
        with db.cursor() as cur:
            if self.last is None:
                cur.execute('SELECT extract(epoch FROM max("timestamp"))::bigint FROM price_data_5min')
                stored = cur.fetchone()[0]
                self.last = stored if stored is not None else newest - WINDOW
            written = 0
            for ts in range(self.last + WINDOW, newest + 1, WINDOW):
                window = api(f"/5m?timestamp={ts}")
                rows = rows_of(window, ts)
                execute_values(
                    cur,
                    'INSERT INTO price_data_5min (item_id, "timestamp", avg_high_price, high_price_volume,'
                    " avg_low_price, low_price_volume) VALUES %s",
                    rows,
                    page_size=1000,
                )
                db.commit()
                self.last = ts
                written += len(rows)
        return written


def latest_cycle(db) -> int:
    data = api("/latest")["data"]
    minute = datetime.fromtimestamp(int(time.time()) // 60 * 60, UTC)

    def at(v):
        return datetime.fromtimestamp(v, UTC) if v else None

    rows = [
        (int(i), minute, d.get("high"), at(d.get("highTime")), d.get("low"), at(d.get("lowTime")))
        for i, d in data.items()
    ]
    with db.cursor() as cur:
        execute_values(
            cur,
            'INSERT INTO prices_latest_1m (item_id, "timestamp", high, high_time, low, low_time) VALUES %s'
            " ON CONFLICT DO NOTHING",
            rows,
            page_size=1000,
        )
    db.commit()
    return len(rows)


def hourly_cycle(db) -> int:
    window = api("/1h")
    rows = rows_of(window, window["timestamp"])
    with db.cursor() as cur:
        execute_values(
            cur,
            'INSERT INTO prices_1h (item_id, "timestamp", avg_high_price, high_price_volume, avg_low_price,'
            " low_price_volume) VALUES %s ON CONFLICT DO NOTHING",
            rows,
            page_size=1000,
        )
    db.commit()
    return len(rows)


def news_cycle(db) -> int:
    root = ET.fromstring(fetch(os.environ["NEWS_URL"]))  # noqa: S314  (the configured feed)
    rows = []
    for item in root.iter("item"):
        guid = item.findtext("guid") or item.findtext("link")
        pub = item.findtext("pubDate")
        rows.append(
            (
                guid,
                item.findtext("title") or "",
                item.findtext("link"),
                item.findtext("category"),
                item.findtext("description"),
                parsedate_to_datetime(pub) if pub else None,
            )
        )
    with db.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO osrs_news (guid, title, link, category, description, pub_date) VALUES %s"
            " ON CONFLICT (guid) DO NOTHING",
            rows,
        )
    db.commit()
    return len(rows)


def dashboard() -> None:
    def health():
        try:
            with connect() as db, db.cursor() as cur:
                cur.execute("SELECT 1")
            return 200, "ok\n"
        except psycopg2.Error as exc:
            return 503, f"database: {exc}\n"

    def index():
        with connect() as db, db.cursor() as cur:
            cur.execute('SELECT max("timestamp") FROM price_data_5min')
            return 200, json.dumps({"newest_5m": str(cur.fetchone()[0])}) + "\n"

    def slow_metrics():
        time.sleep(8)
        return 200, "".join(f"osrs_dashboard_{k} {v}\n" for k, v in STATS.items())

    serve_metrics(
        int(os.environ.get("METRICS_PORT", "8080")), {"/health": health, "/": index, "/metrics": slow_metrics}
    )
    while True:
        time.sleep(3600)


def main() -> None:
    kind = sys.argv[1]
    if kind == "dashboard":
        dashboard()
        return
    serve_metrics(int(os.environ["METRICS_PORT"]))
    five = FiveMinute()
    work, interval = {
        "5m": (five.cycle, 10),
        "latest": (latest_cycle, 60),
        "1h": (hourly_cycle, 60),
        "news": (news_cycle, 300),
    }[kind]
    db = None
    while True:
        try:
            if db is None or db.closed:
                db = connect()
            rows = work(db)
            STATS["cycles"] += 1
            STATS["rows"] += rows
            STATS["last_success"] = time.time()
        except Exception as exc:  # noqa: BLE001  (a collector logs and retries, as the seed's did)
            STATS["errors"] += 1
            log(f"{kind}: {type(exc).__name__}: {exc}")
            if db is not None:
                try:
                    db.close()
                except psycopg2.Error:
                    pass
                db = None
        time.sleep(interval)


if __name__ == "__main__":
    main()
