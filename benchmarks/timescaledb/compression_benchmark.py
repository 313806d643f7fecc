#!/usr/bin/env python3
"""Compression ratio and rollup speed of the GePT schema on the full TimescaleDB edition.

Runs against PGlite with TimescaleDB incl. TSL (tests/pglite), on realistic synthetic
5-minute data: per-item random-walk prices (log-uniform price levels 1 gp .. 10M gp, per-item
volatility and spread), per-item trading probability (so rows are missing and one side is NULL
as in the real /5m API), exponential volumes. The data starts on a 7-day chunk boundary.

Each variant loads the same rows into a hypertable, measures hypertable_size() (heap + TOAST
+ indexes, i.e. what the disk holds) before and after compressing every chunk, and prints
the ratio. Then the role's own continuous aggregate (rendered by the role's task file) is
refreshed and a 24-hour per-item OHLC query is timed against it and against raw rows.

    python benchmarks/timescaledb/compression_benchmark.py [--items 4000] [--days 7]

Prints a Markdown table (the figures in docs/benchmarks.md come from this).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "pglite"))
import pglite_server  # noqa: E402

_spec = importlib.util.spec_from_file_location("gept_db", REPO / "roles/timescaledb/files/gept_db.py")
if _spec is None or _spec.loader is None:
    raise ImportError("roles/timescaledb/files/gept_db.py not found")
gept_db = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gept_db)

GENERATE = """
SELECT setseed(0.4242);
DROP TABLE IF EXISTS bench_items, bench_rows;
CREATE TABLE bench_items AS
SELECT i AS item_id,
       exp(random() * ln(1e7)) + 1         AS base_price,
       0.0005 + random() * 0.006           AS sigma,
       0.005 + random() * 0.04             AS spread,
       sqrt(random())                      AS p_trade,
       exp(random() * ln(5000))            AS vol_mean
  FROM generate_series(1, %(items)s) AS i;
CREATE TABLE bench_rows AS
WITH grid AS (
    SELECT it.item_id, ts, it.base_price, it.sigma, it.spread, it.p_trade, it.vol_mean,
           (random() + random() + random() - 1.5) * 2 * it.sigma AS step,
           random() AS r_present, random() AS r_high, random() AS r_low,
           random() AS r_vh, random() AS r_vl, random() AS r_jit
      FROM bench_items it,
           generate_series(%(start)s::timestamptz,
                           %(start)s::timestamptz + make_interval(days => %(days)s) - interval '5 minutes',
                           interval '5 minutes') AS ts
), walk AS (
    SELECT g.*, base_price * exp(sum(step) OVER (PARTITION BY item_id ORDER BY ts)) AS mid
      FROM grid g
)
SELECT item_id, ts AS "timestamp",
       CASE WHEN r_high < 0.5 + p_trade / 2
            THEN round(mid * (1 + spread / 2) * (1 + (r_jit - 0.5) * 0.004))::bigint END AS avg_high_price,
       CASE WHEN r_high < 0.5 + p_trade / 2 THEN floor(-ln(1 - r_vh) * vol_mean)::bigint + 1 ELSE 0 END
            AS high_price_volume,
       CASE WHEN r_low < 0.5 + p_trade / 2
            THEN round(mid * (1 - spread / 2) * (1 - (r_jit - 0.5) * 0.004))::bigint END AS avg_low_price,
       CASE WHEN r_low < 0.5 + p_trade / 2 THEN floor(-ln(1 - r_vl) * vol_mean)::bigint + 1 ELSE 0 END
            AS low_price_volume
  FROM walk
 WHERE r_present < p_trade;
"""

# name -> (column types, chunk interval, orderby, row layout: "" = rows as the API gives them,
# "dense" = every item x window, filled with NULL/0 where the API has no row)
VARIANTS: dict[str, tuple[str, str, str, str]] = {
    "role default: bigint, 7-day chunks, segmentby item_id, orderby timestamp DESC": (
        "bigint",
        "7 days",
        '"timestamp" DESC',
        "",
    ),
    "orderby timestamp ASC": ("bigint", "7 days", '"timestamp"', ""),
    "integer prices/volumes": ("integer", "7 days", '"timestamp" DESC', ""),
    "1-day chunks": ("bigint", "1 day", '"timestamp" DESC', ""),
    "dense: a row for every item x window (NULL prices, 0 volumes when nothing traded)": (
        "bigint",
        "7 days",
        '"timestamp" DESC',
        "dense",
    ),
}


DENSE_INSERT = """
INSERT INTO bench_v
SELECT g.item_id, g.ts, r.avg_high_price, coalesce(r.high_price_volume, 0),
       r.avg_low_price, coalesce(r.low_price_volume, 0)
  FROM (SELECT i.item_id, ts
          FROM bench_items i,
               generate_series((SELECT min("timestamp") FROM bench_rows),
                               (SELECT max("timestamp") FROM bench_rows), interval '5 minutes') AS ts) g
  LEFT JOIN bench_rows r ON r.item_id = g.item_id AND r."timestamp" = g.ts
 ORDER BY g.ts, g.item_id
"""


def q(conn: Any, sql: str, params: Any = None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def load_variant(conn: Any, name: str, types: str, chunk: str, orderby: str, layout: str) -> dict[str, Any]:
    q(conn, "DROP TABLE IF EXISTS bench_v")
    q(
        conn,
        f"""
        CREATE TABLE bench_v (
            item_id integer NOT NULL, "timestamp" timestamptz NOT NULL,
            avg_high_price {types}, high_price_volume {types} NOT NULL DEFAULT 0,
            avg_low_price {types}, low_price_volume {types} NOT NULL DEFAULT 0,
            PRIMARY KEY (item_id, "timestamp"))""",
    )
    q(conn, 'CREATE INDEX ON bench_v ("timestamp" DESC)')
    q(conn, "SELECT create_hypertable('bench_v', by_range('timestamp', %s::interval))", (chunk,))
    if layout == "dense":
        q(conn, DENSE_INSERT)
    else:
        q(conn, 'INSERT INTO bench_v SELECT * FROM bench_rows ORDER BY "timestamp", item_id')
    q(conn, "VACUUM ANALYZE bench_v")
    before = q(conn, "SELECT hypertable_size('bench_v')")[0][0]
    q(
        conn,
        f"ALTER TABLE bench_v SET (timescaledb.compress, timescaledb.compress_segmentby = 'item_id', "
        f"timescaledb.compress_orderby = '{orderby}')",
    )
    t0 = time.perf_counter()
    q(conn, "SELECT count(compress_chunk(c)) FROM show_chunks('bench_v') c")
    seconds = time.perf_counter() - t0
    after = q(conn, "SELECT hypertable_size('bench_v')")[0][0]
    rows = q(conn, "SELECT count(*) FROM bench_v")[0][0]
    columns = column_bytes(conn)
    chunks = q(conn, "SELECT count(*) FROM show_chunks('bench_v')")[0][0]
    return {
        "variant": name,
        "rows": rows,
        "chunks": chunks,
        "before": before,
        "after": after,
        "ratio": before / after,
        "seconds": seconds,
        "columns": columns,
    }


def column_bytes(conn: Any) -> dict[str, int]:
    """Bytes each column takes in bench_v's compressed chunks (where the compressed size goes)."""
    tables = q(
        conn,
        "SELECT format('%I.%I', cc.schema_name, cc.table_name) FROM _timescaledb_catalog.chunk ch "
        "JOIN _timescaledb_catalog.chunk cc ON cc.id = ch.compressed_chunk_id "
        "JOIN _timescaledb_catalog.hypertable h ON h.id = ch.hypertable_id WHERE h.table_name = 'bench_v'",
    )
    cols = ["timestamp", "avg_high_price", "high_price_volume", "avg_low_price", "low_price_volume"]
    total = dict.fromkeys(cols, 0)
    for (table,) in tables:
        sums = ", ".join(f'coalesce(sum(pg_column_size("{c}")), 0)' for c in cols)
        for c, v in zip(cols, q(conn, f"SELECT {sums} FROM {table}")[0], strict=True):  # noqa: S608
            total[c] += int(v)
    return total


def render_role_sql(out: Path) -> dict[str, str]:
    extra = out / "vars.json"
    extra.write_text(
        json.dumps(
            {
                "timescaledb_edition": "timescale",
                "timescaledb_sql_dir": str(out),
                "ansible_python_interpreter": sys.executable,
            }
        )
    )
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.timer",
    }
    subprocess.run(  # noqa: S603 - fixed argv
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            "localhost,",
            str(REPO / "tests/timescaledb/render_sql.yml"),
            "-e",
            f"@{REPO / 'group_vars/all/main.yml'}",
            "-e",
            f"@{extra}",
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {p.name: p.read_text() for p in out.glob("*.sql")}


def ohlc_figures(conn: Any, start: str, days: int, runs: int = 5) -> dict[str, float]:
    """Role schema + role SQL; time a 24-hour per-item OHLC query on raw rows vs the aggregate."""
    q(conn, "DROP TABLE IF EXISTS bench_v")
    conn.autocommit = False
    gept_db.migrate(conn, REPO / "roles/timescaledb/files/migrations")
    conn.autocommit = True
    with tempfile.TemporaryDirectory() as tmp:
        sql = render_role_sql(Path(tmp))
    for name in ("10-hypertables.sql", "40-aggregates.sql"):
        gept_db.apply_sql(conn, sql[name])
    q(conn, "INSERT INTO price_data_5min SELECT * FROM bench_rows")
    q(conn, "CALL refresh_continuous_aggregate('price_data_hourly', NULL, NULL)")
    q(conn, "VACUUM ANALYZE price_data_5min")
    params = {"end": start, "days": days}
    day_end = "(%(end)s::timestamptz + make_interval(days => %(days)s))"
    raw_sql = """
        SELECT item_id, first(avg_high_price, "timestamp"), max(avg_high_price),
               min(avg_high_price), last(avg_high_price, "timestamp"), sum(high_price_volume)
          FROM price_data_5min
         WHERE "timestamp" >= DAY_END - interval '24 hours' AND "timestamp" < DAY_END
         GROUP BY item_id""".replace("DAY_END", day_end)
    agg_sql = """
        SELECT item_id, first(open_high_price, bucket), max(max_high_price),
               min(min_high_price), last(close_high_price, bucket), sum(high_price_volume)
          FROM price_data_hourly
         WHERE bucket >= DAY_END - interval '24 hours' AND bucket < DAY_END
         GROUP BY item_id""".replace("DAY_END", day_end)
    out: dict[str, float] = {}
    for label, sql_text in (("raw", raw_sql), ("aggregate", agg_sql)):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            result = q(conn, sql_text, params)
            times.append(time.perf_counter() - t0)
        out[label] = statistics.median(times)
        out[f"{label}_rows"] = len(result)
    a = sorted(q(conn, raw_sql, params))
    b = sorted(q(conn, agg_sql, params))
    out["same_ohlc"] = float(all(x[:5] == y[:5] for x, y in zip(a, b, strict=True)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--variants", default="all", help="comma-separated indexes into the variant list")
    parser.add_argument("--no-ohlc", action="store_true", help="skip the aggregate-vs-raw OHLC timing")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gept-bench-") as tmp:
        proc, port = pglite_server.start(Path(tmp) / "server.log", data_dir=Path(tmp) / "data", timeout=180)
        try:
            conn = psycopg2.connect(**pglite_server.connect_params(port))
            conn.autocommit = True
            # Chunks are aligned to multiples of the interval since the Unix epoch.
            start = q(
                conn,
                "SELECT to_timestamp(floor(extract(epoch FROM now()) / 604800) * 604800) "
                "- make_interval(days => %s)",
                (args.days,),
            )[0][0]
            start_s = start.isoformat()
            t0 = time.perf_counter()
            for statement in gept_db.split_statements(GENERATE):
                q(conn, statement, {"items": args.items, "days": args.days, "start": start_s})
            gen_s = time.perf_counter() - t0
            n = q(conn, "SELECT count(*) FROM bench_rows")[0][0]
            grid = n / (args.items * args.days * 288)
            print(
                f"Synthetic data: {args.items} items x {args.days} days from {start_s}: {n} rows "
                f"({grid:.0%} of the 5-minute grid), generated in {gen_s:.0f} s"
            )
            names = list(VARIANTS)
            chosen = names if args.variants == "all" else [names[int(i)] for i in args.variants.split(",")]
            print("\n| variant | rows | chunks | before (MB) | after (MB) | ratio | compress s |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for name in chosen:
                r = load_variant(conn, name, *VARIANTS[name])
                print(
                    f"| {name} | {r['rows']} | {r['chunks']} | {r['before'] / 2**20:.1f} | "
                    f"{r['after'] / 2**20:.2f} | {r['ratio']:.1f}:1 | {r['seconds']:.0f} |",
                    flush=True,
                )
                cols = ", ".join(f"{c} {b / 2**20:.1f}" for c, b in r["columns"].items())
                print(f"|   compressed column bytes (MB): {cols} | | | | | | |", flush=True)
            if not args.no_ohlc:
                o = ohlc_figures(conn, start_s, args.days)
                print(
                    f"\n24-hour per-item OHLC ({int(o['raw_rows'])} items), median of 5: raw rows "
                    f"{o['raw'] * 1000:.0f} ms, hourly aggregate {o['aggregate'] * 1000:.0f} ms "
                    f"({o['raw'] / o['aggregate']:.1f}x faster); identical OHLC: {bool(o['same_ohlc'])}"
                )
            conn.close()
        finally:
            pglite_server.stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
