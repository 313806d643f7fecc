"""postgres_exporter's custom queries, rendered by the role's own task file
(tasks/render_queries.yml, through tests/monitoring/render.yml) for each TimescaleDB edition, run
against the real full-edition engine (PostgreSQL 17 + TimescaleDB incl. TSL in a throwaway
container, tests/support/timescaledb.py): every query executes, returns the columns its metrics
name, and the values mean what the metric says (newest-row time, sizes, chunk counts, compression
before > after, job rows, schema version). The Apache-edition file must not reference anything
full-edition-only. (The Molecule host runs the Apache-edition file through the real exporter
against Debian's TimescaleDB.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from monitoring_lib import REPO, load_yaml
from support import timescaledb

pytestmark = [pytest.mark.timescaledb, pytest.mark.slow]

SETUP = [
    (REPO / "roles/timescaledb/files/migrations/001_base_schema.sql").read_text(encoding="utf-8"),
    """CREATE TABLE IF NOT EXISTS public.schema_migrations (
           version text PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,
           applied_at timestamptz NOT NULL DEFAULT now())""",
    "INSERT INTO public.schema_migrations VALUES ('001', 'base_schema', 'x') ON CONFLICT DO NOTHING",
    "SELECT create_hypertable('price_data_5min', by_range('timestamp', INTERVAL '1 day'))",
    "SELECT create_hypertable('player_counts', by_range('timestamp', INTERVAL '7 days'))",
    """INSERT INTO price_data_5min (item_id, "timestamp", avg_high_price, avg_low_price)
       SELECT i, ts, 1000 + i, 990 + i
       FROM generate_series(1, 20) i,
            generate_series(now() - INTERVAL '5 days', now() - INTERVAL '1 hour', INTERVAL '5 minutes') ts
       ON CONFLICT DO NOTHING""",
    """ALTER TABLE price_data_5min SET (timescaledb.compress,
           timescaledb.compress_segmentby = 'item_id', timescaledb.compress_orderby = '"timestamp" DESC')""",
    "SELECT compress_chunk(c) FROM show_chunks('price_data_5min', older_than => INTERVAL '2 days') c",
    "SELECT add_compression_policy('price_data_5min', INTERVAL '2 days', if_not_exists => true)",
]


@pytest.fixture(scope="module")
def queries(rendered: Path) -> dict[str, dict[str, Any]]:
    return {edition: load_yaml(rendered / f"queries-{edition}.yml") for edition in ("full", "apache")}


@pytest.fixture(scope="module")
def db() -> Iterator[Any]:
    conn = psycopg2.connect(**timescaledb.shared().database("gept_monitoring_queries"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for sql in SETUP:
                cur.execute(sql)
        yield conn
    finally:
        conn.close()


def run(conn: Any, query: dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(query["query"])
        names = [d.name for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_apache_file_is_the_full_file_minus_the_tsl_queries(queries):
    full_only = set(queries["full"]) - set(queries["apache"])
    assert full_only == {"gept_compression", "gept_timescaledb_job"}
    text = "\n".join(q["query"] for q in queries["apache"].values())
    assert "compression_stats" not in text and "job_stats" not in text


@pytest.mark.parametrize("edition", ["full", "apache"])
def test_every_query_runs_and_returns_its_metric_columns(db, queries, edition):
    for key, query in queries[edition].items():
        rows = run(db, query)
        columns = [next(iter(m)) for m in query["metrics"]]
        for row in rows:
            assert set(columns) <= set(row), f"{key}: query lacks {set(columns) - set(row)}"
        if key != "gept_timescaledb_job":
            assert rows, f"{key} returned no rows"


def test_values_mean_what_the_metrics_say(db, queries):
    q = queries["full"]
    newest = {r["table"]: r["timestamp_seconds"] for r in run(db, q["gept_table_newest_row"])}
    with db.cursor() as cur:
        cur.execute("SELECT extract(epoch FROM now())::float8")
        now = cur.fetchone()[0]
    assert 3000 < now - newest["price_data_5min"] < 4200  # newest row is 1 h old
    assert newest["items"] is None  # empty table: NaN in Prometheus
    sizes = {r["table"]: r for r in run(db, q["gept_table_size"])}
    assert sizes["price_data_5min"]["hypertable"] == "true" and sizes["items"]["hypertable"] == "false"
    assert sizes["price_data_5min"]["bytes"] > 0
    chunks = {r["table"]: r for r in run(db, q["gept_hypertable"])}
    assert chunks["price_data_5min"]["chunks"] >= 5
    assert 1 <= chunks["price_data_5min"]["compressed_chunks"] < chunks["price_data_5min"]["chunks"]
    assert chunks["player_counts"]["chunks"] == 0
    schema = run(db, q["gept_schema"])[0]
    assert (schema["migrations_applied"], schema["version"]) == (1, 1)
    compression = {r["table"]: r for r in run(db, q["gept_compression"])}
    assert compression["price_data_5min"]["before_bytes"] > compression["price_data_5min"]["after_bytes"] > 0
    jobs = run(db, q["gept_timescaledb_job"])
    policy = [j for j in jobs if j["proc_name"] == "policy_compression"]
    assert policy and policy[0]["hypertable"] == "price_data_5min"
    assert policy[0]["last_run_failed"] == 0  # never ran: not a failure
