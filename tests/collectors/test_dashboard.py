"""The status dashboard: /health 200/503 in the right cases, /api/status, /metrics, and the
page rendered in headless Chromium (screenshot kept in artifacts/collectors/dashboard.png)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest
from collectors_support import ARTIFACTS, READONLY_PASSWORD, Launcher, PgCluster, Proc, StandIn, wait_until

pytestmark = pytest.mark.postgres


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:  # noqa: S310
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not listening (yet)
        return 0, str(exc)


def start_dashboard(launch: Launcher, db: str, five: Proc, freshness: float) -> Proc:
    dash = launch.start(
        "dashboard",
        db,
        None,
        GEPT_DASHBOARD_DB_USER="gept_readonly",
        GEPT_DASHBOARD_DB_PASSWORD=READONLY_PASSWORD,
        GEPT_DASHBOARD_CACHE_SECONDS=0,
        GEPT_DASHBOARD_FRESHNESS_SECONDS=freshness,
        GEPT_DASHBOARD_REFRESH_SECONDS=5,
        GEPT_DASHBOARD_COLLECTORS=f"fivemin=http://127.0.0.1:{five.metrics_port}/metrics,"
        "latest=http://127.0.0.1:9/metrics",
    )
    wait_until(
        lambda: get(dash.metrics_port, "/metrics")[0] == 200 if dash.proc.poll() is None else True,
        15,
        what="dashboard up",
    )
    assert dash.proc.poll() is None, dash.output()
    return dash


def test_health_status_metrics_and_screenshot(
    launch: Launcher, pg: PgCluster, gept_db: str, standin: StandIn
) -> None:
    five = launch.start("fivemin", gept_db, standin, GEPT_FIVEMIN_LOOKBACK_SECONDS=5)
    dash = start_dashboard(launch, gept_db, five, freshness=30)
    port = dash.metrics_port
    wait_until(lambda: get(port, "/health")[0] == 200, 20, what="/health 200")
    code, body = get(port, "/health")
    assert body.startswith("ok: newest 5-minute window")

    status = json.loads(get(port, "/api/status")[1])
    tables = {t["table"]: t for t in status["tables"]}
    assert tables["price_data_5min"]["rows"] > 0 and tables["price_data_5min"]["colour"] == "green"
    assert tables["items"]["rows"] == 0 and tables["items"]["colour"] == "red"
    collectors = {c["collector"]: c for c in status["collectors"]}
    assert collectors["fivemin"]["up"] and collectors["fivemin"]["missing_windows"] is not None
    assert not collectors["latest"]["up"]  # nothing listens there: shown as down

    code, page = get(port, "/")
    assert code == 200 and "price_data_5min" in page and "gept-collector-fivemin" in page
    assert 'http-equiv="refresh"' in page
    screenshot(port)

    # the database goes away -> 503 with the reason; back -> 200
    pg.stop()
    try:
        code, body = get(port, "/health")
        assert code == 503 and body.startswith("database unavailable"), body
        assert "database unavailable" in get(port, "/")[1]
    finally:
        pg.start()
    wait_until(lambda: get(port, "/health")[0] == 200, 20, what="/health 200 after the database is back")

    # no fresh 5-minute data -> 503 "stale"
    five.stop()
    time.sleep(3)
    stale = start_dashboard(launch, gept_db, five, freshness=2)
    code, body = get(stale.metrics_port, "/health")
    assert code == 503 and "stale" in body, body

    metrics = get(port, "/metrics")[1]
    assert 'gept_dashboard_requests_total{code="503",path="/health"}' in metrics
    assert 'gept_dashboard_requests_total{code="200",path="/api/status"}' in metrics


def test_health_503_on_empty_database(
    launch: Launcher, pg: PgCluster, gept_db: str, standin: StandIn
) -> None:
    five = launch.start("latest", gept_db, None)  # only for a metrics URL; no 5m data arrives
    dash = start_dashboard(launch, gept_db, five, freshness=30)
    code, body = get(dash.metrics_port, "/health")
    assert code == 503 and "no 5-minute data" in body


def screenshot(port: int) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.fail("chromium is not installed (scripts/setup-controller.sh installs it)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = ARTIFACTS / "dashboard.png"
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--window-size=1280,900",
                f"--screenshot={out}",
                f"http://127.0.0.1:{port}/",
            ],
            check=True,
            capture_output=True,
            timeout=90,
        )
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, f"screenshot {len(data)} bytes"
