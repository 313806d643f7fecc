"""Logical dumps: taken in one snapshot with a manifest, pruned, restored into a named
database through a staging database."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from backup_base import (
    DUMP_PREFIX,
    LOG,
    STAMP_FORMAT,
    BackupError,
    Config,
    backup_metrics,
    connect,
    run,
    sha256_of,
    utcnow,
    write_atomic,
)
from backup_fingerprint import (
    data_exclusions,
    fingerprint,
    quote_qualified,
    resolve_tables,
    timescaledb_version,
)
from psycopg2 import sql


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


def drop_database(cfg: Config, name: str) -> None:
    admin = connect(cfg, "postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()
