"""Prometheus metrics with the names the alert rules and Grafana panels use.

For collector <c>: gept_<c>_requests_total{status}, gept_<c>_rows_inserted_total,
gept_<c>_duration_seconds, gept_<c>_last_success_timestamp_seconds,
gept_<c>_errors_total{kind}; window collectors also gept_<c>_backfilled_windows_total,
gept_<c>_missing_windows and gept_<c>_api_newest_window_age_seconds; collectors that queue
their buckets while the database is away (latest, playercount) gept_<c>_queued_buckets and
gept_<c>_dropped_buckets_total. Each collector is its own process with the default registry, so
process_resident_memory_bytes and friends come for free.
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

# Counters' *_created series double the output and nobody graphs them.
prometheus_client.disable_created_metrics()

# http/validation: a request that failed for good (after its retries); database: a failed
# connection attempt or transaction; stale: a window cycle that could store nothing new for
# longer than its stall threshold (the API's newest window too old by the host's clock).
ERROR_KINDS = ("http", "validation", "database", "stale")
CYCLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class CollectorMetrics:
    def __init__(
        self,
        name: str,
        windows: bool = False,
        queued: bool = False,
        registry: prometheus_client.CollectorRegistry = prometheus_client.REGISTRY,
    ) -> None:
        p = f"gept_{name}"
        self.requests = Counter(
            f"{p}_requests",
            f"HTTP requests made by the {name} collector, by outcome (HTTP status, timeout, error, invalid)",
            ["status"],
            registry=registry,
        )
        self.rows_inserted = Counter(
            f"{p}_rows_inserted",
            "Rows actually inserted (the database's count; duplicates are not counted)",
            registry=registry,
        )
        self.duration = Histogram(
            f"{p}_duration_seconds",
            "Duration of one collection cycle",
            buckets=CYCLE_BUCKETS,
            registry=registry,
        )
        self.last_success = Gauge(
            f"{p}_last_success_timestamp_seconds",
            "Unix time of the last fully successful cycle",
            registry=registry,
        )
        self.errors = Counter(
            f"{p}_errors", "Errors by kind (http, validation, database, stale)", ["kind"], registry=registry
        )
        for kind in ERROR_KINDS:  # present at 0 from the start, so rate() and alerts see them
            self.errors.labels(kind)
        self.backfilled: Counter | None = None
        self.missing: Gauge | None = None
        self.api_age: Gauge | None = None
        self.queued: Gauge | None = None
        self.dropped: Counter | None = None
        if queued:
            self.queued = Gauge(
                f"{p}_queued_buckets",
                "Fetched buckets waiting to be written (they queue while the database is away)",
                registry=registry,
            )
            self.dropped = Counter(
                f"{p}_dropped_buckets",
                "Fetched buckets dropped unwritten (queue full: oldest first; or rejected by the database)",
                registry=registry,
            )
        if windows:
            self.backfilled = Counter(
                f"{p}_backfilled_windows", "Missing windows fetched and stored", registry=registry
            )
            self.missing = Gauge(
                f"{p}_missing_windows", "Windows inside the look-back not yet stored", registry=registry
            )
            self.api_age = Gauge(
                f"{p}_api_newest_window_age_seconds",
                "Host clock minus the end of the newest window the API published (its own clock), "
                "at the last answer",
                registry=registry,
            )


def serve(host: str, port: int) -> None:
    """Expose the default registry on host:port (a daemon thread)."""
    if port > 0:
        prometheus_client.start_http_server(port, addr=host)
