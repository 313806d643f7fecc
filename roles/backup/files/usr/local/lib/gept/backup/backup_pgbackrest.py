"""pgBackRest backups, and the scratch cluster a pgBackRest restore is started in (restore
drill and point-in-time restore)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from typing import Any

import psycopg2
from backup_base import (
    LOG,
    BackupError,
    Config,
    backup_metrics,
    connect,
    exclusive,
    run,
    sha256_of,
    write_atomic,
)
from backup_dump import restore_dump_into
from backup_fingerprint import timescaledb_version


def source_preload(cfg: Config) -> str:
    """The live cluster's shared_preload_libraries: a restored copy needs the same."""
    conn = connect(cfg, "postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW shared_preload_libraries")
            return cur.fetchone()[0]
    finally:
        conn.close()


# --- pgBackRest ---------------------------------------------------------------------------------


def pgbackrest(cfg: Config, *args: str) -> list[str]:
    return ["pgbackrest", f"--stanza={cfg.stanza}", *args]


def pgbackrest_info(cfg: Config) -> dict[str, Any]:
    out = run(pgbackrest(cfg, "--output=json", "info"), "pgbackrest info", capture=True)
    stanzas = json.loads(out)
    return stanzas[0] if stanzas else {}


def cmd_pgbackrest_backup(cfg: Config, backup_type: str) -> None:
    ok = False
    try:
        for repo in cfg.repos:
            LOG.info("pgbackrest %s backup into repo%s", backup_type, repo)
            run(
                pgbackrest(cfg, f"--repo={repo}", f"--type={backup_type}", "backup"),
                f"pgbackrest backup repo{repo}",
            )
        ok = True
    finally:
        last, size = None, None
        with contextlib.suppress(BackupError, ValueError, KeyError, IndexError):
            backups = [b for b in pgbackrest_info(cfg).get("backup", []) if not b.get("error")]
            if backups:
                newest = max(backups, key=lambda b: b["timestamp"]["stop"])
                last, size = newest["timestamp"]["stop"], newest["info"]["repository"]["delta"]
        backup_metrics(cfg, "pgbackrest", ok, last, size)


class ScratchCluster:
    """A cluster restored by pgBackRest into cfg.drill_pgdata, run on cfg.drill_port with its
    socket in cfg.drill_socket_dir only (no TCP), archiving off; removed on exit."""

    def __init__(self, cfg: Config, target_type: str, target: str, preload: str) -> None:
        self.cfg = cfg
        self.target_type = target_type
        self.target = target
        self.pg_ctl = str(cfg.bindir / "pg_ctl")
        self.preload = preload

    def __enter__(self) -> ScratchCluster:
        cfg = self.cfg
        self.cleanup()
        cfg.drill_pgdata.mkdir(mode=0o700, parents=True)
        cfg.drill_socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        LOG.info("pgbackrest restore (%s %s) into %s", self.target_type, self.target, cfg.drill_pgdata)
        run(
            pgbackrest(
                cfg,
                f"--repo={cfg.repos[0]}",
                f"--pg1-path={cfg.drill_pgdata}",
                f"--type={self.target_type}",
                f"--target={self.target}",
                "--target-action=promote",
                "--archive-mode=off",
                "restore",
            ),
            "pgbackrest restore",
        )
        self.write_config()
        (cfg.drill_dir / "postgresql.log").unlink(missing_ok=True)
        run(
            [
                self.pg_ctl,
                "--pgdata",
                str(cfg.drill_pgdata),
                "--log",
                str(cfg.drill_dir / "postgresql.log"),
                "--wait",
                f"--timeout={cfg.drill_start_timeout}",
                "start",
            ],
            "start the scratch cluster",
        )
        self.wait_promoted()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def write_config(self) -> None:
        """Debian keeps postgresql.conf outside the data directory, so the restored copy has
        none: give it a minimal one (pgBackRest's recovery settings are in postgresql.auto.conf)."""
        cfg = self.cfg
        settings = {
            "port": str(cfg.drill_port),
            "listen_addresses": "''",
            "unix_socket_directories": f"'{cfg.drill_socket_dir}'",
            "shared_preload_libraries": "'{}'".format(self.preload.replace("'", "")),
            "timescaledb.max_background_workers": "0",
            "timescaledb.telemetry_level": "off",
            "max_connections": "20",
            "shared_buffers": "128MB",
            "hot_standby": "off",
            "archive_mode": "off",
            "fsync": "off",
            "synchronous_commit": "off",
            "autovacuum": "off",
            "jit": "off",
            "logging_collector": "off",
            "ssl": "off",
        }
        text = "# Scratch cluster of the GePT restore drill (removed after the drill).\n"
        text += "".join(f"{k} = {v}\n" for k, v in settings.items())
        write_atomic(cfg.drill_pgdata / "postgresql.conf", text)
        write_atomic(cfg.drill_pgdata / "pg_hba.conf", "local all postgres peer\n")
        write_atomic(cfg.drill_pgdata / "pg_ident.conf", "")

    def wait_promoted(self) -> None:
        deadline = time.monotonic() + self.cfg.drill_start_timeout
        last_error = ""
        while time.monotonic() < deadline:
            try:
                conn = self.connect("postgres")
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT pg_is_in_recovery()")
                        if not cur.fetchone()[0]:
                            return
                finally:
                    conn.close()
            except psycopg2.OperationalError as exc:
                last_error = str(exc).strip()
            if not self.running():
                break
            time.sleep(1)
        log_tail = (self.cfg.drill_dir / "postgresql.log").read_text(errors="replace")[-3000:]
        raise BackupError(f"scratch cluster did not finish recovery ({last_error}); log:\n{log_tail}")

    def running(self) -> bool:
        return self.pg_ctl_quiet("status") == 0

    def pg_ctl_quiet(self, *args: str) -> int:
        """pg_ctl on the scratch directory; its exit status, never an exception."""
        cmd = [self.pg_ctl, "--pgdata", str(self.cfg.drill_pgdata), *args]
        return subprocess.run(cmd, capture_output=True, check=False, timeout=120).returncode  # noqa: S603

    def connect(self, dbname: str):
        return connect(self.cfg, dbname, host=str(self.cfg.drill_socket_dir), port=self.cfg.drill_port)

    def cleanup(self) -> None:
        cfg = self.cfg
        if (cfg.drill_pgdata / "postmaster.pid").exists() and self.running():
            self.pg_ctl_quiet("--mode=immediate", "--wait", "stop")
        shutil.rmtree(cfg.drill_pgdata, ignore_errors=True)


def cmd_restore_pitr(cfg: Config, target_time: str, target: str, replace: bool) -> None:
    """Point-in-time restore into a named database, leaving the running cluster alone."""
    with exclusive(cfg, "restore"):
        run(pgbackrest(cfg, "check"), "pgbackrest check")  # archive the WAL up to now
        with ScratchCluster(cfg, "time", target_time, source_preload(cfg)) as scratch:
            dump = cfg.drill_dir / "pitr.dump"
            conn = scratch.connect(cfg.db)
            try:
                with conn.cursor() as cur:
                    tsdb = timescaledb_version(cur)
            finally:
                conn.close()
            try:
                run(
                    [
                        str(cfg.bindir / "pg_dump"),
                        f"--host={cfg.drill_socket_dir}",
                        f"--port={cfg.drill_port}",
                        "--format=custom",
                        # The dump setting: METHOD:LEVEL needs pg_dump 16, 15 takes a level.
                        f"--compress={cfg.dump_compress}",
                        f"--file={dump}",
                        cfg.db,
                    ],
                    "pg_dump (point in time)",
                )
                manifest = {"sha256": sha256_of(dump), "timescaledb_version": tsdb}
                restore_dump_into(cfg, dump, manifest, target, replace)
            finally:
                dump.unlink(missing_ok=True)
    LOG.info("database %s now holds %s as of %s", target, cfg.db, target_time)
