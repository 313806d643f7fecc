#!/usr/bin/env python3
"""The seed's DuckDB side, for the legacy scenario (runs in the migration venv).

  seed   --data DIR --players N --items M [--count-column C]
         create the two files with known rows (once); the player count column is C
         ("count", as the live server's files call it, by default)
  write  --file F --kind player_counts|items --interval S   what the old services do:
         every S seconds open the file, write (a new player count at the local time, or
         touch an item), close it. Bounded by --max-runtime.

Known rows (tests/test_legacy.py recomputes them): player count i (0 <= i < N) is at
2025-06-01 00:00 + i minutes (naive local time, UTC here) with 50000 + (i * 7919) % 40000
players; item i (0 <= i < M) has id 900000 + i, value i * 11, lowalch 2 * i, highalch 3 * i
and limit 100 + i except every 7th, which has no limit.
"""

import argparse
import random
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

T0 = datetime(2025, 6, 1)


def seed(data: Path, players: int, items: int, count_column: str = "count") -> None:
    data.mkdir(parents=True, exist_ok=True)
    pc = data / "player_counts.duckdb"
    if not pc.exists():
        with duckdb.connect(str(pc)) as con:
            con.execute(
                f'CREATE TABLE player_counts ("timestamp" TIMESTAMP PRIMARY KEY, "{count_column}" INTEGER)'
            )
            con.executemany(
                "INSERT INTO player_counts VALUES (?, ?)",
                [(T0 + timedelta(minutes=i), 50000 + (i * 7919) % 40000) for i in range(players)],
            )
    it = data / "items.duckdb"
    if not it.exists():
        with duckdb.connect(str(it)) as con:
            con.execute(
                "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR, examine VARCHAR, members BOOLEAN,"
                ' lowalch INTEGER, highalch INTEGER, "limit" INTEGER, value INTEGER, icon VARCHAR)'
            )
            con.executemany(
                "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        900000 + i,
                        f"Legacy item {i}",
                        f"An old item, number {i}.",
                        i % 2 == 0,
                        2 * i,
                        3 * i,
                        None if i % 7 == 0 else 100 + i,
                        i * 11,
                        f"Legacy_item_{i}.png",
                    )
                    for i in range(items)
                ],
            )


def write(path: Path, kind: str, interval: float, max_runtime: float) -> None:
    deadline = time.monotonic() + max_runtime
    while time.monotonic() < deadline:
        with duckdb.connect(str(path)) as con:
            if kind == "player_counts":
                now = datetime.now().replace(microsecond=0)  # naive local time, like the seed
                con.execute(
                    "INSERT INTO player_counts VALUES (?, ?) ON CONFLICT DO NOTHING",
                    [now, random.randint(40000, 120000)],  # noqa: S311  (test data)
                )
            else:
                con.execute("UPDATE items SET examine = examine WHERE id = 900001")
        time.sleep(interval)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--players", type=int, required=True)
    s.add_argument("--items", type=int, required=True)
    s.add_argument("--count-column", default="count")
    w = sub.add_parser("write")
    w.add_argument("--file", type=Path, required=True)
    w.add_argument("--kind", choices=["player_counts", "items"], required=True)
    w.add_argument("--interval", type=float, default=5.0)
    w.add_argument("--max-runtime", type=float, default=4 * 3600)
    args = parser.parse_args()
    if args.cmd == "seed":
        seed(args.data, args.players, args.items, args.count_column)
    else:
        write(args.file, args.kind, args.interval, args.max_runtime)


if __name__ == "__main__":
    main()
