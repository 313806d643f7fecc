#!/usr/bin/env python3
"""Speed of the price history move (roles/timescaledb/files/gept_history.py) on real
PostgreSQL 17 + TimescaleDB (full edition), and its projection for the live table.

Starts a throwaway server (tests/support/timescaledb.py) with durable settings (fsync,
synchronous_commit and full_page_writes on, as in production), builds the seed's keyless
price_data_5min (its DDL and index, molecule/live/files/seed_schema.sql) with --items x --days
of 5-minute rows (random-walk prices, 0.5 % of the keys duplicated), runs `gept_history.py move`
on the server's host as postgres (7-day chunks, compressed after 7 days), and prints rows/s
(wall clock, the whole move: copy, per-interval checks, compression, the final check, the swap
and the drop), the table's size before and after, the disk peak above the start, and the time
426M rows would take at that rate. The container is removed at the end.

    .venv/bin/python benchmarks/timescaledb/history_benchmark.py [--items 1000] [--days 28]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from support import timescaledb  # noqa: E402

LIVE_ROWS = 426_000_000
SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "1GB",
    "max_wal_size": "2GB",
}
SEED_TABLE = """
CREATE TABLE price_data_5min (
    item_id            integer NOT NULL,
    "timestamp"        timestamp with time zone NOT NULL,
    avg_high_price     bigint,
    high_price_volume  bigint,
    avg_low_price      bigint,
    low_price_volume   bigint
);
CREATE INDEX idx_price_data_5min_item_time ON price_data_5min (item_id, "timestamp" DESC);
"""


def docker(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 - fixed argv
        ["docker", *args],  # noqa: S607 - the Docker CLI on PATH, as tests/support/timescaledb.py runs it
        capture_output=True, text=True, timeout=timeout, check=check,
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--days", type=int, default=28)
    args = parser.parse_args()
    name = f"gept-timescaledb-bench-history-{os.getpid()}"
    server = timescaledb.start(name, SETTINGS)
    try:
        docker(
            "exec", name, "bash", "-c",
            "apt-get install -y -qq --no-install-recommends python3-psycopg2 >/dev/null && mkdir -p "
            "/srv/gept",
        )  # fmt: skip
        script = REPO / "roles/timescaledb/files/gept_history.py"
        docker("cp", str(script), f"{name}:/srv/gept/")
        params = server.database("osrs_data")
        conn = psycopg2.connect(**params)
        conn.autocommit = True
        t0 = time.monotonic()
        with conn.cursor() as cur:
            cur.execute(SEED_TABLE)
            # Windows end 8 days ago (every interval but the newest is compressed), 5 minutes apart.
            cur.execute(
                "INSERT INTO price_data_5min SELECT i, w, p, (random() * 50)::bigint, (p * 0.97)::bigint,"
                " (random() * 50)::bigint FROM generate_series(1, %s) i,"
                " LATERAL (SELECT date_trunc('hour', now()) - interval '8 days' - s * interval '5 "
                "minutes' AS w,"
                "  (1000 * i * (1 + 0.01 * sin(s / 50.0 + i)))::bigint AS p"
                "  FROM generate_series(0, %s) s) x",
                (args.items, args.days * 288 - 1),
            )
            cur.execute(
                "INSERT INTO price_data_5min SELECT * FROM price_data_5min WHERE random() < 0.005"
            )  # duplicates, as the old collectors wrote them
            cur.execute("ANALYZE price_data_5min")
            cur.execute("SELECT count(*), pg_total_relation_size('price_data_5min') FROM price_data_5min")
            rows, size = cur.fetchone()
        load_s = time.monotonic() - t0
        print(
            f"{server.version}; {rows:,} rows ({size / 1e6:.0f} MB with its index) loaded in {load_s:.0f} s"
        )
        t0 = time.monotonic()
        run = docker(
            "exec", "-u", "postgres", name, "python3", "/srv/gept/gept_history.py", "move",
            "--dbname", "osrs_data", timeout=7200, check=False,
        )  # fmt: skip
        wall = time.monotonic() - t0
        if run.returncode != 0:
            print(run.stdout, run.stderr)
            return 1
        result = json.loads(run.stdout.strip().splitlines()[-1])
        rate = rows / wall
        load = os.getloadavg()
        before, after = result["table_bytes_before"], result["table_bytes_after"]
        peak = result["disk_used_peak"] - result["disk_used_before"]
        print(
            f"move: {result['intervals']} intervals, {result['duplicate_rows']:,} duplicates left out, "
            f"{wall:.1f} s wall = {rate:,.0f} rows/s "
            f"(copy + checks alone: {result['rows_per_second']:,.0f} rows/s); "
            f"table {before / 1e6:.0f} MB -> {after / 1e6:.0f} MB; disk peak {peak / 1e6:.0f} MB above "
            "the start; "
            f"load average {load[0]:.1f}"
        )
        print(f"projection: {LIVE_ROWS:,} rows at {rate:,.0f} rows/s = {LIVE_ROWS / rate / 3600:.1f} h")
        return 0
    finally:
        timescaledb.stop(name)


if __name__ == "__main__":
    sys.exit(main())
