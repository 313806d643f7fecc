"""The 5-minute collector against real PostgreSQL and the standin API, with fast windows."""

from __future__ import annotations

import time

import pytest
from collectors_support import Launcher, PgCluster, StandIn, query, wait_until

pytestmark = pytest.mark.postgres

LOOKBACK = 12  # windows of 1 s


def ledger(pg: PgCluster, db: str) -> list[tuple[int, int]]:
    return query(
        pg,
        db,
        "SELECT extract(epoch FROM window_start)::bigint, item_count "
        "FROM collection_windows WHERE series = '5m' ORDER BY 1",
    )


def assert_no_gaps(pg: PgCluster, db: str, window: int) -> list[tuple[int, int]]:
    rows = ledger(pg, db)
    starts = [r[0] for r in rows]
    assert starts, "no windows stored"
    expected = list(range(starts[0], starts[-1] + window, window))
    assert starts == expected, f"gaps: {sorted(set(expected) - set(starts))}"
    # every window complete: its rows are exactly what the ledger says
    per_window = dict(
        query(
            pg, db, 'SELECT extract(epoch FROM "timestamp")::bigint, count(*) FROM price_data_5min GROUP BY 1'
        )
    )
    for start, count in rows:
        got = per_window.get(start, 0)
        assert got == count, f"window {start}: {got} rows, ledger {count}"
    # The collector may still be running: a window newer than the ledger read above was stored
    # after it (its rows and ledger row commit together), so only older ones are compared.
    stored = {start for start in per_window if start <= starts[-1]}
    assert stored <= set(starts), "rows stored for a window missing from the ledger"
    return rows


def test_fivemin_backfills_lookback_and_counts_rows(
    launch: Launcher, pg: PgCluster, gept_db: str, standin: StandIn
) -> None:
    c = launch.start("fivemin", gept_db, standin, GEPT_FIVEMIN_LOOKBACK_SECONDS=LOOKBACK)
    wait_until(
        lambda: (
            c.metric("gept_fivemin_backfilled_windows_total") >= LOOKBACK - 1
            and c.metric("gept_fivemin_missing_windows") == 0
        ),
        30,
        what="back-fill done",
    )
    rows = assert_no_gaps(pg, gept_db, 1)
    assert len(rows) >= LOOKBACK
    assert all(1000 <= n <= 4000 for _, n in rows), rows
    db_rows = query(pg, gept_db, "SELECT count(*) FROM price_data_5min")[0][0]
    m = c.metrics()
    assert m["gept_fivemin_rows_inserted_total"] == db_rows  # the DB's count, not rows attempted
    assert m['gept_fivemin_requests_total{status="200"}'] >= len(rows)
    assert m["gept_fivemin_last_success_timestamp_seconds"] > 0
    assert m["gept_fivemin_duration_seconds_count"] >= 1
    # null prices come with volume 0 and are stored as NULL
    nulls = query(
        pg,
        gept_db,
        "SELECT count(*), max(high_price_volume) FROM price_data_5min WHERE avg_high_price IS NULL",
    )[0]
    assert nulls[0] > 0 and nulls[1] == 0


def test_outage_across_several_windows_leaves_zero_missing(
    launch: Launcher, pg: PgCluster, gept_db: str, standin: StandIn
) -> None:
    """PostgreSQL stops for ~8 windows while the 5-minute and hourly collectors run; once it is
    back, every window is stored and the processes never exited (state kept, no crash loop).
    The look-back (40 windows) is longer than the outage, as in production (1 day vs minutes)."""
    five = launch.start("fivemin", gept_db, standin, GEPT_FIVEMIN_LOOKBACK_SECONDS=40)
    hour = launch.start(
        "hourly", gept_db, standin, interval=standin.window_1h, GEPT_HOURLY_LOOKBACK_SECONDS=45
    )
    wait_until(
        lambda: five.metric("gept_fivemin_missing_windows") == 0 and len(ledger(pg, gept_db)) >= 40,
        40,
        what="initial back-fill",
    )
    before = ledger(pg, gept_db)[-1][0]
    pg.stop()
    try:
        wait_until(
            lambda: five.metric('gept_fivemin_errors_total{kind="database"}') >= 2,
            20,
            what="database errors counted",
        )
        time.sleep(6)
    finally:
        pg.start()
    assert five.proc.poll() is None and hour.proc.poll() is None, five.output()[-2000:]
    try:
        wait_until(
            lambda: (
                ledger(pg, gept_db)[-1][0] >= before + 10 and five.metric("gept_fivemin_missing_windows") == 0
            ),
            40,
            what="catch-up after the outage",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- fivemin log ---\n{five.output()[-3000:]}") from None
    rows = assert_no_gaps(pg, gept_db, 1)
    assert rows[-1][0] - before >= 10  # the outage windows are in
    assert five.metric("gept_fivemin_backfilled_windows_total") >= 10
    # the hourly collector heals its gap the same way (its cycle is one 3-s window long)
    resumed = time.time()
    wait_until(
        lambda: (
            hour.metric("gept_hourly_last_success_timestamp_seconds") > resumed
            and hour.metric("gept_hourly_missing_windows") == 0
        ),
        30,
        what="hourly catch-up",
    )
    hourly = [
        r[0]
        for r in query(
            pg,
            gept_db,
            "SELECT extract(epoch FROM window_start)::bigint "
            "FROM collection_windows WHERE series = '1h' ORDER BY 1",
        )
    ]
    assert hourly == list(range(hourly[0], hourly[-1] + standin.window_1h, standin.window_1h))


def test_sigterm_stops_within_5s_leaving_no_partial_window(
    launch: Launcher, pg: PgCluster, gept_db: str, standin: StandIn
) -> None:
    # A long back-fill (600 windows, paced) is in progress when SIGTERM arrives.
    c = launch.start(
        "fivemin", gept_db, standin, GEPT_FIVEMIN_LOOKBACK_SECONDS=600, GEPT_BACKFILL_PACING_SECONDS=0.02
    )
    wait_until(lambda: c.metric("gept_fivemin_backfilled_windows_total") >= 5, 30, what="back-fill under way")
    took = c.stop()
    assert c.proc.returncode == 0, c.output()[-2000:]
    assert took < 5, f"stopped in {took:.1f}s"
    assert "stopped" in c.output()
    rows = ledger(pg, gept_db)
    assert 5 <= len(rows) < 600
    assert_window_sets_complete(pg, gept_db)


def test_sigterm_during_a_slow_answer(
    launch: Launcher, pg: PgCluster, gept_db: str, standin: StandIn
) -> None:
    standin.fault("slow", "/5m", delay=30)
    c = launch.start("fivemin", gept_db, standin, GEPT_HTTP_TIMEOUT_SECONDS=60)
    time.sleep(1.5)  # the first request is now waiting on the slow answer
    took = c.stop()
    assert c.proc.returncode == 0 and took < 5, f"rc {c.proc.returncode}, {took:.1f}s"


def assert_window_sets_complete(pg: PgCluster, db: str) -> None:
    bad = query(
        pg,
        db,
        """
        SELECT w.window_start, w.item_count, count(p.item_id)
        FROM collection_windows w LEFT JOIN price_data_5min p ON p."timestamp" = w.window_start
        WHERE w.series = '5m' GROUP BY 1, 2 HAVING count(p.item_id) <> w.item_count""",
    )
    assert not bad, f"partial windows: {bad[:5]}"
    orphans = query(
        pg,
        db,
        """SELECT count(*) FROM price_data_5min p WHERE NOT EXISTS
        (SELECT 1 FROM collection_windows w WHERE w.series = '5m' AND w.window_start = p."timestamp")""",
    )
    assert orphans[0][0] == 0


def test_empty_windows_are_recorded_and_not_asked_again(
    launch: Launcher, pg: PgCluster, gept_db: str, standin: StandIn
) -> None:
    standin.fault("empty", "/5m")
    c = launch.start("fivemin", gept_db, standin, GEPT_FIVEMIN_LOOKBACK_SECONDS=5)
    wait_until(lambda: len(ledger(pg, gept_db)) >= 5, 20, what="empty windows recorded")
    empties = {s for s, n in ledger(pg, gept_db) if n == 0}
    assert len(empties) >= 5
    standin.clear()
    cleared = time.time()
    wait_until(
        lambda: (
            any(n > 0 for _, n in ledger(pg, gept_db))
            and c.metric("gept_fivemin_last_success_timestamp_seconds") > cleared
            and c.metric("gept_fivemin_missing_windows") == 0
        ),
        20,
        what="data after the fault",
    )
    c.stop()
    after = dict(ledger(pg, gept_db))
    assert all(after[s] == 0 for s in empties), "an empty window was fetched again and overwritten"
    assert_no_gaps(pg, gept_db, 1)


@pytest.mark.parametrize("kind", ["429", "500", "truncated"])
def test_faults_are_counted_and_leave_no_gap(
    kind: str, launch: Launcher, pg: PgCluster, gept_db: str, standin: StandIn
) -> None:
    standin.fault(kind, "/5m", count=3 if kind != "truncated" else 2)
    c = launch.start("fivemin", gept_db, standin, GEPT_FIVEMIN_LOOKBACK_SECONDS=5)
    wait_until(
        lambda: (
            c.metric("gept_fivemin_missing_windows") == 0
            and len(ledger(pg, gept_db)) >= 5
            and c.metric('gept_fivemin_requests_total{status="200"}') >= 5
        ),
        30,
        what="recovered",
    )
    m = c.metrics()
    if kind == "truncated":
        # every invalid attempt is counted; the retries healed it, so no error reached the cycle
        assert m['gept_fivemin_requests_total{status="invalid"}'] == 2
        assert m['gept_fivemin_errors_total{kind="validation"}'] == 0
        assert m['gept_fivemin_errors_total{kind="http"}'] == 0
        assert "sample:" in c.output()
    else:
        assert m[f'gept_fivemin_requests_total{{status="{kind}"}}'] == 3  # retried, each attempt counted
    assert_no_gaps(pg, gept_db, 1)
    assert_window_sets_complete(pg, gept_db)
