"""The roles' defaults read as data, so a test or benchmark uses the role's own values
instead of a copy of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def role_defaults(role: str) -> dict[str, Any]:
    """roles/<role>/defaults/main.yml as loaded YAML (Jinja expressions stay unrendered text)."""
    return yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())


def duckdb_migration_tables() -> dict[str, dict[str, Any]]:
    """The DuckDB migration's table mappings (duckdb_migration_tables) by name, without `file`
    (a Jinja path into the host's data directory: the caller sets its own file)."""
    return {
        t["name"]: {k: v for k, v in t.items() if k != "file"}
        for t in role_defaults("duckdb_migration")["duckdb_migration_tables"]
    }


def collectors_catalogue() -> list[dict[str, Any]]:
    """The collector catalogue (group_vars/all gept_collectors), each entry with its port
    (gept_ports[port_name]) as the roles derive it."""
    group_vars = yaml.safe_load((ROOT / "group_vars" / "all" / "main.yml").read_text())
    return [{**c, "port": group_vars["gept_ports"][c["port_name"]]} for c in group_vars["gept_collectors"]]
