"""Validation of every answer before anything is written: an answer is accepted whole or
rejected whole (ValidationError, counted as requests_total{status="invalid"}).

The parsers return plain tuples in the column order of the target tables.
"""

from __future__ import annotations

import json
import re
import xml.parsers.expat
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

PRICE_FIELDS = ("avgHighPrice", "highPriceVolume", "avgLowPrice", "lowPriceVolume")
PLAYER_COUNT_RE = re.compile(
    r"<p\s+class=['\"]player-count['\"]\s*>\s*There are currently\s+([\d,]+)\s+people playing!?\s*</p>", re.I
)

# (item_id, window_start, avg_high_price, high_price_volume, avg_low_price, low_price_volume)
PriceRow = tuple[int, datetime, int | None, int, int | None, int]


class ValidationError(ValueError):
    """An answer that does not have the documented shape."""


def sample(body: bytes | str, limit: int = 160) -> str:
    """A short, log-safe excerpt of a rejected answer."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"not JSON ({exc.__class__.__name__}: {exc})") from None


def _int(value: Any, what: str, nullable: bool = False, minimum: int = 0) -> int | None:
    if value is None and nullable:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValidationError(f"{what}: expected an integer >= {minimum}, got {value!r}")
    return value


def _item_id(key: Any) -> int:
    if isinstance(key, str) and key.isdigit():
        return int(key)
    if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
        return key
    raise ValidationError(f"item id {key!r} is not a non-negative integer")


def utc(ts: int | float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def window(body: bytes, window_seconds: int, expect: int | None = None) -> tuple[int, list[PriceRow]]:
    """A /5m or /1h answer -> (window start as unix time, rows)."""
    doc = parse_json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        raise ValidationError("expected an object with a 'data' object")
    start = _int(doc.get("timestamp"), "timestamp", minimum=1)
    assert start is not None  # noqa: S101  (narrowing for the type checker; _int raised otherwise)
    if start % window_seconds:
        raise ValidationError(f"timestamp {start} is not aligned to {window_seconds}s")
    if expect is not None and start != expect:
        raise ValidationError(f"asked for window {expect}, got {start}")
    when = utc(start)
    rows: list[PriceRow] = []
    append = rows.append
    for key, entry in doc["data"].items():
        # Fast path: the documented shape exactly (ints, null prices); anything else goes
        # through the checks below, which also word the error.
        if type(entry) is dict and type(key) is str and key.isascii() and key.isdigit():
            ah = entry.get("avgHighPrice")
            hv = entry.get("highPriceVolume", 0)
            al = entry.get("avgLowPrice")
            lv = entry.get("lowPriceVolume", 0)
            if (
                (ah is None or (type(ah) is int and ah >= 1))
                and (al is None or (type(al) is int and al >= 1))
                and type(hv) is int
                and hv >= 0
                and type(lv) is int
                and lv >= 0
            ):
                append((int(key), when, ah, hv, al, lv))
                continue
        item = _item_id(key)
        if not isinstance(entry, dict):
            raise ValidationError(f"item {key}: expected an object")
        append(
            (
                item,
                when,
                _int(entry.get("avgHighPrice"), f"{key}.avgHighPrice", nullable=True, minimum=1),
                _int(entry.get("highPriceVolume", 0), f"{key}.highPriceVolume") or 0,
                _int(entry.get("avgLowPrice"), f"{key}.avgLowPrice", nullable=True, minimum=1),
                _int(entry.get("lowPriceVolume", 0), f"{key}.lowPriceVolume") or 0,
            )
        )
    return start, rows


def latest(body: bytes, minute: datetime) -> list[tuple[Any, ...]]:
    """A /latest answer -> rows (item_id, minute, high, high_time, low, low_time)."""
    doc = parse_json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        raise ValidationError("expected an object with a 'data' object")
    rows = []
    for key, entry in doc["data"].items():
        item = _item_id(key)
        if not isinstance(entry, dict):
            raise ValidationError(f"item {key}: expected an object")
        high = _int(entry.get("high"), f"{key}.high", nullable=True, minimum=1)
        low = _int(entry.get("low"), f"{key}.low", nullable=True, minimum=1)
        high_time = _int(entry.get("highTime"), f"{key}.highTime", nullable=True, minimum=1)
        low_time = _int(entry.get("lowTime"), f"{key}.lowTime", nullable=True, minimum=1)
        rows.append(
            (
                item,
                minute,
                high,
                utc(high_time) if high_time else None,
                low,
                utc(low_time) if low_time else None,
            )
        )
    return rows


def timeseries(body: bytes, step_seconds: int) -> list[tuple[int, int | None, int, int | None, int]]:
    """A /timeseries answer -> [(timestamp, avg_high, high_volume, avg_low, low_volume)]."""
    doc = parse_json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise ValidationError("expected an object with a 'data' list")
    points = []
    for n, p in enumerate(doc["data"]):
        if not isinstance(p, dict):
            raise ValidationError(f"point {n}: expected an object")
        ts = _int(p.get("timestamp"), f"point {n}.timestamp", minimum=1)
        assert ts is not None  # noqa: S101  (narrowing)
        if ts % step_seconds:
            raise ValidationError(f"point {n}: timestamp {ts} not aligned to {step_seconds}s")
        points.append(
            (
                ts,
                _int(p.get("avgHighPrice"), "avgHighPrice", nullable=True, minimum=1),
                _int(p.get("highPriceVolume") or 0, "highPriceVolume") or 0,
                _int(p.get("avgLowPrice"), "avgLowPrice", nullable=True, minimum=1),
                _int(p.get("lowPriceVolume") or 0, "lowPriceVolume") or 0,
            )
        )
    return points


def mapping(body: bytes) -> list[tuple[Any, ...]]:
    """A /mapping answer -> rows (item_id, name, examine, members, lowalch, highalch, ge_limit,
    value, icon); limit/lowalch/highalch may be absent (NULL)."""
    doc = parse_json(body)
    if not isinstance(doc, list) or not doc:
        raise ValidationError("expected a non-empty list of items")
    rows = []
    for n, it in enumerate(doc):
        if not isinstance(it, dict) or not isinstance(it.get("name"), str) or not it["name"]:
            raise ValidationError(f"entry {n}: expected an object with a name")
        members = it.get("members")
        if members is not None and not isinstance(members, bool):
            raise ValidationError(f"entry {n}: members must be a boolean")
        rows.append(
            (
                _item_id(it.get("id")),
                it["name"],
                _opt_str(it.get("examine")),
                members,
                *(
                    _int(it.get(k), f"entry {n}.{k}", nullable=True)
                    for k in ("lowalch", "highalch", "limit", "value")
                ),
                _opt_str(it.get("icon")),
            )
        )
    return rows


def _opt_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValidationError(f"expected a string, got {value!r}")


def player_count(body: bytes) -> int:
    match = PLAYER_COUNT_RE.search(body.decode("utf-8", "replace"))
    if not match:
        raise ValidationError("no <p class='player-count'> with a number on the page")
    return int(match.group(1).replace(",", ""))


def rss(body: bytes) -> list[dict[str, str]]:
    """RSS 2.0 <item>s as dicts of their child elements' text (title, link, guid, pubDate, ...).

    Parsed with expat directly and safely: any DOCTYPE (and so any entity declaration) is
    rejected before it is read, so there is no entity expansion and no external fetch.
    """
    items: list[dict[str, str]] = []
    stack: list[str] = []
    current: dict[str, str] | None = None
    text: list[str] = []

    def forbid(*_args: Any) -> None:
        raise ValidationError("DOCTYPE/ENTITY declarations are not accepted in a feed")

    def start(tag: str, _attrs: dict[str, str]) -> None:
        nonlocal current
        stack.append(tag)
        text.clear()
        if tag == "item":
            current = {}

    def end(tag: str) -> None:
        nonlocal current
        stack.pop()
        if tag == "item" and current is not None:
            items.append(current)
            current = None
        elif current is not None and stack and stack[-1] == "item":
            current[tag] = "".join(text).strip()
        text.clear()

    parser = xml.parsers.expat.ParserCreate()
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = forbid
    parser.EntityDeclHandler = forbid
    parser.ExternalEntityRefHandler = forbid
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    try:
        parser.Parse(body, True)
    except xml.parsers.expat.ExpatError as exc:
        raise ValidationError(f"not well-formed XML ({exc})") from None
    for n, it in enumerate(items):
        if not it.get("title") or not (it.get("guid") or it.get("link")):
            raise ValidationError(f"item {n}: needs a title and a guid or link")
    return items


def rss_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
