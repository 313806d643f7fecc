"""Gap-free collection of the API's fixed windows (/5m and /1h).

Every cycle:
1. Ask for the newest window (no ?timestamp): its `timestamp` is the newest window the API
   has published, by the API's own clock. An empty newest window may just not be closed yet,
   so it is not recorded; it is asked for again next cycle.
2. List the windows of the look-back that are not in the `collection_windows` ledger, up to
   the newest (if it has data), and store them oldest first: older ones fetched with
   ?timestamp=T, paced; the newest from step 1, last. Each is stored in ONE transaction with
   its ledger row, so a window is either complete or absent. Windows older than the API's
   newest are final: an empty answer is recorded with item_count 0 and never asked for again.

The look-back is measured back from the API's newest window (its own clock), not from the
host's clock: a host clock that runs ahead or behind changes nothing about which windows are
fetched. The host clock is used only to see the API (or the host) drift: the age of the newest
window the API published (gept_<c>_api_newest_window_age_seconds = host time at the answer -
end of that window). When the newest window the ledger holds is older than
GEPT_<NAME>_STALL_SECONDS at the answer (default 3 windows, at least 60 s) the cycle stored
nothing new for too long: it counts as a failure (errors_total{kind="stale"}, no
last_success), whatever else it did.

What the ledger promises: the windows stored in a cycle go in oldest first, so a stop mid-way
leaves only a run of missing windows at the end, which the next cycle fills. A window whose
answer is rejected by validation (after the HTTP client's retries) is skipped and the later
windows are still stored: the ledger then has a hole behind its newest window. Nothing is lost:
the hole counts in gept_<c>_missing_windows, the cycle counts as failed, and every cycle asks
for it again until it is accepted (or leaves the look-back). Stopping at the first rejected
window instead would let one bad old window hold back every newer one.

History written before the ledger began (an adopted database, whose old collectors wrote the
table without a ledger): a window older than the ledger's first row (every window, while the
ledger of the series is empty) that already has rows in the table is taken as stored: its
ledger row is added with the number of items found and it is not fetched again. Windows
without rows are fetched as usual (gaps of the old collectors are filled). Rows are written
with the table's key (item_id, "timestamp"), so a window is never stored twice even where the
table has no unique index yet (gept_collectors.db).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from . import validate
from .db import record_window
from .runner import Collector, Stalled
from .validate import PriceRow, ValidationError

log = logging.getLogger(__name__)

PRICE_KEY = ("item_id", "timestamp")
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
        self.stall = s.get_float("STALL_SECONDS", max(60.0, 3.0 * self.window_seconds))

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
        # The ledger row was just added, so the rows are new (unless written by another path,
        # e.g. the hourly /timeseries back-fill): try one direct COPY first.
        return self.db.insert(cur, self.table, PRICE_COLUMNS, rows, fresh=True, key=PRICE_KEY)

    def missing(
        self, cur: psycopg2.extensions.cursor, newest: int, upper: int
    ) -> tuple[list[int], int | None]:
        """Window starts in [newest - look-back, upper] that the ledger lacks, oldest first, and
        the newest window start the ledger holds (None if it is empty)."""
        w = self.window_seconds
        lower = -(-int(newest - self.lookback) // w) * w
        self.adopt_history(cur, lower, upper)
        cur.execute(
            "SELECT extract(epoch FROM window_start)::bigint FROM collection_windows "
            "WHERE series = %s AND window_start BETWEEN to_timestamp(%s) AND to_timestamp(%s)",
            (self.series, lower, upper),
        )
        have = {row[0] for row in cur.fetchall()}
        cur.execute(
            "SELECT extract(epoch FROM max(window_start))::bigint FROM collection_windows WHERE series = %s",
            (self.series,),
        )
        return [t for t in range(lower, upper + 1, w) if t not in have], cur.fetchone()[0]

    def adopt_history(self, cur: psycopg2.extensions.cursor, lower: int, upper: int) -> None:
        """Record in the ledger the windows in [lower, upper] older than its first row (all of
        them while it is empty) that the table already holds rows for (written before the
        ledger began, e.g. by the old collectors)."""
        cur.execute(
            "SELECT extract(epoch FROM min(window_start))::bigint FROM collection_windows WHERE series = %s",
            (self.series,),
        )
        first = cur.fetchone()[0]
        top = upper if first is None else min(upper, first - self.window_seconds)
        if top < lower:
            return
        cur.execute(
            sql.SQL(
                "INSERT INTO collection_windows (series, window_start, item_count) "
                'SELECT %s, "timestamp", count(DISTINCT item_id) FROM {table} '
                'WHERE "timestamp" BETWEEN to_timestamp(%s) AND to_timestamp(%s) '
                'AND extract(epoch FROM "timestamp")::bigint %% %s = 0 '
                'GROUP BY "timestamp" ON CONFLICT DO NOTHING'
            ).format(table=sql.Identifier(self.table)),
            (self.series, lower, top, self.window_seconds),
        )
        if cur.rowcount:
            log.info(
                "%s: %d window(s) already in %s before the ledger began: recorded, not fetched again",
                self.series,
                cur.rowcount,
                self.table,
            )

    def _save(self, start: int, rows: Sequence[PriceRow]) -> None:
        inserted = self.db.run(self.store, start, rows)
        if inserted is not None:
            self.metrics.rows_inserted.inc(inserted)
            log.debug("%s window %d: %d items, %d rows inserted", self.series, start, len(rows), inserted)

    def cycle(self) -> None:
        m = self.metrics
        assert m.missing is not None and m.backfilled is not None and m.api_age is not None  # noqa: S101
        w = self.window_seconds
        newest, newest_rows = self.fetch_window(None)
        answered = time.time()
        m.api_age.set(answered - (newest + w))
        upper = newest if newest_rows else newest - w
        todo, in_ledger = self.db.run(self.missing, newest, upper)
        stored = [t for t in (in_ledger, todo[-1] if todo else None) if t is not None]
        self.metrics.missing.set(len(todo))
        if len(todo) > 1:
            log.info(
                "%s: %d missing window(s), %d..%d; back-filling", self.series, len(todo), todo[0], todo[-1]
            )
        rejected = 0
        for start in todo:
            if start == newest:  # already fetched; stored last
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
        # Everything owed is stored: the newest window held is the newest of the ledger and the
        # last one stored. Too old at the answer: nothing new could be stored for too long.
        age = answered - (max(stored) + w) if stored else answered - (newest + w)
        if age > self.stall:
            m.errors.labels("stale").inc()
            raise Stalled(
                f"{self.series}: nothing new to store for {age:.0f}s (stall threshold {self.stall:.0f}s); "
                f"the API's newest window {newest} is {answered - newest - w:.0f}s old by the host clock"
            )
