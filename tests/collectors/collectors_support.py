"""Helpers and fixtures for the collectors' tests (conftest.py imports the fixtures; the module
has a name of its own so it never collides with another area's conftest): the shared
throwaway cluster (tests/support/pg.py) with the real schema (roles/timescaledb/files/
migrations/*.sql applied in order), the osrs_standin fake API, and collectors run as real
processes with fast windows (a "5-minute" window of 1-2 s).

Everything listens on 127.0.0.1 on free ports and is stopped by PID at the end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.net import free_port, wait_until
from support.pg import PgCluster

ROOT = Path(__file__).resolve().parents[2]
COLLECTORS_DIR = ROOT / "files" / "collectors"
STANDIN = ROOT / "files" / "osrs_standin" / "osrs_standin.py"
MIGRATIONS = sorted((ROOT / "roles" / "timescaledb" / "files" / "migrations").glob("*.sql"))
ARTIFACTS = ROOT / "artifacts" / "collectors"
USER_AGENT = "gept-collectors-tests/1.0 (+https://example.invalid/gept-infra)"
COLLECTOR_PASSWORD = "collector-test-password"  # noqa: S105  (throwaway cluster)
READONLY_PASSWORD = "readonly-test-password"  # noqa: S105


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.init()
        cluster.start()
        with closing(cluster.connect()) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE ROLE gept_collector LOGIN PASSWORD '{COLLECTOR_PASSWORD}'")
            cur.execute(f"CREATE ROLE gept_readonly LOGIN PASSWORD '{READONLY_PASSWORD}'")
            cur.execute("CREATE DATABASE gept_template")
        with closing(cluster.connect("gept_template")) as conn, conn.cursor() as cur:
            for migration in MIGRATIONS:
                cur.execute(migration.read_text())
            # The grants the database role gives (roles/timescaledb): write for collectors,
            # read for the dashboard.
            cur.execute("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO gept_collector")
            cur.execute("GRANT UPDATE ON items TO gept_collector")
            cur.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO gept_readonly")
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def gept_db(pg: PgCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database cloned from the migrated template, dropped afterwards."""
    name = "gept_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40]
    with closing(pg.connect()) as conn, conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE gept_template')
    yield name
    if pg.pid() is None:
        pg.start()
    with closing(pg.connect()) as conn, conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(pg: PgCluster, db: str, sql: str, args: tuple = ()) -> list[tuple]:
    with closing(pg.connect(db)) as conn, conn.cursor() as cur:
        cur.execute(sql, args or None)
        return cur.fetchall()


# -- the fake API -----------------------------------------------------------------------
@dataclass
class StandIn:
    proc: subprocess.Popen[bytes]
    port: int
    window_5m: int
    window_1h: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.base}/api/v1/osrs"

    def get(self, path: str, agent: str = USER_AGENT) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, headers={"User-Agent": agent})  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def fault(self, kind: str, path: str = "", count: int = -1, delay: float = 5.0, skip: int = 0) -> None:
        body = json.dumps({"kind": kind, "path": path, "count": count, "delay": delay, "skip": skip}).encode()
        req = urllib.request.Request(self.base + "/_control/faults", data=body, method="POST")  # noqa: S310
        urllib.request.urlopen(req, timeout=5).close()  # noqa: S310

    def clear(self) -> None:
        req = urllib.request.Request(self.base + "/_control/faults", method="DELETE")  # noqa: S310
        urllib.request.urlopen(req, timeout=5).close()  # noqa: S310

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_standin(tmp: Path, window_5m: int = 1, window_1h: int = 3, *extra: str) -> StandIn:
    port_file = tmp / f"standin-{time.monotonic_ns()}.port"
    cmd = [
        sys.executable,
        str(STANDIN),
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--control",
        "--window-5m",
        str(window_5m),
        "--window-1h",
        str(window_1h),
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    wait_until(lambda: port_file.exists() and port_file.read_text().strip(), 15, what="standin port file")
    standin = StandIn(proc, int(port_file.read_text()), window_5m, window_1h)
    wait_until(lambda: standin.get("/api/v1/osrs/mapping")[0] == 200, 15, what="standin answering")
    return standin


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandIn]:
    """A standin of our own per test, so switched-on faults never leak into another test."""
    r = start_standin(tmp_path)
    yield r
    r.stop()


# -- collectors as processes ------------------------------------------------------------
@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[str]
    metrics_port: int
    log: Path
    env: dict[str, str] = field(repr=False)

    def metrics(self) -> dict[str, float]:
        """The collector's metrics as {'name{label="v"}': value} (empty when not answering)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=3) as r:  # noqa: S310
                text = r.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def metric(self, key: str) -> float:
        return self.metrics().get(key, 0.0)

    def stop(self, timeout: float = 10) -> float:
        """SIGTERM; return the seconds it took to exit."""
        if self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        return time.monotonic() - started

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Launcher:
    def __init__(self, pg: PgCluster, tmp: Path) -> None:
        self.pg = pg
        self.tmp = tmp
        self.procs: list[Proc] = []

    def env(self, db: str, standin: StandIn | None, **overrides: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GEPT_")}
        env.update(
            {
                "GEPT_DB_HOST": "127.0.0.1",
                "GEPT_DB_PORT": str(self.pg.port),
                "GEPT_DB_NAME": db,
                "GEPT_DB_USER": "gept_collector",
                "GEPT_DB_PASSWORD": COLLECTOR_PASSWORD,
                "GEPT_DB_SSLMODE": "disable",
                "GEPT_DB_BACKOFF_MAX_SECONDS": "1",
                "GEPT_USER_AGENT": USER_AGENT,
                "GEPT_HTTP_TIMEOUT_SECONDS": "3",
                "GEPT_HTTP_RETRIES": "3",
                "GEPT_HTTP_BACKOFF_BASE_SECONDS": "0.1",
                "GEPT_HTTP_BACKOFF_MAX_SECONDS": "1",
                "GEPT_BACKFILL_PACING_SECONDS": "0",
                "GEPT_LOG_LEVEL": "INFO",
                "GEPT_LATEST_BUCKET_SECONDS": "1",
                "GEPT_PLAYERCOUNT_BUCKET_SECONDS": "1",
            }
        )
        if standin is not None:
            env.update(
                {
                    "GEPT_API_BASE_URL": standin.api,
                    "GEPT_NEWS_RSS_URL": f"{standin.base}/m=news/latest_news.rss?oldschool=true",
                    "GEPT_WIKI_RC_RSS_URL": f"{standin.base}/w/Special:RecentChanges?feed=rss",
                    "GEPT_HOMEPAGE_URL": f"{standin.base}/",
                    "GEPT_FIVEMIN_WINDOW_SECONDS": str(standin.window_5m),
                    "GEPT_HOURLY_WINDOW_SECONDS": str(standin.window_1h),
                }
            )
        env.update({k.upper(): str(v) for k, v in overrides.items()})
        return env

    def start(
        self, name: str, db: str, standin: StandIn | None, interval: float = 1.0, **overrides: Any
    ) -> Proc:
        port = free_port()
        key = name.upper()
        own = {
            f"GEPT_{key}_METRICS_PORT": port,
            f"GEPT_{key}_INTERVAL_SECONDS": interval,
            f"GEPT_{key}_OFFSET_SECONDS": 0.25,
        }
        env = self.env(db, standin, **own, **overrides)
        if name == "dashboard":
            env["GEPT_DASHBOARD_PORT"] = str(port)
        script = "dashboard.py" if name == "dashboard" else f"collector_{name}.py"
        log = self.tmp / f"{name}-{len(self.procs)}.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen(
                [sys.executable, str(COLLECTORS_DIR / script)],
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=self.tmp,
            )
        p = Proc(name, proc, port, log, env)
        self.procs.append(p)
        if name != "dashboard":
            wait_until(lambda: p.metrics() or p.proc.poll() is not None, 15, what=f"{name} metrics endpoint")
            assert p.proc.poll() is None, f"{name} exited at start:\n{p.output()}"
        return p

    def stop_all(self) -> None:
        for p in self.procs:
            p.stop()


@pytest.fixture
def launch(pg: PgCluster, tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(pg, tmp_path)
    yield launcher
    launcher.stop_all()
