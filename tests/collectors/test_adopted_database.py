"""The collectors against an adopted database: the live server's osrs_data as its seed schema
builds it (tests/support/adopted_db.py), migrated by the role's runner, written by the real
collector processes. price_data_5min has no key and holds duplicates: the collectors add no
duplicate, take the old collectors' history as stored (not fetched again), fill the windows
it lacks, and write both the seed's and the project's column names. The ML tables never change."""

from __future__ import annotations

import sys
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from collectors_support import (
    COLLECTOR_PASSWORD,
    COLLECTORS_DIR,
    Launcher,
    PgCluster,
    StandIn,
    query,
    wait_until,
)
from support import adopted_db, modules
from support.adopted_db import duplicate_rows, ml_fingerprint

pytestmark = pytest.mark.postgres

ROLE_FILES = Path(__file__).resolve().parents[2] / "roles" / "timescaledb" / "files"


@pytest.fixture
def osrs_data(pg: PgCluster, request: pytest.FixtureRequest) -> str:
    """The adopted database, migrated and granted as the role does; windows of 1 s (the
    standin's fast "5-minute" windows) written by the old collectors 30..13 s ago."""
    name = "osrs_" + request.node.name.lower().replace("test_", "")[:30]
    now = int(time.time())
    request.node.old_windows = list(range(now - 30, now - 12))
    adopted_db.build(adopted_db.connector("127.0.0.1", pg.port, pg.password), name, request.node.old_windows)
    gept_db = modules.load("gept_db", ROLE_FILES / "gept_db.py")
    conn = pg.connect(name)
    conn.autocommit = False
    with closing(conn):
        gept_db.migrate(conn, ROLE_FILES / "migrations")
    with closing(pg.connect(name)) as conn, conn.cursor() as cur:
        cur.execute(f'GRANT CONNECT, TEMPORARY ON DATABASE "{name}" TO gept_collector, gept_readonly')
        cur.execute("GRANT USAGE ON SCHEMA public TO gept_collector, gept_readonly")
        cur.execute("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO gept_collector")
        cur.execute("GRANT UPDATE ON items TO gept_collector")
    yield name
    with closing(pg.connect()) as conn, conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def per_window(pg: PgCluster, db: str) -> dict[int, int]:
    return dict(
        query(
            pg, db, 'SELECT extract(epoch FROM "timestamp")::bigint, count(*) FROM price_data_5min GROUP BY 1'
        )
    )


def test_fivemin_adopts_old_history_and_adds_no_duplicate(
    launch: Launcher, pg: PgCluster, osrs_data: str, standin: StandIn, request: pytest.FixtureRequest
) -> None:
    old = request.node.old_windows
    with closing(pg.connect(osrs_data)) as conn, conn.cursor() as cur:
        ml_before = ml_fingerprint(cur)
        assert duplicate_rows(cur) == 25
    before = per_window(pg, osrs_data)
    c = launch.start("fivemin", osrs_data, standin, GEPT_FIVEMIN_LOOKBACK_SECONDS=45)
    wait_until(
        lambda: (
            c.metric("gept_fivemin_missing_windows") == 0
            and query(pg, osrs_data, "SELECT count(*) FROM collection_windows WHERE series = '5m'")[0][0]
            >= 45
        ),
        40,
        what="look-back stored",
    )
    c.stop()
    after = per_window(pg, osrs_data)
    ledger = dict(
        query(
            pg,
            osrs_data,
            "SELECT extract(epoch FROM window_start)::bigint, item_count FROM collection_windows"
            " WHERE series = '5m'",
        )
    )
    # The old collectors' windows: recorded as they are (40 items), never fetched, no row added.
    for start in old:
        assert after[start] == before[start], f"window {start} was written again"
        assert ledger[start] == adopted_db.ITEMS
    # The windows before and after them (gaps of the old collectors, new windows): fetched.
    fetched = sorted(t for t in ledger if t not in old)
    assert fetched and all(after.get(t, 0) == ledger[t] for t in fetched)
    assert any(t < old[0] for t in fetched) and any(t > old[-1] for t in fetched)
    # Every window of the look-back is in the ledger, without a gap.
    starts = sorted(ledger)
    assert starts == list(range(starts[0], starts[-1] + 1))
    with closing(pg.connect(osrs_data)) as conn, conn.cursor() as cur:
        assert duplicate_rows(cur) == 25  # the old ones only: none added
        assert ml_fingerprint(cur) == ml_before
    assert c.metric("gept_fivemin_backfilled_windows_total") < len(starts) - len(old) + 1


def test_insert_without_a_key_skips_rows_already_there(pg: PgCluster, osrs_data: str) -> None:
    """The write path itself (gept_collectors.db), in process, on the keyless price_data_5min:
    rows an old collector wrote for the same window are not written again, even by the direct
    COPY path; with a unique key the ordinary path is taken."""
    sys.path.insert(0, str(COLLECTORS_DIR))
    from gept_collectors import db  # noqa: PLC0415

    database = db.Database.__new__(db.Database)
    database.write_method, database._stage = "copy", 0  # noqa: SLF001
    start = datetime(2031, 1, 1, tzinfo=UTC)
    rows = [(i, start, 100 + i, 1, 90 + i, 1) for i in range(1, 11)]
    columns = (
        "item_id",
        "timestamp",
        "avg_high_price",
        "high_price_volume",
        "avg_low_price",
        "low_price_volume",
    )
    conn = pg.connect(osrs_data, user="gept_collector", password=COLLECTOR_PASSWORD)
    conn.autocommit = False
    with closing(conn), conn.cursor() as cur:
        assert not db.has_unique_key(cur, "price_data_5min", ("item_id", "timestamp"))
        assert db.has_unique_key(cur, "prices_1h", ("timestamp", "item_id"))
        # The old collector got there first with 4 of the 10 items.
        cur.execute(
            "INSERT INTO price_data_5min SELECT i, %s::timestamptz, 1, 1, 1, 1 FROM unnest(%s::int[]) i",
            (start, [1, 2, 3, 4]),
        )
        inserted = database.insert(
            cur, "price_data_5min", columns, rows, fresh=True, key=("item_id", "timestamp")
        )
        assert inserted == 6
        assert database.insert(cur, "price_data_5min", columns, rows, key=("item_id", "timestamp")) == 0
        assert (
            database.insert(
                cur, "price_data_5min", columns, rows, method="values", key=("item_id", "timestamp")
            )
            == 0
        )
        cur.execute(
            'SELECT count(*), count(DISTINCT item_id) FROM price_data_5min WHERE "timestamp" = %s', (start,)
        )
        assert cur.fetchone() == (10, 10)
        conn.commit()


def test_items_news_playercount_write_both_names(
    launch: Launcher, pg: PgCluster, osrs_data: str, standin: StandIn
) -> None:
    with closing(pg.connect(osrs_data)) as conn, conn.cursor() as cur:
        ml_before = ml_fingerprint(cur)
    procs = [launch.start(name, osrs_data, standin) for name in ("items", "news", "playercount")]
    wait_until(
        lambda: (
            all(p.metric(f"gept_{p.name}_duration_seconds_count") >= 1 for p in procs)
            and query(pg, osrs_data, "SELECT count(*) FROM items")[0][0] > adopted_db.ITEMS
            and query(pg, osrs_data, "SELECT count(*) FROM osrs_news WHERE source = 'wiki_recent_changes'")[
                0
            ][0]
            > 0
            and query(
                pg,
                osrs_data,
                "SELECT count(*) FROM player_counts WHERE \"timestamp\" > now() - interval '1 minute'",
            )[0][0]
            > 0
        ),
        40,
        what="items, news and player counts written",
    )
    for p in procs:
        p.stop()
    # What the ML pipeline reads with the seed's names equals what the collectors wrote.
    assert query(
        pg,
        osrs_data,
        'SELECT count(*) FROM items WHERE id IS DISTINCT FROM item_id OR "limit" IS DISTINCT FROM ge_limit',
    ) == [(0,)]
    assert query(
        pg, osrs_data, "SELECT count(*) FROM osrs_news WHERE pub_date IS DISTINCT FROM published_at"
    ) == [(0,)]
    assert query(
        pg, osrs_data, "SELECT count(*) FROM player_counts WHERE count IS DISTINCT FROM player_count"
    ) == [(0,)]
    assert (
        query(
            pg,
            osrs_data,
            "SELECT count(*) FROM items WHERE ge_limit IS NOT NULL AND id > %s",
            (adopted_db.ITEMS,),
        )[0][0]
        > 0
    )
    with closing(pg.connect(osrs_data)) as conn, conn.cursor() as cur:
        assert ml_fingerprint(cur) == ml_before
