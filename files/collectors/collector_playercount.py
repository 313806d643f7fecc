#!/usr/bin/env python3
"""gept-collector-playercount: the homepage's "There are currently N people playing!" every
minute -> player_counts ("timestamp" = the collection minute, UTC). Fetched on schedule even
while the database is away, and queued until it is back (gept_collectors.buckets)."""

import sys
from datetime import datetime

from gept_collectors import validate
from gept_collectors.buckets import BucketCollector
from gept_collectors.config import DEFAULT_HOMEPAGE_URL
from gept_collectors.runner import main


class PlayerCountCollector(BucketCollector):
    name = "playercount"
    default_interval = 60.0

    def fetch_bucket(self, when: datetime) -> int:  # noqa: ARG002  (the count is "now")
        url = self.settings.get_str("HOMEPAGE_URL", DEFAULT_HOMEPAGE_URL)
        return self.http.fetch(url, validate.player_count)

    def write_bucket(self, cur, when: datetime, count: int) -> int:  # noqa: ANN001
        cur.execute(
            'INSERT INTO player_counts ("timestamp", player_count) VALUES (%s, %s) ON CONFLICT DO NOTHING',
            (when, count),
        )
        return cur.rowcount


if __name__ == "__main__":
    sys.exit(main(PlayerCountCollector))
