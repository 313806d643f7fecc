"""Controller tests of the PostgreSQL major upgrade's pure parts: the progress metric it
publishes (parsed by Prometheus's own parser, and shown by gept-status), the newest backup it
reads from the backup role's textfile metrics, and the local fact it carries to the new major.
The upgrade itself runs for real in the live scenario (molecule/live/tests/test_upgrade.py)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from support.modules import load

ROOT = Path(__file__).resolve().parents[2]
helper = load("gept_pg_upgrade", ROOT / "roles/upgrade_postgresql/files/gept-pg-upgrade.py")
status = load("gept_status", ROOT / "roles/status/files/gept-status.py")


def _args(tmp_path: Path, textfile: Path) -> argparse.Namespace:
    return argparse.Namespace(
        old="15", new="17", state_dir=str(tmp_path / "state"), textfile_dir=str(textfile)
    )


def test_progress_metric_parses_and_gept_status_shows_it(tmp_path: Path) -> None:
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    st = helper.State(_args(tmp_path, textfile))
    st.data.update({"from": "15", "to": "17", "state": "running", "steps_done": [], "measured": {}})
    st.step("preflight")
    st.step("record")
    st.save()
    families = {f.name: f for f in text_string_to_metric_families((textfile / helper.PROM).read_text())}
    states = {s.labels["state"]: s.value for s in families["gept_postgresql_upgrade_state"].samples}
    assert states == {"pending": 0, "running": 1, "failed": 0, "done": 0, "rolled_back": 0}
    assert families["gept_postgresql_upgrade_steps_done"].samples[0].value == 2
    [check] = status.check_upgrade(str(textfile))
    assert (check.level, check.detail) == (status.WARN, f"15 -> 17: running, step 2/{len(helper.STEPS)}")

    st.data["state"] = "done"
    st.data["measured"]["writers_stopped_seconds"] = 31.5
    for step in helper.STEPS:
        st.step(step)
    st.save()
    [check] = status.check_upgrade(str(textfile))
    assert check.level == status.OK
    assert (
        check.detail == f"15 -> 17: done, step {len(helper.STEPS)}/{len(helper.STEPS)}, writers stopped 32 s"
    )
    # A window of each run is kept beside the state (the state holds the last run only).
    st.log_window({"kind": "upgrade", "start": 1.0, "end": 2.0})
    st.log_window({"kind": "rollback", "start": 3.0, "end": 4.0})
    lines = (tmp_path / "state/windows.jsonl").read_text().splitlines()
    assert [json.loads(x)["kind"] for x in lines] == ["upgrade", "rollback"]


def test_no_upgrade_no_status_line(tmp_path: Path) -> None:
    assert status.check_upgrade(str(tmp_path)) == []


def test_newest_backup_reads_the_backup_roles_metrics(tmp_path: Path) -> None:
    assert helper.newest_backup(str(tmp_path)) is None
    now = time.time()
    (tmp_path / "gept-backup-dump.prom").write_text(
        "# HELP gept_backup_last_success_timestamp_seconds newest successful backup\n"
        f'gept_backup_last_success_timestamp_seconds{{kind="dump"}} {now - 7200:.0f}\n'
    )
    (tmp_path / "gept-backup-pgbackrest.prom").write_text(
        f'gept_backup_last_success_timestamp_seconds{{kind="pgbackrest"}} {now - 60:.10e}\n'
        f'gept_backup_size_bytes{{kind="pgbackrest"}} {now:.0f}\n'
    )
    assert abs(helper.newest_backup(str(tmp_path)) - (now - 60)) < 1


def test_local_fact_follows_the_cluster(tmp_path: Path) -> None:
    fact = tmp_path / "gept_postgresql.fact"
    assert helper.carry_local_fact("main", "15", "17", fact) is False  # no fact: nothing to carry
    fact.write_text(json.dumps({"version": "15", "cluster": "main", "origin": "adopted"}))
    assert helper.carry_local_fact("main", "15", "17", fact) is True
    assert json.loads(fact.read_text()) == {"version": "17", "cluster": "main", "origin": "adopted"}
    assert helper.carry_local_fact("main", "15", "17", fact) is False  # already carried
    assert helper.carry_local_fact("main", "17", "15", fact) is True  # the rollback's way back
    assert json.loads(fact.read_text())["version"] == "15"
