"""Controller tests of the backup script: its settings, metrics files and their publication,
dump retention (pure parts, no server), and the dump drill against a real throwaway
PostgreSQL (a good dump passes, a truncated one fails, and each drill kind reports its own
result). pgBackRest restores are proved on a real host by molecule/default/tests/
test_backup.py."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.pg import PgCluster

LIB = Path(__file__).resolve().parents[2] / "roles/backup/files/usr/local/lib/gept/backup"
# The modules sit side by side on the host; the command line (gept_backup.py) finds them
# beside itself, the tests through the path.
sys.path.insert(0, str(LIB))
import backup_base  # noqa: E402
import backup_drill  # noqa: E402
import backup_dump  # noqa: E402


@pytest.fixture
def cfg(tmp_path):
    return backup_base.Config.from_env(
        {
            "GEPT_BACKUP_STATE_DIR": str(tmp_path / "state"),
            "GEPT_BACKUP_DUMP_DIR": str(tmp_path / "dumps"),
            "GEPT_BACKUP_DUMP_TABLES": "items, predictions",
            "GEPT_BACKUP_DUMP_RETENTION_DAYS": "7",
        }
    )


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_config_reads_lists_with_commas_or_spaces(cfg):
    assert cfg.dump_tables == ["items", "predictions"]
    assert cfg.drill_kinds == ["dump", "pgbackrest"]


def test_unset_variables_take_the_dataclass_defaults():
    cfg = backup_base.Config.from_env({})
    for f in dataclasses.fields(backup_base.Config):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert getattr(cfg, f.name) == default, f.name
    assert cfg.sample_window == timedelta(days=1)
    assert backup_base.Config.from_env(
        {"GEPT_BACKUP_SAMPLE_WINDOW_SECONDS": "60"}
    ).sample_window == timedelta(seconds=60)


def test_backup_metrics_parse_with_the_names_the_alert_rules_use(cfg):
    backup_base.backup_metrics(cfg, "dump", True, 1_795_000_000.25, 12345)
    text = (cfg.state_dir / "metrics/backup_dump.prom").read_text()
    got = samples(text)
    kind = (("kind", "dump"),)
    assert got[("gept_backup_last_run_ok", kind)] == 1
    assert got[("gept_backup_last_success_timestamp_seconds", kind)] == 1_795_000_000.25
    assert got[("gept_backup_size_bytes", kind)] == 12345


def test_failed_run_without_history_reports_only_the_failure(cfg):
    backup_base.backup_metrics(cfg, "pgbackrest", False, None, None)
    got = samples((cfg.state_dir / "metrics/backup_pgbackrest.prom").read_text())
    assert got == {("gept_backup_last_run_ok", (("kind", "pgbackrest"),)): 0}


@pytest.mark.parametrize(("result", "expected"), [("success", 1), ("timeout", 0), ("exit-code", 0)])
def test_publish_metrics_is_atomic_and_marks_failed_units(tmp_path, cfg, result, expected):
    backup_base.backup_metrics(cfg, "dump", True, 1_795_000_000.0, 10)
    m = backup_base.Metrics(cfg, "restore_drill")
    m.add("gept_restore_drill_ok", 1, "ok")
    m.add("gept_restore_drill_kind_ok", 1, "ok", {"kind": "dump"})
    m.write()
    textfile = tmp_path / "textfile"
    env = dict(
        os.environ,
        GEPT_BACKUP_STATE_DIR=str(cfg.state_dir),
        GEPT_BACKUP_TEXTFILE_DIR=str(textfile),
        SERVICE_RESULT=result,
    )
    for name in ("backup_dump", "restore_drill"):
        subprocess.run(["sh", str(LIB / "publish-metrics"), name], env=env, check=True)
    assert sorted(p.name for p in textfile.iterdir()) == ["gept_backup_dump.prom", "gept_restore_drill.prom"]
    dump = samples((textfile / "gept_backup_dump.prom").read_text())
    drill = samples((textfile / "gept_restore_drill.prom").read_text())
    assert dump[("gept_backup_last_run_ok", (("kind", "dump"),))] == expected
    assert dump[("gept_backup_last_success_timestamp_seconds", (("kind", "dump"),))] == 1_795_000_000.0
    assert drill[("gept_restore_drill_ok", ())] == expected
    # A kind's own result stays as the drill wrote it; only the overall gauge follows the unit.
    assert drill[("gept_restore_drill_kind_ok", (("kind", "dump"),))] == 1
    assert oct((textfile / "gept_backup_dump.prom").stat().st_mode & 0o777) == "0o644"


def test_prune_keeps_recent_dumps_and_always_the_newest(cfg):
    cfg.dump_dir.mkdir(parents=True)
    now = datetime.now(UTC)
    stamps = [now - timedelta(days=d) for d in (30, 20, 8, 6, 1)]
    for t in stamps:
        base = cfg.dump_dir / f"gept-{t.strftime(backup_base.STAMP_FORMAT)}"
        base.with_suffix(".dump").write_text("x")
        base.with_suffix(".json").write_text("{}")
    backup_dump.prune_dumps(cfg)
    left = sorted(p.name for p in cfg.dump_dir.glob("*.dump"))
    assert left == [f"gept-{t.strftime(backup_base.STAMP_FORMAT)}.dump" for t in stamps[3:]]

    # Only very old dumps left: the newest one stays anyway.
    for p in cfg.dump_dir.iterdir():
        p.unlink()
    old = cfg.dump_dir / f"gept-{(now - timedelta(days=40)).strftime(backup_base.STAMP_FORMAT)}"
    old.with_suffix(".dump").write_text("x")
    old.with_suffix(".json").write_text("{}")
    backup_dump.prune_dumps(cfg)
    assert old.with_suffix(".dump").exists()


def publish(cfg, textfile: Path, name: str, result: str) -> dict[tuple[str, tuple], float]:
    env = dict(
        os.environ,
        GEPT_BACKUP_STATE_DIR=str(cfg.state_dir),
        GEPT_BACKUP_TEXTFILE_DIR=str(textfile),
        SERVICE_RESULT=result,
    )
    subprocess.run(["sh", str(LIB / "publish-metrics"), name], env=env, check=True)
    return samples((textfile / f"gept_{name}.prom").read_text())


def test_a_failed_kind_never_hides_another_kinds_pass(tmp_path, cfg):
    """The drill's unit fails when any kind fails; the published per-kind gauges still say
    which kind passed and which failed (only the overall gauge is forced to 0)."""
    cfg.state_dir.mkdir(parents=True)
    backup_drill.drill_metrics(cfg, {"dump": False, "pgbackrest": True}, 0.0)
    got = publish(cfg, tmp_path / "textfile", "restore_drill", "exit-code")
    assert got[("gept_restore_drill_ok", ())] == 0
    assert got[("gept_restore_drill_kind_ok", (("kind", "dump"),))] == 0
    assert got[("gept_restore_drill_kind_ok", (("kind", "pgbackrest"),))] == 1


def test_a_drill_not_yet_finished_reports_unfinished_kinds_as_failed(tmp_path, cfg):
    cfg.state_dir.mkdir(parents=True)
    backup_drill.drill_metrics(cfg, {"dump": True}, 0.0)  # killed during the pgbackrest kind
    got = publish(cfg, tmp_path / "textfile", "restore_drill", "timeout")
    assert got[("gept_restore_drill_ok", ())] == 0
    assert got[("gept_restore_drill_kind_ok", (("kind", "dump"),))] == 1
    assert got[("gept_restore_drill_kind_ok", (("kind", "pgbackrest"),))] == 0


# --- the dump drill against a real PostgreSQL ----------------------------------------------


@pytest.fixture(scope="module")
def pg():
    cluster = PgCluster(prefix="gept-backup-pg-")
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


def backup_cli(pg: PgCluster, tmp: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """gept_backup.py as the systemd units run it, against the throwaway cluster's socket."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEPT_", "PG"))}
    env.update(
        PGUSER="postgres",
        GEPT_BACKUP_DB="gept",
        GEPT_BACKUP_PGHOST=str(pg.dir),
        GEPT_BACKUP_PGPORT=str(pg.port),
        GEPT_BACKUP_PG_BINDIR=str(pg.bin),
        GEPT_BACKUP_DUMP_DIR=str(tmp / "dumps"),
        GEPT_BACKUP_STATE_DIR=str(tmp / "state"),
        GEPT_BACKUP_DUMP_TABLES="items",
        GEPT_BACKUP_DUMP_COMPRESS="1",
        GEPT_BACKUP_DRILL_DB="gept_restore_drill",
        **{f"GEPT_BACKUP_{k.upper()}": v for k, v in settings.items()},
    )
    return subprocess.run(  # noqa: S603  (our own script, fixed argv)
        [sys.executable, str(LIB / "gept_backup.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.postgres
def test_drill_passes_a_good_dump_and_fails_a_truncated_one(pg, tmp_path):
    pg.execute("postgres", "DROP DATABASE IF EXISTS gept WITH (FORCE)", autocommit=True)
    pg.execute("postgres", "CREATE DATABASE gept", autocommit=True)
    pg.execute(
        "gept",
        "CREATE TABLE items (item_id integer PRIMARY KEY, name text NOT NULL);"
        "INSERT INTO items SELECT i, 'Item ' || i FROM generate_series(1, 2000) i",
    )
    (tmp_path / "dumps").mkdir()  # the role creates it
    dumped = backup_cli(pg, tmp_path, "dump")
    assert dumped.returncode == 0, dumped.stderr
    (dump,) = (tmp_path / "dumps").glob("gept-*.dump")
    cfg = backup_base.Config.from_env({"GEPT_BACKUP_STATE_DIR": str(tmp_path / "state")})
    textfile = tmp_path / "textfile"

    good = backup_cli(pg, tmp_path, "drill", drill_kinds="dump")
    assert good.returncode == 0, good.stderr
    assert "drill dump: ok" in good.stderr
    got = publish(cfg, textfile, "restore_drill", "success")
    assert got[("gept_restore_drill_ok", ())] == 1
    assert got[("gept_restore_drill_kind_ok", (("kind", "dump"),))] == 1

    with dump.open("r+b") as fh:
        fh.truncate(dump.stat().st_size // 2)
    bad = backup_cli(pg, tmp_path, "drill", drill_kinds="dump")
    assert bad.returncode == 1
    assert "drill dump: FAILED" in bad.stderr and "does not match its manifest" in bad.stderr
    got = publish(cfg, textfile, "restore_drill", "exit-code")
    assert got[("gept_restore_drill_ok", ())] == 0
    assert got[("gept_restore_drill_kind_ok", (("kind", "dump"),))] == 0
    # The drill database is gone and the source untouched.
    left = "SELECT count(*) FROM pg_database WHERE datname IN (%s, %s)"
    assert pg.execute("postgres", left, ("gept_restore_drill", "gept_restore_drill__restoring")) == [(0,)]
    assert pg.execute("gept", "SELECT count(*) FROM items") == [(2000,)]
