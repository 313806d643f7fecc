"""Fixtures for the database area's controller tests.

- ``engine``: a database of its own on the session's real PostgreSQL 17 + TimescaleDB full
  (TSL) edition server (tests/support/timescaledb.py: a throwaway container).
- ``render_sql``: renders the timescaledb role's SQL templates through the role's own task
  file (ansible-playbook tests/timescaledb/render_sql.yml), so tests run the very SQL the
  role applies.
- ``gept_db``: the role's database runner (roles/timescaledb/files/gept_db.py), imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg2
import pytest
from support import modules, timescaledb

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "timescaledb"
MIGRATIONS = ROLE / "files" / "migrations"
# Drops what a test left (aggregates, tables; their policies go with them). The extension
# lives in public, so the schema itself stays.
RESET_SQL = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT view_name FROM timescaledb_information.continuous_aggregates LOOP
        EXECUTE format('DROP MATERIALIZED VIEW public.%I CASCADE', r.view_name);
    END LOOP;
    FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
        EXECUTE format('DROP TABLE IF EXISTS public.%I CASCADE', r.tablename);
    END LOOP;
END
$$
"""


@pytest.fixture(scope="session")
def gept_db() -> ModuleType:
    return modules.load("gept_db", ROLE / "files" / "gept_db.py")


@pytest.fixture(scope="session")
def engine() -> dict[str, Any]:
    """Connection parameters of a database on the full-edition engine."""
    return timescaledb.shared().database("gept_role_sql")


@pytest.fixture
def conn(engine: dict[str, Any], gept_db: ModuleType) -> Iterator[Any]:
    """A connection to a fresh GePT schema: earlier tables dropped, migrations applied afresh."""
    c = psycopg2.connect(**engine)
    c.autocommit = True
    with c.cursor() as cur:
        cur.execute(RESET_SQL)
    c.autocommit = False
    gept_db.migrate(c, MIGRATIONS)
    c.autocommit = True
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="session")
def render_sql(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict[str, str]]:
    """render_sql(edition="timescale", **role_vars) -> {file name: rendered SQL}."""
    cache: dict[str, dict[str, str]] = {}

    def render(edition: str = "timescale", **role_vars: Any) -> dict[str, str]:
        key = json.dumps([edition, role_vars], sort_keys=True)
        if key not in cache:
            out = tmp_path_factory.mktemp("sql")
            extra = {
                "timescaledb_edition": edition,
                "timescaledb_sql_dir": str(out),
                "ansible_python_interpreter": sys.executable,
                **role_vars,
            }
            extra_file = out / "vars.json"
            extra_file.write_text(json.dumps(extra))
            env = {
                **os.environ,
                "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
                "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.timer",
                "ANSIBLE_NOCOLOR": "1",
            }
            playbook = REPO / "tests" / "timescaledb" / "render_sql.yml"
            run = subprocess.run(
                [
                    str(Path(sys.executable).parent / "ansible-playbook"),
                    "-i",
                    "localhost,",
                    str(playbook),
                    "-e",
                    f"@{REPO / 'group_vars' / 'all' / 'main.yml'}",
                    "-e",
                    f"@{extra_file}",
                ],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
            cache[key] = {p.name: p.read_text() for p in out.glob("*.sql")}
        return cache[key]

    return render
