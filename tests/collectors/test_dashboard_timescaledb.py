"""The dashboard's TimescaleDB panels against the full (TSL) edition (the real PostgreSQL 17 +
TimescaleDB in a throwaway container, tests/support/timescaledb.py; the controller's PostgreSQL
has no TimescaleDB): hypertables with compressed and uncompressed chunks and the achieved
ratio, the retention policy in force, the jobs view."""

from __future__ import annotations

import json
import sys
from contextlib import closing
from typing import Any

import psycopg2
import pytest
from collectors_support import COLLECTORS_DIR, MIGRATIONS
from support import timescaledb

pytestmark = pytest.mark.timescaledb

SETUP = """
SELECT create_hypertable('price_data_5min', by_range('timestamp', INTERVAL '1 day'));
SELECT create_hypertable('prices_1h', by_range('timestamp', INTERVAL '7 days'));
SELECT create_hypertable('prices_latest_1m', by_range('timestamp', INTERVAL '1 day'));
SELECT create_hypertable('player_counts', by_range('timestamp', INTERVAL '7 days'));
INSERT INTO price_data_5min (item_id, "timestamp", avg_high_price, high_price_volume, avg_low_price)
SELECT i, date_trunc('hour', now()) - w * INTERVAL '5 minutes', 1000 + i, w % 17, 990 + i
  FROM generate_series(0, 5 * 288) w, generate_series(1, 40) i;
ALTER TABLE price_data_5min SET (timescaledb.compress, timescaledb.compress_segmentby = 'item_id',
                                 timescaledb.compress_orderby = '"timestamp" DESC');
SELECT compress_chunk(c) FROM show_chunks('price_data_5min', older_than => now() - INTERVAL '2 days') c;
SELECT add_retention_policy('prices_latest_1m', INTERVAL '30 days');
ANALYZE;
"""


@pytest.fixture
def params() -> dict[str, Any]:
    return timescaledb.shared().database("gept_dashboard")


def test_storage_and_jobs_on_the_full_edition(params: dict[str, Any]) -> None:
    with closing(psycopg2.connect(**params)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            for migration in MIGRATIONS:
                cur.execute(migration.read_text())
            cur.execute(SETUP)

    sys.path.insert(0, str(COLLECTORS_DIR))
    try:
        import dashboard
        import dashboard_page
        from gept_collectors import config
    finally:
        sys.path.remove(str(COLLECTORS_DIR))
    settings = config.load(
        "dashboard",
        env={
            "GEPT_DB_HOST": params["host"],
            "GEPT_DB_PORT": str(params["port"]),
            "GEPT_DB_NAME": params["dbname"],
            "GEPT_DB_USER": "postgres",
            "GEPT_DB_PASSWORD": str(params["password"]),
            "GEPT_DB_SSLMODE": "disable",
            "GEPT_DASHBOARD_COLLECTORS": "",
            "GEPT_DASHBOARD_ALERTMANAGER_URL": "",
        },
    )
    status = dashboard.Status(settings)
    try:
        result = status.collect()
    finally:
        if status._conn is not None:
            status._conn.close()
    assert result["database"]["ok"], result["database"]
    # What /api/status serves: every value JSON can carry (sum() of bigint is a Decimal).
    json.dumps(dashboard.public(result))
    storage = result["storage"]
    assert "error" not in storage, storage
    assert storage["edition"] == "full" and storage["timescaledb"]
    tables = {h["table"]: h for h in storage["hypertables"]}
    five = tables["price_data_5min"]
    assert five["hypertable"] and five["compressed_chunks"] >= 2 and five["uncompressed_chunks"] >= 1, five
    assert five["chunks"] == five["compressed_chunks"] + five["uncompressed_chunks"]
    assert five["compression_ratio"] and five["compression_ratio"] > 1, five
    assert five["before_compression_bytes"] > five["after_compression_bytes"] > 0
    assert tables["prices_latest_1m"]["retention"] == "30 days"
    assert tables["price_data_5min"]["retention"] is None
    jobs = result["safety"]["jobs"]
    assert jobs["available"] and "error" not in jobs and jobs["failed"] == [], jobs
    rows = {t["table"]: t for t in result["tables"]}
    assert rows["price_data_5min"]["rows"] > 0
    page = dashboard_page.render(result, 30)
    assert f"{five['compression_ratio']}:1" in page and "30 days" in page and "full edition" in page
