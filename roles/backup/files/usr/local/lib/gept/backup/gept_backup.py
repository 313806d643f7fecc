#!/usr/bin/env python3
"""GePT backups that are proved by restoring them.

Installed on the database host by the backup role and run as the postgres OS user (peer
authentication over the local socket) by systemd services; settings come from the
environment (/etc/gept/backup.env, see the role's templates). Commands:

  dump                  Logical dump of the database: the whole schema plus the data of the
                        critical tables (GEPT_BACKUP_DUMP_TABLES, those that exist), custom
                        format, taken in one snapshot together with a manifest of per-table
                        row counts and sample-window checksums. Old dumps are pruned.
  pgbackrest-backup T   pgBackRest backup of type T (full|diff|incr) into every repository.
  drill                 Restore drill: the latest dump into a scratch database, and the latest
                        pgBackRest backup (plus WAL up to a fresh restore point) into a scratch
                        data directory on another port; compare row counts and checksums with
                        the source; clean up.
  restore-dump          Restore a dump into a named database (--replace to overwrite one).
  restore-pitr          Restore the cluster at a point in time into a scratch data directory,
                        and copy its database into a named database (--replace to overwrite).

Every backup command and the drill write node_exporter textfile metrics into
GEPT_BACKUP_STATE_DIR/metrics; the systemd unit publishes them (as root) into the textfile
directory. Exit status 0 means success; anything else is a failure with the reason logged.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

LOG = logging.getLogger("gept-backup")
# Row text must look the same on the source and on a restored copy, whatever the server's
# defaults: the checksums hash each row's text form.
SESSION_OPTIONS = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=1"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
DUMP_PREFIX = "gept-"


class BackupError(RuntimeError):
    """A backup, restore or drill step failed; the message says which and why."""


@dataclass(frozen=True)
class Config:
    """Settings from the environment (names GEPT_BACKUP_*), with the role's defaults."""

    db: str
    pghost: str
    pgport: int
    bindir: Path
    dump_dir: Path
    dump_tables: list[str]
    dump_compress: str
    dump_retention_days: int
    state_dir: Path
    sample_window: timedelta
    stanza: str
    repos: list[str]
    drill_dir: Path
    drill_port: int
    drill_db: str
    drill_kinds: list[str]
    drill_schemas: list[str]
    drill_start_timeout: int

    @staticmethod
    def from_env(env: dict[str, str] | None = None) -> Config:
        e = os.environ if env is None else env

        def words(name: str, default: str) -> list[str]:
            return e.get(name, default).replace(",", " ").split()

        return Config(
            db=e.get("GEPT_BACKUP_DB", "gept"),
            pghost=e.get("GEPT_BACKUP_PGHOST", "/var/run/postgresql"),
            pgport=int(e.get("GEPT_BACKUP_PGPORT", "5432")),
            bindir=Path(e.get("GEPT_BACKUP_PG_BINDIR", "/usr/lib/postgresql/17/bin")),
            dump_dir=Path(e.get("GEPT_BACKUP_DUMP_DIR", "/var/backups/gept/dumps")),
            dump_tables=words("GEPT_BACKUP_DUMP_TABLES", "items"),
            dump_compress=e.get("GEPT_BACKUP_DUMP_COMPRESS", "zstd:3"),
            dump_retention_days=int(e.get("GEPT_BACKUP_DUMP_RETENTION_DAYS", "7")),
            state_dir=Path(e.get("GEPT_BACKUP_STATE_DIR", "/var/backups/gept/state")),
            sample_window=timedelta(seconds=int(e.get("GEPT_BACKUP_SAMPLE_WINDOW_SECONDS", "86400"))),
            stanza=e.get("GEPT_BACKUP_PGBACKREST_STANZA", "gept"),
            repos=words("GEPT_BACKUP_PGBACKREST_REPOS", "1"),
            drill_dir=Path(e.get("GEPT_BACKUP_DRILL_DIR", "/var/backups/gept/drill")),
            drill_port=int(e.get("GEPT_BACKUP_DRILL_PORT", "5433")),
            drill_db=e.get("GEPT_BACKUP_DRILL_DB", "gept_restore_drill"),
            drill_kinds=words("GEPT_BACKUP_DRILL_KINDS", "dump pgbackrest"),
            drill_schemas=words("GEPT_BACKUP_DRILL_SCHEMAS", "public"),
            drill_start_timeout=int(e.get("GEPT_BACKUP_DRILL_START_TIMEOUT", "3600")),
        )

    @property
    def drill_pgdata(self) -> Path:
        return self.drill_dir / "pgdata"

    @property
    def drill_socket_dir(self) -> Path:
        return self.drill_dir / "run"


# --- small helpers ---------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


def run(cmd: list[str], what: str, capture: bool = False, timeout: float | None = None) -> str:
    """Run a command; raise BackupError naming `what` (with its stderr) when it fails."""
    LOG.debug("run: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise BackupError(f"{what} failed (exit {proc.returncode}): {detail}")
    if proc.stderr.strip():
        LOG.info("%s: %s", what, proc.stderr.strip()[-2000:])
    return proc.stdout if capture else ""


def connect(cfg: Config, dbname: str, host: str | None = None, port: int | None = None):
    conn = psycopg2.connect(
        dbname=dbname,
        host=host or cfg.pghost,
        port=port or cfg.pgport,
        options=SESSION_OPTIONS,
        application_name="gept-backup",
        connect_timeout=10,
    )
    return conn


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


@contextlib.contextmanager
def exclusive(cfg: Config, name: str) -> Iterator[None]:
    """One drill or point-in-time restore at a time (they share the scratch directory)."""
    cfg.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (cfg.state_dir / f"{name}.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BackupError(f"another {name} is running (lock {fh.name})") from exc
        yield


# --- metrics ------------------------------------------------------------------------------------


class Metrics:
    """Writes one node_exporter textfile (<state_dir>/metrics/<name>.prom) atomically."""

    def __init__(self, cfg: Config, name: str) -> None:
        self.path = cfg.state_dir / "metrics" / f"{name}.prom"
        self.lines: list[str] = []
        self.described: set[str] = set()

    def add(self, metric: str, value: float, help_text: str, labels: dict[str, str] | None = None) -> None:
        if metric not in self.described:
            self.lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
            self.described.add(metric)
        label_text = ""
        if labels:
            label_text = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        self.lines.append(f"{metric}{label_text} {value:.6f}".rstrip("0").rstrip("."))

    def write(self) -> None:
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomic(self.path, "\n".join(self.lines) + "\n", mode=0o644)


def backup_metrics(cfg: Config, kind: str, ok: bool, last_success: float | None, size: int | None) -> None:
    m = Metrics(cfg, f"backup_{kind}")
    labels = {"kind": kind}
    m.add("gept_backup_last_run_ok", 1 if ok else 0, "1 if the last backup run succeeded, else 0.", labels)
    if last_success is not None:
        m.add(
            "gept_backup_last_success_timestamp_seconds",
            last_success,
            "Unix time the newest successful backup finished.",
            labels,
        )
    if size is not None:
        m.add("gept_backup_size_bytes", size, "Size of the newest successful backup in bytes.", labels)
    m.write()


# --- fingerprints: row counts and sample-window checksums --------------------------------------


@dataclass
class Fingerprint:
    rows: int
    checksum: str
    time_column: str | None = None
    window: list[str] | None = None  # [start, end] as ISO text, both inclusive

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "checksum": self.checksum,
            "time_column": self.time_column,
            "window": self.window,
        }


def time_column(cur, qualified: str) -> str | None:
    """The first date/time column of the table's primary key (the hypertable's time column for
    every GePT price table); None when there is none (the checksum then covers every row)."""
    cur.execute(
        """
        SELECT a.attname
          FROM pg_index i
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = %s::regclass AND i.indisprimary
           AND a.atttypid IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype)
         ORDER BY array_position(i.indkey::int2[], a.attnum)
         LIMIT 1
        """,
        (qualified,),
    )
    row = cur.fetchone()
    return row[0] if row else None


def fingerprint(
    cur, qualified: str, sample_window: timedelta, like: Fingerprint | None = None
) -> Fingerprint:
    """Row count of the whole table and an order-independent checksum (sum of row-text
    hashes) over a sample window: the newest `sample_window` of rows by the time column, or
    the very window of `like` when comparing a restored copy with its source."""
    schema, table = qualified.split(".", 1)
    ident = sql.Identifier(schema, table)
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident))
    rows = cur.fetchone()[0]
    tcol = like.time_column if like else time_column(cur, qualified)
    window = like.window if like else None
    if tcol and like is None:
        cur.execute(
            sql.SQL("SELECT max({c})::text, (max({c}) - %s)::text FROM {t}").format(
                c=sql.Identifier(tcol), t=ident
            ),
            (sample_window,),
        )
        hi, lo = cur.fetchone()
        window = [lo, hi] if hi is not None else None
    where = sql.SQL("")
    params: tuple[Any, ...] = ()
    if tcol and window:
        where = sql.SQL(" WHERE {c} BETWEEN %s AND %s").format(c=sql.Identifier(tcol))
        params = (window[0], window[1])
    cur.execute(
        sql.SQL("SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text FROM {} t").format(
            ident
        )
        + where,
        params,
    )
    sampled, digest = cur.fetchone()
    return Fingerprint(rows=rows, checksum=f"{sampled}:{digest}", time_column=tcol, window=window)


def compare(expected: dict[str, dict[str, Any]], cur, sample_window: timedelta) -> list[str]:
    """Fingerprint every expected table in the restored copy; return the differences."""
    problems: list[str] = []
    for qualified, want in sorted(expected.items()):
        cur.execute("SELECT to_regclass(%s)", (quote_qualified(qualified),))
        if cur.fetchone()[0] is None:
            problems.append(f"{qualified}: missing in the restored copy")
            continue
        like = Fingerprint(**want)
        got = fingerprint(cur, qualified, sample_window, like=like)
        if got.rows != like.rows:
            problems.append(f"{qualified}: {got.rows} rows restored, {like.rows} in the source")
        elif got.checksum != like.checksum:
            problems.append(f"{qualified}: sample-window checksum {got.checksum} != source {like.checksum}")
        else:
            LOG.info("%s: %d rows, sample %s match", qualified, got.rows, got.checksum)
    return problems


def quote_qualified(qualified: str) -> str:
    schema, table = qualified.split(".", 1)
    return '"{}"."{}"'.format(schema.replace('"', '""'), table.replace('"', '""'))


def timescaledb_version(cur) -> str | None:
    cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    row = cur.fetchone()
    return row[0] if row else None


def user_tables(cur, schemas: list[str]) -> list[str]:
    """Ordinary and partitioned tables in `schemas` that no extension owns, as schema.table."""
    cur.execute(
        """
        SELECT n.nspname || '.' || c.relname
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY (%s) AND NOT c.relispartition
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                            AND d.objid = c.oid AND d.deptype = 'e')
         ORDER BY 1
        """,
        (schemas,),
    )
    return [r[0] for r in cur.fetchall()]


# --- logical dumps ---------------------------------------------------------------------------


def resolve_tables(cur, names: list[str]) -> list[str]:
    """The configured critical tables that exist, as schema.table (unqualified: search_path)."""
    found: list[str] = []
    for name in names:
        cur.execute(
            "SELECT n.nspname || '.' || c.relname"
            "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = to_regclass(%s) AND c.relkind IN ('r', 'p')",
            (name,),
        )
        row = cur.fetchone()
        if row:
            found.append(row[0])
        else:
            LOG.info("critical table %s does not exist here; not dumped", name)
    return found


def data_exclusions(cur, keep: list[str], tsdb: bool) -> list[str]:
    """Every user table whose data stays out of the dump: all but the critical tables and,
    for a critical hypertable, its chunks (and its compressed chunks). Extension catalog
    tables (TimescaleDB's own) are always dumped: pg_dump needs them for a restorable copy."""
    cur.execute(
        """
        SELECT n.nspname || '.' || c.relname
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                            AND d.objid = c.oid AND d.deptype = 'e')
        """
    )
    every = {r[0] for r in cur.fetchall()}
    kept = set(keep)
    if tsdb and keep:
        cur.execute(
            """
            SELECT n.nspname || '.' || c.relname
              FROM _timescaledb_catalog.chunk ch
              JOIN _timescaledb_catalog.hypertable h ON h.id = ch.hypertable_id
              -- The catalog names a chunk by schema_name/table_name before 2.2x and by relid
              -- since; read whichever this version has.
              JOIN pg_class c ON c.oid = coalesce(
                       (to_jsonb(ch) ->> 'relid')::regclass,
                       to_regclass(format('%%I.%%I', to_jsonb(ch) ->> 'schema_name',
                                          to_jsonb(ch) ->> 'table_name')))
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE h.schema_name || '.' || h.table_name = ANY (%s)
                OR h.id IN (SELECT compressed_hypertable_id FROM _timescaledb_catalog.hypertable
                             WHERE schema_name || '.' || table_name = ANY (%s))
            """,
            (keep, keep),
        )
        kept |= {r[0] for r in cur.fetchall()}
    return sorted(every - kept)


def latest_dump(cfg: Config) -> tuple[Path, dict[str, Any]]:
    """The newest complete dump (its manifest is written last) and its manifest."""
    manifests = sorted(cfg.dump_dir.glob(f"{DUMP_PREFIX}*.json"))
    if not manifests:
        raise BackupError(f"no dump in {cfg.dump_dir}")
    manifest = json.loads(manifests[-1].read_text())
    return cfg.dump_dir / manifest["file"], manifest


def cmd_dump(cfg: Config) -> None:
    ok = False
    try:
        take_dump(cfg)
        prune_dumps(cfg)
        ok = True
    finally:
        last, size = None, None
        with contextlib.suppress(BackupError, OSError, ValueError, KeyError):
            path, manifest = latest_dump(cfg)
            last, size = manifest["finished_at_epoch"], path.stat().st_size
        backup_metrics(cfg, "dump", ok, last, size)


def take_dump(cfg: Config) -> None:
    started = utcnow()
    stamp = started.strftime(STAMP_FORMAT)
    final = cfg.dump_dir / f"{DUMP_PREFIX}{stamp}.dump"
    partial = cfg.dump_dir / f".{final.name}.partial"
    os.umask(0o077)
    conn = connect(cfg, cfg.db)
    try:
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        with conn.cursor() as cur:
            # The first query fixes the snapshot; pg_dump reuses it, so the manifest's counts
            # describe exactly the data in the dump.
            cur.execute("SELECT pg_export_snapshot(), current_setting('server_version')")
            snapshot, server_version = cur.fetchone()
            tsdb = timescaledb_version(cur)
            tables = resolve_tables(cur, cfg.dump_tables)
            excluded = data_exclusions(cur, tables, tsdb is not None)
            prints = {t: fingerprint(cur, t, cfg.sample_window).as_dict() for t in tables}
            cmd = [
                str(cfg.bindir / "pg_dump"),
                f"--host={cfg.pghost}",
                f"--port={cfg.pgport}",
                "--format=custom",
                f"--compress={cfg.dump_compress}",
                f"--snapshot={snapshot}",
                f"--file={partial}",
                "--no-password",
            ]
            cmd += [f"--exclude-table-data={quote_qualified(t)}" for t in excluded]
            cmd.append(cfg.db)
            LOG.info(
                "dumping %s: schema + data of %s (%d tables' data left out)",
                cfg.db,
                ", ".join(tables) or "no table",
                len(excluded),
            )
            run(cmd, "pg_dump")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        conn.close()
    finished = utcnow()
    manifest = {
        "format": 1,
        "file": final.name,
        "database": cfg.db,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "finished_at_epoch": finished.timestamp(),
        "server_version": server_version,
        "timescaledb_version": tsdb,
        "bytes": partial.stat().st_size,
        "sha256": sha256_of(partial),
        "tables": prints,
    }
    os.replace(partial, final)
    write_atomic(final.with_suffix(".json"), json.dumps(manifest, indent=2) + "\n")
    LOG.info("dump %s: %d bytes, %d tables", final, manifest["bytes"], len(prints))


def prune_dumps(cfg: Config) -> None:
    """Delete dumps older than the retention; the newest dump is always kept."""
    cutoff = utcnow() - timedelta(days=cfg.dump_retention_days)
    manifests = sorted(cfg.dump_dir.glob(f"{DUMP_PREFIX}*.json"))
    for manifest in manifests[:-1]:
        stamp = manifest.stem[len(DUMP_PREFIX) :]
        try:
            taken = datetime.strptime(stamp, STAMP_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            continue
        if taken < cutoff:
            LOG.info("retention: removing %s", manifest.with_suffix(".dump").name)
            manifest.with_suffix(".dump").unlink(missing_ok=True)
            manifest.unlink()
    # Leftovers of interrupted runs.
    for partial in cfg.dump_dir.glob(f".{DUMP_PREFIX}*.partial"):
        if partial.stat().st_mtime < cutoff.timestamp():
            partial.unlink()


def restore_dump_into(
    cfg: Config, path: Path, manifest: dict[str, Any] | None, target: str, replace: bool
) -> None:
    """Restore a dump into database `target` of the main cluster. It is restored into a
    temporary database first and renamed into place only when pg_restore succeeded, so a
    failed restore never leaves `target` half-written or gone."""
    if manifest is not None:
        digest = sha256_of(path)
        if digest != manifest["sha256"]:
            raise BackupError(
                f"{path.name}: sha256 {digest} does not match its manifest ({manifest['sha256']})"
            )
    staging = f"{target}__restoring"[:63]
    admin = connect(cfg, "postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target,))
            exists = cur.fetchone() is not None
            if exists and not replace:
                raise BackupError(
                    f"database {target} exists; restoring over it needs the explicit confirmation"
                )
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(staging)))
            cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(staging)))
        tsdb = manifest.get("timescaledb_version") if manifest else dump_timescaledb_version(cfg, path)
        restore_with_timescaledb(cfg, path, staging, tsdb)
        with admin.cursor() as cur:
            if exists:
                cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(target)))
            cur.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(staging), sql.Identifier(target)
                )
            )
        LOG.info("restored %s into database %s", path.name, target)
    except BaseException:
        with contextlib.suppress(psycopg2.Error), admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(staging)))
        raise
    finally:
        admin.close()


def dump_timescaledb_version(cfg: Config, path: Path) -> str | None:
    """TimescaleDB version recorded in a dump without a manifest (from its catalog data)."""
    listing = run([str(cfg.bindir / "pg_restore"), "--list", str(path)], "pg_restore --list", capture=True)
    return "" if " EXTENSION - timescaledb" in listing else None


def restore_with_timescaledb(cfg: Config, path: Path, dbname: str, tsdb: str | None) -> None:
    """pg_restore into an empty database; with TimescaleDB, the extension of the same
    version first and timescaledb_pre_restore()/timescaledb_post_restore() around it."""
    if tsdb is not None:
        conn = connect(cfg, dbname)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                if tsdb:
                    cur.execute(sql.SQL("CREATE EXTENSION timescaledb VERSION {}").format(sql.Literal(tsdb)))
                else:
                    cur.execute("CREATE EXTENSION timescaledb")
                cur.execute("SELECT timescaledb_pre_restore()")
        finally:
            conn.close()
    run(
        [
            str(cfg.bindir / "pg_restore"),
            f"--host={cfg.pghost}",
            f"--port={cfg.pgport}",
            "--no-password",
            # One job: TimescaleDB's catalog rows must load in dump order (foreign keys).
            f"--dbname={dbname}",
            "--exit-on-error",
            str(path),
        ],
        "pg_restore",
    )
    if tsdb is not None:
        conn = connect(cfg, dbname)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT timescaledb_post_restore()")
        finally:
            conn.close()


def drill_dump(cfg: Config) -> None:
    path, manifest = latest_dump(cfg)
    LOG.info("dump drill: %s (%s)", path.name, manifest["finished_at"])
    restore_dump_into(cfg, path, manifest, cfg.drill_db, replace=True)
    try:
        conn = connect(cfg, cfg.drill_db)
        try:
            with conn.cursor() as cur:
                problems = compare(manifest["tables"], cur, cfg.sample_window)
        finally:
            conn.close()
    finally:
        drop_database(cfg, cfg.drill_db)
    if problems:
        raise BackupError("dump drill: " + "; ".join(problems))


def drop_database(cfg: Config, name: str) -> None:
    admin = connect(cfg, "postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()


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


def drill_pgbackrest(cfg: Config) -> None:
    """Create a restore point on the source and fingerprint the tables in the same snapshot,
    archive the WAL, restore the latest backup up to that restore point, compare."""
    point = f"gept-drill-{utcnow().strftime(STAMP_FORMAT)}"
    conn = connect(cfg, cfg.db)
    try:
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ)
        with conn.cursor() as cur:
            # The snapshot is taken at this first query, next to the restore point's WAL
            # record: what the snapshot sees is what recovery to the point brings back
            # (up to a commit racing the same microseconds; a rerun settles that).
            cur.execute("SELECT pg_create_restore_point(%s)", (point,))
            cur.execute("SHOW shared_preload_libraries")
            preload = cur.fetchone()[0]
            expected = {
                t: fingerprint(cur, t, cfg.sample_window).as_dict()
                for t in user_tables(cur, cfg.drill_schemas)
            }
        conn.commit()
    finally:
        conn.close()
    # Switches the WAL segment and waits until it is archived: the restore point is in the repo.
    run(pgbackrest(cfg, "check"), "pgbackrest check")
    with ScratchCluster(cfg, "name", point, preload) as scratch:
        conn = scratch.connect(cfg.db)
        try:
            with conn.cursor() as cur:
                problems = compare(expected, cur, cfg.sample_window)
        finally:
            conn.close()
    if problems:
        raise BackupError("pgbackrest drill: " + "; ".join(problems))


def cmd_drill(cfg: Config) -> None:
    started = time.monotonic()
    results: dict[str, bool] = {}
    stamp_file = cfg.state_dir / "restore_drill.last_success"
    try:
        with exclusive(cfg, "restore"):
            for kind in cfg.drill_kinds:
                step = {"dump": drill_dump, "pgbackrest": drill_pgbackrest}[kind]
                try:
                    step(cfg)
                    results[kind] = True
                    LOG.info("drill %s: ok", kind)
                except (
                    BackupError,
                    psycopg2.Error,
                    OSError,
                    KeyError,
                    ValueError,
                    subprocess.SubprocessError,
                ) as exc:
                    results[kind] = False
                    LOG.error("drill %s: FAILED: %s", kind, exc)
    finally:
        ok = bool(results) and all(results.values()) and len(results) == len(cfg.drill_kinds)
        if ok:
            write_atomic(stamp_file, f"{time.time():.0f}\n")
        m = Metrics(cfg, "restore_drill")
        m.add("gept_restore_drill_ok", 1 if ok else 0, "1 if the last restore drill passed, else 0.")
        with contextlib.suppress(OSError, ValueError):
            m.add(
                "gept_restore_drill_last_success_timestamp_seconds",
                float(stamp_file.read_text()),
                "Unix time the last restore drill passed.",
            )
        m.add(
            "gept_restore_drill_duration_seconds",
            time.monotonic() - started,
            "How long the last restore drill took.",
        )
        for kind in cfg.drill_kinds:
            m.add(
                "gept_restore_drill_kind_ok",
                1 if results.get(kind) else 0,
                "1 if the last restore drill of this backup kind passed, else 0.",
                {"kind": kind},
            )
        m.write()
    if not ok:
        raise BackupError(
            "restore drill failed: " + ", ".join(k for k in cfg.drill_kinds if not results.get(k))
        )


def cmd_restore_dump(cfg: Config, file: str | None, target: str, replace: bool) -> None:
    if file:
        path = Path(file)
        manifest_path = path.with_suffix(".json")
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    else:
        path, manifest = latest_dump(cfg)
    with exclusive(cfg, "restore"):
        restore_dump_into(cfg, path, manifest, target, replace)


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
                        "--compress=zstd:1",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dump", help="logical dump of the critical tables and the schema")
    p = sub.add_parser("pgbackrest-backup", help="pgBackRest backup")
    p.add_argument("type", choices=["full", "diff", "incr"])
    sub.add_parser("drill", help="restore drill")
    p = sub.add_parser("restore-dump", help="restore a dump into a named database")
    p.add_argument("--file", help="dump file (default: the newest)")
    p.add_argument("--target-db", required=True)
    p.add_argument("--replace", action="store_true", help="overwrite the target database if it exists")
    p = sub.add_parser("restore-pitr", help="restore a point in time into a named database")
    p.add_argument("--target-time", required=True, help="e.g. '2026-01-31 12:00:00+00'")
    p.add_argument("--target-db", required=True)
    p.add_argument("--replace", action="store_true", help="overwrite the target database if it exists")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    # systemd stops a timed-out run with SIGTERM: unwind so the finally blocks clean up and
    # record the failure.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cfg = Config.from_env()
    try:
        if args.command == "dump":
            cmd_dump(cfg)
        elif args.command == "pgbackrest-backup":
            cmd_pgbackrest_backup(cfg, args.type)
        elif args.command == "drill":
            cmd_drill(cfg)
        elif args.command == "restore-dump":
            cmd_restore_dump(cfg, args.file, args.target_db, args.replace)
        else:
            cmd_restore_pitr(cfg, args.target_time, args.target_db, args.replace)
    except (BackupError, psycopg2.Error, OSError) as exc:
        LOG.error("%s failed: %s", args.command, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
