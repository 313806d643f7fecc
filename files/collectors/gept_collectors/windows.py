"""Gap-free collection of the API's fixed windows (/5m and /1h).

Every cycle:
1. Ask for the newest window (no ?timestamp): its `timestamp` is the newest window the API
   has published, by the API's own clock. An empty newest window may just not be closed yet,
   so it is not recorded; it is asked for again next cycle.
2. List the windows inside the look-back that are not in the `collection_windows` ledger,
   up to the newest (if it has data), and store them oldest first: older ones fetched with
   ?timestamp=T, paced; the newest from step 1, last. Each is stored in ONE transaction with
   its ledger row, so a window is either complete or absent, and the ledger only ever grows at
   its end (no holes behind the newest stored window, even if the process stops mid-way).
   Windows older than the API's newest are final: an empty answer is recorded with
   item_count 0 and never asked for again.
A window rejected by validation stays missing (and is retried next cycle); gept_<c>_missing_windows
says how many are still owed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import psycopg2.extensions

from . import validate
from .db import record_window
from .runner import Collector
from .validate import PriceRow, ValidationError

log = logging.getLogger(__name__)

PRICE_COLUMNS = (
    "item_id",
    "timestamp",
    "avg_high_price",
    "high_price_volume",
    "avg_low_price",
    "low_price_volume",
)


class WindowCollector(Collector):
    windows = True
    series = "5m"  # collection_windows.series and the API path
    table = "price_data_5min"
    default_window = 300
    default_lookback = 86400.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = self.settings
        self.window_seconds = s.get_int("WINDOW_SECONDS", self.default_window)
        self.lookback = s.get_float("LOOKBACK_SECONDS", self.default_lookback)
        self.pacing = s.get_float("BACKFILL_PACING_SECONDS", 1.0)
        if self.window_seconds <= 0 or self.lookback < self.window_seconds:
            raise ValueError("WINDOW_SECONDS must be > 0 and LOOKBACK_SECONDS >= WINDOW_SECONDS")

    # -- hooks for subclasses -----------------------------------------------------------
    def before_insert(self, cur: psycopg2.extensions.cursor, start: int, rows: Sequence[PriceRow]) -> None:
        """Called inside the window's transaction, before its rows are inserted."""

    def after_cycle(self) -> None:
        """Called once the windows are stored (the hourly collector back-fills new items here)."""

    # -- the cycle ----------------------------------------------------------------------
    def fetch_window(self, start: int | None) -> tuple[int, list[PriceRow]]:
        url = self.http.url(self.series, timestamp=start)
        return self.http.fetch(url, lambda body: validate.window(body, self.window_seconds, expect=start))

    def store(self, cur: psycopg2.extensions.cursor, start: int, rows: Sequence[PriceRow]) -> int | None:
        """Ledger row + price rows in the caller's transaction; None if already stored."""
        if not record_window(cur, self.series, validate.utc(start), len(rows)):
            return None
        self.before_insert(cur, start, rows)
        return self.db.insert(cur, self.table, PRICE_COLUMNS, rows)

    def missing(self, cur: psycopg2.extensions.cursor, upper: int) -> list[int]:
        """Window starts in [now - look-back, upper] that the ledger lacks, oldest first."""
        w = self.window_seconds
        lower = -(-int(time.time() - self.lookback) // w) * w
        cur.execute(
            "SELECT extract(epoch FROM window_start)::bigint FROM collection_windows "
            "WHERE series = %s AND window_start BETWEEN to_timestamp(%s) AND to_timestamp(%s)",
            (self.series, lower, upper),
        )
        have = {row[0] for row in cur.fetchall()}
        return [t for t in range(lower, upper + 1, w) if t not in have]

    def _save(self, start: int, rows: Sequence[PriceRow]) -> None:
        inserted = self.db.run(self.store, start, rows)
        if inserted is not None:
            self.metrics.rows_inserted.inc(inserted)
            log.debug("%s window %d: %d items, %d rows inserted", self.series, start, len(rows), inserted)

    def cycle(self) -> None:
        assert self.metrics.missing is not None and self.metrics.backfilled is not None  # noqa: S101
        newest, newest_rows = self.fetch_window(None)
        upper = newest if newest_rows else newest - self.window_seconds
        todo = self.db.run(self.missing, upper)
        self.metrics.missing.set(len(todo))
        if len(todo) > 1:
            log.info(
                "%s: %d missing window(s), %d..%d; back-filling", self.series, len(todo), todo[0], todo[-1]
            )
        rejected = 0
        for start in todo:
            if start == newest:  # already fetched; stored last, so the ledger grows without holes
                rows = newest_rows
            else:
                self.shutdown.wait(self.pacing)
                try:
                    _, rows = self.fetch_window(start)
                except ValidationError:
                    rejected += 1
                    continue
                self.metrics.backfilled.inc()
            self._save(start, rows)
            self.metrics.missing.dec()
        self.after_cycle()
        if rejected:
            raise ValidationError(f"{rejected} window(s) rejected; they stay missing and are retried")
