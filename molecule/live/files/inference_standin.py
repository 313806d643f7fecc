#!/usr/bin/env python3
"""Stand-in for the ML pipeline's inference engine on the live server.

Every --interval seconds, as the database login osrs_user (PGHOST/PGPORT/PGDATABASE/PGUSER/
PGPASSWORD from its environment file), it reads the newest price_data_5min rows and writes one
prediction for an item of that window into predictions - the reads and writes the real engine
makes. It records, in the JSON --state file (written atomically after every cycle):

  cycles, reads, writes            counts
  errors, error_count              every failed connection, query or commit (time, message)
  stale_reads, stale_count         every read whose newest window closed more than --stale-after
                                   seconds ago (time, newest timestamp, staleness)
  worst_staleness_seconds          the largest staleness seen, and when
  newest_timestamps                the distinct newest window timestamps it has read (unix)

Staleness is measured from the end of the newest stored window (its "timestamp" is the window
start; the window's prices exist only once it has closed): a feed that writes every window
stays between a few seconds and one window old; one missed window makes it a window older.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

KEEP = 200  # entries kept per list (the counts go on)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--window", type=int, default=300, help="length of a price_data_5min window, s")
    p.add_argument("--stale-after", type=float, default=600.0)
    args = p.parse_args()

    state = {
        "started": now_iso(),
        "cycles": 0,
        "reads": 0,
        "writes": 0,
        "errors": [],
        "error_count": 0,
        "stale_reads": [],
        "stale_count": 0,
        "worst_staleness_seconds": None,
        "worst_staleness_at": None,
        "newest_timestamps": [],
        "last_read_at": None,
    }
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)

    def save() -> None:
        tmp = args.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, args.state)

    db = None
    while running:
        state["cycles"] += 1
        try:
            if db is None or db.closed:
                db = psycopg2.connect(connect_timeout=5, application_name="osrs-inference")
            with db.cursor() as cur:
                cur.execute(
                    'SELECT item_id, extract(epoch FROM "timestamp")::bigint, avg_high_price, avg_low_price'
                    ' FROM price_data_5min WHERE "timestamp" = (SELECT max("timestamp") FROM price_data_5min)'
                    " ORDER BY item_id LIMIT 50"
                )
                rows = cur.fetchall()
                state["reads"] += 1
                state["last_read_at"] = now_iso()
                if not rows:
                    raise RuntimeError("price_data_5min has no rows")
                newest = rows[0][1]
                if newest not in state["newest_timestamps"]:
                    state["newest_timestamps"] = (state["newest_timestamps"] + [newest])[-KEEP:]
                staleness = time.time() - (newest + args.window)
                if state["worst_staleness_seconds"] is None or staleness > state["worst_staleness_seconds"]:
                    state["worst_staleness_seconds"] = round(staleness, 1)
                    state["worst_staleness_at"] = now_iso()
                if staleness > args.stale_after:
                    state["stale_count"] += 1
                    state["stale_reads"] = (
                        state["stale_reads"]
                        + [{"at": now_iso(), "newest": newest, "staleness": round(staleness, 1)}]
                    )[-KEEP:]
                priced = [r for r in rows if r[2] is not None or r[3] is not None] or rows
                item, _, high, low = priced[state["cycles"] % len(priced)]
                cur.execute(
                    "INSERT INTO predictions (item_id, horizon_minutes, predicted_high, predicted_low,"
                    " confidence, model_version) VALUES (%s, %s, %s, %s, %s, %s)",
                    (item, 30, high, low, 0.5, "inference-standin"),
                )
            db.commit()
            state["writes"] += 1
        except Exception as exc:  # noqa: BLE001  (every failure is recorded, then retried)
            state["error_count"] += 1
            state["errors"] = (
                state["errors"] + [{"at": now_iso(), "error": f"{type(exc).__name__}: {exc}".strip()}]
            )[-KEEP:]
            if db is not None:
                try:
                    db.close()
                except psycopg2.Error:
                    pass
                db = None
        save()
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
