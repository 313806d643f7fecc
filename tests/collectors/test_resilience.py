"""What the collectors keep across failures: the 1-minute buckets across a real database outage
(bounded queue, oldest dropped first), an API that stalls (a failure, not a success), the
reconnect back-off's bound, the server's own error in the log, the ledger's promise, and the
grid schedule."""

from __future__ import annotations

import logging
import random
import re
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
from collectors_support import (
    COLLECTOR_PASSWORD,
    COLLECTORS_DIR,
    Launcher,
    StandIn,
    query,
    start_standin,
)
from prometheus_client import CollectorRegistry
from support.net import wait_until
from support.pg import PgCluster
from support.roles import collectors_catalogue

sys.path.insert(0, str(COLLECTORS_DIR))
import collector_fivemin  # noqa: E402
from gept_collectors import config  # noqa: E402
from gept_collectors.backoff import full_jitter  # noqa: E402
from gept_collectors.buckets import BucketQueue  # noqa: E402
from gept_collectors.db import Database, DatabaseUnavailable  # noqa: E402
from gept_collectors.metrics import CollectorMetrics  # noqa: E402
from gept_collectors.runner import Collector  # noqa: E402
from gept_collectors.shutdown import Shutdown, StopRequested  # noqa: E402
from gept_collectors.validate import utc  # noqa: E402


# -- back-off ---------------------------------------------------------------------------
def test_full_jitter_stays_inside_its_bound_and_starts_quick() -> None:
    rng = random.Random(17)  # noqa: S311  (a seeded jitter source, not cryptography)
    for attempt in range(40):
        ceiling = min(30.0, 0.5 * 2**attempt)
        pauses = [full_jitter(attempt, 0.5, 30.0, rng) for _ in range(500)]
        assert all(0.0 <= p <= ceiling for p in pauses), (attempt, max(pauses))
        # jittered over the whole range, not clustered at the ceiling
        assert min(pauses) < 0.1 * ceiling and max(pauses) > 0.9 * ceiling
    assert max(full_jitter(0, 0.5, 30.0, rng) for _ in range(1000)) <= 0.5  # first retry: quick
    assert full_jitter(1000, 0.5, 30.0, rng) <= 30.0  # no overflow far out


def test_reconnect_pauses_never_exceed_the_maximum(caplog: pytest.LogCaptureFixture) -> None:
    """Reconnect attempts against a real refused port: every pause logged is within the bound."""
    with closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it once closed
    settings = config.load(
        "latest",
        {
            "GEPT_DB_PASSWORD": "x",
            "GEPT_DB_HOST": "127.0.0.1",
            "GEPT_DB_PORT": str(port),
            "GEPT_DB_BACKOFF_MAX_SECONDS": "0.3",
        },
    )
    shutdown = Shutdown()
    database = Database(settings, CollectorMetrics("latest", registry=CollectorRegistry()), shutdown)
    threading.Timer(4.0, shutdown.event.set).start()
    with caplog.at_level(logging.WARNING, "gept_collectors.db"), pytest.raises(StopRequested):
        database.connect()
    pauses = [float(x) for x in re.findall(r"retry \d+ in ([\d.]+)s", caplog.text)]
    assert len(pauses) >= 8, caplog.text[-2000:]
    assert all(p <= 0.3 for p in pauses), pauses
    assert pauses[0] <= 0.5 and "Connection refused" in caplog.text


# -- the server's own error in the log ----------------------------------------------------
def test_lost_connection_logs_the_server_error(
    pg: PgCluster, gept_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = config.load(
        "latest",
        {
            "GEPT_DB_PASSWORD": COLLECTOR_PASSWORD,
            "GEPT_DB_PORT": str(pg.port),
            "GEPT_DB_NAME": gept_db,
            "GEPT_DB_SSLMODE": "disable",
        },
    )
    database = Database(settings, CollectorMetrics("latest", registry=CollectorRegistry()), Shutdown())
    with caplog.at_level(logging.WARNING, "gept_collectors.db"), pytest.raises(DatabaseUnavailable) as info:
        with database.transaction() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
            query(pg, gept_db, "SELECT pg_terminate_backend(%s)", (pid,))
            cur.execute("SELECT 1")
    line = next(r.getMessage() for r in caplog.records if "connection lost" in r.getMessage())
    # libpq's report of the server's own error (the FATAL message, when libpq read it first)
    assert "terminating connection" in line or "server closed the connection unexpectedly" in line, line
    assert "already closed" not in line and "already closed" not in str(info.value)
    database.close()


# -- the bounded queue ----------------------------------------------------------------------
def test_bucket_queue_drops_the_oldest_and_counts_it(caplog: pytest.LogCaptureFixture) -> None:
    metrics = CollectorMetrics("latest", queued=True, registry=CollectorRegistry())
    queue = BucketQueue(3, metrics, "latest")
    stop = Shutdown()
    with caplog.at_level(logging.WARNING, "gept_collectors.buckets"):
        for k in range(5):
            queue.put(utc(60 * k), k)
    assert metrics.dropped._value.get() == 2 and metrics.queued._value.get() == 3
    assert caplog.text.count("dropped unwritten") == 2 and "1970-01-01T00:00:00+00:00" in caplog.text
    first = queue.take(stop)  # in flight: not counted against the bound, never dropped
    queue.put(utc(300), 5)
    queue.put(utc(360), 6)  # full again: drops the oldest WAITING bucket (3), not the one in flight
    assert first[1] == 2 and metrics.dropped._value.get() == 3 and len(queue) == 4
    queue.requeue(first)  # not written: back at the head, order kept
    stop.event.set()
    order = []
    while (item := queue.take(stop)) is not None:
        order.append(item[1])
        queue.done()
    assert order == [2, 4, 5, 6] and metrics.queued._value.get() == 0
    with pytest.raises(ValueError):
        BucketQueue(0, metrics, "latest")


# -- the grid ----------------------------------------------------------------------------------
class _Grid(Collector):
    name = "latest"
    grid = True

    def cycle(self) -> None:
        pass


def test_grid_schedule_first_cycle_on_the_grid_and_no_tick_skipped(caplog: pytest.LogCaptureFixture) -> None:
    env = {"GEPT_DB_PASSWORD": "x", "GEPT_LATEST_INTERVAL_SECONDS": "60", "GEPT_LATEST_OFFSET_SECONDS": "2"}
    grid = _Grid(config.load("latest", env), registry=CollectorRegistry())
    assert grid.schedule(None, 1000.0) == 1022.0  # waits for its first tick (not "now")
    assert grid.schedule(1022.0, 1025.0) == 1082.0
    assert grid.schedule(1022.0, 1090.0) == 1082.0  # overran: the next tick at once, late
    with caplog.at_level(logging.WARNING):
        assert grid.schedule(1022.0, 1210.0) == 1202.0  # overran by more: says what it missed
    assert "2 tick(s) missed" in caplog.text
    grid.grid = False  # a window collector starts at once, then keeps to the grid
    assert grid.schedule(None, 1000.0) == 1000.0 and grid.schedule(1000.0, 1001.0) == 1022.0


# -- 1-minute data across a real database outage ---------------------------------------------
def _buckets(pg: PgCluster, db: str, sql: str) -> list[int]:
    return [r[0] for r in query(pg, db, sql)]


def test_minute_buckets_survive_a_database_outage(
    launch: Launcher, pg: PgCluster, gept_db: str, standin: StandIn
) -> None:
    """PostgreSQL is stopped for 15 buckets (2-s buckets standing in for minutes) while latest
    (queue of 60) and playercount (queue of 4) keep fetching: latest loses nothing; playercount
    drops exactly its oldest waiting buckets, each counted, and keeps the rest in order."""
    b = 2
    latest = launch.start(
        "latest", gept_db, standin, interval=b, GEPT_LATEST_BUCKET_SECONDS=b, GEPT_LATEST_QUEUE_MAX_BUCKETS=60
    )
    players = launch.start(
        "playercount",
        gept_db,
        standin,
        interval=b,
        GEPT_PLAYERCOUNT_BUCKET_SECONDS=b,
        GEPT_PLAYERCOUNT_QUEUE_MAX_BUCKETS=4,
    )
    latest_sql = 'SELECT DISTINCT extract(epoch FROM "timestamp")::bigint FROM prices_latest_1m ORDER BY 1'
    players_sql = 'SELECT extract(epoch FROM "timestamp")::bigint FROM player_counts ORDER BY 1'
    wait_until(lambda: len(_buckets(pg, gept_db, latest_sql)) >= 2, 30, what="buckets before the outage")
    wait_until(lambda: len(_buckets(pg, gept_db, players_sql)) >= 2, 30, what="player counts before")
    pg.stop()
    stopped = time.time()
    try:
        time.sleep(15 * b)
        queued = latest.metric("gept_latest_queued_buckets")
        fetched_200 = latest.metric('gept_latest_requests_total{status="200"}')
    finally:
        pg.start()
    outage = time.time() - stopped
    assert queued >= 12, f"latest queued only {queued} buckets during a {outage:.0f}s outage"
    wait_until(
        lambda: (
            latest.metric("gept_latest_queued_buckets") == 0
            and players.metric("gept_playercount_queued_buckets") == 0
            and latest.metric("gept_latest_last_success_timestamp_seconds") > stopped + outage
        ),
        60,
        what="queues written after the outage",
    )
    time.sleep(2 * b)
    assert latest.proc.poll() is None and players.proc.poll() is None
    got = _buckets(pg, gept_db, latest_sql)
    missing = sorted(set(range(got[0], got[-1] + b, b)) - set(got))
    assert not missing, f"latest lost buckets {missing}\n{latest.output()[-3000:]}"
    assert got[-1] - got[0] >= 17 * b and fetched_200 >= 15
    assert latest.metric("gept_latest_dropped_buckets_total") == 0
    # every bucket is a whole /latest answer (one transaction each)
    sizes = {r[0] for r in query(pg, gept_db, 'SELECT count(*) FROM prices_latest_1m GROUP BY "timestamp"')}
    assert min(sizes) > 3000
    # playercount: the queue of 4 overflowed; what it dropped is exactly what is missing, and
    # it is the oldest part of the outage (the newest 4 waiting buckets were kept)
    got = _buckets(pg, gept_db, players_sql)
    missing = sorted(set(range(got[0], got[-1] + b, b)) - set(got))
    dropped = players.metric("gept_playercount_dropped_buckets_total")
    assert dropped >= 8 and len(missing) == dropped, (missing, dropped)
    assert missing == list(range(missing[0], missing[-1] + b, b)), "dropped buckets are not one run"
    # The run dropped lies inside the outage, and at least the queue's 4 newest buckets follow
    # it (how many of those fall before the restart depends on how long PostgreSQL takes to
    # come back, so the bound is on what follows the run, not on the restart's instant).
    assert stopped - b <= missing[0] and missing[-1] <= stopped + outage, (missing, stopped, outage)
    assert len([t for t in got if t > missing[-1]]) >= 4
    assert "dropped unwritten: queue full" in players.output()
    assert "database connection lost" in latest.output() or "database unavailable" in latest.output()


# -- an API that stalls --------------------------------------------------------------------
def test_stalled_api_is_a_failure_with_its_age_exported(
    launch: Launcher, pg: PgCluster, gept_db: str, standin: StandIn
) -> None:
    """The API's clock stuck 30 s behind (30 windows): the look-back is measured from the API's
    newest window, so the windows behind it are still stored; but nothing new can be stored,
    so past the stall threshold every cycle is a failure (errors_total{kind="stale"})."""
    standin.fault("stale", "/5m", delay=30)
    c = launch.start(
        "fivemin", gept_db, standin, GEPT_FIVEMIN_LOOKBACK_SECONDS=6, GEPT_FIVEMIN_STALL_SECONDS=5
    )
    wait_until(lambda: c.metric('gept_fivemin_errors_total{kind="stale"}') >= 2, 30, what="stale cycles")
    m = c.metrics()
    assert m["gept_fivemin_api_newest_window_age_seconds"] >= 29
    assert m["gept_fivemin_last_success_timestamp_seconds"] == 0
    assert m["gept_fivemin_missing_windows"] == 0
    stored = [
        r[0]
        for r in query(
            pg, gept_db, "SELECT extract(epoch FROM window_start)::bigint FROM collection_windows ORDER BY 1"
        )
    ]
    assert len(stored) >= 6 and stored[-1] < time.time() - 25  # the look-back behind the API's newest
    assert "nothing new to store" in c.output()
    standin.clear()
    cleared = time.time()
    wait_until(
        lambda: c.metric("gept_fivemin_last_success_timestamp_seconds") > cleared, 30, what="success again"
    )
    assert c.metric("gept_fivemin_api_newest_window_age_seconds") < 5


# -- the ledger's promise -----------------------------------------------------------------
def test_rejected_backfill_window_leaves_a_counted_hole_filled_later(
    pg: PgCluster, gept_db: str, tmp_path: Path
) -> None:
    """windows.py: a window rejected by validation is skipped, later windows are stored (a hole
    behind the newest), the cycle fails and counts it missing, and the next cycle fills it.
    Windows of 5 s and a look-back of 8 windows: the hole stays inside the look-back."""
    standin = start_standin(tmp_path, 5, 15)
    try:
        env = Launcher(pg, tmp_path).env(
            gept_db,
            standin,
            GEPT_HTTP_RETRIES=1,
            GEPT_FIVEMIN_LOOKBACK_SECONDS=40,
            GEPT_FIVEMIN_METRICS_PORT=0,
        )
        c = collector_fivemin.FiveMinCollector(config.load("fivemin", env), registry=CollectorRegistry())
        # the newest window and the oldest pass; the second oldest is truncated on the attempt
        # and on its one retry
        standin.fault("truncated", "/5m", skip=2, count=2)
        assert c.run_once() is False
        rows = _buckets(pg, gept_db, LEDGER_SQL)
        hole = sorted(set(range(rows[0], rows[-1] + 5, 5)) - set(rows))
        assert hole == [rows[0] + 5] and len(rows) == 8, rows  # one hole behind the newest
        assert c.metrics.missing._value.get() == 1
        assert c.metrics.errors.labels("validation")._value.get() == 1
        assert c.run_once() is True
        after = _buckets(pg, gept_db, LEDGER_SQL)
        assert hole[0] in after and after == list(range(after[0], after[-1] + 5, 5))
        assert c.metrics.missing._value.get() == 0
        c.db.close()
    finally:
        standin.stop()


LEDGER_SQL = "SELECT extract(epoch FROM window_start)::bigint FROM collection_windows ORDER BY 1"


# -- metric names are a contract with the alert rules and Grafana ----------------------------
def test_every_collector_metric_the_rules_and_dashboards_name_is_exported(
    monitoring_rendered: tuple[Path, Path],
) -> None:
    """The rules and dashboards as the roles deploy them (rendered from the catalogue); each
    collector's metrics as its kind in the catalogue (collects) makes them."""
    rules, dashboards = monitoring_rendered
    texts = [p.read_text() for p in rules.glob("*.yml")]
    texts += [p.read_text() for p in dashboards.glob("*.json")]
    kinds = {"bucket": {"queued": True}, "window": {"windows": True}, "run": {}}
    flags = {c["name"]: kinds[c["collects"]] for c in collectors_catalogue() if c["kind"] == "collector"}
    exported = set()
    for name, kw in flags.items():
        registry = CollectorRegistry()
        CollectorMetrics(name, registry=registry, **kw)
        for family in registry.collect():
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(
                family.type, [""]
            )
            exported.update(family.name + s for s in suffixes)
    exported.add("gept_items_rows_updated_total")  # the items collector's own counter
    named = set(re.findall(rf"\bgept_(?:{'|'.join(flags)})_[a-z_]+", "\n".join(texts)))
    assert named, "no collector metric found in the rules and dashboards"
    assert named <= exported, f"named but not exported: {sorted(named - exported)}"


def test_direct_copy_falls_back_when_a_key_exists(pg: PgCluster, gept_db: str) -> None:
    """A "fresh" batch is COPied straight in; if a key already exists the savepoint is rolled
    back and the staging path inserts only the new rows, in the same transaction."""
    settings = config.load(
        "fivemin",
        {
            "GEPT_DB_PASSWORD": COLLECTOR_PASSWORD,
            "GEPT_DB_PORT": str(pg.port),
            "GEPT_DB_NAME": gept_db,
            "GEPT_DB_SSLMODE": "disable",
        },
    )
    database = Database(settings, CollectorMetrics("fivemin", registry=CollectorRegistry()), Shutdown())
    when = utc(1_700_000_100)
    cols = (
        "item_id",
        "timestamp",
        "avg_high_price",
        "high_price_volume",
        "avg_low_price",
        "low_price_volume",
    )
    rows = [(i, when, 10 + i, 1, None, 0) for i in range(1, 6)]
    assert database.run(lambda cur: database.insert(cur, "price_data_5min", cols, rows[:2], fresh=True)) == 2
    assert database.run(lambda cur: database.insert(cur, "price_data_5min", cols, rows, fresh=True)) == 3
    assert query(pg, gept_db, "SELECT count(*), count(avg_low_price) FROM price_data_5min")[0] == (5, 0)
    assert database.metrics.errors.labels("database")._value.get() == 0
    database.close()
