#!/usr/bin/env python3
"""gept-collector-latest: /latest every minute -> prices_latest_1m.

"timestamp" is the collection minute (UTC); high_time/low_time are the API's highTime/lowTime.
A second answer within the same minute inserts nothing (ON CONFLICT DO NOTHING).
"""

import sys
import time

from gept_collectors import validate
from gept_collectors.runner import Collector, main

COLUMNS = ("item_id", "timestamp", "high", "high_time", "low", "low_time")


class LatestCollector(Collector):
    name = "latest"
    default_interval = 60.0

    def cycle(self) -> None:
        bucket = self.settings.get_float("BUCKET_SECONDS", 60.0)
        minute = validate.utc(time.time() // bucket * bucket)
        rows = self.http.fetch(self.http.url("latest"), lambda body: validate.latest(body, minute))
        inserted = self.db.run(lambda cur: self.db.insert(cur, "prices_latest_1m", COLUMNS, rows))
        self.metrics.rows_inserted.inc(inserted)


if __name__ == "__main__":
    sys.exit(main(LatestCollector))
