#!/usr/bin/env python3
"""The PostgreSQL major upgrade of the database host, step by step (run as root by
playbooks/upgrade_postgresql.yml; each step is idempotent and prints one JSON object).

  phase       where the host stands: "pending" (the old major runs on the port), "upgraded"
              (the new major runs on the port), "rolled_back", or "refuse" with the reason
  preflight   the checks that must pass before anything changes (versions, TimescaleDB
              packages, disk, backup, no target cluster with data); exit 1 with the conflicts
  record      row counts per table, jobs, extension versions of every database (before)
  mark        note a moment of the run (writers stopped/started...) in the state file
  upgrade     pg_upgradecluster -v NEW -m METHOD OLD CLUSTER (the ports swap)
  extension   ALTER EXTENSION timescaledb UPDATE, first statement of a fresh psql -X session,
              in every database whose version is older than the newest installed
  verify      row counts, license, jobs and extension version against the record
  finish      the old cluster down with autostart off; the metric says "done"
  rollback    the old cluster back on the port (only where that is safe, see docs)

The state (steps, times, counts) is kept in --state-dir/state.json, and the progress is
published as a node_exporter textfile metric (--textfile-dir/gept-postgresql-upgrade.prom)
that `gept-status` shows.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STEPS = [
    "preflight",
    "record",
    "writers_stopped",
    "upgrade",
    "extension",
    "verify",
    "writers_started",
    "statistics",
    "finish",
]
PROM = "gept-postgresql-upgrade.prom"
LOCAL_FACT = Path("/etc/ansible/facts.d/gept_postgresql.fact")


class Refusal(Exception):
    pass


# --- small helpers ----------------------------------------------------------------------------
def run(argv: list[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)  # noqa: S603  (fixed argv, no shell)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


def psql(port: int, db: str, sql: str) -> str:
    """One statement in a fresh session as postgres over the socket; -X: no psqlrc, so nothing
    runs before it (ALTER EXTENSION timescaledb UPDATE must be a session's first statement)."""
    argv = [
        "runuser",
        "-u",
        "postgres",
        "--",
        "psql",
        "-X",
        "-q",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        f"--port={port}",
        f"--dbname={db}",
        "-c",
        sql,
    ]
    return run(argv).stdout.strip()


def clusters() -> list[dict[str, Any]]:
    if not shutil.which("pg_lsclusters"):
        return []
    out = run(["pg_lsclusters", "-h"]).stdout
    result = []
    for line in out.splitlines():
        f = line.split()
        if len(f) < 6:
            continue
        result.append(
            {
                "version": f[0],
                "cluster": f[1],
                "port": int(f[2]),
                "status": f[3],
                "online": f[3].split(",")[0] == "online",
                "data_dir": f[5],
            }
        )
    return result


def find(cl: list[dict[str, Any]], version: str, name: str) -> dict[str, Any] | None:
    return next((c for c in cl if c["version"] == version and c["cluster"] == name), None)


def free_port(cl: list[dict[str, Any]], port: int) -> int:
    """The first port above `port` no cluster is set to (where a cluster put aside goes, so
    two clusters never share the port at boot)."""
    used = {c["port"] for c in cl}
    while port in used:
        port += 1
    return port


ASIDE = "99-gept-upgrade-aside.conf"


def set_aside_port(version: str, name: str, port: int | None) -> bool:
    """Set (or with None, remove) the port of a cluster put aside, in a conf.d file that sorts
    last: the timescaledb role's conf.d/40-gept-base.conf names gept_db_port and overrides
    postgresql.conf, where pg_upgradecluster and pg_conftool set the port."""
    conf_d = Path(f"/etc/postgresql/{version}/{name}/conf.d")
    path = conf_d / ASIDE
    if port is None:
        if path.exists():
            path.unlink()
            return True
        return False
    text = f"# This cluster is put aside by the PostgreSQL major upgrade (autostart off).\nport = {port}\n"
    if path.exists() and path.read_text() == text:
        return False
    conf_d.mkdir(exist_ok=True)
    path.write_text(text)
    shutil.chown(path, "postgres", "postgres")
    path.chmod(0o644)
    return True


def carry_conf_d(old: str, new: str, name: str) -> list[str]:
    """pg_upgradecluster copies postgresql.conf, pg_hba.conf and pg_ident.conf but not conf.d:
    the owner's and the project's settings there (base, tuning, archiving) go with the cluster."""
    src, dst = Path(f"/etc/postgresql/{old}/{name}/conf.d"), Path(f"/etc/postgresql/{new}/{name}/conf.d")
    copied = []
    if not src.is_dir():
        return copied
    dst.mkdir(exist_ok=True)
    # pg_dropcluster leaves files it did not create: a port set aside for an earlier cluster of
    # this major (a rolled-back upgrade) would move the new cluster off the port.
    if (dst / ASIDE).exists():
        (dst / ASIDE).unlink()
        copied.append(f"removed stale {ASIDE}")
    for f in sorted(src.glob("*.conf")):
        if f.name == ASIDE or (dst / f.name).exists():
            continue
        shutil.copy2(f, dst / f.name)
        shutil.chown(dst / f.name, "postgres", "postgres")
        copied.append(f.name)
    return copied


def conf_port(version: str, name: str) -> int | None:
    m = re.search(
        r"^\s*port\s*=\s*(\d+)", Path(f"/etc/postgresql/{version}/{name}/postgresql.conf").read_text(), re.M
    )
    return int(m.group(1)) if m else None


def start_conf(version: str, name: str) -> str:
    path = Path(f"/etc/postgresql/{version}/{name}/start.conf")
    if not path.exists():
        return "auto"
    words = [w for w in (ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()) if w]
    return words[0] if words else "auto"


def set_start_conf(version: str, name: str, mode: str) -> bool:
    if start_conf(version, name) == mode:
        return False
    Path(f"/etc/postgresql/{version}/{name}/start.conf").write_text(
        f"# Automatic startup of this cluster: auto, manual or disabled (set by the GePT upgrade).\n{mode}\n"
    )
    run(["systemctl", "daemon-reload"])
    return True


def carry_local_fact(cluster: str, old: str, new: str, path: Path = LOCAL_FACT) -> bool:
    """The timescaledb role's note of the cluster it manages (/etc/ansible/facts.d/
    gept_postgresql.fact: version, cluster, origin) follows the cluster to its new major:
    pg_upgradecluster carries the owner's configuration over, so an adopted cluster stays
    adopted (its pg_hba lines kept, no restart without leave)."""
    if not path.exists():
        return False
    fact = json.loads(path.read_text())
    if str(fact.get("version")) != old or fact.get("cluster") != cluster:
        return False
    fact["version"] = new
    path.write_text(json.dumps(fact, indent=4) + "\n")
    return True


class State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.dir = Path(args.state_dir)
        self.path = self.dir / "state.json"
        self.textfile_dir = Path(args.textfile_dir) if args.textfile_dir else None
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.args = args

    def save(self) -> None:
        self.dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)
        self.metric()

    def mark(self, name: str, value: Any = None) -> None:
        self.data.setdefault("marks", {})[name] = value if value is not None else round(time.time(), 3)

    def metric(self) -> None:
        if not self.textfile_dir or not self.textfile_dir.is_dir():
            return
        d = self.data
        labels = f'from="{d.get("from", self.args.old)}",to="{d.get("to", self.args.new)}"'
        done = [s for s in STEPS if s in d.get("steps_done", [])]
        state = d.get("state", "pending")
        lines = [
            "# HELP gept_postgresql_upgrade_state The PostgreSQL major upgrade's state (1: the current one).",
            "# TYPE gept_postgresql_upgrade_state gauge",
        ]
        for s in ("pending", "running", "failed", "done", "rolled_back"):
            lines.append(f'gept_postgresql_upgrade_state{{{labels},state="{s}"}} {1 if s == state else 0}')
        lines += [
            "# HELP gept_postgresql_upgrade_steps_done Steps of the upgrade done so far.",
            "# TYPE gept_postgresql_upgrade_steps_done gauge",
            f"gept_postgresql_upgrade_steps_done{{{labels}}} {len(done)}",
            "# HELP gept_postgresql_upgrade_steps_total Steps of the upgrade in all.",
            "# TYPE gept_postgresql_upgrade_steps_total gauge",
            f"gept_postgresql_upgrade_steps_total{{{labels}}} {len(STEPS)}",
            "# HELP gept_postgresql_upgrade_last_change_timestamp_seconds When the state last changed.",
            "# TYPE gept_postgresql_upgrade_last_change_timestamp_seconds gauge",
            f"gept_postgresql_upgrade_last_change_timestamp_seconds{{{labels}}} {time.time():.0f}",
        ]
        for key, metric, text in (
            (
                "writers_stopped_seconds",
                "gept_postgresql_upgrade_writers_stopped_seconds",
                "How long the project's writers were stopped.",
            ),
            (
                "cluster_unavailable_seconds",
                "gept_postgresql_upgrade_cluster_unavailable_seconds",
                "From the old cluster's stop to the new cluster's extension update.",
            ),
        ):
            if key in d.get("measured", {}):
                lines += [
                    f"# HELP {metric} {text}",
                    f"# TYPE {metric} gauge",
                    f"{metric}{{{labels}}} {d['measured'][key]}",
                ]
        tmp = self.textfile_dir / f".{PROM}.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        tmp.chmod(0o644)
        os.replace(tmp, self.textfile_dir / PROM)

    def log_window(self, window: dict[str, Any]) -> None:
        """Every downtime window, one JSON line each (the state file keeps the last run only)."""
        self.dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        with (self.dir / "windows.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(window, sort_keys=True) + "\n")

    def step(self, name: str) -> None:
        steps = self.data.setdefault("steps_done", [])
        if name not in steps:
            steps.append(name)
        print(f"[upgrade] step {STEPS.index(name) + 1}/{len(STEPS)}: {name}", file=sys.stderr)


def databases(port: int) -> list[str]:
    return psql(port, "postgres", "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1").split()


def timescaledb_versions(port: int) -> dict[str, str]:
    found = {}
    for db in databases(port):
        v = psql(port, db, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        if v:
            found[db] = v
    return found


def apt_versions(package: str, uri: str) -> list[str]:
    """Versions of package that apt can install from the source at uri (apt-cache madison)."""
    out = run(["apt-cache", "madison", package], check=False).stdout
    want = uri.rstrip("/")
    versions = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 3 and parts[2].split()[0].rstrip("/") == want:
            versions.append(parts[1])
    return versions


def newest_backup(textfile_dir: str) -> float | None:
    best = None
    for path in glob.glob(f"{textfile_dir}/*.prom"):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for m in re.finditer(
            r"^gept_backup_last_success_timestamp_seconds(\{[^}]*\})?\s+([0-9.eE+]+)", text, re.M
        ):
            best = max(best or 0.0, float(m.group(2)))
    return best


# --- phase ------------------------------------------------------------------------------------
def phase(args: argparse.Namespace) -> dict[str, Any]:
    cl = clusters()
    old, new = find(cl, args.old, args.cluster), find(cl, args.new, args.cluster)
    on_port = [c for c in cl if c["port"] == args.port]
    st = State(args).data
    summary = {
        "old": old,
        "new": new,
        "state": st.get("state"),
        "steps_done": st.get("steps_done", []),
        "stopped_units": st.get("stopped_units", []),
    }
    if new and new["port"] == args.port:
        return {"phase": "upgraded", **summary}
    if old and old["port"] == args.port:
        kind = "rolled_back" if st.get("state") == "rolled_back" else "pending"
        return {"phase": kind, **summary}
    return {
        "phase": "refuse",
        **summary,
        "reason": (
            f"neither {args.old}/{args.cluster} nor {args.new}/{args.cluster} is the cluster on port "
            f"{args.port} (upgrade_postgresql_port); clusters: "
            f"{[(c['version'], c['cluster'], c['port'], c['status']) for c in cl]}"
            + (f"; on the port: {on_port}" if on_port else "")
        ),
    }


def cmd_phase(args: argparse.Namespace) -> dict[str, Any]:
    return phase(args)


# --- preflight --------------------------------------------------------------------------------
def cmd_preflight(args: argparse.Namespace) -> dict[str, Any]:
    conflicts: list[str] = []
    p = phase(args)
    result: dict[str, Any] = {"phase": p["phase"], "conflicts": conflicts}
    if p["phase"] == "upgraded":
        return result
    if p["phase"] == "refuse":
        conflicts.append(p["reason"])
        return result
    if int(args.new) <= int(args.old):
        conflicts.append(
            f"the target major {args.new} (upgrade_postgresql_to) is not newer than {args.old} "
            "(upgrade_postgresql_from)"
        )
    old = p["old"]
    if not old["online"]:
        conflicts.append(
            f"{args.old}/{args.cluster} is {old['status']}: start it first (the versions and "
            "counts are read from the running cluster)"
        )
        return result
    if p["new"]:
        conflicts.append(
            f"a cluster {args.new}/{args.cluster} exists already ({p['new']['data_dir']}, port "
            f"{p['new']['port']}): pg_upgradecluster needs it absent. If it holds nothing of "
            f"value remove it (pg_dropcluster --stop {args.new} {args.cluster}), then re-run"
        )
    versions = timescaledb_versions(args.port)
    result["timescaledb"] = versions
    distinct = sorted(set(versions.values()))
    if len(distinct) > 1:
        conflicts.append(
            f"the databases carry different TimescaleDB versions {versions}: update them to one "
            "version (ALTER EXTENSION timescaledb UPDATE) before the upgrade"
        )
    package = f"timescaledb-2-postgresql-{args.new}"
    available = apt_versions(package, args.timescale_uri)
    result["available"] = available
    match = [v for v in available if distinct and re.match(re.escape(distinct[0]) + r"([~-]|$)", v)]
    result["package_version"] = match[0] if match else ""
    if distinct and not match:
        conflicts.append(
            f"TimescaleDB {distinct[0]} (in {', '.join(versions)}) has no {package} package at "
            f"{args.timescale_uri} (upgrade_postgresql_timescale_uri; apt-cache madison shows "
            f"{available or 'none'}): "
            "pg_upgrade needs the same TimescaleDB version for both majors"
        )
    server = run(["apt-cache", "policy", f"postgresql-{args.new}"], check=False).stdout
    if "Candidate: (none)" in server or not server.strip():
        conflicts.append(
            f"postgresql-{args.new} is not available from any apt source (add PGDG's, timescaledb_pgdg_repo)"
        )
    # Disk: link mode writes only the new catalog; copy writes every file again.
    size = sum(
        int(psql(args.port, "postgres", f"SELECT pg_database_size('{d}')")) for d in databases(args.port)
    )
    free = shutil.disk_usage(old["data_dir"]).free
    need = (args.min_free_mb << 20) + (size // 100 if args.method == "link" else int(size * 1.1))
    result.update(cluster_bytes=size, free_bytes=free, needed_bytes=need)
    if free < need:
        conflicts.append(
            f"{free >> 20} MiB free beside {old['data_dir']}, {need >> 20} MiB needed for a "
            f"{args.method} upgrade of {size >> 20} MiB (upgrade_postgresql_min_free_mb, "
            "upgrade_postgresql_method)"
        )
    newest = newest_backup(args.textfile_dir) if args.textfile_dir else None
    result["backup_age_seconds"] = round(time.time() - newest) if newest else None
    if not args.accept_no_backup and (
        newest is None or time.time() - newest > args.backup_max_age_hours * 3600
    ):
        what = (
            "no successful backup recorded"
            if newest is None
            else f"the newest backup is {result['backup_age_seconds']} s old"
        )
        conflicts.append(
            f"{what} (gept_backup_last_success_timestamp_seconds in {args.textfile_dir}; limit "
            f"upgrade_postgresql_backup_max_age_hours={args.backup_max_age_hours}): run a backup "
            "first (systemctl start gept-backup-dump.service) or set "
            "upgrade_postgresql_accept_no_backup: true"
        )
    if not conflicts:
        st = State(args)
        # Units an interrupted run stopped are kept, so this run starts them again.
        keep = st.data.get("stopped_units", []) if st.data.get("state") in ("running", "failed") else []
        st.data.update(
            {
                "from": args.old,
                "to": args.new,
                "state": "running",
                "method": args.method,
                "steps_done": [],
                "marks": {},
                "measured": {},
                "stopped_units": keep,
                "started_at": round(time.time(), 3),
            }
        )
        st.step("preflight")
        st.save()
    return result


# --- record / verify ------------------------------------------------------------------------
def snapshot(port: int, counts: bool = True) -> dict[str, Any]:
    snap: dict[str, Any] = {}
    for db in databases(port):
        if db in ("postgres",):
            continue
        tables = psql(
            port,
            db,
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname NOT "
            "IN ('pg_catalog', 'information_schema') AND schemaname NOT LIKE '\\_timescaledb%' "
            "AND schemaname NOT IN ('timescaledb_information', 'timescaledb_experimental') ORDER BY 1",
        ).split()
        ext = psql(port, db, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        # Names from pg_tables, quoted by format('%I').
        count_sql = "SELECT count(*) FROM {}"
        entry: dict[str, Any] = {
            "counts": {t: int(psql(port, db, count_sql.format(t))) for t in tables} if counts else {},
            "timescaledb": ext,
        }
        if ext:
            entry["jobs"] = int(psql(port, db, "SELECT count(*) FROM timescaledb_information.jobs"))
            entry["license"] = psql(port, db, "SHOW timescaledb.license")
        snap[db] = entry
    return snap


def cmd_record(args: argparse.Namespace) -> dict[str, Any]:
    st = State(args)
    started = time.time()
    st.data["before"] = snapshot(args.port, not args.skip_counts)
    st.data.setdefault("measured", {})["record_seconds"] = round(time.time() - started, 1)
    st.step("record")
    st.save()
    return {"before": st.data["before"], "seconds": st.data["measured"]["record_seconds"]}


def cmd_mark(args: argparse.Namespace) -> dict[str, Any]:
    st = State(args)
    st.mark(args.name)
    if args.step:
        st.step(args.step)
    if args.units is not None:
        units = st.data.get("stopped_units", []) + [u for u in args.units.split(",") if u]
        st.data["stopped_units"] = sorted(set(units))
    m = st.data.get("marks", {})
    if args.name == "writers_started" and "writers_stopped" in m:
        window = {
            "kind": "upgrade",
            "method": st.data.get("method"),
            "start": m["writers_stopped"],
            "end": m["writers_started"],
            **{k: m[k] for k in ("cluster_down", "cluster_up", "extension_updated") if k in m},
        }
        st.log_window(window)
    if "writers_started" in m and "writers_stopped" in m:
        st.data.setdefault("measured", {})["writers_stopped_seconds"] = round(
            m["writers_started"] - m["writers_stopped"], 1
        )
    st.save()
    return {"marks": m, "stopped_units": st.data.get("stopped_units", [])}


def cmd_upgrade(args: argparse.Namespace) -> dict[str, Any]:
    st = State(args)
    method = {"copy": "upgrade"}.get(args.method, args.method)
    st.mark("cluster_down")
    st.save()
    started = time.time()
    # --no-start: the configuration is completed before the new cluster first starts.
    proc = run(
        ["pg_upgradecluster", "-v", args.new, "-m", method, "--no-start", args.old, args.cluster], check=False
    )
    st.data.setdefault("measured", {})["pg_upgradecluster_seconds"] = round(time.time() - started, 1)
    log = st.dir / "pg_upgradecluster.log"
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        st.data["state"] = "failed"
        st.save()
        raise RuntimeError(f"pg_upgradecluster failed ({proc.returncode}), see {log}:\n{proc.stderr[-3000:]}")
    copied = carry_conf_d(args.old, args.new, args.cluster)
    aside = conf_port(args.old, args.cluster) or free_port(clusters(), args.port)
    set_aside_port(args.old, args.cluster, aside if aside != args.port else free_port(clusters(), args.port))
    run(["systemctl", "daemon-reload"])
    new = find(clusters(), args.new, args.cluster)
    if not new or new["port"] != args.port:
        st.data["state"] = "failed"
        st.save()
        raise RuntimeError(
            f"{args.new}/{args.cluster} is set to port {new and new['port']}, not {args.port}: not starting "
            "it; "
            f"see the port settings in /etc/postgresql/{args.new}/{args.cluster} (postgresql.conf, conf.d)"
        )
    run(["systemctl", "start", f"postgresql@{args.new}-{args.cluster}.service"])
    st.mark("cluster_up")
    st.data["measured"]["cluster_start_seconds"] = round(time.time() - started, 1)
    st.step("upgrade")
    st.save()
    return {
        "seconds": st.data["measured"]["pg_upgradecluster_seconds"],
        "log": str(log),
        "conf_d_copied": copied,
        "clusters": clusters(),
    }


def cmd_extension(args: argparse.Namespace) -> dict[str, Any]:
    st = State(args)
    updated = {}
    # Read where no TimescaleDB is loaded: once the package holds only the newer library, a
    # session in a database still at the old version fails on its first statement unless that
    # statement is the ALTER EXTENSION ... UPDATE itself.
    newest = psql(
        args.port,
        "postgres",
        "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'",
    )
    for db in databases(args.port):
        try:
            have = psql(args.port, db, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        except RuntimeError as exc:
            if 'could not access file "$libdir/timescaledb-' not in str(exc):
                raise
            have = re.search(r'timescaledb-([0-9][^"]*)"', str(exc)).group(1)
        if not have or have == newest:
            continue
        # The first statement of a fresh session: no psqlrc, nothing else loads the old library.
        psql(args.port, db, "ALTER EXTENSION timescaledb UPDATE")
        updated[db] = f"{have} -> {newest}"
    if "extension" not in st.data.get("steps_done", []) and st.data:
        st.mark("extension_updated")
        m = st.data["marks"]
        if "cluster_down" in m:
            st.data.setdefault("measured", {})["cluster_unavailable_seconds"] = round(
                m["extension_updated"] - m["cluster_down"], 1
            )
        st.step("extension")
        st.save()
    return {"changed": bool(updated), "updated": updated}


def cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    st = State(args)
    before = st.data.get("before")
    after = snapshot(args.port, not args.skip_counts)
    problems, grown = [], {}
    if before:
        for db, b in before.items():
            a = after.get(db)
            if a is None:
                problems.append(f"database {db} is missing")
                continue
            for table, n in b["counts"].items():
                m = a["counts"].get(table)
                if m is None:
                    problems.append(f"{db}.{table} is missing")
                elif m < n:
                    problems.append(f"{db}.{table}: {m} rows, {n} before")
                elif m > n:
                    grown[f"{db}.{table}"] = m - n
            if b.get("timescaledb"):
                if a.get("jobs", 0) < b.get("jobs", 0):
                    problems.append(f"{db}: {a.get('jobs')} TimescaleDB jobs, {b['jobs']} before")
                if a.get("license") != b.get("license"):
                    problems.append(
                        f"{db}: timescaledb.license {a.get('license')}, {b.get('license')} before"
                    )
    for db, a in after.items():
        if a.get("timescaledb"):
            newest = psql(
                args.port,
                db,
                "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'",
            )
            if a["timescaledb"] != newest:
                problems.append(f"{db}: timescaledb {a['timescaledb']}, {newest} installed")
    server = psql(args.port, "postgres", "SHOW server_version_num")
    if int(server) // 10000 != int(args.new):
        problems.append(f"the server on port {args.port} is {server}, not {args.new}")
    if problems:
        raise Refusal("verification failed: " + "; ".join(problems))
    if st.data and "verify" not in st.data.get("steps_done", []):
        st.data["after"] = after
        st.data["grown"] = grown
        st.step("verify")
        st.save()
    return {"after": after, "grown_by_other_clients": grown, "server_version_num": server}


def cmd_statistics(args: argparse.Namespace) -> dict[str, Any]:
    """pg_upgrade carries no planner statistics: ANALYZE every database in stages (coarse ones
    first, so the planner has something within seconds), online, once."""
    st = State(args)
    if "statistics" in st.data.get("steps_done", []) or st.data.get("state") == "done":
        return {"changed": False}
    started = time.monotonic()
    analyze = ["vacuumdb", "--all", "--analyze-in-stages", f"--port={args.port}"]
    run(["runuser", "-u", "postgres", "--", *analyze])
    seconds = round(time.monotonic() - started, 1)
    st.data.setdefault("measured", {})["statistics_seconds"] = seconds
    st.step("statistics")
    st.save()
    return {"changed": True, "seconds": seconds}


def cmd_finish(args: argparse.Namespace) -> dict[str, Any]:
    changed = []
    old = find(clusters(), args.old, args.cluster)
    if old:
        if old["online"]:
            run(["pg_ctlcluster", args.old, args.cluster, "stop"])
            changed.append(f"stopped {args.old}/{args.cluster}")
        if set_start_conf(args.old, args.cluster, "manual"):
            changed.append(f"{args.old}/{args.cluster} autostart off")
        if old["port"] == args.port:
            # A cluster put aside never shares the port (at boot, or for site.yml's facts).
            port = free_port(clusters(), args.port)
            set_aside_port(args.old, args.cluster, port)
            changed.append(f"{args.old}/{args.cluster} set to port {port}")
        run(["systemctl", "disable", f"postgresql@{args.old}-{args.cluster}.service"], check=False)
    if carry_local_fact(args.cluster, args.old, args.new):
        changed.append(f"local fact gept_postgresql: version {args.new}")
    st = State(args)
    if st.data.get("state") != "done":
        st.data.setdefault("from", args.old)
        st.data.setdefault("to", args.new)
        st.data["state"] = "done"
        st.data.setdefault("steps_done", [])
        st.step("finish")
        st.data["finished_at"] = round(time.time(), 3)
        st.save()
        changed.append("state done")
    else:
        st.metric()
    return {
        "changed": changed,
        "old": old,
        "measured": st.data.get("measured", {}),
        "old_cluster_note": (
            f"{args.old}/{args.cluster} is kept down ({old['data_dir']}); remove it with "
            f"pg_dropcluster {args.old} {args.cluster} once the new cluster is trusted"
        )
        if old
        else "the old cluster is gone",
    }


# --- rollback ---------------------------------------------------------------------------------
def cmd_rollback(args: argparse.Namespace) -> dict[str, Any]:
    p = phase(args)
    if p["phase"] in ("pending", "rolled_back"):
        return {
            "changed": False,
            "phase": p["phase"],
            "message": f"{args.old}/{args.cluster} is already the cluster "
            f"on port {args.port}: nothing to roll back",
        }
    if p["phase"] != "upgraded":
        raise Refusal(p["reason"])
    old = p["old"]
    if not old:
        raise Refusal(
            f"{args.old}/{args.cluster} no longer exists: roll back by restoring a backup taken before the "
            "upgrade into a new cluster (docs/migration.md)"
        )
    if Path(old["data_dir"], "global", "pg_control.old").exists():
        raise Refusal(
            f"{args.old}/{args.cluster} was upgraded in link mode and {args.new}/{args.cluster} has run "
            "since: the two share their data files, and pg_upgrade's documentation says the old cluster "
            "must not be started once the new one has been (it would corrupt both). Roll back by "
            "restoring the backup taken before the upgrade (docs/migration.md); an upgrade meant to be "
            "rolled back runs with upgrade_postgresql_method: copy"
        )
    st = State(args)
    st.mark("rollback_started")
    st.save()
    run(["pg_ctlcluster", args.new, args.cluster, "stop", "-m", "fast"], check=False)
    set_start_conf(args.new, args.cluster, "manual")
    aside = old["port"] if old["port"] != args.port else free_port(clusters(), args.port)
    set_aside_port(args.new, args.cluster, aside)
    set_aside_port(args.old, args.cluster, None)
    run(["pg_conftool", args.old, args.cluster, "set", "port", str(args.port)])
    set_start_conf(args.old, args.cluster, "auto")
    run(["systemctl", "enable", f"postgresql@{args.old}-{args.cluster}.service"], check=False)
    run(["systemctl", "start", f"postgresql@{args.old}-{args.cluster}.service"])
    carry_local_fact(args.cluster, args.new, args.old)
    st.mark("rollback_done")
    st.log_window(
        {
            "kind": "rollback",
            "start": st.data["marks"]["rollback_started"],
            "end": st.data["marks"]["rollback_done"],
        }
    )
    st.data["state"] = "rolled_back"
    st.data["measured"]["rollback_unavailable_seconds"] = round(
        st.data["marks"]["rollback_done"] - st.data["marks"]["rollback_started"], 1
    )
    st.save()
    return {
        "changed": True,
        "clusters": clusters(),
        "measured": st.data["measured"],
        "message": f"{args.old}/{args.cluster} is back on port {args.port}; {args.new}/{args.cluster} "
        "is down with "
        f"autostart off on port {aside} (writes made on it since the upgrade are only there). "
        f"Remove it (pg_dropcluster {args.new} {args.cluster}) before upgrading again",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "command",
        choices=[
            "phase",
            "preflight",
            "record",
            "mark",
            "upgrade",
            "extension",
            "verify",
            "statistics",
            "finish",
            "rollback",
        ],
    )
    ap.add_argument("--old", required=True, help="source major")
    ap.add_argument("--new", required=True, help="target major")
    ap.add_argument("--cluster", default="main")
    ap.add_argument("--port", type=int, default=5432)
    ap.add_argument("--method", choices=["link", "clone", "copy"], default="link")
    ap.add_argument("--state-dir", default="/var/lib/gept/postgresql-upgrade")
    ap.add_argument("--textfile-dir", default="")
    ap.add_argument("--timescale-uri", default="")
    ap.add_argument("--min-free-mb", type=int, default=1024)
    ap.add_argument("--backup-max-age-hours", type=float, default=26)
    ap.add_argument("--accept-no-backup", action="store_true")
    ap.add_argument("--skip-counts", action="store_true", help="record/verify: no row counts")
    ap.add_argument("--name", default="", help="mark: the moment's name")
    ap.add_argument("--step", default="", help="mark: the step it completes")
    ap.add_argument("--units", default=None, help="mark: units the play stopped (comma-separated)")
    args = ap.parse_args()
    try:
        out = globals()[f"cmd_{args.command}"](args)
    except Refusal as exc:
        print(json.dumps({"failed": True, "msg": str(exc)}))
        return 2
    print(json.dumps(out, default=str))
    return 1 if out.get("conflicts") else 0


if __name__ == "__main__":
    sys.exit(main())
