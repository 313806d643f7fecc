"""The standin API serves the real formats and its faults; the library's HTTP client, config
and validators behave on them. No database needed."""

from __future__ import annotations

import json
import sys
import time

import pytest
from collectors_support import COLLECTORS_DIR, USER_AGENT, StandIn
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(COLLECTORS_DIR))
from gept_collectors import config, validate  # noqa: E402
from gept_collectors.http import FetchError, HttpClient  # noqa: E402
from gept_collectors.metrics import CollectorMetrics  # noqa: E402
from gept_collectors.shutdown import Shutdown  # noqa: E402


def client(standin: StandIn, **env: str) -> tuple[HttpClient, CollectorMetrics]:
    base = {
        "GEPT_DB_PASSWORD": "x",
        "GEPT_USER_AGENT": USER_AGENT,
        "GEPT_API_BASE_URL": standin.api,
        "GEPT_HTTP_TIMEOUT_SECONDS": "1",
        "GEPT_HTTP_RETRIES": "2",
        "GEPT_HTTP_BACKOFF_BASE_SECONDS": "0.05",
    }
    settings = config.load("fivemin", {**base, **env})
    metrics = CollectorMetrics("fivemin", windows=True, registry=CollectorRegistry())
    return HttpClient(settings, metrics, Shutdown()), metrics


def count(metrics: CollectorMetrics, status: str) -> float:
    return metrics.requests.labels(status)._value.get()


def test_standin_formats(standin: StandIn) -> None:
    code, body = standin.get("/api/v1/osrs/5m")
    doc = json.loads(body)
    assert code == 200 and doc["timestamp"] % standin.window_5m == 0
    assert 1600 <= len(doc["data"]) <= 4000
    assert all(k.isdigit() for k in doc["data"])
    nulls = [v for v in doc["data"].values() if v["avgHighPrice"] is None]
    assert nulls and all(v["highPriceVolume"] == 0 for v in nulls)
    latest = json.loads(standin.get("/api/v1/osrs/latest")[1])["data"]
    mapping = json.loads(standin.get("/api/v1/osrs/mapping")[1])
    assert len(mapping) == 4650 and len(latest) < 4000  # never-traded items are absent from /latest
    assert any("limit" not in m for m in mapping) and any("highalch" not in m for m in mapping)
    assert any(v["high"] is None and v["highTime"] is None for v in latest.values())
    item = next(iter(latest))
    series = json.loads(standin.get(f"/api/v1/osrs/timeseries?timestep=1h&id={item}")[1])["data"]
    assert 0 < len(series) <= 365 and all(p["timestamp"] % 3600 == 0 for p in series)
    # the window not yet closed is empty; the same window twice is the same (deterministic)
    future = (int(time.time()) // standin.window_5m + 5) * standin.window_5m
    assert json.loads(standin.get(f"/api/v1/osrs/5m?timestamp={future}")[1])["data"] == {}
    t = doc["timestamp"] - 10 * standin.window_5m
    assert (
        standin.get(f"/api/v1/osrs/5m?timestamp={t}")[1] == standin.get(f"/api/v1/osrs/5m?timestamp={t}")[1]
    )
    assert standin.get(f"/api/v1/osrs/5m?timestamp={t + 1}")[0] == (200 if standin.window_5m == 1 else 400)
    assert "There are currently" in standin.get("/")[1].decode()


@pytest.mark.parametrize("agent", ["python-requests/2.32", "curl/8.5.0", "Python-urllib/3.11", ""])
def test_standin_blocks_generic_user_agents(standin: StandIn, agent: str) -> None:
    assert standin.get("/api/v1/osrs/latest", agent=agent)[0] == 403


def test_retries_429_then_succeeds(standin: StandIn) -> None:
    standin.fault("429", "/latest", count=2)
    http, m = client(standin)
    data = http.fetch(http.url("latest"), validate.parse_json)
    assert data["data"] and count(m, "429") == 2 and count(m, "200") == 1


def test_gives_up_after_retries_on_500(standin: StandIn) -> None:
    standin.fault("500", "/latest")
    http, m = client(standin)
    with pytest.raises(FetchError):
        http.fetch(http.url("latest"), validate.parse_json)
    assert count(m, "500") == 3 and m.errors.labels("http")._value.get() == 1


def test_slow_answer_times_out(standin: StandIn) -> None:
    standin.fault("slow", "/latest", count=1, delay=3)
    http, m = client(standin)
    assert http.fetch(http.url("latest"), validate.parse_json)["data"]
    assert count(m, "timeout") == 1 and count(m, "200") == 1


def test_truncated_json_is_rejected_whole(standin: StandIn) -> None:
    """An invalid 200 is retried like a 5xx, a bounded number of times (GEPT_HTTP_RETRIES=2)."""
    standin.fault("truncated", "/5m")
    http, m = client(standin)
    with pytest.raises(validate.ValidationError):
        http.fetch(http.url("5m"), lambda b: validate.window(b, standin.window_5m))
    assert count(m, "invalid") == 3 and count(m, "200") == 0
    assert m.errors.labels("validation")._value.get() == 1  # one failure reached the caller


def test_truncated_json_once_is_healed_by_a_retry(standin: StandIn) -> None:
    standin.fault("truncated", "/5m", count=1)
    http, m = client(standin)
    _, rows = http.fetch(http.url("5m"), lambda b: validate.window(b, standin.window_5m))
    assert rows and count(m, "invalid") == 1 and count(m, "200") == 1
    assert m.errors.labels("validation")._value.get() == 0


def test_null_prices_fault_validates(standin: StandIn) -> None:
    standin.fault("null_prices", "/5m", count=1)
    http, _ = client(standin)
    _, rows = http.fetch(http.url("5m"), lambda b: validate.window(b, standin.window_5m))
    assert rows and all(r[2] is None and r[3] == 0 for r in rows)


def test_config_rejects_generic_user_agent_and_missing_password() -> None:
    with pytest.raises(config.ConfigError):
        config.load("latest", {"GEPT_DB_PASSWORD": "x", "GEPT_USER_AGENT": "curl/8"})
    with pytest.raises(config.ConfigError):
        config.load("latest", {"GEPT_USER_AGENT": USER_AGENT})
    s = config.load(
        "latest",
        {
            "GEPT_DB_PASSWORD": "test-fake-pw",
            "GEPT_INTERVAL_SECONDS": "5",
            "GEPT_LATEST_INTERVAL_SECONDS": "7",
        },
    )
    assert s.interval == 7 and s.metrics_port == 9201 and "test-fake-pw" not in repr(s)


@pytest.mark.parametrize(
    "body,why",
    [
        (b'{"data": {"2": {"avgHighPrice": "145"}}, "timestamp": 300}', "string price"),
        (b'{"data": {"x": {}}, "timestamp": 300}', "bad item id"),
        (b'{"data": {}, "timestamp": 301}', "unaligned"),
        (b'{"data": [], "timestamp": 300}', "data not an object"),
        (b'{"data": {"2": {"avgHighPrice": true}}, "timestamp": 300}', "boolean"),
    ],
)
def test_window_validation_rejects(body: bytes, why: str) -> None:
    with pytest.raises(validate.ValidationError):
        validate.window(body, 300)


def test_window_example_from_the_api_docs() -> None:
    body = (
        b'{"data": {"2": {"avgHighPrice": 145, "highPriceVolume": 88554, "avgLowPrice": 142, '
        b'"lowPriceVolume": 17896}, "12": {"avgHighPrice": 199800, "highPriceVolume": 1, '
        b'"avgLowPrice": null, "lowPriceVolume": 0}}, "timestamp": 1617235200}'
    )
    start, rows = validate.window(body, 300)
    assert start == 1617235200 and rows[1][4] is None and rows[1][5] == 0
    assert rows[0][1].isoformat() == "2021-04-01T00:00:00+00:00"


def test_rss_refuses_entities() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        b"<rss><channel><item><title>&lol2;</title><guid>g</guid></item></channel></rss>"
    )
    with pytest.raises(validate.ValidationError, match="DOCTYPE"):
        validate.rss(bomb)
    external = (
        b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><rss><item><title>&x;</title></item></rss>'
    )
    with pytest.raises(validate.ValidationError):
        validate.rss(external)


def test_player_count_parsing() -> None:
    page = b"<p class='player-count'>There are currently 12,345 people playing!</p>"
    assert validate.player_count(page) == 12345
    with pytest.raises(validate.ValidationError):
        validate.player_count(b"<p>maintenance</p>")
