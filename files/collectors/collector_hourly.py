#!/usr/bin/env python3
"""gept-collector-hourly: every /1h window (all items in one call) -> prices_1h, gap-filled
like the 5-minute series; items new to the table get their history from
/timeseries?timestep=1h (up to 365 points), a few per cycle, paced.

"New" means: absent from prices_1h when a window containing it is stored, while the table
already had data (on an empty table the look-back back-fill is the history, and looping
/timeseries over every item is what the API asks clients not to do).
"""

import logging
import sys
from collections.abc import Sequence

import psycopg2.extensions

from gept_collectors import validate
from gept_collectors.http import FetchError
from gept_collectors.runner import main
from gept_collectors.validate import PriceRow, ValidationError
from gept_collectors.windows import PRICE_COLUMNS, PRICE_KEY, WindowCollector

log = logging.getLogger("gept.hourly")
TIMESERIES_STEP = 3600


class HourlyCollector(WindowCollector):
    name = "hourly"
    series = "1h"
    table = "prices_1h"
    default_window = 3600
    default_lookback = 7 * 86400.0
    default_interval = 3600.0
    default_offset = 120.0

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.new_items: set[int] = set()
        self.per_cycle = self.settings.get_int("TIMESERIES_MAX_PER_CYCLE", 25)

    def before_insert(self, cur: psycopg2.extensions.cursor, start: int, rows: Sequence[PriceRow]) -> None:
        cur.execute("SELECT EXISTS (SELECT 1 FROM prices_1h)")
        if not cur.fetchone()[0]:
            return
        cur.execute(
            "SELECT i FROM unnest(%s::integer[]) AS i "
            "WHERE NOT EXISTS (SELECT 1 FROM prices_1h p WHERE p.item_id = i)",
            ([r[0] for r in rows],),
        )
        self.new_items.update(row[0] for row in cur.fetchall())

    def after_cycle(self) -> None:
        for n, item in enumerate(sorted(self.new_items)[: self.per_cycle]):
            if n:
                self.shutdown.wait(self.pacing)
            url = self.http.url("timeseries", timestep="1h", id=item)
            try:
                points = self.http.fetch(url, lambda body: validate.timeseries(body, TIMESERIES_STEP))
            except (FetchError, ValidationError):
                continue  # stays queued for the next cycle
            rows = [(item, validate.utc(p[0]), *p[1:]) for p in points]
            inserted = self.db.run(
                lambda cur, r=rows: self.db.insert(cur, self.table, PRICE_COLUMNS, r, key=PRICE_KEY)
            )
            self.metrics.rows_inserted.inc(inserted)
            self.new_items.discard(item)
            log.info("item %d is new: back-filled %d hourly points", item, inserted)


if __name__ == "__main__":
    sys.exit(main(HourlyCollector))
