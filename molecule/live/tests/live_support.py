"""What the live scenario's test files share: where prepare.yml recorded the before-state, and
SQL in osrs_data as postgres on the host."""

from __future__ import annotations

STATE = "/srv/live-test"
BEFORE = f"{STATE}/before"
UPGRADE_DIR = "/var/lib/gept/postgresql-upgrade"


def psql(host, sql: str, db: str = "osrs_data") -> str:
    """Run SQL (a script on stdin, \\copy allowed) as postgres in `db`; return stdout."""
    cmd = host.run(
        f"PGTZ=UTC runuser -u postgres -- psql -d {db} -XAtq -v ON_ERROR_STOP=1 <<'SQL'\n{sql}\nSQL"
    )
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()
