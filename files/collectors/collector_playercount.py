#!/usr/bin/env python3
"""gept-collector-playercount: the homepage's "There are currently N people playing!" every
minute -> player_counts ("timestamp" = the collection minute, UTC)."""

import sys
import time

from gept_collectors import validate
from gept_collectors.config import DEFAULT_HOMEPAGE_URL
from gept_collectors.runner import Collector, main


class PlayerCountCollector(Collector):
    name = "playercount"
    default_interval = 60.0

    def cycle(self) -> None:
        bucket = self.settings.get_float("BUCKET_SECONDS", 60.0)
        when = validate.utc(time.time() // bucket * bucket)
        url = self.settings.get_str("HOMEPAGE_URL", DEFAULT_HOMEPAGE_URL)
        count = self.http.fetch(url, validate.player_count)

        def write(cur) -> int:  # noqa: ANN001
            cur.execute(
                'INSERT INTO player_counts ("timestamp", player_count) VALUES (%s, %s) '
                "ON CONFLICT DO NOTHING",
                (when, count),
            )
            return cur.rowcount

        self.metrics.rows_inserted.inc(self.db.run(write))


if __name__ == "__main__":
    sys.exit(main(PlayerCountCollector))
