#!/usr/bin/env python3
"""How long the DuckDB -> PostgreSQL migration takes for a year of per-minute player counts
(525,600 rows) plus a full item mapping (4,650 items): wall time, rows/s, and the script's
peak resident memory. Starts its own throwaway PostgreSQL on 127.0.0.1 (tests/legacy/conftest.py)
with the real schema; prints figures, asserts nothing.

  .venv/bin/python benchmarks/legacy/bench_duckdb_migrate.py [--players N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from support.pg import PgCluster  # noqa: E402  (the tests' throwaway cluster)
from support.roles import duckdb_migration_tables  # noqa: E402

SCRIPT = ROOT / "roles" / "duckdb_migration" / "files" / "gept-duckdb-migrate.py"
# The role's own table mappings (roles/duckdb_migration/defaults/main.yml); each run sets `file`.
DEFAULTS_TABLES = list(duckdb_migration_tables().values())


def make_files(tmp: Path, players: int, items: int) -> dict[str, Path]:
    pc, it = tmp / "player_counts.duckdb", tmp / "items.duckdb"
    t0 = datetime(2025, 1, 1)
    with duckdb.connect(str(pc)) as con:
        con.execute('CREATE TABLE player_counts ("timestamp" TIMESTAMP PRIMARY KEY, player_count INTEGER)')
        con.execute(
            "INSERT INTO player_counts SELECT ?::TIMESTAMP + i * INTERVAL 1 MINUTE,"
            " 50000 + (i * 7919) % 40000 FROM range(?) t(i)",
            [t0, players],
        )
    with duckdb.connect(str(it)) as con:
        con.execute(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR, examine VARCHAR, members BOOLEAN,"
            ' lowalch INTEGER, highalch INTEGER, "limit" INTEGER, value INTEGER, icon VARCHAR)'
        )
        con.execute(
            "INSERT INTO items SELECT i, 'Item ' || i, 'Examine ' || i, i % 2 = 0, i, 2 * i, 100 + i % 50,"
            " 3 * i, 'Item_' || i || '.png' FROM range(?) t(i)",
            [items],
        )
    return {"player_counts": pc, "items": it}


def run(pg: PgCluster, db: str, cfg: Path) -> tuple[float, dict, int]:
    env = {**os.environ, **pg.libpq_env(db)}
    start = time.monotonic()
    proc = subprocess.run(  # noqa: S603  (our own script, fixed argv)
        [sys.executable, str(SCRIPT), "--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    wall = time.monotonic() - start
    rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, json.loads(proc.stdout), rss_kib


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--players", type=int, default=525_600)
    parser.add_argument("--items", type=int, default=4_650)
    args = parser.parse_args()
    pg = PgCluster()
    try:
        pg.init()
        pg.start()
        pg.execute("postgres", "CREATE DATABASE bench", autocommit=True)
        for migration in sorted((ROOT / "roles" / "timescaledb" / "files" / "migrations").glob("*.sql")):
            pg.execute("bench", migration.read_text())
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            files = make_files(tmp, args.players, args.items)
            cfg = tmp / "tables.json"
            cfg.write_text(
                json.dumps({"tables": [{**t, "file": str(files[t["name"]])} for t in DEFAULTS_TABLES]})
            )
            wall, report, rss = run(pg, "bench", cfg)
            rows = sum(t["duckdb_rows"] for t in report["tables"])
            print(
                f"first run:  {rows:,} rows copied and verified in {wall:.1f} s = {rows / wall:,.0f} rows/s;"
                f" script peak RSS {rss / 1024:.0f} MiB"
            )
            wall2, report2, _ = run(pg, "bench", cfg)
            written = sum(t["inserted"] + t["updated"] for t in report2["tables"])
            print(f"re-run:     {wall2:.1f} s, rows written {written}")
    finally:
        pg.cleanup()


if __name__ == "__main__":
    main()
