"""Prometheus metrics with the names the alert rules and Grafana panels use.

For collector <c>: gept_<c>_requests_total{status}, gept_<c>_rows_inserted_total,
gept_<c>_duration_seconds, gept_<c>_last_success_timestamp_seconds,
gept_<c>_errors_total{kind}; window collectors also gept_<c>_backfilled_windows_total and
gept_<c>_missing_windows. Each collector is its own process with the default registry, so
process_resident_memory_bytes and friends come for free.
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

# Counters' *_created series double the output and nobody graphs them.
prometheus_client.disable_created_metrics()

ERROR_KINDS = ("http", "validation", "database")
CYCLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class CollectorMetrics:
    def __init__(
        self,
        name: str,
        windows: bool = False,
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
            f"{p}_errors", "Errors by kind (http, validation, database)", ["kind"], registry=registry
        )
        for kind in ERROR_KINDS:  # present at 0 from the start, so rate() and alerts see them
            self.errors.labels(kind)
        self.backfilled: Counter | None = None
        self.missing: Gauge | None = None
        if windows:
            self.backfilled = Counter(
                f"{p}_backfilled_windows", "Missing windows fetched and stored", registry=registry
            )
            self.missing = Gauge(
                f"{p}_missing_windows", "Windows inside the look-back not yet stored", registry=registry
            )


def serve(host: str, port: int) -> None:
    """Expose the default registry on host:port (a daemon thread)."""
    if port > 0:
        prometheus_client.start_http_server(port, addr=host)
