"""Controller tests of the backup script's pure parts (metrics files, their publication,
dump retention). Restores themselves are proved on a real host by molecule/default/tests/
test_backup.py; these run in a second and need no server."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

LIB = Path(__file__).resolve().parents[2] / "roles/backup/files/usr/local/lib/gept/backup"


def _load():
    spec = importlib.util.spec_from_file_location("gept_backup", LIB / "gept_backup.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gb = _load()


@pytest.fixture
def cfg(tmp_path):
    return gb.Config.from_env(
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


def test_backup_metrics_parse_with_the_names_the_alert_rules_use(cfg):
    gb.backup_metrics(cfg, "dump", True, 1_795_000_000.25, 12345)
    text = (cfg.state_dir / "metrics/backup_dump.prom").read_text()
    got = samples(text)
    kind = (("kind", "dump"),)
    assert got[("gept_backup_last_run_ok", kind)] == 1
    assert got[("gept_backup_last_success_timestamp_seconds", kind)] == 1_795_000_000.25
    assert got[("gept_backup_size_bytes", kind)] == 12345


def test_failed_run_without_history_reports_only_the_failure(cfg):
    gb.backup_metrics(cfg, "pgbackrest", False, None, None)
    got = samples((cfg.state_dir / "metrics/backup_pgbackrest.prom").read_text())
    assert got == {("gept_backup_last_run_ok", (("kind", "pgbackrest"),)): 0}


@pytest.mark.parametrize(("result", "expected"), [("success", 1), ("timeout", 0), ("exit-code", 0)])
def test_publish_metrics_is_atomic_and_marks_failed_units(tmp_path, cfg, result, expected):
    gb.backup_metrics(cfg, "dump", True, 1_795_000_000.0, 10)
    m = gb.Metrics(cfg, "restore_drill")
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
    assert drill[("gept_restore_drill_kind_ok", (("kind", "dump"),))] == expected
    assert oct((textfile / "gept_backup_dump.prom").stat().st_mode & 0o777) == "0o644"


def test_prune_keeps_recent_dumps_and_always_the_newest(cfg):
    cfg.dump_dir.mkdir(parents=True)
    now = datetime.now(UTC)
    stamps = [now - timedelta(days=d) for d in (30, 20, 8, 6, 1)]
    for t in stamps:
        base = cfg.dump_dir / f"gept-{t.strftime(gb.STAMP_FORMAT)}"
        base.with_suffix(".dump").write_text("x")
        base.with_suffix(".json").write_text("{}")
    gb.prune_dumps(cfg)
    left = sorted(p.name for p in cfg.dump_dir.glob("*.dump"))
    assert left == [f"gept-{t.strftime(gb.STAMP_FORMAT)}.dump" for t in stamps[3:]]

    # Only very old dumps left: the newest one stays anyway.
    for p in cfg.dump_dir.iterdir():
        p.unlink()
    old = cfg.dump_dir / f"gept-{(now - timedelta(days=40)).strftime(gb.STAMP_FORMAT)}"
    old.with_suffix(".dump").write_text("x")
    old.with_suffix(".json").write_text("{}")
    gb.prune_dumps(cfg)
    assert old.with_suffix(".dump").exists()
