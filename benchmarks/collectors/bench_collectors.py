#!/usr/bin/env python3
"""Collectors benchmark: prints figures (no asserts). Run from the repository root as root
(it starts a throwaway PostgreSQL as the postgres user, like the tests):

    .venv/bin/python benchmarks/collectors/bench_collectors.py [--quick]

1. A full ~4,000-item 5-minute snapshot parsed (validate.window) and committed (ledger row +
   rows in one transaction): median and p90 over many windows, COPY staging vs execute_values.
2. Bulk back-fill rows/s (window by window, as the collector does) and its ratio to one raw
   COPY of the same rows into an empty table.
3. Resident memory of each collector (and the dashboard) after 10 cycles: RSS (each process's
   resident pages, shared libraries counted in every process) and PSS (shared pages divided
   among the processes sharing them: the sum is what the seven take together).
4. Seed 003's target, "1000 inserts/s with p99 < 50 ms", through PgBouncer (transaction
   pooling): an open-loop 1000/s schedule of single-row INSERT transactions from 4 threads;
   latency is measured from each insert's scheduled time (no coordinated omission).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "collectors"))
sys.path.insert(0, str(ROOT / "files" / "collectors"))
sys.path.insert(0, str(ROOT / "files" / "osrs_standin"))

import osrs_standin  # noqa: E402
from collectors_support import (  # noqa: E402
    COLLECTOR_PASSWORD,
    READONLY_PASSWORD,
    Launcher,
    start_standin,
)
from gept_collectors import config, db, validate  # noqa: E402
from gept_collectors.metrics import CollectorMetrics  # noqa: E402
from gept_collectors.shutdown import Shutdown  # noqa: E402
from gept_collectors.windows import PRICE_COLUMNS  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from support.net import free_port, wait_until  # noqa: E402
from support.pg import PgCluster  # noqa: E402

MIGRATIONS = sorted((ROOT / "roles" / "timescaledb" / "files" / "migrations").glob("*.sql"))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def setup_db(pg: PgCluster, name: str) -> None:
    with closing(pg.connect()) as conn, conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = 'gept_collector'")
        if not cur.fetchone():
            cur.execute(f"CREATE ROLE gept_collector LOGIN PASSWORD '{COLLECTOR_PASSWORD}'")
            cur.execute(f"CREATE ROLE gept_readonly LOGIN PASSWORD '{READONLY_PASSWORD}'")
    with closing(pg.connect(name)) as conn, conn.cursor() as cur:
        for m in MIGRATIONS:
            cur.execute(m.read_text())
        cur.execute("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO gept_collector")
        cur.execute("GRANT UPDATE ON items TO gept_collector")
        cur.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO gept_readonly")


def database(pg: PgCluster, name: str, method: str, port: int | None = None) -> db.Database:
    env = {
        "GEPT_DB_HOST": "127.0.0.1",
        "GEPT_DB_PORT": str(port or pg.port),
        "GEPT_DB_NAME": name,
        "GEPT_DB_PASSWORD": COLLECTOR_PASSWORD,
        "GEPT_DB_SSLMODE": "disable",
        "GEPT_DB_WRITE_METHOD": method,
    }
    settings = config.load("fivemin", env)
    return db.Database(settings, CollectorMetrics("fivemin", True, registry=CollectorRegistry()), Shutdown())


def snapshots(count: int) -> list[bytes]:
    """Full snapshots: every tradeable item traded in the window (~4,000 items)."""
    # The standin's hourly activity makes nearly every item trade: ~4,000 items per window.
    market = osrs_standin.Market(
        seed=7, items=4300, mapping_items=4650, window_5m=300, window_1h=3600, publish_delay=0
    )
    start = (int(time.time()) // 3600 - count - 2) * 3600
    out = []
    for k in range(count):
        doc = market.window_data("1h", start + k * 3600)
        out.append(json.dumps(doc, separators=(",", ":")).encode())
    return out


def bench_snapshot(
    pg: PgCluster, bodies: list[bytes], method: str, port: int | None = None, fresh: bool = True
) -> dict[str, Any]:
    """`fresh`: as the window collector writes a window whose ledger row it just added (one
    direct COPY under a savepoint); otherwise the COPY-staging + ON CONFLICT path."""
    name = f"bench_snap_{method}_{'pool' if port else 'direct'}_{'fresh' if fresh else 'staged'}"
    setup_db(pg, name)
    database_ = database(pg, name, method, port)
    parse_t, total_t, items = [], [], []
    for body in bodies:
        t0 = time.perf_counter()
        start, rows = validate.window(body, 300)
        t1 = time.perf_counter()

        def write(cur: Any, start: int = start, rows: list = rows) -> int:
            db.record_window(cur, "5m", validate.utc(start), len(rows))
            return database_.insert(cur, "price_data_5min", PRICE_COLUMNS, rows, fresh=fresh)

        inserted = database_.run(write)
        t2 = time.perf_counter()
        if inserted != len(rows):
            raise RuntimeError(f"window {start}: inserted {inserted} of {len(rows)} rows")
        parse_t.append(t1 - t0)
        total_t.append(t2 - t0)
        items.append(len(rows))
    database_.close()
    return {
        "method": method + (" direct-COPY" if fresh and method == "copy" else ""),
        "via": "pgbouncer" if port else "direct",
        "windows": len(bodies),
        "items_median": statistics.median(items),
        "parse_ms_median": 1000 * statistics.median(parse_t),
        "total_ms_median": 1000 * statistics.median(total_t),
        "total_ms_p90": 1000 * pct(total_t, 90),
    }


def bench_backfill(pg: PgCluster, bodies: list[bytes]) -> dict[str, Any]:
    name = "bench_backfill"
    setup_db(pg, name)
    database_ = database(pg, name, "copy")
    parsed = [validate.window(b, 300) for b in bodies]
    t0 = time.perf_counter()
    total = 0
    for start, rows in parsed:

        def write(cur: Any, start: int = start, rows: list = rows) -> int:
            db.record_window(cur, "5m", validate.utc(start), len(rows))
            return database_.insert(cur, "price_data_5min", PRICE_COLUMNS, rows, fresh=True)

        total += database_.run(write)
    backfill_s = time.perf_counter() - t0
    database_.close()
    all_rows = [r for _, rows in parsed for r in rows]
    with closing(pg.connect(name)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE raw_copy (LIKE price_data_5min INCLUDING ALL)")
        buf = db.copy_buffer(all_rows)
        t0 = time.perf_counter()
        cur.copy_expert(f"COPY raw_copy ({', '.join(PRICE_COLUMNS)}) FROM STDIN", buf)
        raw_s = time.perf_counter() - t0
    backfill_rate, raw_rate = total / backfill_s, len(all_rows) / raw_s
    return {
        "rows": total,
        "windows": len(parsed),
        "backfill_rows_per_s": backfill_rate,
        "raw_copy_rows_per_s": raw_rate,
        "ratio_to_raw_copy": backfill_rate / raw_rate,
    }


def pss_mib(pid: int) -> float:
    """Proportional set size of a process, MiB (/proc/PID/smaps_rollup)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_memory(pg: PgCluster, tmp: Path) -> dict[str, tuple[float, float]]:
    name = "bench_memory"
    setup_db(pg, name)
    standin = start_standin(tmp, 1, 3)
    launcher = Launcher(pg, tmp)
    out: dict[str, tuple[float, float]] = {}
    try:
        procs = {}
        for collector in ("latest", "fivemin", "hourly", "news", "playercount", "items"):
            interval = 3 if collector == "hourly" else 1
            procs[collector] = launcher.start(
                collector,
                name,
                standin,
                interval=interval,
                GEPT_FIVEMIN_LOOKBACK_SECONDS=10,
                GEPT_HOURLY_LOOKBACK_SECONDS=30,
            )
        for collector, proc in procs.items():
            key = f"gept_{collector}_duration_seconds_count"
            wait_until(lambda p=proc, k=key: p.metric(k) >= 10, 120, what=f"{collector}: 10 cycles")
        dash = launcher.start(
            "dashboard",
            name,
            None,
            GEPT_DASHBOARD_DB_USER="gept_readonly",
            GEPT_DASHBOARD_DB_PASSWORD=READONLY_PASSWORD,
            GEPT_DASHBOARD_CACHE_SECONDS=0,
            GEPT_DASHBOARD_COLLECTORS=",".join(
                f"{c}=http://127.0.0.1:{p.metrics_port}/metrics" for c, p in procs.items()
            ),
        )
        for _ in range(10):
            wait_until(lambda: _get(f"http://127.0.0.1:{dash.metrics_port}/"), 15, what="dashboard page")
        # all seven measured together (PSS depends on who else shares the pages)
        for name, proc in [*procs.items(), ("dashboard", dash)]:
            rss = proc.metric("process_resident_memory_bytes") / 2**20
            out[name] = (rss, pss_mib(proc.proc.pid))
    finally:
        launcher.stop_all()
        standin.stop()
    return out


def _get(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310
            return r.status == 200
    except OSError:
        return False


class PgBouncer:
    """PgBouncer in transaction pooling mode in front of the throwaway cluster."""

    def __init__(self, pg: PgCluster, dbname: str) -> None:
        self.bin = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        self.dir = Path(tempfile.mkdtemp(prefix="gept-pgb-"))
        self.port = free_port()
        (self.dir / "users.txt").write_text(f'"gept_collector" "{COLLECTOR_PASSWORD}"\n')
        (self.dir / "pgbouncer.ini").write_text(f"""[databases]
{dbname} = host=127.0.0.1 port={pg.port} dbname={dbname}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir = {self.dir}
auth_type = plain
auth_file = {self.dir}/users.txt
pool_mode = transaction
default_pool_size = 10
max_client_conn = 100
pidfile = {self.dir}/pgbouncer.pid
logfile = {self.dir}/pgbouncer.log
""")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            for f in self.dir.iterdir():
                shutil.chown(f, "postgres")
        cmd = [self.bin, "-d", str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, timeout=30)  # noqa: S603  (fixed argv)
        wait_until(lambda: (self.dir / "pgbouncer.pid").exists(), 10, what="pgbouncer pid file")

    def stop(self) -> None:
        pidfile = self.dir / "pgbouncer.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, 15)
            wait_until(lambda: not _alive(pid), 10, what="pgbouncer exit")
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def bench_pooler_inserts(
    pg: PgCluster, bouncer: PgBouncer, name: str, rate: int, seconds: float, threads: int = 4
) -> dict[str, Any]:
    import psycopg2

    latencies: list[float] = []
    lock = threading.Lock()
    t_start = time.perf_counter() + 0.5
    per_thread = rate // threads
    errors = [0]

    def worker(n: int) -> None:
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=bouncer.port,
            dbname=name,
            user="gept_collector",
            password=COLLECTOR_PASSWORD,
            sslmode="disable",
        )
        conn.autocommit = True
        local = []
        with conn.cursor() as cur:
            total = int(per_thread * seconds)
            for i in range(total):
                due = t_start + (i + n / threads) / per_thread
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                try:
                    cur.execute(
                        'INSERT INTO player_counts ("timestamp", player_count) '
                        "VALUES (to_timestamp(%s), %s) ON CONFLICT DO NOTHING",
                        (1.7e9 + n * 1e7 + i, i),
                    )
                except psycopg2.Error:
                    errors[0] += 1
                local.append(time.perf_counter() - due)
        conn.close()
        with lock:
            latencies.extend(local)

    ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t_start
    return {
        "target_per_s": rate,
        "achieved_per_s": len(latencies) / elapsed,
        "inserts": len(latencies),
        "p50_ms": 1000 * pct(latencies, 50),
        "p99_ms": 1000 * pct(latencies, 99),
        "max_ms": 1000 * max(latencies),
        "errors": errors[0],
    }


def main() -> int:
    p = argparse.ArgumentParser(description="GePT collectors benchmark (prints figures)")
    p.add_argument("--quick", action="store_true", help="fewer windows and a shorter pooler run")
    args = p.parse_args()
    windows = 10 if args.quick else 30
    backfill_windows = 20 if args.quick else 50
    pooler_seconds = 3.0 if args.quick else 10.0
    pg = PgCluster()
    tmp = Path(tempfile.mkdtemp(prefix="gept-bench-"))
    bouncer = None
    try:
        pg.init()
        pg.start()
        print(f"# PostgreSQL {pg.bin.parent.name}, throwaway cluster (fsync off), {os.cpu_count()} CPUs")
        print("# load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        bodies = snapshots(max(windows, backfill_windows))
        setup_db(pg, "bench_pool")
        bouncer = (
            PgBouncer(pg, "bench_snap_copy_pool_fresh")
            if shutil.which("pgbouncer") or Path("/usr/sbin/pgbouncer").exists()
            else None
        )

        print("\n## 1. Full 5-minute snapshot parsed + committed (one transaction incl. ledger row)")
        for method, fresh in (("copy", True), ("copy", False), ("values", False)):
            r = bench_snapshot(pg, bodies[:windows], method, fresh=fresh)
            print(
                f"  {r['method']:18s} direct    items={r['items_median']:.0f}  parse "
                f"{r['parse_ms_median']:.1f} ms  parse+commit median {r['total_ms_median']:.1f} ms"
                f"  p90 {r['total_ms_p90']:.1f} ms"
            )
        if bouncer:
            r = bench_snapshot(pg, bodies[:windows], "copy", bouncer.port)
            print(
                f"  {r['method']:18s} pgbouncer items={r['items_median']:.0f}"
                f"  parse {r['parse_ms_median']:.1f} ms  parse+commit median {r['total_ms_median']:.1f} ms"
                f"  p90 {r['total_ms_p90']:.1f} ms"
            )

        print("\n## 2. Bulk back-fill (window by window, as the collector writes them) vs one raw COPY")
        r = bench_backfill(pg, bodies[:backfill_windows])
        print(
            f"  {r['rows']} rows in {r['windows']} windows: back-fill "
            f"{r['backfill_rows_per_s']:,.0f} rows/s, raw COPY {r['raw_copy_rows_per_s']:,.0f} rows/s,"
            f" ratio {r['ratio_to_raw_copy']:.2f}"
        )

        print("\n## 3. Resident memory after 10 cycles (MiB): RSS and PSS")
        mem = bench_memory(pg, tmp)
        for name, (rss, pss) in mem.items():
            print(f"  {name:12s} RSS {rss:6.1f}  PSS {pss:6.1f}")
        total_rss, total_pss = (sum(v[i] for v in mem.values()) for i in (0, 1))
        print(f"  {'total':12s} RSS {total_rss:6.1f}  PSS {total_pss:6.1f}")

        print("\n## 4. 1000 single-row inserts/s through PgBouncer (transaction pooling), open loop")
        if bouncer:
            bouncer.stop()
            setup_db(pg, "bench_pool")
            bouncer = PgBouncer(pg, "bench_pool")
            r = bench_pooler_inserts(pg, bouncer, "bench_pool", 1000, pooler_seconds)
            print(
                f"  target {r['target_per_s']}/s achieved {r['achieved_per_s']:.0f}/s over "
                f"{r['inserts']} inserts: p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
                f"  max {r['max_ms']:.1f} ms  errors {r['errors']}"
            )
        else:
            print("  skipped: pgbouncer not installed (scripts/setup-controller.sh installs it)")
        print("\n# load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    finally:
        if bouncer:
            bouncer.stop()
        pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
