"""The backup role on a converged host: dumps, pgBackRest, the restore drill and
playbooks/restore.yml, each proved by running it for real against the host's database."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
DUMP_DIR = "/var/backups/gept/dumps"
DRILL_DIR = "/var/backups/gept/drill"
STANZA = "gept"
TIMERS = [
    "gept-backup-dump.timer",
    "gept-pgbackrest-full.timer",
    "gept-pgbackrest-diff.timer",
    "gept-restore-drill.timer",
]


# --- helpers ---------------------------------------------------------------------------------


def psql(host, query: str, db: str = "gept") -> str:
    out = host.run(f"runuser -u postgres -- psql -XtA -v ON_ERROR_STOP=1 -d {db} -c {shlex.quote(query)}")
    assert out.rc == 0, f"psql failed: {out.stderr}"
    return out.stdout.strip()


def metrics(host) -> dict[str, float]:
    """Every gept_* sample in the textfile directory, keyed by 'name{labels}'."""
    out = host.run(f"cat {TEXTFILE_DIR}/gept_*.prom")
    samples: dict[str, float] = {}
    for line in out.stdout.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def start(host, unit: str):
    """Start a oneshot unit and wait for it to finish (systemctl start blocks for oneshot)."""
    return host.run(f"timeout 600 systemctl start {unit}")


def journal(host, unit: str) -> str:
    return host.run(f"journalctl -u {unit} -n 40 --no-pager").stdout


def newest_dump(host) -> tuple[str, dict]:
    name = host.run(f"ls -1 {DUMP_DIR} | grep -E '^gept-.*\\.json$' | tail -n 1").stdout.strip()
    assert name, "no dump manifest"
    manifest = json.loads(host.file(f"{DUMP_DIR}/{name}").content_string)
    return f"{DUMP_DIR}/{manifest['file']}", manifest


def drill(host) -> tuple[int, dict[str, float]]:
    rc = start(host, "gept-restore-drill.service").rc
    return rc, metrics(host)


def restore_playbook(host, *extra: str) -> subprocess.CompletedProcess:
    """Run playbooks/restore.yml from the controller against this host, as an operator would."""
    name = host.backend.get_hostname()
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="default")
    env.setdefault("ANSIBLE_VAULT_PASSWORD_FILE", str(REPO / ".secrets" / "demo-vault-pass"))
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as inv:
        if not inventory:
            inv.write(
                json.dumps(
                    {
                        "all": {
                            "children": {
                                "timescaledb": {
                                    "hosts": {
                                        name: {
                                            "ansible_connection": "community.docker.docker",
                                            "ansible_python_interpreter": "/usr/bin/python3",
                                        }
                                    }
                                }
                            }
                        }
                    }
                )
            )
            inv.flush()
            inventory = inv.name
        cmd = ["ansible-playbook", "-i", inventory, "--limit", name, "playbooks/restore.yml", *extra]
        return subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
        )


@pytest.fixture(scope="module")
def full_backup(host):
    """One pgBackRest full backup for this module (the role's first backup may be running)."""
    result = start(host, "gept-pgbackrest@full.service")
    assert result.rc == 0, journal(host, "gept-pgbackrest@full.service")
    return result


@pytest.fixture
def marker_item(host):
    """An items row only this test writes, removed afterwards."""
    item_id = 2_000_000_000 + uuid.uuid4().int % 100_000_000
    yield item_id
    psql(host, f"DELETE FROM items WHERE item_id IN ({item_id}, {item_id + 1})")


# --- layout and units ---------------------------------------------------------------------------


def test_backup_directories_are_private(host):
    for path in ("/var/backups/gept", DUMP_DIR, "/var/backups/gept/state", DRILL_DIR):
        f = host.file(path)
        assert f.is_directory, path
        assert (f.user, f.group, f.mode) == ("postgres", "postgres", 0o700), path


def test_timers_enabled_and_units_valid(host):
    for timer in TIMERS:
        t = host.service(timer)
        assert t.is_enabled and t.is_running, timer
    units = " ".join(
        f"/etc/systemd/system/{u}"
        for u in (
            "gept-backup-dump.service",
            "gept-pgbackrest@.service",
            "gept-restore-drill.service",
            *TIMERS,
        )
    )
    out = host.run(f"systemd-analyze verify {units}")
    assert out.rc == 0, out.stderr


def test_jobs_run_sandboxed_as_postgres(host):
    for unit in ("gept-backup-dump.service", "gept-pgbackrest@full.service", "gept-restore-drill.service"):
        props = host.run(
            f"systemctl show {unit} -p User -p ProtectSystem -p NoNewPrivileges -p PrivateTmp"
        ).stdout
        assert "User=postgres" in props, unit
        assert "ProtectSystem=strict" in props, unit
        assert "NoNewPrivileges=yes" in props, unit
        assert "PrivateTmp=yes" in props, unit


# --- pgBackRest ------------------------------------------------------------------------------------


def test_wal_archiving_on_and_pgbackrest_check_passes(host):
    assert psql(host, "SHOW archive_mode") == "on"
    assert STANZA in psql(host, "SHOW archive_command")
    out = host.run(f"runuser -u postgres -- pgbackrest --stanza={STANZA} check")
    assert out.rc == 0, out.stderr + out.stdout


def test_pgbackrest_full_and_diff_backups_write_metrics(host, full_backup):
    before = time.time()
    result = start(host, "gept-pgbackrest@diff.service")
    assert result.rc == 0, journal(host, "gept-pgbackrest@diff.service")
    info = json.loads(
        host.run(f"runuser -u postgres -- pgbackrest --stanza={STANZA} --output=json info").stdout
    )
    types = {b["type"] for b in info[0]["backup"]}
    assert {"full", "diff"} <= types
    m = metrics(host)
    assert m['gept_backup_last_run_ok{kind="pgbackrest"}'] == 1
    assert m['gept_backup_last_success_timestamp_seconds{kind="pgbackrest"}'] >= before - 5
    assert m['gept_backup_size_bytes{kind="pgbackrest"}'] > 0


# --- logical dumps --------------------------------------------------------------------------------


def test_dump_runs_and_metrics_appear(host, marker_item):
    psql(host, f"INSERT INTO items (item_id, name) VALUES ({marker_item}, 'backup-test dump')")
    before = time.time()
    count_before = int(psql(host, "SELECT count(*) FROM items"))
    result = start(host, "gept-backup-dump.service")
    assert result.rc == 0, journal(host, "gept-backup-dump.service")
    count_after = int(psql(host, "SELECT count(*) FROM items"))

    path, manifest = newest_dump(host)
    f = host.file(path)
    assert (f.user, f.mode) == ("postgres", 0o600)
    assert f.size == manifest["bytes"]
    assert manifest["finished_at_epoch"] >= before - 5
    # The manifest's counts are taken in the dump's own snapshot.
    assert count_before <= manifest["tables"]["public.items"]["rows"] <= count_after
    assert manifest["timescaledb_version"] == psql(
        host, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    )
    listing = host.run(f"runuser -u postgres -- pg_restore --list {path}").stdout
    assert "TABLE DATA public items" in listing

    m = metrics(host)
    assert m['gept_backup_last_run_ok{kind="dump"}'] == 1
    assert m['gept_backup_last_success_timestamp_seconds{kind="dump"}'] >= before - 5
    assert m['gept_backup_size_bytes{kind="dump"}'] == manifest["bytes"]
    published = host.file(f"{TEXTFILE_DIR}/gept_backup_dump.prom")
    assert published.mode == 0o644


# --- restore drill -----------------------------------------------------------------------------------


def assert_drill_cleaned_up(host):
    assert (
        psql(host, "SELECT count(*) FROM pg_database WHERE datname LIKE 'gept_restore_drill%'", "postgres")
        == "0"
    )
    assert not host.file(f"{DRILL_DIR}/pgdata").exists
    assert not host.file(f"{DRILL_DIR}/run/.s.PGSQL.5433").exists, "the scratch cluster still runs"


def _truncate(host, path: str, manifest: dict) -> None:
    host.run(f"truncate -s {manifest['bytes'] // 2} {path}")


def _corrupt_keeping_checksum(host, path: str, manifest: dict) -> None:
    """Zero 2 KiB in the middle of the dump and record the damaged file's sha256 in the
    manifest, so only restoring it can tell that it is bad."""
    size = manifest["bytes"]
    host.run(
        f"dd if=/dev/zero of={path} bs=1 seek={size // 2} count=2048 conv=notrunc status=none"
        f" && sed -i \"s/{manifest['sha256']}/$(sha256sum {path} | cut -d' ' -f1)/\" {path[:-5]}.json"
    )


def test_restore_drill_fails_on_a_damaged_dump_and_passes_on_a_good_one(host, full_backup):
    """One drill per case (each restores the cluster too): truncated, corrupted, then good."""
    if start(host, "gept-backup-dump.service").rc != 0:
        pytest.fail(journal(host, "gept-backup-dump.service"))
    path, manifest = newest_dump(host)
    manifest_path = path[:-5] + ".json"
    host.run(f"cp -p {path} {path}.orig && cp -p {manifest_path} {manifest_path}.orig")
    last_success = metrics(host).get("gept_restore_drill_last_success_timestamp_seconds")
    try:
        for damage in (_truncate, _corrupt_keeping_checksum):
            damage(host, path, manifest)
            rc, m = drill(host)
            assert rc != 0, f"the drill passed on a dump damaged by {damage.__name__}"
            assert m["gept_restore_drill_ok"] == 0, damage.__name__
            assert m['gept_restore_drill_kind_ok{kind="dump"}'] == 0, damage.__name__
            assert m.get("gept_restore_drill_last_success_timestamp_seconds") == last_success
            assert_drill_cleaned_up(host)
            host.run(f"cp -p {path}.orig {path} && cp -p {manifest_path}.orig {manifest_path}")
    finally:
        host.run(f"mv -f {path}.orig {path} && mv -f {manifest_path}.orig {manifest_path}")
        host.run("systemctl reset-failed gept-restore-drill.service")

    before = time.time()
    rc, m = drill(host)
    assert rc == 0, journal(host, "gept-restore-drill.service")
    assert m["gept_restore_drill_ok"] == 1
    assert m["gept_restore_drill_last_success_timestamp_seconds"] >= before - 5
    assert m["gept_restore_drill_duration_seconds"] > 0
    assert m['gept_restore_drill_kind_ok{kind="dump"}'] == 1
    assert m['gept_restore_drill_kind_ok{kind="pgbackrest"}'] == 1
    log = journal(host, "gept-restore-drill.service")
    assert "public.items" in log and "match" in log
    assert_drill_cleaned_up(host)


# --- playbooks/restore.yml -------------------------------------------------------------------------


def test_point_in_time_restore_into_a_named_database(host, full_backup, marker_item):
    target = "gept_pitr_check"
    psql(host, f"DROP DATABASE IF EXISTS {target} WITH (FORCE)", "postgres")
    psql(host, f"INSERT INTO items (item_id, name) VALUES ({marker_item}, 'before the target time')")
    target_time = psql(host, "SELECT now()::text")
    time.sleep(1.5)
    psql(host, f"INSERT INTO items (item_id, name) VALUES ({marker_item + 1}, 'after the target time')")
    try:
        run = restore_playbook(
            host,
            "-e",
            "restore_source=pitr",
            "-e",
            f"restore_target_db={target}",
            "-e",
            f"restore_target_time='{target_time}'",
        )
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        rows = psql(host, f"SELECT item_id FROM items WHERE item_id >= {marker_item} ORDER BY 1", target)
        assert rows.split() == [str(marker_item)]
        # The restored copy is a working TimescaleDB database.
        assert psql(host, "SELECT count(*) FROM timescaledb_information.hypertables", target) != "0"

    finally:
        psql(host, f"DROP DATABASE IF EXISTS {target} WITH (FORCE)", "postgres")
    assert not host.file(f"{DRILL_DIR}/pgdata").exists


def test_restore_playbook_replaces_a_database_only_when_confirmed(host):
    target = "gept_dump_check"
    psql(host, f"DROP DATABASE IF EXISTS {target} WITH (FORCE)", "postgres")
    psql(host, f"CREATE DATABASE {target}", "postgres")
    psql(host, "CREATE TABLE keep_me (id int)", target)
    try:
        refused = restore_playbook(host, "-e", "restore_source=dump", "-e", f"restore_target_db={target}")
        assert refused.returncode != 0
        assert f"restore_confirm={target}" in refused.stdout
        assert psql(host, "SELECT to_regclass('keep_me') IS NOT NULL", target) == "t"

        _, manifest = newest_dump(host)
        run = restore_playbook(
            host,
            "-e",
            "restore_source=dump",
            "-e",
            f"restore_target_db={target}",
            "-e",
            f"restore_confirm={target}",
        )
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert psql(host, "SELECT to_regclass('keep_me') IS NULL", target) == "t"
        restored = int(psql(host, "SELECT count(*) FROM items", target))
        assert restored == manifest["tables"]["public.items"]["rows"]
    finally:
        psql(host, f"DROP DATABASE IF EXISTS {target} WITH (FORCE)", "postgres")
