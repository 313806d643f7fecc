#!/usr/bin/env python3
"""gept-status: one readable summary of the GePT host, red/amber/green, that fails when
something is red (exit 1), so it can gate a deploy. The seed's check_collectors.sh, grown up.

Usage: gept-status [--config /etc/gept/status.json] [--json]

Sections: systemd units, compose containers (when a compose project and a Docker engine are
there), data age per table (seconds since the newest row), disk use, last backup and restore
drill (node_exporter textfile metrics written by the backup role), the PostgreSQL major
upgrade's progress once it has started (textfile metrics of playbooks/upgrade_postgresql.yml), alerts firing
(Alertmanager API). The database is reached through the libpq environment (PGHOST, PGUSER,
PGPASSWORD, ...) as a read-only role. Standard library + psycopg2 (python3-psycopg2).
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"
_MARK = {OK: "[ OK ]", WARN: "[WARN]", FAIL: "[FAIL]", INFO: "[ -- ]"}
_METRIC = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")


@dataclass
class Check:
    section: str
    name: str
    level: str
    detail: str


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ({seconds:.0f} s)"
    return f"{seconds / 3600:.1f} h ({seconds:.0f} s)"


def check_units(units: list[str]) -> list[Check]:
    if not units:
        return []
    systemctl = shutil.which("systemctl") or "/usr/bin/systemctl"
    out = subprocess.run(  # noqa: S603  (fixed argv, no shell; unit names from the role's config)
        [systemctl, "show", "--property=Id,LoadState,UnitFileState,ActiveState,SubState", "--", *units],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    checks = []
    for block in out.strip().split("\n\n"):
        u = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        name = u.get("Id", "?")
        state = f"{u.get('ActiveState')}/{u.get('SubState')}, {u.get('UnitFileState') or 'static'}"
        if u.get("LoadState") != "loaded":
            checks.append(Check("units", name, INFO, f"not installed ({u.get('LoadState')})"))
        elif u.get("ActiveState") == "active":
            checks.append(Check("units", name, OK, state))
        elif u.get("UnitFileState") == "enabled":
            checks.append(Check("units", name, FAIL, f"{state}: enabled but not running"))
        else:
            checks.append(Check("units", name, INFO, state))
    return checks


def check_containers(compose_file: str) -> list[Check]:
    if not compose_file or not glob.glob(compose_file):
        return []
    docker = shutil.which("docker")
    if not docker:
        return [
            Check("containers", compose_file, INFO, "compose file present, no docker command: not checked")
        ]
    proc = subprocess.run(  # noqa: S603  (fixed argv, no shell)
        [docker, "compose", "-f", compose_file, "ps", "--all", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        return [
            Check("containers", compose_file, WARN, f"docker compose ps failed: {proc.stderr.strip()[:200]}")
        ]
    text = proc.stdout.strip()
    rows = (
        json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]
    )
    checks = []
    for c in rows:
        health = c.get("Health") or ""
        level = FAIL if health == "unhealthy" else (OK if c.get("State") == "running" else INFO)
        checks.append(
            Check(
                "containers",
                c.get("Service", c.get("Name", "?")),
                level,
                f"{c.get('State')}{', ' + health if health else ''}",
            )
        )
    return checks


def check_data(tables: dict[str, dict[str, Any]]) -> list[Check]:
    if not tables:
        return []
    try:
        import psycopg2  # the distribution's python3-psycopg2
    except ImportError:
        return [Check("data", "database", FAIL, "python3-psycopg2 is not installed")]
    try:
        conn = psycopg2.connect("", connect_timeout=10)
    except psycopg2.Error as exc:
        return [Check("data", "database", FAIL, f"cannot connect: {str(exc).strip()[:200]}")]
    checks = []
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for table, spec in tables.items():
                column = spec.get("column", "timestamp")
                try:
                    cur.execute(
                        f'SELECT extract(epoch FROM now() - max("{column}")) FROM "{table}"'  # noqa: S608
                    )  # names come from the role's config, never from data
                    row = cur.fetchone()
                except psycopg2.Error as exc:
                    checks.append(Check("data", table, FAIL, f"query failed: {str(exc).strip()[:160]}"))
                    continue
                age = None if row is None or row[0] is None else float(row[0])
                limit = float(spec["max_age_seconds"])
                if age is None:
                    checks.append(Check("data", table, FAIL, "no rows"))
                else:
                    level = FAIL if age > limit else OK
                    checks.append(Check("data", table, level, f"age {_age(age)} (limit {limit:.0f} s)"))
    finally:
        conn.close()
    return checks


def check_disk(paths: dict[str, dict[str, float]]) -> list[Check]:
    checks = []
    for path, limits in paths.items():
        try:
            usage = shutil.disk_usage(path)
        except OSError as exc:
            checks.append(Check("disk", path, WARN, f"cannot read: {exc}"))
            continue
        pct = 100.0 * usage.used / usage.total if usage.total else 0.0
        level = FAIL if pct >= limits["fail_percent"] else WARN if pct >= limits["warn_percent"] else OK
        checks.append(Check("disk", path, level, f"{pct:.0f}% used, {usage.free / 2**30:.1f} GiB free"))
    return checks


def read_textfile_metrics(directory: str) -> list[tuple[str, dict[str, str], float]]:
    metrics = []
    for path in sorted(glob.glob(f"{directory}/*.prom")):
        try:
            with open(path, encoding="utf-8") as fh:
                lines = fh.readlines()
        except OSError:
            continue
        for line in lines:
            m = _METRIC.match(line.strip())
            if not m or line.startswith("#"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels") or ""))
            try:
                metrics.append((m.group("name"), labels, float(m.group("value"))))
            except ValueError:
                continue
    return metrics


def check_backups(cfg: dict[str, Any]) -> list[Check]:
    metrics = read_textfile_metrics(cfg["textfile_dir"])
    missing_level = FAIL if cfg.get("required", True) else WARN
    now = time.time()
    checks = []
    for kind, max_age in cfg.get("kinds", {}).items():
        values = [
            v
            for n, labels, v in metrics
            if n == "gept_backup_last_success_timestamp_seconds" and labels.get("kind") == kind
        ]
        if not values:
            checks.append(Check("backups", f"backup {kind}", missing_level, "no successful backup recorded"))
            continue
        age = now - max(values)
        level = FAIL if age > max_age else OK
        checks.append(
            Check("backups", f"backup {kind}", level, f"last success {_age(age)} ago (limit {max_age} s)")
        )
    drill_ok = [v for n, _, v in metrics if n == "gept_restore_drill_ok"]
    drill_ts = [v for n, _, v in metrics if n == "gept_restore_drill_last_success_timestamp_seconds"]
    if not drill_ok:
        checks.append(Check("backups", "restore drill", missing_level, "no restore drill recorded"))
    else:
        when = f", last pass {_age(now - max(drill_ts))} ago" if drill_ts else ""
        max_age = cfg.get("drill_max_age_seconds")
        stale = bool(drill_ts and max_age and now - max(drill_ts) > max_age)
        level = OK if drill_ok[-1] == 1 and not stale else FAIL
        checks.append(
            Check("backups", "restore drill", level, f"{'passed' if drill_ok[-1] == 1 else 'FAILED'}{when}")
        )
    return checks


def check_history(textfile_dir: str) -> list[Check]:
    """The price history move (gept_history.py's gept_history_* textfile metrics), while it
    runs and once it is done; nothing when it never ran."""
    by_table: dict[str, dict[str, float]] = {}
    for name, labels, value in read_textfile_metrics(textfile_dir):
        if name.startswith("gept_history_"):
            key = name[len("gept_history_") :] + (f"_{labels['state']}" if "state" in labels else "")
            by_table.setdefault(labels.get("table", "?"), {})[key] = value
    checks = []
    for table, m in sorted(by_table.items()):
        age = time.time() - m.get("last_update_timestamp_seconds", 0)
        done, total = int(m.get("intervals_done", 0)), int(m.get("intervals_total", 0))
        figures = (
            f"intervals {done}/{total}, {int(m.get('rows_moved', 0))} rows, "
            f"{int(m.get('duplicate_rows', 0))} "
            f"duplicates, disk peak {100 * m.get('disk_used_ratio_peak', 0):.1f}%"
        )
        if m.get("done") == 1:
            checks.append(Check("database", f"price history {table}", OK, f"keyed hypertable; {figures}"))
        elif m.get("paused") == 1:
            checks.append(
                Check("database", f"price history {table}", WARN, f"PAUSED for disk room; {figures}")
            )
        elif age > 3600:
            checks.append(
                Check("database", f"price history {table}", WARN, f"stopped {_age(age)} ago; {figures}")
            )
        else:
            eta = m.get("eta_seconds", -1)
            checks.append(
                Check(
                    "database",
                    f"price history {table}",
                    INFO,
                    f"moving: {figures}, {m.get('rows_per_second', 0):,.0f} rows/s"
                    + (f", ETA {_age(eta)}" if eta >= 0 else ""),
                )
            )
    return checks


def check_upgrade(textfile_dir: str) -> list[Check]:
    """The PostgreSQL major upgrade's progress (gept_postgresql_upgrade_*, written by
    playbooks/upgrade_postgresql.yml): shown once it has started; running/rolled back amber,
    failed red."""
    metrics = read_textfile_metrics(textfile_dir)
    states = [(labels, v) for n, labels, v in metrics if n == "gept_postgresql_upgrade_state" and v == 1]
    if not states:
        return []
    labels, _ = states[0]
    state = labels.get("state", "?")

    def value(name: str) -> float | None:
        found = [v for n, _, v in metrics if n == name]
        return found[0] if found else None

    done, total = value("gept_postgresql_upgrade_steps_done"), value("gept_postgresql_upgrade_steps_total")
    detail = f"{labels.get('from')} -> {labels.get('to')}: {state}"
    if done is not None and total:
        detail += f", step {done:.0f}/{total:.0f}"
    stopped = value("gept_postgresql_upgrade_writers_stopped_seconds")
    if stopped is not None:
        detail += f", writers stopped {stopped:.0f} s"
    level = {"done": OK, "failed": FAIL}.get(state, WARN)
    return [Check("migrations", "postgresql upgrade", level, detail)]


def check_alerts(cfg: dict[str, Any]) -> list[Check]:
    url = cfg.get("url")
    if not url:
        return []
    query = "/api/v2/alerts?active=true&silenced=false&inhibited=false"
    try:
        with urllib.request.urlopen(url.rstrip("/") + query, timeout=10) as resp:  # noqa: S310  (config URL)
            alerts = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        level = FAIL if cfg.get("required", False) else WARN
        return [Check("alerts", "alertmanager", level, f"not reachable at {url}: {exc}")]
    if not alerts:
        return [Check("alerts", "alertmanager", OK, "no alerts firing")]
    red = set(cfg.get("fail_severities", ["critical"]))
    checks = []
    for a in alerts:
        labels = a.get("labels", {})
        sev = labels.get("severity", "none")
        checks.append(
            Check(
                "alerts",
                labels.get("alertname", "?"),
                FAIL if sev in red else WARN,
                f"{sev}: {a.get('annotations', {}).get('summary', '')}".strip(),
            )
        )
    return checks


def gather(cfg: dict[str, Any]) -> list[Check]:
    return (
        check_units(cfg.get("units", []))
        + check_containers(cfg.get("compose_file", ""))
        + check_data(cfg.get("tables", {}))
        + check_disk(cfg.get("disk", {}))
        + (check_backups(cfg["backups"]) if cfg.get("backups") else [])
        + (check_history(cfg["backups"]["textfile_dir"]) if cfg.get("backups") else [])
        + (check_upgrade(cfg["backups"]["textfile_dir"]) if cfg.get("backups") else [])
        + check_alerts(cfg.get("alertmanager", {}))
    )


def render(checks: list[Check]) -> str:
    lines, section = [], None
    for c in checks:
        if c.section != section:
            section = c.section
            lines.append(f"== {section}")
        lines.append(f"  {_MARK[c.level]} {c.name:<38} {c.detail}")
    red = [c for c in checks if c.level == FAIL]
    amber = [c for c in checks if c.level == WARN]
    verdict = "RED" if red else "AMBER" if amber else "GREEN"
    lines.append(f"== {verdict}: {len(red)} failing, {len(amber)} warning, {len(checks)} checks")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="/etc/gept/status.json")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    args = parser.parse_args()
    with open(args.config, encoding="utf-8") as fh:
        cfg = json.load(fh)
    checks = gather(cfg)
    if args.json:
        print(
            json.dumps({"red": any(c.level == FAIL for c in checks), "checks": [asdict(c) for c in checks]})
        )
    else:
        print(render(checks))
    return 1 if any(c.level == FAIL for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
