"""latest, hourly, news, player count and items collectors as real processes."""

from __future__ import annotations

import pytest
from collectors_support import Launcher, PgCluster, StandIn, query, wait_until

pytestmark = pytest.mark.postgres


def count(pg: PgCluster, db: str, table: str) -> int:
    return query(pg, db, f"SELECT count(*) FROM {table}")[0][0]  # noqa: S608  (fixed table names)


def test_latest_inserts_each_minute_once(
    launch: Launcher, pg: PgCluster, gept_db: str, standin: StandIn
) -> None:
    # A bucket of an hour: every cycle in this test lands in the same "minute" -> de-duplicated.
    c = launch.start("latest", gept_db, standin, GEPT_LATEST_BUCKET_SECONDS=3600)
    wait_until(lambda: c.metric("gept_latest_duration_seconds_count") >= 3, 20, what="3 cycles")
    m = c.metrics()
    rows = count(pg, gept_db, "prices_latest_1m")
    assert 3000 < rows < 4000  # ~8 % of items never traded: absent from /latest
    assert m["gept_latest_rows_inserted_total"] == rows  # later cycles inserted nothing
    assert m['gept_latest_requests_total{status="200"}'] >= 3
    one_sided = query(
        pg,
        gept_db,
        "SELECT count(*) FROM prices_latest_1m WHERE high IS NULL AND high_time IS NULL AND low IS NOT NULL",
    )[0][0]
    assert one_sided > 0
    skew = query(pg, gept_db, "SELECT max(abs(extract(epoch FROM now() - high_time))) FROM prices_latest_1m")[
        0
    ][0]
    assert skew < 7200  # highTime stored as a real UTC instant


def test_hourly_gap_fills_and_backfills_new_items(
    launch: Launcher, pg: PgCluster, gept_db: str, standin: StandIn
) -> None:
    # The table already has history for one item only: every other item in the next window
    # is new to the table and gets its /timeseries history (bounded per cycle).
    query_ok = "INSERT INTO prices_1h VALUES (2, now() - interval '30 days', 1, 1, 1, 1) RETURNING 1"
    query(pg, gept_db, query_ok)
    c = launch.start(
        "hourly",
        gept_db,
        standin,
        interval=standin.window_1h,
        GEPT_HOURLY_LOOKBACK_SECONDS=9,
        GEPT_HOURLY_TIMESERIES_MAX_PER_CYCLE=3,
    )
    wait_until(lambda: c.metric('gept_hourly_requests_total{status="200"}') >= 8, 30, what="timeseries calls")
    wait_until(lambda: c.metric("gept_hourly_missing_windows") == 0, 20, what="no missing hourly windows")
    old = query(
        pg,
        gept_db,
        "SELECT count(DISTINCT item_id) FROM prices_1h WHERE \"timestamp\" < now() - interval '2 hours'",
    )[0][0]
    assert old >= 3, "no /timeseries history was stored for new items"
    windows = [
        r[0]
        for r in query(
            pg,
            gept_db,
            "SELECT extract(epoch FROM window_start)::bigint "
            "FROM collection_windows WHERE series = '1h' ORDER BY 1",
        )
    ]
    assert len(windows) >= 3 and all(w % standin.window_1h == 0 for w in windows)
    assert c.metric("gept_hourly_rows_inserted_total") == count(pg, gept_db, "prices_1h") - 1


def test_news_deduplicates_by_guid_and_categorises(
    launch: Launcher, pg: PgCluster, gept_db: str, standin: StandIn
) -> None:
    c = launch.start("news", gept_db, standin)
    wait_until(lambda: c.metric("gept_news_duration_seconds_count") >= 3, 20, what="3 cycles")
    rows = query(
        pg,
        gept_db,
        "SELECT source, count(*), count(DISTINCT category), "
        "bool_and(published_at IS NOT NULL) FROM osrs_news GROUP BY 1 ORDER BY 1",
    )
    assert [r[0] for r in rows] == ["osrs_news", "wiki_recent_changes"]
    assert rows[0][1] == 20 and rows[0][3]  # the feed's 20 stories, once each, with dates
    assert rows[1][2] >= 2  # wiki changes categorised by namespace
    assert c.metric("gept_news_rows_inserted_total") == count(pg, gept_db, "osrs_news")
    cats = {
        r[0]
        for r in query(pg, gept_db, "SELECT category FROM osrs_news WHERE source = 'wiki_recent_changes'")
    }
    assert all(cat.startswith("wiki:") for cat in cats)


def test_playercount(launch: Launcher, pg: PgCluster, gept_db: str, standin: StandIn) -> None:
    c = launch.start("playercount", gept_db, standin)
    wait_until(lambda: count(pg, gept_db, "player_counts") >= 2, 20, what="two player counts")
    values = [r[0] for r in query(pg, gept_db, "SELECT player_count FROM player_counts")]
    assert all(50_000 < v < 150_000 for v in values)
    assert c.metric("gept_playercount_rows_inserted_total") == len(values)


def test_items_upsert_with_absent_fields(
    launch: Launcher, pg: PgCluster, gept_db: str, standin: StandIn
) -> None:
    c = launch.start("items", gept_db, standin)
    wait_until(lambda: c.metric("gept_items_duration_seconds_count") >= 2, 20, what="two cycles")
    total, no_limit, no_alch = query(
        pg,
        gept_db,
        "SELECT count(*), count(*) FILTER (WHERE ge_limit IS NULL),"
        " count(*) FILTER (WHERE highalch IS NULL) FROM items",
    )[0]
    assert total == 4650 and no_limit > 0 and no_alch > 0
    m = c.metrics()
    assert m["gept_items_rows_inserted_total"] == 4650  # the second cycle inserted and changed nothing
    assert m["gept_items_rows_updated_total"] == 0
    query(
        pg,
        gept_db,
        "UPDATE items SET name = 'stale' WHERE item_id = (SELECT min(item_id) FROM items) RETURNING 1",
    )
    wait_until(lambda: c.metric("gept_items_rows_updated_total") == 1, 10, what="changed item updated")
    assert query(pg, gept_db, "SELECT count(*) FROM items WHERE name = 'stale'")[0][0] == 0


def test_bad_config_exits_without_crash_loop(launch: Launcher, pg: PgCluster, gept_db: str) -> None:
    """No password -> exit 78 (EX_CONFIG, which the unit's RestartPreventExitStatus honours)."""
    import subprocess
    import sys

    from collectors_support import COLLECTORS_DIR

    env = launch.env(gept_db, None, GEPT_DB_PASSWORD="")
    done = subprocess.run(
        [sys.executable, str(COLLECTORS_DIR / "collector_latest.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 78 and "GEPT_DB_PASSWORD" in done.stderr
