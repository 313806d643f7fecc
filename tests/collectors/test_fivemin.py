"""The 5-minute collector against real PostgreSQL and the replay API, with fast windows."""

from __future__ import annotations

import pytest
from conftest import Launcher, PgCluster, Replay, query, wait_until

pytestmark = pytest.mark.postgres

LOOKBACK = 12  # windows of 1 s


def ledger(pg: PgCluster, db: str) -> list[tuple[int, int]]:
    return query(pg, db, "SELECT extract(epoch FROM window_start)::bigint, item_count FROM collection_windows "
                         "WHERE series = '5m' ORDER BY 1")


def assert_no_gaps(pg: PgCluster, db: str, window: int) -> list[tuple[int, int]]:
    rows = ledger(pg, db)
    starts = [r[0] for r in rows]
    assert starts, "no windows stored"
    expected = list(range(starts[0], starts[-1] + window, window))
    assert starts == expected, f"gaps: {sorted(set(expected) - set(starts))}"
    # every window complete: its rows are exactly what the ledger says
    per_window = dict(query(pg, db, "SELECT extract(epoch FROM \"timestamp\")::bigint, count(*) "
                                    "FROM price_data_5min GROUP BY 1"))
    for start, count in rows:
        assert per_window.get(start, 0) == count, f"window {start}: {per_window.get(start, 0)} rows, ledger {count}"
    assert set(per_window) <= set(starts), "rows stored for a window missing from the ledger"
    return rows


def test_fivemin_backfills_lookback_and_counts_rows(launch: Launcher, pg: PgCluster, gept_db: str,
                                                   replay: Replay) -> None:
    c = launch.start("fivemin", gept_db, replay, GEPT_FIVEMIN_LOOKBACK_SECONDS=LOOKBACK)
    wait_until(lambda: c.metric("gept_fivemin_backfilled_windows_total") >= LOOKBACK - 1
               and c.metric("gept_fivemin_missing_windows") == 0, 30, what="back-fill done")
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
    nulls = query(pg, gept_db, "SELECT count(*), max(high_price_volume) FROM price_data_5min "
                               "WHERE avg_high_price IS NULL")[0]
    assert nulls[0] > 0 and nulls[1] == 0
