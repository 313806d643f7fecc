#!/usr/bin/env python3
"""gept-collector-news: the OSRS news RSS and the wiki recent-changes RSS -> osrs_news,
de-duplicated by guid and categorised. XML is parsed without DTDs or entities
(gept_collectors.validate.rss). A feed that fails does not stop the other being stored.
"""

import re
import sys

from gept_collectors import validate
from gept_collectors.config import DEFAULT_NEWS_RSS_URL, DEFAULT_WIKI_RC_RSS_URL
from gept_collectors.http import FetchError
from gept_collectors.runner import Collector, main
from gept_collectors.validate import ValidationError

COLUMNS = ("guid", "source", "title", "link", "category", "description", "published_at")
# Keyword categories for news items that carry no <category> of their own.
KEYWORDS = (
    ("poll", "Polls"),
    ("update", "Game Updates"),
    ("dev blog", "Dev Blogs"),
    ("event", "Events"),
    ("maintenance", "Technical"),
)
WIKI_NAMESPACE = re.compile(r"^([A-Za-z ]+):")


def categorise(source: str, item: dict[str, str]) -> str:
    if source == "wiki_recent_changes":
        match = WIKI_NAMESPACE.match(item.get("title", ""))
        return f"wiki:{match.group(1).lower() if match else 'article'}"
    if item.get("category"):
        return item["category"]
    title = item.get("title", "").lower()
    return next((cat for word, cat in KEYWORDS if word in title), "News")


def to_rows(source: str, items: list[dict[str, str]]) -> list[tuple]:
    return [
        (
            (it.get("guid") or it["link"])[:500],
            source,
            it["title"][:500],
            it.get("link"),
            categorise(source, it),
            (it.get("description") or "")[:4000] or None,
            validate.rss_date(it.get("pubDate")),
        )
        for it in items
    ]


class NewsCollector(Collector):
    name = "news"
    default_interval = 900.0

    def cycle(self) -> None:
        feeds = (
            ("osrs_news", self.settings.get_str("NEWS_RSS_URL", DEFAULT_NEWS_RSS_URL)),
            ("wiki_recent_changes", self.settings.get_str("WIKI_RC_RSS_URL", DEFAULT_WIKI_RC_RSS_URL)),
        )
        failed = []
        for source, url in feeds:
            try:
                rows = to_rows(source, self.http.fetch(url, validate.rss))
            except (FetchError, ValidationError) as exc:
                failed.append(f"{source}: {exc}")
                continue
            inserted = self.db.run(lambda cur, r=rows: self.db.insert(cur, "osrs_news", COLUMNS, r, "values"))
            self.metrics.rows_inserted.inc(inserted)
        if failed:
            raise FetchError("; ".join(failed))


if __name__ == "__main__":
    sys.exit(main(NewsCollector))
