"""The status page in headless Chromium against a real PostgreSQL whose ledger has a gap, an
empty window, a partial window and a back-fill in progress; real backup metrics files (written
by the backup role's own code and published by its publish-metrics script); a real
Alertmanager with an alert firing, then gone. Screenshots at desktop and phone widths are kept
in artifacts/collectors/. A second test checks every query the dashboard sends with EXPLAIN on
large synthetic price tables: no sequential scan of a price table."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from chromium_cdp import Chromium
from collectors_support import (
    ARTIFACTS,
    COLLECTORS_DIR,
    READONLY_PASSWORD,
    ROOT,
    Launcher,
)
from support.net import free_port, wait_until
from support.pg import PgCluster

pytestmark = pytest.mark.postgres

BACKUP_DIR = ROOT / "roles/backup/files/usr/local/lib/gept/backup"
W5, W1 = 300, 3600


def iso(epoch: float) -> str:
    """As the page's data-start attributes write a time."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def jiso(epoch: float) -> str:
    """As the JSON writes a time."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def build_ledger(pg: PgCluster, db: str, now: float) -> dict[str, Any]:
    """The ledger and price rows of a host that was down for two hours and is back-filling.

    5-minute series (look-back 6 h): first window 20 h ago; 3 windows missing 15 h ago
    (beyond the look-back: owed for good); one empty window 10 h ago; one partial window 8 h
    ago (1200 items instead of ~3700); the windows from 3 h to 2 h ago stored a minute ago
    (back-filled, late); everything after that absent while the back-fill runs.
    Hourly series: first window 72 h ago; 2 windows missing 5 h and 4 h ago; no back-fill."""
    t0 = int(now // W5 * W5)
    h0 = int(now // W1 * W1)
    first5 = t0 - 20 * 3600
    gap5 = [t0 - 15 * 3600 + i * W5 for i in range(3)]
    empty5 = t0 - 10 * 3600
    partial5 = t0 - 8 * 3600
    late5 = list(range(t0 - 3 * 3600, t0 - 2 * 3600, W5))
    ledger = []
    for i, t in enumerate(range(first5, t0 - 2 * 3600, W5)):
        if t in gap5:
            continue
        items = 0 if t == empty5 else 1200 if t == partial5 else 3700 + i % 7
        fetched = now - 60 if t in late5 else t + W5 + 40
        ledger.append(("5m", t, items, fetched))
    first1 = h0 - 72 * 3600
    gap1 = [h0 - 5 * 3600, h0 - 4 * 3600]
    for t in range(first1, h0 - W1 + 1, W1):
        if t not in gap1 and t + W1 + 120 <= now:
            ledger.append(("1h", t, 3600 + t % 11, t + W1 + 120))
    m0 = int(now // 60 * 60)
    with closing(pg.connect(db)) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO collection_windows (series, window_start, item_count, fetched_at) "
            "VALUES (%s, to_timestamp(%s), %s, to_timestamp(%s))",
            ledger,
        )
        # Price rows for the stored 5-minute windows of the last 4 h (20 items each).
        cur.execute(
            "INSERT INTO price_data_5min (item_id, timestamp, avg_high_price, avg_low_price) "
            "SELECT i, w.window_start, 100 + i, 90 + i FROM collection_windows w, generate_series(1, 20) i "
            "WHERE w.series = '5m' AND w.item_count > 0 AND w.window_start > now() - interval '4 hours'"
        )
        # The 1-minute table: 50 items a minute for 30 minutes, 20 in the minute 5 minutes ago.
        cur.execute(
            "INSERT INTO prices_latest_1m (item_id, timestamp, high, low) "
            "SELECT i, to_timestamp(%s - k * 60), 10, 9 FROM generate_series(1, 30) k, "
            "generate_series(1, 50) i WHERE k <> 5 OR i <= 20",
            (m0,),
        )
    return {
        "t0": t0,
        "gap5": gap5,
        "empty5": empty5,
        "partial5": partial5,
        "late5": late5,
        "backfill5": t0 - 3600,
        "stored5": first5 + 3600,
        "untracked5": first5 - W5,
        "gap1": gap1,
        "untracked1": first1 - W1,
        "stored1": h0 - 10 * 3600,
        "minute_low": m0 - 5 * 60,
    }


def load_backup_module() -> Any:
    """The backup command's settings-and-metrics module (it sits beside gept_backup.py)."""
    if str(BACKUP_DIR) not in sys.path:
        sys.path.insert(0, str(BACKUP_DIR))
    return importlib.import_module("backup_base")


def publish_backup_metrics(tmp: Path, now: float) -> Path:
    """A dump 3 h old (1.5 GB) and a failed restore drill whose last pass was 9 days ago, written
    by the backup role's Metrics code and published by its publish-metrics script."""
    backup = load_backup_module()
    cfg = SimpleNamespace(state_dir=tmp / "backup-state")
    textfile = tmp / "textfile"
    backup.backup_metrics(cfg, "dump", True, now - 3 * 3600, 1_500_000_000)
    m = backup.Metrics(cfg, "restore_drill")
    m.add("gept_restore_drill_ok", 0, "1 if the last restore drill passed, else 0.")
    m.add("gept_restore_drill_last_success_timestamp_seconds", now - 9 * 86400, "Unix time it last passed.")
    m.add("gept_restore_drill_duration_seconds", 95.0, "How long the last restore drill took.")
    m.write()
    env = {
        **os.environ,
        "GEPT_BACKUP_STATE_DIR": str(cfg.state_dir),
        "GEPT_BACKUP_TEXTFILE_DIR": str(textfile),
    }
    for name in ("backup_dump", "restore_drill"):
        subprocess.run(["sh", str(BACKUP_DIR / "publish-metrics"), name], env=env, check=True, timeout=30)
    assert sorted(p.name for p in textfile.iterdir()) == ["gept_backup_dump.prom", "gept_restore_drill.prom"]
    return textfile


class Alertmanager:
    """The distribution's Alertmanager on a free port under /alertmanager, one alert posted."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/alertmanager"
        conf = tmp / "alertmanager.yml"
        conf.write_text('route: {receiver: "null"}\nreceivers: [{name: "null"}]\n')
        binary = "/usr/bin/prometheus-alertmanager"
        if not Path(binary).exists():
            pytest.fail("prometheus-alertmanager is not installed (scripts/setup-controller.sh installs it)")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={conf}",
                f"--storage.path={tmp / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.route-prefix=/alertmanager",
                "--cluster.listen-address=",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: get_url(self.url + "/-/ready")[0] == 200, 30, what="alertmanager ready")

    def fire(self, name: str, severity: str, summary: str) -> None:
        body = json.dumps(
            [{"labels": {"alertname": name, "severity": severity}, "annotations": {"summary": summary}}]
        ).encode()
        req = urllib.request.Request(  # noqa: S310
            self.url + "/api/v2/alerts", data=body, headers={"Content-Type": "application/json"}
        )
        urllib.request.urlopen(req, timeout=10).close()  # noqa: S310

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def get_url(url: str) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)
    except OSError as exc:
        return 0, str(exc), {}


CELLS_JS = """JSON.stringify(Array.from(document.querySelectorAll('svg rect[data-state]')).map(r => [
  r.dataset.series, r.dataset.start, r.dataset.state, r.dataset.items || null, r.dataset.late || null]))"""


def cells(page: Any) -> dict[tuple[str, str], tuple[str, str | None, str | None]]:
    return {(s, t): (state, items, late) for s, t, state, items, late in json.loads(page.eval(CELLS_JS))}


def test_page_in_chromium(launch: Launcher, pg: PgCluster, gept_db: str, tmp_path: Path) -> None:
    now = time.time()
    plan = build_ledger(pg, gept_db, now)
    textfile = publish_backup_metrics(tmp_path, now)
    am = Alertmanager(tmp_path)
    am.fire("GeptDashboardProbe", "critical", "probe alert for the status page")
    am.fire("Watchdog", "none", "Alerting pipeline heartbeat (always firing)")
    try:
        run_page_checks(launch, gept_db, plan, textfile, am, tmp_path)
    finally:
        am.stop()


def run_page_checks(
    launch: Launcher, db: str, plan: dict[str, Any], textfile: Path, am: Alertmanager, tmp: Path
) -> None:
    dash = launch.start(
        "dashboard",
        db,
        None,
        GEPT_DASHBOARD_DB_USER="gept_readonly",
        GEPT_DASHBOARD_DB_PASSWORD=READONLY_PASSWORD,
        GEPT_DASHBOARD_CACHE_SECONDS=0,
        GEPT_DASHBOARD_REFRESH_SECONDS=2,
        GEPT_DASHBOARD_PATH_PREFIX="/status/",
        GEPT_DASHBOARD_COLLECTORS="fivemin=http://127.0.0.1:9/metrics",
        GEPT_DASHBOARD_TEXTFILE_DIR=textfile,
        GEPT_DASHBOARD_DATA_DIR=tmp,
        GEPT_DASHBOARD_DISK_ALERT_PERCENT=1,
        GEPT_DASHBOARD_DISK_CRITICAL_PERCENT=99.9,
        GEPT_DASHBOARD_ALERTMANAGER_URL=am.url,
        GEPT_FIVEMIN_LOOKBACK_SECONDS=6 * 3600,
    )
    base = f"http://127.0.0.1:{dash.metrics_port}"
    wait_until(lambda: get_url(base + "/status/health")[0] in (200, 503), 20, what="dashboard answering")

    # HTTP: the prefix (and a redirect to its slash), the CSP, /health unchanged (503: stale).
    code, _, headers = get_url(base + "/status/")
    csp = headers.get("Content-Security-Policy", "")
    assert code == 200 and "default-src 'none'" in csp and "script-src 'self'" in csp, headers
    assert "unsafe-inline" not in csp
    req = urllib.request.Request(base + "/status")  # noqa: S310

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    try:
        urllib.request.build_opener(NoRedirect).open(req, timeout=10)
        raise AssertionError("/status did not redirect")
    except urllib.error.HTTPError as exc:
        assert exc.code == 301 and exc.headers["Location"] == "/status/"
    code, body, _ = get_url(base + "/status/health")
    assert code == 503 and "stale" in body, body
    assert get_url(base + "/health")[0] == 503  # unprefixed paths still answer (local checks)

    # JSON: old fields kept, new ones filled from the same sources.
    status = json.loads(get_url(base + "/status/api/status")[1])
    assert {"generated_at", "database", "tables", "collectors", "health"} <= status.keys()
    five, hourly = status["coverage"]["series"]
    assert five["gaps"][0]["start"] == jiso(plan["gap5"][0]) and five["gaps"][0]["windows"] == 3
    assert five["gaps"][0]["state"] == "missing" and five["backfilling"] is True
    assert five["counts"]["backfill"] >= 20 and "cells" not in five
    assert hourly["gaps"] == [
        {
            "start": jiso(plan["gap1"][0]),
            "end": jiso(plan["gap1"][1] + W1),
            "windows": 2,
            "state": "missing",
            "start_epoch": plan["gap1"][0],
        }
    ]
    assert "oldest gap" in five["summary"] and "being back-filled" in five["summary"]
    assert status["items_per_window"]["drops"] == [jiso(plan["partial5"])]
    assert status["safety"]["drill"]["ok"] is False
    assert status["safety"]["backups"][0]["size_bytes"] == 1_500_000_000
    assert [a["alertname"] for a in status["safety"]["alerts"]["firing"]] == ["GeptDashboardProbe"]
    assert [a["alertname"] for a in status["safety"]["alerts"]["heartbeat"]] == ["Watchdog"]
    assert status["storage"]["edition"] is None and status["safety"]["jobs"]["available"] is False

    url = base + "/status/"
    with Chromium() as browser:
        page = browser.open(url, width=1280, height=900)
        # the inline style passed the CSP (its hash) and the script loaded: nothing was blocked
        assert (
            page.eval("getComputedStyle(document.documentElement).getPropertyValue('--gept-css').trim()")
            == "1"
        )
        assert page.problems() == [], page.problems()
        got = cells(page)
        for t in plan["gap5"]:
            assert got[("5m", iso(t))][0] == "missing", t
        assert got[("5m", iso(plan["empty5"]))] == ("empty", "0", None)
        assert got[("5m", iso(plan["partial5"]))] == ("stored", "1200", None)
        for t in plan["late5"]:
            assert got[("5m", iso(t))][0::2] == ("stored", "1"), t
        assert got[("5m", iso(plan["backfill5"]))][0] == "backfill"
        assert got[("5m", iso(plan["stored5"]))][0] == "stored"
        assert got[("5m", iso(plan["untracked5"]))][0] == "untracked"
        for t in plan["gap1"]:
            assert got[("1h", iso(t))][0] == "missing", t
        assert got[("1h", iso(plan["stored1"]))][0] == "stored"
        # the owed count in words is the number of owed cells drawn
        owed = page.eval(
            "Array.from(document.querySelectorAll('p[data-owed]'))"
            ".map(p => [p.dataset.series, +p.dataset.owed])"
        )
        drawn = {
            s: sum(1 for (ss, _), v in got.items() if ss == s and v[0] in ("missing", "backfill"))
            for s in ("5m", "1h")
        }
        assert dict(owed) == drawn and drawn["1h"] == 2
        tiles = dict(
            page.eval(
                "Array.from(document.querySelectorAll('[data-tile]'))"
                ".map(t => [t.dataset.tile, t.dataset.level])"
            )
        )
        assert tiles == {
            "data": "red",
            "owed": "red",
            "disk": "amber",
            "backup": "green",
            "drill": "red",
            "alerts": "red",
        }, tiles
        assert page.eval("document.querySelector('circle.drop[data-start]').dataset.start") == iso(
            plan["partial5"]
        )
        low = page.eval(
            f"document.querySelector('rect.bar.low[data-minute=\"{iso(plan['minute_low'])}\"]').dataset.rows"
        )
        assert low == "20"
        used = float(page.eval("document.querySelector('svg[data-used-percent]').dataset.usedPercent"))
        st = os.statvfs(tmp)
        expect = 100 * (st.f_blocks - st.f_bfree) / (st.f_blocks - st.f_bfree + st.f_bavail)
        assert abs(used - expect) < 1.0, (used, expect)
        assert page.eval("document.querySelector('[data-drill]').dataset.drill") == "failed"
        assert page.eval("!!document.querySelector('[data-alert=GeptDashboardProbe]')")
        assert page.eval("!!document.querySelector('[data-heartbeat]')")
        assert not page.eval("!!document.querySelector('[data-alert=Watchdog]')")
        # relative links resolve under the prefix
        links = page.eval("Array.from(document.querySelectorAll('a')).map(a => a.href)")
        assert f"{url}api/status" in links and f"{url}?range=7d" in links and f"{url}metrics" in links
        page.screenshot(ARTIFACTS / "dashboard-desktop.png")

        # the refresh swaps <main> in place: the document (and a mark on it) survives
        page.eval("document.body.dataset.mark = 'kept'")
        before = page.eval("document.querySelector('main').dataset.generated")
        am.stop()  # ...and Alertmanager going away only greys its panel
        swapped = page.eval(
            "new Promise(done => { const t0 = Date.now(); (function poll() {"
            "  const m = document.querySelector('main');"
            f"  if (m.dataset.generated !== {json.dumps(before)}"
            "      && document.querySelector('[data-alerts=unavailable]')) done(true);"
            "  else if (Date.now() - t0 > 20000) done(false); else setTimeout(poll, 200); })(); })"
        )
        assert swapped, "the page did not refresh in place"
        assert page.eval("document.body.dataset.mark") == "kept"
        assert page.eval("document.querySelector('[data-tile=alerts]').dataset.level") == "grey"
        assert len(cells(page)) == len(got)
        assert page.problems() == [], page.problems()

        # 7-day zoom
        page.navigate(url + "?range=7d")
        week = cells(page)
        assert week[("1h", iso(plan["untracked1"]))][0] == "untracked"
        assert week[("5m", iso(plan["gap5"][0]))][0] == "missing"
        assert sum(1 for s, _ in week if s == "5m") > 6 * 288
        page.screenshot(ARTIFACTS / "dashboard-desktop-7d.png")

        # phone width: nothing wider than the screen
        phone = browser.open(url, width=390, height=844, mobile=True)
        assert phone.eval("document.documentElement.scrollWidth") <= 390
        assert cells(phone).keys() >= {("5m", iso(t)) for t in plan["gap5"]}
        phone.screenshot(ARTIFACTS / "dashboard-phone.png")
        assert phone.problems() == [], phone.problems()


# -- query cost ----------------------------------------------------------------------------------
PRICE_TABLES = {"price_data_5min", "prices_1h", "prices_latest_1m"}


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += plan_nodes(child)
    return out


@pytest.mark.slow
def test_queries_never_scan_a_price_table(pg: PgCluster, gept_db: str) -> None:
    """Large synthetic price tables (GEPT_DASHBOARD_EXPLAIN_ROWS rows each, default 1M), analysed
    as autovacuum would; every statement of one collect() is EXPLAINed: no Seq Scan on a price
    table. The figures (EXPLAIN ANALYZE time per statement) are printed for docs/benchmarks.md."""
    rows = int(os.environ.get("GEPT_DASHBOARD_EXPLAIN_ROWS", "1000000"))
    items = 4000
    windows = rows // items
    with closing(pg.connect(gept_db)) as conn, conn.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '256MB'")
        for table, step in (("price_data_5min", 300), ("prices_1h", 3600)):
            cur.execute(
                f"INSERT INTO {table} (item_id, timestamp, avg_high_price, avg_low_price) "  # noqa: S608
                "SELECT i, date_trunc('hour', now()) - w * make_interval(secs => %s), i, i "
                "FROM generate_series(1, %s) w, generate_series(1, %s) i",
                (step, windows, items),
            )
        cur.execute(
            "INSERT INTO prices_latest_1m (item_id, timestamp, high, low) "
            "SELECT i, date_trunc('minute', now()) - w * interval '1 minute', i, i "
            "FROM generate_series(0, %s) w, generate_series(1, %s) i",
            (windows, items),
        )
        cur.execute(
            "INSERT INTO collection_windows (series, window_start, item_count, fetched_at) "
            "SELECT '5m', date_trunc('hour', now()) - w * interval '5 minutes', %s, now() "
            "FROM generate_series(1, %s) w",
            (items, windows),
        )
        cur.execute("ANALYZE")

    sys.path.insert(0, str(COLLECTORS_DIR))
    try:
        import dashboard
        from gept_collectors import config
    finally:
        sys.path.remove(str(COLLECTORS_DIR))
    settings = config.load(
        "dashboard",
        env={
            "GEPT_DB_HOST": "127.0.0.1",
            "GEPT_DB_PORT": str(pg.port),
            "GEPT_DB_NAME": gept_db,
            "GEPT_DB_USER": "gept_readonly",
            "GEPT_DB_PASSWORD": READONLY_PASSWORD,
            "GEPT_DB_SSLMODE": "disable",
            "GEPT_DASHBOARD_COLLECTORS": "",
            "GEPT_DASHBOARD_ALERTMANAGER_URL": "",
        },
    )
    for range_name in ("24h", "7d"):
        status = dashboard.Status(settings)
        result = status.collect(range_name)
        assert result["database"]["ok"], result["database"]
        assert "error" not in result["coverage"] and "error" not in result["items_per_window"]
        big = {t["table"]: t for t in result["tables"]}
        assert not big["price_data_5min"]["rows_exact"] and big["price_data_5min"]["rows"] > rows / 2
        assert status.last_queries
        total = 0.0
        with closing(pg.connect(gept_db)) as conn, conn.cursor() as cur:
            for q in status.last_queries:
                cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + q)
                plan = cur.fetchone()[0][0]
                scans = [
                    n["Relation Name"]
                    for n in plan_nodes(plan["Plan"])
                    if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in PRICE_TABLES
                ]
                assert not scans, f"sequential scan of {scans} in: {q}"
                assert 'count(*) FROM "price' not in q and 'count(*) FROM "prices' not in q, q
                total += plan["Planning Time"] + plan["Execution Time"]
        print(
            f"dashboard queries ({range_name}): {len(status.last_queries)} statements, "
            f"{total:.1f} ms planning+execution on {rows:,} rows per price table "
            f"(load {os.getloadavg()[0]:.2f})"
        )


def test_disk_marks_match_the_alert_rule() -> None:
    """The filesystem bar's marks are the GeptDiskSpaceLow thresholds (one fact: the rule)."""
    import re

    import yaml

    rules = yaml.safe_load(
        (ROOT / "roles/prometheus/files/etc/prometheus/rules/gept-host.rules.yml").read_text()
    )
    free = sorted(
        float(re.search(r"<\s*([0-9.]+)", r["expr"]).group(1))
        for g in rules["groups"]
        for r in g["rules"]
        if r.get("alert") == "GeptDiskSpaceLow"
    )
    defaults = yaml.safe_load((ROOT / "roles/collectors/defaults/main.yml").read_text())
    marks = [
        defaults["collectors_dashboard_disk_critical_percent"],
        defaults["collectors_dashboard_disk_alert_percent"],
    ]
    assert [round(100 * (1 - f)) for f in free] == marks
