"""The DuckDB -> PostgreSQL migration script (roles/duckdb_migration/files/gept-duckdb-migrate.py)
against a real, throwaway PostgreSQL with the real schema and real DuckDB files: rows and sums
equal, a re-run writes nothing, naive timestamps read as the configured zone, bad or missing
files change nothing, and a conflicting row is found by the verification and rolled back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.roles import duckdb_migration_tables

duckdb = pytest.importorskip("duckdb")
psycopg2 = pytest.importorskip("psycopg2")


ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "roles" / "duckdb_migration" / "files" / "gept-duckdb-migrate.py"
MIGRATIONS = sorted((ROOT / "roles" / "timescaledb" / "files" / "migrations").glob("*.sql"))
T0 = datetime(2026, 1, 1, tzinfo=UTC)

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(pg, request: pytest.FixtureRequest) -> Iterator[str]:
    name = "mig_" + request.node.name.lower().replace("[", "_").replace("]", "")[:40]
    pg.execute("postgres", f'DROP DATABASE IF EXISTS "{name}"', autocommit=True)
    pg.execute("postgres", f'CREATE DATABASE "{name}"', autocommit=True)
    for migration in MIGRATIONS:
        pg.execute(name, migration.read_text())
    yield name
    pg.execute("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', autocommit=True)


def make_duckdb(tmp: Path, players: int = 500, items: int = 40) -> tuple[Path, Path]:
    """The seed's two files: naive timestamps (local = UTC here) and the mapping's fields."""
    pc, it = tmp / "player_counts.duckdb", tmp / "items.duckdb"
    with duckdb.connect(str(pc)) as con:
        con.execute("CREATE TABLE player_counts (ts TIMESTAMP PRIMARY KEY, count INTEGER)")
        con.executemany(
            "INSERT INTO player_counts VALUES (?, ?)",
            [
                ((T0 + timedelta(minutes=i)).replace(tzinfo=None), 60000 + (i * 37) % 9000)
                for i in range(players)
            ],
        )
    with duckdb.connect(str(it)) as con:
        con.execute(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR, examine VARCHAR, members BOOLEAN, "
            'lowalch INTEGER, highalch INTEGER, "limit" INTEGER, value INTEGER, icon VARCHAR)'
        )
        con.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    900000 + i,
                    f"Test item {i}",
                    f"Examine {i}",
                    i % 2 == 0,
                    i * 4,
                    i * 6,
                    None if i % 5 == 0 else 100 + i,
                    i * 10,
                    f"Test_item_{i}.png",
                )
                for i in range(items)
            ],
        )
    return pc, it


def config(tmp: Path, pc: Path, it: Path) -> Path:
    """The role's own table mappings (roles/duckdb_migration/defaults/main.yml) with these
    files. player_counts differs on purpose: the test's file names its columns ts/count (the
    mapping is what adapts the script to a file), and PostgreSQL's row wins a conflict
    (on_conflict nothing, the policy the conflict tests below prove)."""
    tables = duckdb_migration_tables()
    cfg = {
        "tables": [
            {
                **tables["player_counts"],
                "file": str(pc),
                "columns": {"timestamp": "ts", "player_count": "count"},
                "on_conflict": "nothing",
            },
            {**tables["items"], "file": str(it)},
        ]
    }
    path = tmp / "migration.json"
    path.write_text(json.dumps(cfg))
    return path


def run(pg, db: str, cfg: Path, *extra: str) -> tuple[int, dict]:
    env = {**os.environ, **pg.libpq_env(db)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(cfg), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    print(proc.stdout, proc.stderr)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def test_migrates_everything_with_equal_sums_and_rerun_writes_nothing(pg, db, tmp_path):
    pc, it = make_duckdb(tmp_path)
    cfg = config(tmp_path, pc, it)
    rc, report = run(pg, db, cfg)
    assert rc == 0 and report["changed"] is True
    by = {t["table"]: t for t in report["tables"]}
    assert by["player_counts"]["inserted"] == 500 and by["items"]["inserted"] == 40
    for t in report["tables"]:
        assert t["verified"] and t["duckdb_rows"] == t["identical_in_postgresql"]
        assert t["duckdb_sums"] == t["postgresql_sums"]
    # Independent check of the values PostgreSQL holds now.
    expected_sum = sum(60000 + (i * 37) % 9000 for i in range(500))
    assert pg.execute(db, "SELECT count(*), sum(player_count) FROM player_counts") == [(500, expected_sum)]
    first = pg.execute(db, "SELECT extract(epoch FROM min(timestamp))::bigint FROM player_counts")[0][0]
    assert first == int(T0.timestamp()), "naive DuckDB timestamps must be read as UTC"
    assert pg.execute(db, "SELECT ge_limit, name FROM items WHERE item_id = 900005") == [
        (None, "Test item 5")
    ]

    rc, again = run(pg, db, cfg)
    assert rc == 0 and again["changed"] is False
    assert all(t["inserted"] == 0 and t["updated"] == 0 and t["verified"] for t in again["tables"])


def test_missing_or_bad_file_changes_nothing(pg, db, tmp_path):
    pc, it = make_duckdb(tmp_path)
    bad = tmp_path / "items_bad.duckdb"
    bad.write_bytes(b"this is not a duckdb file" * 100)
    for broken in (tmp_path / "absent.duckdb", bad):
        rc, report = run(pg, db, config(tmp_path, pc, broken))
        assert rc == 2 and report["error"] == "input" and str(broken) in report["message"]
    assert pg.execute(db, "SELECT count(*) FROM player_counts") == [(0,)], (
        "the good file must not be half-moved"
    )


def test_conflicting_row_fails_verification_and_rolls_back(pg, db, tmp_path):
    pc, it = make_duckdb(tmp_path, players=10)
    # PostgreSQL already holds a different count for a minute DuckDB also has.
    pg.execute(db, "INSERT INTO player_counts VALUES (%s, 1)", (T0 + timedelta(minutes=3),))
    rc, report = run(pg, db, config(tmp_path, pc, it))
    assert rc == 3 and report["error"] == "verification" and "player_counts" in report["message"]
    assert pg.execute(db, "SELECT count(*) FROM player_counts") == [(1,)]
    assert pg.execute(db, "SELECT count(*) FROM items") == [(0,)], "one transaction: nothing kept"


def test_check_only_reads_without_writing(pg, db, tmp_path):
    pc, it = make_duckdb(tmp_path, players=7, items=3)
    rc, report = run(pg, db, config(tmp_path, pc, it), "--check-only")
    assert rc == 0 and [t["duckdb_rows"] for t in report["tables"]] == [7, 3]
    assert pg.execute(db, "SELECT count(*) FROM player_counts") == [(0,)]


def seed_player_counts(
    path: Path, rows: int, columns: str = '"timestamp" TIMESTAMP PRIMARY KEY, count INTEGER'
) -> None:
    """A player_counts file as the seed's service writes it (or with other columns)."""
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE TABLE player_counts ({columns})")
        con.executemany(
            "INSERT INTO player_counts VALUES (?, ?)",
            [((T0 + timedelta(minutes=i)).replace(tzinfo=None), 70000 + i) for i in range(rows)],
        )


def default_config(tmp: Path, pc: Path, it: Path, **player_counts_overrides) -> Path:
    """The role's own mappings, unchanged but for the files (and any override given)."""
    tables = duckdb_migration_tables()
    cfg = {
        "tables": [
            {**tables["player_counts"], "file": str(pc), **player_counts_overrides},
            {**tables["items"], "file": str(it)},
        ]
    }
    path = tmp / "default-migration.json"
    path.write_text(json.dumps(cfg))
    return path


def test_role_defaults_read_the_seeds_files(pg, db, tmp_path):
    """The default mapping matches the seed: player_counts("timestamp", count), items(id, ...)."""
    (tmp_path / "x").mkdir()
    _, it = make_duckdb(tmp_path / "x", players=1)
    pc = tmp_path / "player_counts.duckdb"
    seed_player_counts(pc, 30)
    rc, report = run(pg, db, default_config(tmp_path, pc, it))
    assert rc == 0, report
    assert pg.execute(db, "SELECT count(*), sum(player_count) FROM player_counts") == [
        (30, sum(70000 + i for i in range(30)))
    ]


def test_missing_source_column_is_named_and_nothing_changes(pg, db, tmp_path):
    _, it = make_duckdb(tmp_path, players=1)
    pc = tmp_path / "old_player_counts.duckdb"
    seed_player_counts(pc, 5, columns='"timestamp" TIMESTAMP PRIMARY KEY, players INTEGER')
    rc, report = run(pg, db, default_config(tmp_path, pc, it))
    assert rc == 2 and report["error"] == "input"
    message = report["message"]
    assert "players" in message and "duckdb_migration_tables" in message and "'player_counts'" in message
    assert pg.execute(db, "SELECT count(*) FROM items") == [(0,)]


def test_missing_target_column_is_named_and_nothing_changes(pg, db, tmp_path):
    _, it = make_duckdb(tmp_path, players=1)
    pc = tmp_path / "seed_player_counts.duckdb"
    seed_player_counts(pc, 5)
    cfg = default_config(
        tmp_path, pc, it, columns={"timestamp": '"timestamp"', "count": '"count"'}, sum_columns=["count"]
    )
    rc, report = run(pg, db, cfg)
    assert rc == 2 and report["error"] == "input"
    assert "has no column(s) ['count']" in report["message"] and "player_count" in report["message"]
    assert pg.execute(db, "SELECT count(*) FROM items") == [(0,)]


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_run_as_reads_a_directory_the_database_user_cannot(pg, db, tmp_path):
    """Started as root with --run-as, the script opens the files of a 0750 directory owned by
    another user, then becomes that database OS user; the directory keeps its permissions."""
    private = tmp_path / "data"
    private.mkdir()
    pc, it = make_duckdb(private, players=12, items=3)
    pc2 = private / "player_counts_seed.duckdb"
    seed_player_counts(pc2, 12)
    for p in (private, pc, it, pc2):
        os.chown(p, 65534, 65534)
    private.chmod(0o750)
    cfg = default_config(tmp_path, pc2, it)
    rc, report = run(pg, db, cfg, "--run-as", "postgres")
    assert rc == 0, report
    assert pg.execute(db, "SELECT count(*) FROM player_counts") == [(12,)]
    st = private.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (65534, 0o750)
    # The switch happened: as postgres alone the directory is unreadable.
    probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-r", str(pc2)], check=False)
    assert probe.returncode != 0
