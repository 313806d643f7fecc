#!/usr/bin/env python3
"""Compression ratio and rollup speed of the GePT schema on real PostgreSQL + TimescaleDB (full edition).

Starts a throwaway PostgreSQL 17 + TimescaleDB container (tests/support/timescaledb.py: Debian's
postgresql-17 and the timescaledb-2-postgresql-17 package scripts/build-timescaledb.sh built)
and removes it at the end, or runs against a server given by --dsn. The data is realistic
synthetic 5-minute data:
per-item random-walk prices (log-uniform price levels 1 gp .. 10M gp, per-item volatility and
spread), per-item trading probability (so rows are missing and one side is NULL as in the
real /5m API), exponential volumes. The data starts on a 7-day chunk boundary.

Each variant (chunk interval, segmentby, orderby, compress_chunk_time_interval, sparse
indexes, row layout) loads the same rows into a hypertable with the role's indexes,
measures hypertable_detailed_size() (heap + TOAST + every index, i.e. what the disk holds)
before and after compressing every chunk, and prints the ratio. Then the role's own schema
and continuous aggregates (rendered by the role's task file) get the same rows, and a
24-hour per-item OHLC query is timed against raw rows and against each aggregate.

    .venv/bin/python benchmarks/timescaledb/compression_benchmark.py [--items 4000] [--days 7]
        [--variants 0,2] [--no-ohlc] [--dsn "host=... dbname=... user=... password=..."]

Prints Markdown tables (the figures in docs/benchmarks.md come from this).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from support import timescaledb  # noqa: E402

# The benchmark server: memory for 5M-row loads and sorts; no durability (sizes and query
# times do not depend on it); no background jobs while measuring.
BENCH_SETTINGS = {
    "shared_buffers": "2GB",
    "work_mem": "64MB",
    "maintenance_work_mem": "1GB",
    "max_wal_size": "8GB",
}

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


@dataclass(frozen=True)
class Variant:
    """One way of storing and compressing the same rows."""

    name: str
    chunk: str = "7 days"
    segmentby: str = "item_id"
    orderby: str = '"timestamp" DESC'
    # compress_chunk_time_interval: adjacent chunks merged into one compressed chunk
    compress_interval: str | None = None
    # timescaledb.compress_index (sparse indexes); None leaves TimescaleDB's automatic ones
    sparse_index: str | None = None
    # session settings while compressing, e.g. timescaledb.auto_sparse_indexes
    settings: dict[str, str] = field(default_factory=dict)
    # "" = rows as the API gives them; "dense" = every item x window (NULL/0 where no trade)
    layout: str = ""


ROLE = Variant("role default: 7-day chunks, segmentby item_id, orderby timestamp DESC")
# Consecutive variants with the same chunk interval and layout share one load: the table is
# decompressed and compressed again with the next settings (the "before" size is the load's).
VARIANTS: list[Variant] = [
    ROLE,
    Variant("orderby timestamp ASC", orderby='"timestamp"'),
    Variant(
        "no segmentby, orderby item_id, timestamp DESC", segmentby="", orderby='item_id, "timestamp" DESC'
    ),
    Variant("no automatic sparse indexes", settings={"timescaledb.auto_sparse_indexes": "off"}),
    Variant(
        "bloom sparse indexes on both prices", sparse_index="bloom(avg_high_price), bloom(avg_low_price)"
    ),
    Variant(
        "batches of up to 32,767 rows instead of 1,000 (timescaledb.compression_batch_size_limit)",
        settings={"timescaledb.compression_batch_size_limit": "32767"},
    ),
    Variant("1-day chunks", chunk="1 day"),
    Variant(
        "1-day chunks merged into 7-day compressed chunks (compress_chunk_time_interval)",
        chunk="1 day",
        compress_interval="7 days",
    ),
    Variant(
        "dense: a row for every item x window (NULL prices, 0 volumes when nothing traded)", layout="dense"
    ),
]


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


def sizes(conn: Any, table: str) -> dict[str, int]:
    """hypertable_detailed_size: heap, indexes, TOAST and their total, over every chunk."""
    heap, index, toast, total = q(
        conn,
        "SELECT table_bytes, index_bytes, toast_bytes, total_bytes FROM hypertable_detailed_size(%s)",
        (table,),
    )[0]
    return {"heap": heap, "index": index, "toast": toast, "total": total}


# Every traded value, so a compressed table can be compared with the generated rows (the dense
# layout adds only NULL prices and 0 volumes, which leave these sums as they are).
CHECKSUM = """
    SELECT count(avg_high_price) + count(avg_low_price), sum(avg_high_price), sum(avg_low_price),
           sum(high_price_volume), sum(low_price_volume),
           sum(extract(epoch FROM "timestamp") * item_id) FILTER (WHERE avg_high_price IS NOT NULL)
      FROM {table}"""


def load_table(conn: Any, v: Variant) -> tuple[float, dict[str, int]]:
    """A fresh bench_v with v's chunk interval and layout, loaded; (seconds, sizes)."""
    q(conn, "DROP TABLE IF EXISTS bench_v")
    # The role's schema of price_data_5min (migration 001): primary key + timestamp index.
    q(
        conn,
        """
        CREATE TABLE bench_v (
            item_id integer NOT NULL, "timestamp" timestamptz NOT NULL,
            avg_high_price bigint, high_price_volume bigint NOT NULL DEFAULT 0,
            avg_low_price bigint, low_price_volume bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (item_id, "timestamp"))""",
    )
    q(conn, 'CREATE INDEX ON bench_v ("timestamp" DESC)')
    q(conn, "SELECT create_hypertable('bench_v', by_range('timestamp', %s::interval))", (v.chunk,))
    t0 = time.perf_counter()
    if v.layout == "dense":
        q(conn, DENSE_INSERT)
    else:
        q(conn, 'INSERT INTO bench_v SELECT * FROM bench_rows ORDER BY "timestamp", item_id')
    q(conn, "VACUUM ANALYZE bench_v")
    return time.perf_counter() - t0, sizes(conn, "bench_v")


def load_variant(conn: Any, v: Variant, loaded: dict[str, Any]) -> dict[str, Any]:
    """Compress the rows with v's settings; `loaded` remembers the current table's load."""
    if loaded.get("key") == (v.chunk, v.layout):
        # Same rows, same chunks: back to uncompressed, settings cleared.
        q(conn, "SELECT count(decompress_chunk(c, if_compressed => true)) FROM show_chunks('bench_v') c")
        q(conn, "ALTER TABLE bench_v SET (timescaledb.compress = false)")
        load_s, before = 0.0, loaded["before"]
    else:
        load_s, before = load_table(conn, v)
        loaded.update(key=(v.chunk, v.layout), before=before)
    options = ["timescaledb.compress", f"timescaledb.compress_orderby = '{v.orderby}'"]
    if v.segmentby:
        options.append(f"timescaledb.compress_segmentby = '{v.segmentby}'")
    if v.compress_interval:
        options.append(f"timescaledb.compress_chunk_time_interval = '{v.compress_interval}'")
    if v.sparse_index:
        options.append(f"timescaledb.compress_index = '{v.sparse_index}'")
    q(conn, f"ALTER TABLE bench_v SET ({', '.join(options)})")
    for name, setting in v.settings.items():
        q(conn, "SELECT set_config(%s, %s, false)", (name, setting))
    t0 = time.perf_counter()
    # In time order: with compress_chunk_time_interval a chunk is merged into the compressed
    # chunk before it.
    chunks = q(
        conn,
        "SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'bench_v' ORDER BY range_start",
    )
    for (chunk,) in chunks:
        q(conn, "SELECT compress_chunk(%s::regclass)", (chunk,))
    compress_s = time.perf_counter() - t0
    for name in v.settings:
        q(conn, f"RESET {name}")
    q(conn, "VACUUM ANALYZE bench_v")
    after = sizes(conn, "bench_v")
    rows = q(conn, "SELECT count(*) FROM bench_v")[0][0]
    chunks = q(conn, "SELECT count(*) FROM show_chunks('bench_v')")[0][0]
    intact = q(conn, CHECKSUM.format(table="bench_v"))[0] == q(conn, CHECKSUM.format(table="bench_rows"))[0]
    return {
        "rows": rows,
        "chunks": chunks,
        "before": before,
        "after": after,
        "ratio": before["total"] / after["total"],
        "intact": intact,
        "load_s": load_s,
        "compress_s": compress_s,
        "columns": column_bytes(conn),
    }


def column_bytes(conn: Any) -> dict[str, int]:
    """Bytes each column takes in bench_v's compressed chunks (where the compressed size goes)."""
    tables = q(
        conn,
        "SELECT s.compress_relid::regclass::text FROM _timescaledb_catalog.compression_settings s "
        "JOIN _timescaledb_catalog.chunk c ON c.relid = s.relid "
        "JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id "
        "WHERE h.table_name = 'bench_v' AND s.compress_relid IS NOT NULL",
    )
    cols = [
        "item_id",
        "timestamp",
        "avg_high_price",
        "high_price_volume",
        "avg_low_price",
        "low_price_volume",
    ]
    total = dict.fromkeys(cols, 0)
    for (table,) in tables:
        sums = ", ".join(f'coalesce(sum(pg_column_size("{c}")), 0)' for c in cols)
        for c, v in zip(cols, q(conn, f"SELECT {sums} FROM {table}")[0], strict=True):  # noqa: S608
            total[c] += int(v)
    return total


def render_role_sql(out: Path) -> dict[str, str]:
    """The role's SQL for the full edition, rendered by its own task file (as the tests do)."""
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


RAW_OHLC = """
    SELECT item_id, first(avg_high_price, "timestamp"), max(avg_high_price), min(avg_low_price),
           last(avg_low_price, "timestamp"), sum(high_price_volume), sum(low_price_volume), count(*)
      FROM price_data_5min
     WHERE "timestamp" >= %(end)s::timestamptz - interval '24 hours' AND "timestamp" < %(end)s::timestamptz
     GROUP BY item_id ORDER BY item_id"""
AGG_OHLC = """
    SELECT item_id, first(open_high_price, bucket), max(max_high_price), min(min_low_price),
           last(close_low_price, bucket), sum(high_price_volume), sum(low_price_volume), sum(sample_count)
      FROM VIEW
     WHERE bucket >= %(end)s::timestamptz - interval '24 hours' AND bucket < %(end)s::timestamptz
     GROUP BY item_id ORDER BY item_id"""


def timed(conn: Any, sql: str, params: dict[str, Any], runs: int) -> tuple[float, list[tuple]]:
    """Median wall time (client side, rows fetched) of `runs` runs after one warm-up run."""
    result = q(conn, sql, params)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = q(conn, sql, params)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def ohlc_figures(conn: Any, end: str, runs: int = 7) -> list[tuple[str, float, int, bool]]:
    """Role schema + role SQL; 24-hour per-item OHLC on raw rows vs the aggregates."""
    q(conn, "DROP TABLE IF EXISTS bench_v")
    conn.autocommit = False
    gept_db.migrate(conn, REPO / "roles/timescaledb/files/migrations")
    conn.autocommit = True
    with tempfile.TemporaryDirectory() as tmp:
        sql = render_role_sql(Path(tmp))
    for name in ("10-hypertables.sql", "40-aggregates.sql"):
        gept_db.apply_sql(conn, sql[name])
    q(conn, 'INSERT INTO price_data_5min SELECT * FROM bench_rows ORDER BY "timestamp", item_id')
    q(conn, "VACUUM ANALYZE price_data_5min")
    for view in ("price_data_hourly", "price_data_daily"):
        q(conn, f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
        q(conn, f"ANALYZE {view}")
    params = {"end": end}
    raw_s, raw = timed(conn, RAW_OHLC, params, runs)
    out = [("raw rows (price_data_5min, uncompressed)", raw_s, len(raw), True)]
    for view in ("price_data_hourly", "price_data_daily"):
        s, agg = timed(conn, AGG_OHLC.replace("VIEW", view), params, runs)
        out.append((f"continuous aggregate {view}", s, len(agg), agg == raw))
    q(
        conn,
        "ALTER TABLE price_data_5min SET (timescaledb.compress, timescaledb.compress_segmentby = 'item_id', "
        "timescaledb.compress_orderby = '\"timestamp\" DESC')",
    )
    q(
        conn,
        "SELECT count(compress_chunk(c, if_not_compressed => true)) FROM show_chunks('price_data_5min') c",
    )
    q(conn, "VACUUM ANALYZE price_data_5min")
    s, comp = timed(conn, RAW_OHLC, params, runs)
    out.append(("raw rows (price_data_5min, compressed)", s, len(comp), comp == raw))
    return out


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def mb(n: int) -> str:
    return f"{n / 2**20:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dsn",
        help="libpq connection string of a server with TimescaleDB (TSL); default: a throwaway container",
    )
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument(
        "--variants", default="all", help="all, none, or comma-separated indexes into the variant list"
    )
    parser.add_argument("--no-ohlc", action="store_true", help="skip the aggregate-vs-raw OHLC timing")
    args = parser.parse_args()

    if args.dsn:
        return run(args, args.dsn)
    name = os.environ.get("GEPT_BENCH_CONTAINER", f"gept-bench-timescaledb-{os.getpid()}")
    print(f"Starting {name} (load average {loadavg()})", flush=True)
    try:
        server = timescaledb.start(name, BENCH_SETTINGS)
    except timescaledb.Unavailable as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        print(f"{server.version} ready in {server.started_s:.0f} s", flush=True)
        return run(args, server.dsn())
    finally:
        timescaledb.stop(name)


def run(args: argparse.Namespace, dsn: str) -> int:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    license_ = q(conn, "SELECT current_setting('timescaledb.license')")[0][0]
    if license_ != "timescale":
        print(
            f"TimescaleDB license is {license_!r}: compression needs the full (TSL) edition", file=sys.stderr
        )
        return 1
    version = q(
        conn,
        "SELECT current_setting('server_version') || ', TimescaleDB ' || extversion "
        "FROM pg_extension WHERE extname = 'timescaledb'",
    )[0][0]
    print(f"PostgreSQL {version}; load average {loadavg()}")
    # Chunks are aligned to multiples of the interval since the Unix epoch.
    start = q(
        conn,
        "SELECT to_timestamp(floor(extract(epoch FROM now()) / 604800) * 604800) - make_interval(days => %s)",
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
    if args.variants == "all":
        chosen = VARIANTS
    elif args.variants == "none":
        chosen = []
    else:
        chosen = [VARIANTS[int(i)] for i in args.variants.split(",")]
    print(
        "\n| # | variant | rows | chunks after | before MB (heap+index+toast) | after MB (heap+index+toast) "
        "| ratio | load s | compress s | data intact |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    splits = []
    loaded: dict[str, Any] = {}
    for v in chosen:
        r = load_variant(conn, v, loaded)
        b, a = r["before"], r["after"]
        load = f"{r['load_s']:.0f}" if r["load_s"] else "(same load)"
        print(
            f"| {VARIANTS.index(v)} | {v.name} | {r['rows']} | {r['chunks']} | {mb(b['total'])} "
            f"({mb(b['heap'])}+{mb(b['index'])}+{mb(b['toast'])}) | {mb(a['total'])} "
            f"({mb(a['heap'])}+{mb(a['index'])}+{mb(a['toast'])}) | **{r['ratio']:.1f}:1** | "
            f"{load} | {r['compress_s']:.0f} | {r['intact']} |",
            flush=True,
        )
        splits.append((VARIANTS.index(v), r["columns"]))
    print("\nCompressed bytes per column (MB, pg_column_size over the compressed chunks):")
    for i, cols in splits:
        print(f"  #{i}: " + ", ".join(f"{c} {mb(b)}" for c, b in cols.items()))
    print(f"load average {loadavg()}", flush=True)
    if not args.no_ohlc:
        end = (start + __import__("datetime").timedelta(days=args.days)).isoformat()
        print(f"\n24-hour per-item OHLC ending {end}, median of 7 runs after a warm-up:")
        print("\n| source | median ms | items | same OHLC as raw rows |")
        print("|---|---:|---:|---|")
        figures = ohlc_figures(conn, end)
        for label, s, items, same in figures:
            print(f"| {label} | {s * 1000:.1f} | {items} | {same} |")
        raw_s = figures[0][1]
        for label, s, _, _ in figures[1:]:
            print(f"raw rows (uncompressed) / {label}: {raw_s / s:.1f}x")
        print(f"load average {loadavg()}")
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
