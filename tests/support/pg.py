"""A throwaway PostgreSQL cluster: initdb in a temp directory, started on 127.0.0.1 on a free
port (as the postgres OS user when we are root), stopped by PID at the end (bounded). Skips
the test when the server binaries are not installed (scripts/setup-controller.sh installs
them)."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from support.net import free_port


def pg_bindir() -> Path:
    """The newest installed PostgreSQL's bin directory (skips the test when there is none)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.skip("PostgreSQL server binaries not installed (scripts/setup-controller.sh installs them)")
    return Path(found[-1]).parent


class PgCluster:
    """init() then start(); connect()/execute() as the superuser postgres over TCP with a
    password (scram-sha-256), trust over the cluster's own socket directory."""

    def __init__(self, password: str = "postgres-test-password", prefix: str = "gept-pg-") -> None:  # noqa: S107
        self.bin = pg_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.data = self.dir / "data"
        self.port = free_port()
        self.password = password
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: object) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)  # noqa: S603

    def init(self) -> None:
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            self.bin / "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "--pwfile",
            pwfile,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        pwfile.unlink()

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
        )
        log = self.dir / "log"
        self._run(self.bin / "pg_ctl", "-D", self.data, "-o", opts, "-l", log, "-w", "-t", "60", "start")

    def pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        return int(pidfile.read_text().split()[0]) if pidfile.exists() else None

    def stop(self) -> None:
        """Fast shutdown by PID; returns once the postmaster has exited (bounded)."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)

    def connect(self, dbname: str = "postgres", user: str = "postgres", password: str | None = None) -> Any:
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            dbname=dbname,
            user=user,
            password=password or self.password,
            connect_timeout=5,
        )
        conn.autocommit = True
        return conn

    def execute(self, db: str, sql: str, args: tuple = (), autocommit: bool = False) -> list[tuple[Any, ...]]:
        """One statement in its own connection (committed); the rows it returned."""
        conn = self.connect(db)
        conn.autocommit = autocommit
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                rows = cur.fetchall() if cur.description else []
            if not autocommit:
                conn.commit()
            return rows
        finally:
            conn.close()

    def libpq_env(self, db: str) -> dict[str, str]:
        """Environment for a libpq client (psql, pg_dump, a script) connecting as postgres."""
        return {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGDATABASE": db,
            "PGUSER": "postgres",
            "PGPASSWORD": self.password,
            "PGCONNECT_TIMEOUT": "5",
        }

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
