#!/usr/bin/env python3
"""gept-collector-items: /mapping once a day -> items (upsert).

rows_inserted_total counts new items; gept_items_rows_updated_total counts items whose
fields changed. Unchanged items are not rewritten (no dead tuples for nothing).
"""

import sys

import psycopg2.extras
from prometheus_client import Counter

from gept_collectors import validate
from gept_collectors.runner import Collector, main

UPSERT = """
INSERT INTO items AS t (item_id, name, examine, members, lowalch, highalch, ge_limit, value, icon)
VALUES %s
ON CONFLICT (item_id) DO UPDATE SET
    name = EXCLUDED.name, examine = EXCLUDED.examine, members = EXCLUDED.members,
    lowalch = EXCLUDED.lowalch, highalch = EXCLUDED.highalch, ge_limit = EXCLUDED.ge_limit,
    value = EXCLUDED.value, icon = EXCLUDED.icon, updated_at = now()
WHERE (t.name, t.examine, t.members, t.lowalch, t.highalch, t.ge_limit, t.value, t.icon)
      IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.examine, EXCLUDED.members, EXCLUDED.lowalch,
                        EXCLUDED.highalch, EXCLUDED.ge_limit, EXCLUDED.value, EXCLUDED.icon)
RETURNING (xmax = 0) AS inserted
"""


class ItemsCollector(Collector):
    name = "items"
    default_interval = 86400.0

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.rows_updated = Counter("gept_items_rows_updated", "Items whose mapping fields changed")

    def cycle(self) -> None:
        rows = self.http.fetch(self.http.url("mapping"), validate.mapping)

        def write(cur) -> list[bool]:  # noqa: ANN001
            answer = psycopg2.extras.execute_values(cur, UPSERT, rows, page_size=1000, fetch=True)
            return [r[0] for r in answer]

        flags = self.db.run(write)
        self.metrics.rows_inserted.inc(sum(flags))
        self.rows_updated.inc(len(flags) - sum(flags))


if __name__ == "__main__":
    sys.exit(main(ItemsCollector))
