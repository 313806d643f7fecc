#!/usr/bin/env python3
"""gept-collector-latest: /latest every minute -> prices_latest_1m.

"timestamp" is the collection minute (UTC); high_time/low_time are the API's highTime/lowTime.
A second answer within the same minute inserts nothing (ON CONFLICT DO NOTHING). /latest has no
history, so each minute is fetched on schedule even while the database is away and queued
until it is back (gept_collectors.buckets).
"""

import sys
from datetime import datetime

from gept_collectors import validate
from gept_collectors.buckets import BucketCollector
from gept_collectors.runner import main

COLUMNS = ("item_id", "timestamp", "high", "high_time", "low", "low_time")


class LatestCollector(BucketCollector):
    name = "latest"
    default_interval = 60.0

    def fetch_bucket(self, when: datetime) -> list[tuple]:
        return self.http.fetch(self.http.url("latest"), lambda body: validate.latest(body, when))

    def write_bucket(self, cur, when: datetime, rows: list[tuple]) -> int:  # noqa: ANN001, ARG002
        return self.db.insert(cur, "prices_latest_1m", COLUMNS, rows, key=COLUMNS[:2])


if __name__ == "__main__":
    sys.exit(main(LatestCollector))
