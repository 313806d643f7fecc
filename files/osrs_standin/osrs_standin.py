#!/usr/bin/env python3
"""osrs_standin: a stand-in for the OSRS Wiki prices API, the OSRS news RSS, the wiki
recent-changes RSS and the OSRS homepage's player count, serving the real formats with
deterministic, realistic generated data. Standard library only.

It is used by the collectors' tests on 127.0.0.1 and deployed inside the demo host as the
collectors' base URL. Paths (base URL for the collectors: http://HOST:PORT/api/v1/osrs):

  /api/v1/osrs/latest                          {"data": {"<id>": {high, highTime, low, lowTime}}}
  /api/v1/osrs/5m[?timestamp=T]                {"data": {...}, "timestamp": T}  (T = window start)
  /api/v1/osrs/1h[?timestamp=T]                same shape, hourly windows
  /api/v1/osrs/timeseries?timestep=5m|1h|6h|24h&id=N   {"data": [...], "itemId": N}  (<= 365 points)
  /api/v1/osrs/mapping                         [{examine, id, members, lowalch, limit, value,
                                                 highalch, icon, name}]
  /m=news/latest_news.rss                      the OSRS news RSS
  /w/Special:RecentChanges                     the wiki recent-changes RSS (any query string)
  /                                            homepage HTML with <p class='player-count'>

Data model (all a pure function of --seed and the wall clock, so answers are reproducible):
  * ~4,000 tradeable items (of ~4,650 in /mapping); some never traded (absent from /latest).
  * Prices follow a per-item multi-scale random walk (hashed value noise), so any window of
    any time can be served in O(items) without standining history.
  * Each window an item trades with an item-specific probability; a side not traded in a
    window has a null average price and volume 0, exactly as the real API does.
  * /5m and /1h without ?timestamp answer the newest closed window; a window that has not
    closed yet answers empty data. Window lengths are options so tests can run fast.

Faults (to exercise the collectors' error handling) are switched on at start with --fault,
or at run time through the control API when --control is given:
  POST   /_control/faults   body {"kind": K, "path": "/5m", "count": N, "delay": S, "skip": M}
  DELETE /_control/faults   clear every fault
  GET    /_control/stats    requests served per path, and the user agents seen
K is one of: 429, 500, slow, truncated, null_prices, empty, stale. "path" matches the end of the
request path (any path if omitted); "skip" lets the first M matching requests through untouched;
"count" is how many answers it affects after that (-1 = until cleared). "slow" waits "delay"
seconds; "stale" makes /5m and /1h answer as if their clock were "delay" seconds behind (the
newest window stuck in the past; a newer ?timestamp answers empty).

Generic user agents (python-requests, curl, Python-urllib, Wget, empty) get 403, like the real API.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import sys
import threading
import time
from collections import Counter, OrderedDict
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

API_PREFIX = "/api/v1/osrs"
RSS_TYPE = "application/rss+xml; charset=utf-8"
BLOCKED_AGENTS = re.compile(r"^$|python-requests|curl/|python-urllib|wget|go-http-client|okhttp", re.I)
FAULT_KINDS = ("429", "500", "slow", "truncated", "null_prices", "empty", "stale")
TIMESTEPS = {"5m": 300, "1h": 3600, "6h": 21600, "24h": 86400}
MASK64 = (1 << 64) - 1

_MATERIALS = [
    "Bronze",
    "Iron",
    "Steel",
    "Black",
    "Mithril",
    "Adamant",
    "Rune",
    "Dragon",
    "Granite",
    "Oak",
    "Willow",
    "Maple",
    "Yew",
    "Magic",
    "Redwood",
    "Blessed",
    "Ancient",
    "Crystal",
]
_OBJECTS = [
    "scimitar",
    "platebody",
    "full helm",
    "kiteshield",
    "dagger",
    "longsword",
    "arrows",
    "bolts",
    "logs",
    "plank",
    "bar",
    "ore",
    "pickaxe",
    "axe",
    "boots",
    "gloves",
    "shortbow",
    "longbow",
    "shield",
    "battleaxe",
    "warhammer",
    "chainbody",
    "platelegs",
    "med helm",
    "2h sword",
    "spear",
    "hasta",
    "claws",
    "mace",
    "sq shield",
    "dart",
    "javelin",
]
_NEWS_CATEGORIES = ["Game Updates", "Community", "Dev Blogs", "Future Updates", "Events", "Technical"]
_WIKI_NAMESPACES = ["", "Exchange:", "Module:Exchange/", "Talk:", "User:", "Update:"]


def _mix(*values: int) -> int:
    """A fast deterministic 64-bit hash of integers (CPython's tuple hash is seed-free for ints)."""
    return hash(values) & MASK64


def _unit(*values: int) -> float:
    """A deterministic float in [0, 1) from the values."""
    return (hash(values) & MASK64) / 2.0**64


class Market:
    """The generated world: items, their prices at any time, news and player counts."""

    def __init__(
        self, seed: int, items: int, mapping_items: int, window_5m: int, window_1h: int, publish_delay: float
    ) -> None:
        self.seed = seed
        self.window = {"5m": window_5m, "1h": window_1h}
        self.publish_delay = publish_delay
        ids: set[int] = set()
        k = 0
        while len(ids) < mapping_items:
            ids.add(2 + _mix(seed, 1, k) % 30000)
            k += 1
        all_ids = sorted(ids)
        self.mapping_ids = all_ids
        # The first `items` (in a seeded order) are tradeable on the GE; the rest only in /mapping.
        order = sorted(all_ids, key=lambda i: _mix(seed, 2, i))
        self.tradeable = sorted(order[:items])
        self.base_log_price: dict[int, float] = {}
        self.activity: dict[int, float] = {}
        self.volume_scale: dict[int, float] = {}
        self.spread: dict[int, float] = {}
        for i in self.tradeable:
            # Log-uniform base price between 1 gp and ~2 billion gp, skewed to cheap items.
            self.base_log_price[i] = math.log(1.0 + 10 ** (_unit(seed, 3, i) ** 1.6 * 9.2))
            self.activity[i] = 0.35 + 0.65 * _unit(seed, 4, i)
            self.volume_scale[i] = 10 ** (4.5 - 4.2 * _unit(seed, 5, i) ** 0.7)
            self.spread[i] = 1.0 + 0.004 + 0.02 * _unit(seed, 20, i)
        # About 8 % of tradeable items never traded at all: absent from /latest.
        self.never_traded = {i for i in self.tradeable if _unit(seed, 6, i) < 0.08}
        # Some items have only ever traded one way: null high (or low) in /latest.
        self.one_sided = {
            i: ("high" if _unit(seed, 7, i) < 0.5 else "low")
            for i in self.tradeable
            if 0.08 <= _unit(seed, 6, i) < 0.11
        }

    # -- prices ---------------------------------------------------------------------------
    def _noise(self, item: int, scale: int, t: float) -> float:
        """Value noise in [-1, 1]: linear interpolation between hashed knots every `scale` s."""
        k = math.floor(t / scale)
        frac = t / scale - k
        a = _unit(self.seed, 10 + scale, item, k) * 2 - 1
        b = _unit(self.seed, 10 + scale, item, k + 1) * 2 - 1
        return a + (b - a) * frac

    def prices(self, item: int, t: float) -> tuple[int, int]:
        """The item's (high, low) price at unix time t: a multi-scale walk around its base."""
        walk = (
            0.010 * self._noise(item, 300, t)
            + 0.035 * self._noise(item, 3600, t)
            + 0.080 * self._noise(item, 86400, t)
            + 0.150 * self._noise(item, 604800, t)
        )
        mid = math.exp(self.base_log_price[item] + walk)
        spread = self.spread[item]
        return max(1, round(mid * spread)), max(1, round(mid / spread))

    def price(self, item: int, t: float, side: str) -> int:
        return self.prices(item, t)[0 if side == "high" else 1]

    def window_data(self, series: str, start: int, null_prices: bool = False) -> dict[str, Any]:
        """The /5m or /1h answer for the window starting at `start`."""
        length = self.window[series]
        data: dict[str, dict[str, int | None]] = {}
        hours = length / 3600.0
        for item in self.tradeable:
            if item in self.never_traded:
                continue
            # Longer windows: an item is more likely to have traded at all.
            p_trade = 1 - (1 - self.activity[item]) ** max(1.0, length / 300)
            if _unit(self.seed, 30, item, start) >= p_trade:
                continue
            high_traded = _unit(self.seed, 31, item, start) < 0.88
            low_traded = _unit(self.seed, 32, item, start) < 0.88 or not high_traded
            if null_prices or self.one_sided.get(item) == "low":
                high_traded = False
            if self.one_sided.get(item) == "high":
                low_traded = False
            if null_prices:
                low_traded = _unit(self.seed, 33, item, start) < 0.5
            high, low = self.prices(item, start + length / 2)
            vol = self.volume_scale[item] * max(hours, 1 / 12)
            entry: dict[str, int | None] = {
                "avgHighPrice": high if high_traded else None,
                "highPriceVolume": 1 + int(vol * _unit(self.seed, 34, item, start)) if high_traded else 0,
                "avgLowPrice": low if low_traded else None,
                "lowPriceVolume": 1 + int(vol * _unit(self.seed, 35, item, start)) if low_traded else 0,
            }
            data[str(item)] = entry
        return {"data": data, "timestamp": start}

    def latest(self, now: float, null_prices: bool = False) -> dict[str, Any]:
        """The /latest answer: last trade price and time per side, per item ever traded."""
        data: dict[str, dict[str, int | None]] = {}
        for item in self.tradeable:
            if item in self.never_traded:
                continue
            entry: dict[str, int | None] = {}
            for n, side in enumerate(("high", "low")):
                never = self.one_sided.get(item) not in (None, side) or (null_prices and side == "high")
                if never:
                    entry[side], entry[f"{side}Time"] = None, None
                    continue
                # Seconds since the last trade this way: busy items trade within seconds.
                idle = (1 - self.activity[item]) ** 3
                ago = int(5 + 3600 * idle * _unit(self.seed, 40 + n, item, int(now) // 60))
                when = int(now) - ago
                entry[side], entry[f"{side}Time"] = self.price(item, when, side), when
            data[str(item)] = entry
        return {"data": data}

    def latest_window(self, series: str, now: float) -> int:
        """Start of the newest closed window (closed at least publish_delay seconds ago)."""
        length = self.window[series]
        return int((now - self.publish_delay) // length) * length - length

    def timeseries(self, item: int, timestep: str, now: float) -> dict[str, Any]:
        step = TIMESTEPS[timestep]
        last = int(now // step) * step - step
        points = []
        if item in self.base_log_price and item not in self.never_traded:
            for k in range(364, -1, -1):
                t = last - k * step
                if _unit(self.seed, 50, item, t) < 0.15:  # no trades that step: absent point
                    continue
                vol = max(1, int(self.volume_scale[item] * step / 3600 * _unit(self.seed, 51, item, t)))
                points.append(
                    {
                        "timestamp": t,
                        "avgHighPrice": self.price(item, t + step / 2, "high"),
                        "avgLowPrice": self.price(item, t + step / 2, "low"),
                        "highPriceVolume": vol,
                        "lowPriceVolume": max(0, vol - 1),
                    }
                )
        return {"data": points, "itemId": item}

    def mapping(self) -> list[dict[str, Any]]:
        rows = []
        for item in self.mapping_ids:
            name = (
                f"{_MATERIALS[_mix(self.seed, 60, item) % len(_MATERIALS)]} "
                f"{_OBJECTS[_mix(self.seed, 61, item) % len(_OBJECTS)]} ({item})"
            )
            value = 1 + int(10 ** (_unit(self.seed, 62, item) * 6))
            row: dict[str, Any] = {
                "examine": f"A generated {name.lower()}.",
                "id": item,
                "members": _unit(self.seed, 63, item) < 0.6,
                "value": value,
                "icon": f"{name.replace(' ', '_')}.png",
                "name": name,
            }
            if _unit(self.seed, 64, item) > 0.1:  # ~10 % of items have no buy limit
                row["limit"] = [40, 70, 100, 125, 1000, 5000, 10000, 25000][_mix(self.seed, 65, item) % 8]
            if _unit(self.seed, 66, item) > 0.05:  # a few have no alchemy values
                row["lowalch"], row["highalch"] = value * 2 // 5, value * 3 // 5
            rows.append(row)
        return rows

    def player_count(self, now: float) -> int:
        day = 2 * math.pi * ((now % 86400) / 86400)
        return int(95000 + 25000 * math.sin(day - 1.2) + 3000 * (_unit(self.seed, 70, int(now) // 60) - 0.5))

    def news_rss(self, now: float, every: int = 3600, count: int = 20) -> str:
        newest = int(now // every)
        items = []
        for k in range(newest, newest - count, -1):
            published = datetime.fromtimestamp(k * every, UTC)
            category = _NEWS_CATEGORIES[_mix(self.seed, 80, k) % len(_NEWS_CATEGORIES)]
            title = f"{category[:-1] if category.endswith('s') else category} #{k % 100000}: news {k}"
            link = f"https://secure.runescape.com/m=news/a=13/news-{k}?oldschool=1"
            items.append(
                "<item>"
                f"<title>{escape(title)}</title><link>{escape(link)}</link>"
                f"<description>{escape(f'Generated story {k} & more.')}</description>"
                f"<category>{escape(category)}</category>"
                f"<pubDate>{format_datetime(published, usegmt=True)}</pubDate>"
                f'<guid isPermaLink="true">{escape(link)}</guid>'
                "</item>"
            )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
            "<title>Old School RuneScape - News Feed</title>"
            "<link>https://secure.runescape.com/m=news/archive?oldschool=1</link>"
            "<description>Old School RuneScape news</description>" + "".join(items) + "</channel></rss>"
        )

    def wiki_rss(self, now: float, every: int = 60, count: int = 30) -> str:
        newest = int(now // every)
        items = []
        for k in range(newest, newest - count, -1):
            published = datetime.fromtimestamp(k * every, UTC)
            ns = _WIKI_NAMESPACES[_mix(self.seed, 90, k) % len(_WIKI_NAMESPACES)]
            item = self.tradeable[_mix(self.seed, 91, k) % len(self.tradeable)]
            title = f"{ns}Item {item}"
            link = f"https://oldschool.runescape.wiki/w/{title.replace(' ', '_')}?diff={k}"
            items.append(
                "<item>"
                f"<title>{escape(title)}</title><link>{escape(link)}</link>"
                f'<guid isPermaLink="false">{escape(link)}</guid>'
                f"<description>{escape(f'<p>Edit {k} by a generated editor</p>')}</description>"
                f"<pubDate>{format_datetime(published, usegmt=True)}</pubDate>"
                "</item>"
            )
        return (
            '<?xml version="1.0"?>\n<rss version="2.0"><channel>'
            "<title>Old School RuneScape Wiki  - Recent changes [en]</title>"
            "<link>https://oldschool.runescape.wiki/w/Special:RecentChanges</link>"
            "<description>Track the most recent changes to the wiki in this feed.</description>"
            + "".join(items)
            + "</channel></rss>"
        )


class Faults:
    """Switchable faults, thread-safe. Each fault: kind, path suffix, remaining count, delay."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[dict[str, Any]] = []

    def add(self, kind: str, path: str = "", count: int = -1, delay: float = 5.0, skip: int = 0) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._faults.append(
                {"kind": kind, "path": path, "count": int(count), "delay": float(delay), "skip": int(skip)}
            )

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, path: str) -> list[dict[str, Any]]:
        """The faults that apply to this request (each consumes one of its count)."""
        hits = []
        with self._lock:
            for fault in self._faults:
                if fault["count"] != 0 and path.endswith(fault["path"]):
                    if fault["skip"] > 0:
                        fault["skip"] -= 1
                        continue
                    hits.append(dict(fault))
                    if fault["count"] > 0:
                        fault["count"] -= 1
            self._faults = [f for f in self._faults if f["count"] != 0]
        return hits

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(f) for f in self._faults]


class StandIn(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], market: Market, faults: Faults, control: bool) -> None:
        super().__init__(address, Handler)
        self.market = market
        self.faults = faults
        self.control = control
        self.stats: Counter[str] = Counter()
        self.agents: Counter[str] = Counter()
        self.stats_lock = threading.Lock()
        self.cache: OrderedDict[tuple[str, int, bool], bytes] = OrderedDict()
        self.cache_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-answer (e.g. a collector stopping) is not an error."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def window_bytes(self, series: str, start: int, null_prices: bool) -> bytes:
        key = (series, start, null_prices)
        with self.cache_lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
        body = json.dumps(self.market.window_data(series, start, null_prices), separators=(",", ":")).encode()
        with self.cache_lock:
            self.cache[key] = body
            while len(self.cache) > 256:
                self.cache.popitem(last=False)
        return body


class Handler(BaseHTTPRequestHandler):
    server: StandIn
    protocol_version = "HTTP/1.1"
    server_version = "osrs-standin/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (base-class signature)
        if self.server.control:  # quiet in tests; the access log is the journal in the demo host
            return
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    # -- plumbing -------------------------------------------------------------------------
    def _send(
        self,
        code: int,
        body: bytes,
        ctype: str = "application/json",
        headers: dict[str, str] | None = None,
        truncate: bool = False,
    ) -> None:
        if truncate:
            body = body[: max(1, len(body) // 2)]
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj: Any, **kw: Any) -> None:
        self._send(code, json.dumps(obj, separators=(",", ":")).encode(), **kw)

    def do_HEAD(self) -> None:  # noqa: N802  (http.server naming)
        self.do_GET()

    def do_POST(self) -> None:  # noqa: N802
        if not (self.server.control and self.path.startswith("/_control/faults")):
            self._json(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            spec = json.loads(self.rfile.read(length) or b"{}")
            self.server.faults.add(
                str(spec["kind"]),
                str(spec.get("path", "")),
                int(spec.get("count", -1)),
                float(spec.get("delay", 5.0)),
                int(spec.get("skip", 0)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            self._json(400, {"error": str(exc)})
            return
        self._json(200, {"faults": self.server.faults.snapshot()})

    def do_DELETE(self) -> None:  # noqa: N802
        if not (self.server.control and self.path.startswith("/_control/faults")):
            self._json(404, {"error": "not found"})
            return
        self.server.faults.clear()
        self._json(200, {"faults": []})

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        path, query = url.path.rstrip("/") or "/", parse_qs(url.query)
        if path == "/_control/stats" and self.server.control:
            with self.server.stats_lock:
                self._json(
                    200,
                    {
                        "requests": dict(self.server.stats),
                        "agents": dict(self.server.agents),
                        "faults": self.server.faults.snapshot(),
                    },
                )
            return
        agent = self.headers.get("User-Agent", "")
        with self.server.stats_lock:
            self.server.stats[path] += 1
            self.server.agents[agent] += 1
        if BLOCKED_AGENTS.search(agent):
            self._json(403, {"error": "Please set a descriptive User-Agent (see the API's documentation)"})
            return
        faults = {f["kind"]: f for f in self.server.faults.take(path)}
        if "slow" in faults:
            time.sleep(faults["slow"]["delay"])
        now = time.time() - (faults["stale"]["delay"] if "stale" in faults else 0.0)
        if "429" in faults:
            self._json(429, {"error": "Too many requests"}, headers={"Retry-After": "1"})
            return
        if "500" in faults:
            self._send(500, b"<html><body>Internal Server Error</body></html>", "text/html")
            return
        try:
            self._route(
                path,
                query,
                now=now,
                truncate="truncated" in faults,
                null_prices="null_prices" in faults,
                empty="empty" in faults,
            )
        except (ValueError, KeyError) as exc:
            self._json(400, {"error": str(exc)})

    def _route(
        self,
        path: str,
        query: dict[str, list[str]],
        now: float,
        truncate: bool,
        null_prices: bool,
        empty: bool,
    ) -> None:
        market = self.server.market
        if path in (f"{API_PREFIX}/5m", f"{API_PREFIX}/1h"):
            series = path.rsplit("/", 1)[1]
            newest = market.latest_window(series, now)
            if "timestamp" in query:
                start = int(query["timestamp"][0])
                if start % market.window[series]:
                    raise ValueError(f"timestamp must be a multiple of {market.window[series]}")
            else:
                start = newest
            if empty or start > newest or start < 1609459200:  # not closed yet / before 2021
                self._json(200, {"data": {}, "timestamp": start}, truncate=truncate)
                return
            self._send(200, self.server.window_bytes(series, start, null_prices), truncate=truncate)
        elif path == f"{API_PREFIX}/latest":
            self._json(200, {"data": {}} if empty else market.latest(now, null_prices), truncate=truncate)
        elif path == f"{API_PREFIX}/timeseries":
            step = query.get("timestep", [""])[0]
            if step not in TIMESTEPS or "id" not in query:
                raise ValueError("timestep (5m, 1h, 6h, 24h) and id are required")
            answer = market.timeseries(int(query["id"][0]), step, now)
            self._json(200, {"data": [], "itemId": answer["itemId"]} if empty else answer, truncate=truncate)
        elif path == f"{API_PREFIX}/mapping":
            self._json(200, [] if empty else market.mapping(), truncate=truncate)
        elif path == "/m=news/latest_news.rss":
            self._send(200, market.news_rss(now).encode(), RSS_TYPE, truncate=truncate)
        elif path == "/w/Special:RecentChanges":
            self._send(200, market.wiki_rss(now).encode(), RSS_TYPE, truncate=truncate)
        elif path == "/":
            count = f"{market.player_count(now):,}"
            html = (
                "<!DOCTYPE html><html><head><title>Old School RuneScape</title></head><body>"
                "<div class='player-count-wrap'>"
                f"<p class='player-count'>There are currently {count} people playing!</p>"
                "</div></body></html>"
            )
            self._send(200, html.encode(), "text/html; charset=utf-8", truncate=truncate)
        else:
            self._json(404, {"error": "not found"})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8099, help="port; 0 = any free port (default 8099)")
    p.add_argument("--seed", type=int, default=42, help="seed of the generated world (default 42)")
    p.add_argument("--items", type=int, default=4000, help="tradeable items (default 4000)")
    p.add_argument("--mapping-items", type=int, default=4650, help="items in /mapping (default 4650)")
    p.add_argument("--window-5m", type=int, default=300, help="length of a '5m' window in s (tests: 1-2)")
    p.add_argument("--window-1h", type=int, default=3600, help="length of a '1h' window in s")
    p.add_argument(
        "--publish-delay",
        type=float,
        default=0.0,
        help="seconds after a window closes before it is the newest answered (default 0)",
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND[:PATH[:COUNT[:DELAY]]]",
        help="switch a fault on at start; repeatable",
    )
    p.add_argument("--control", action="store_true", help="enable the /_control API (tests)")
    p.add_argument("--port-file", help="write the bound port to this file once listening")
    args = p.parse_args(argv)
    if args.mapping_items < args.items:
        p.error("--mapping-items must be >= --items")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    faults = Faults()
    for spec in args.fault:
        kind, path, count, delay = (spec.split(":") + ["", "-1", "5"])[:4]
        faults.add(kind, path, int(count), float(delay))
    market = Market(
        args.seed, args.items, args.mapping_items, args.window_5m, args.window_1h, args.publish_delay
    )
    server = StandIn((args.host, args.port), market, faults, args.control)
    port = server.server_address[1]
    if args.port_file:
        with open(args.port_file, "w", encoding="utf-8") as fh:
            fh.write(f"{port}\n")

    def stop(signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"osrs_standin listening on http://{args.host}:{port}{API_PREFIX} (seed {args.seed}, "
        f"{len(market.tradeable)} items, windows {args.window_5m}s/{args.window_1h}s)",
        flush=True,
    )
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
