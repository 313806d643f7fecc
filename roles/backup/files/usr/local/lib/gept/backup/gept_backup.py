#!/usr/bin/env python3
"""GePT backups that are proved by restoring them.

Installed on the database host by the backup role and run as the postgres OS user (peer
authentication over the local socket) by systemd services; settings come from the
environment (/etc/gept/backup.env, see the role's templates). Commands:

  dump                  Logical dump of the database: the whole schema plus the data of the
                        critical tables (GEPT_BACKUP_DUMP_TABLES, those that exist), custom
                        format, taken in one snapshot together with a manifest of per-table
                        row counts and sample-window checksums. Old dumps are pruned.
  pgbackrest-backup T   pgBackRest backup of type T (full|diff|incr) into every repository.
  drill                 Restore drill: the latest dump into a scratch database, and the latest
                        pgBackRest backup (plus WAL up to a fresh restore point) into a scratch
                        data directory on another port; compare row counts and checksums with
                        the source; clean up.
  restore-dump          Restore a dump into a named database (--replace to overwrite one).
  restore-pitr          Restore the cluster at a point in time into a scratch data directory,
                        and copy its database into a named database (--replace to overwrite).

Every backup command and the drill write node_exporter textfile metrics into
GEPT_BACKUP_STATE_DIR/metrics; the systemd unit publishes them (as root) into the textfile
directory. Exit status 0 means success; anything else is a failure with the reason logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

import psycopg2
from backup_base import LOG, BackupError, Config, exclusive
from backup_drill import cmd_drill
from backup_dump import cmd_dump, latest_dump, restore_dump_into
from backup_pgbackrest import cmd_pgbackrest_backup, cmd_restore_pitr


def cmd_restore_dump(cfg: Config, file: str | None, target: str, replace: bool) -> None:
    if file:
        path = Path(file)
        manifest_path = path.with_suffix(".json")
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    else:
        path, manifest = latest_dump(cfg)
    with exclusive(cfg, "restore"):
        restore_dump_into(cfg, path, manifest, target, replace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dump", help="logical dump of the critical tables and the schema")
    p = sub.add_parser("pgbackrest-backup", help="pgBackRest backup")
    p.add_argument("type", choices=["full", "diff", "incr"])
    sub.add_parser("drill", help="restore drill")
    p = sub.add_parser("restore-dump", help="restore a dump into a named database")
    p.add_argument("--file", help="dump file (default: the newest)")
    p.add_argument("--target-db", required=True)
    p.add_argument("--replace", action="store_true", help="overwrite the target database if it exists")
    p = sub.add_parser("restore-pitr", help="restore a point in time into a named database")
    p.add_argument("--target-time", required=True, help="e.g. '2026-01-31 12:00:00+00'")
    p.add_argument("--target-db", required=True)
    p.add_argument("--replace", action="store_true", help="overwrite the target database if it exists")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    # systemd stops a timed-out run with SIGTERM: unwind so the finally blocks clean up and
    # record the failure.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cfg = Config.from_env()
    try:
        if args.command == "dump":
            cmd_dump(cfg)
        elif args.command == "pgbackrest-backup":
            cmd_pgbackrest_backup(cfg, args.type)
        elif args.command == "drill":
            cmd_drill(cfg)
        elif args.command == "restore-dump":
            cmd_restore_dump(cfg, args.file, args.target_db, args.replace)
        else:
            cmd_restore_pitr(cfg, args.target_time, args.target_db, args.replace)
    except (BackupError, psycopg2.Error, OSError) as exc:
        LOG.error("%s failed: %s", args.command, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
