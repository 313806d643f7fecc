"""The restore drill: each backup kind restored and compared with the source, each kind's
result recorded on its own."""

from __future__ import annotations

import contextlib
import subprocess
import time

import psycopg2
import psycopg2.extensions
from backup_base import (
    LOG,
    STAMP_FORMAT,
    BackupError,
    Config,
    Metrics,
    connect,
    exclusive,
    run,
    utcnow,
    write_atomic,
)
from backup_dump import drop_database, latest_dump, restore_dump_into
from backup_fingerprint import compare, fingerprint, user_tables
from backup_pgbackrest import ScratchCluster, pgbackrest


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


def drill_metrics(cfg: Config, results: dict[str, bool], started: float) -> bool:
    """Write the drill's metrics as they stand: each kind's own result (0 until it has passed),
    the overall result (1 only when every kind passed). Written before the first kind and after
    each one, so a drill killed part-way leaves the kinds it had not finished at 0 and the
    kinds it had finished with their own results. Returns the overall result."""
    ok = bool(results) and all(results.values()) and len(results) == len(cfg.drill_kinds)
    stamp_file = cfg.state_dir / "restore_drill.last_success"
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
    return ok


def cmd_drill(cfg: Config) -> None:
    started = time.monotonic()
    results: dict[str, bool] = {}
    steps = {"dump": drill_dump, "pgbackrest": drill_pgbackrest}
    unknown = [k for k in cfg.drill_kinds if k not in steps]
    if unknown:
        raise BackupError(f"unknown drill kind(s) {', '.join(unknown)}; known: {', '.join(steps)}")
    ok = False
    try:
        drill_metrics(cfg, results, started)
        with exclusive(cfg, "restore"):
            for kind in cfg.drill_kinds:
                try:
                    steps[kind](cfg)
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
                drill_metrics(cfg, results, started)
    finally:
        ok = drill_metrics(cfg, results, started)
    if not ok:
        raise BackupError(
            "restore drill failed: " + ", ".join(k for k in cfg.drill_kinds if not results.get(k))
        )
