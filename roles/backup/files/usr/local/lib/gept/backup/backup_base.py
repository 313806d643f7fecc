"""Settings, shared helpers and textfile metrics of the GePT backup jobs."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import psycopg2.extensions

LOG = logging.getLogger("gept-backup")
# Row text must look the same on the source and on a restored copy, whatever the server's
# defaults: the checksums hash each row's text form.
SESSION_OPTIONS = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=1"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
DUMP_PREFIX = "gept-"


class BackupError(RuntimeError):
    """A backup, restore or drill step failed; the message says which and why."""


def _env(name: str, **extra: object) -> dict[str, object]:
    """Field metadata: the environment variable a setting is read from."""
    return {"env": f"GEPT_BACKUP_{name}", **extra}


def _words(value: str) -> list[str]:
    return value.replace(",", " ").split()


def _seconds(value: str) -> timedelta:
    return timedelta(seconds=int(value))


@dataclass(frozen=True)
class Config:
    """Settings from the environment (names GEPT_BACKUP_*). The defaults here are the ones the
    script uses when a variable is unset; the role always writes every variable
    (/etc/gept/backup.env), so on a host its defaults/main.yml is what counts."""

    db: str = field(default="gept", metadata=_env("DB"))
    pghost: str = field(default="/var/run/postgresql", metadata=_env("PGHOST"))
    pgport: int = field(default=5432, metadata=_env("PGPORT", parse=int))
    bindir: Path = field(default=Path("/usr/lib/postgresql/17/bin"), metadata=_env("PG_BINDIR", parse=Path))
    dump_dir: Path = field(default=Path("/var/backups/gept/dumps"), metadata=_env("DUMP_DIR", parse=Path))
    dump_tables: list[str] = field(
        default_factory=lambda: ["items"], metadata=_env("DUMP_TABLES", parse=_words)
    )
    dump_compress: str = field(default="zstd:3", metadata=_env("DUMP_COMPRESS"))
    dump_retention_days: int = field(default=7, metadata=_env("DUMP_RETENTION_DAYS", parse=int))
    state_dir: Path = field(default=Path("/var/backups/gept/state"), metadata=_env("STATE_DIR", parse=Path))
    sample_window: timedelta = field(
        default=timedelta(days=1), metadata=_env("SAMPLE_WINDOW_SECONDS", parse=_seconds)
    )
    stanza: str = field(default="gept", metadata=_env("PGBACKREST_STANZA"))
    repos: list[str] = field(default_factory=lambda: ["1"], metadata=_env("PGBACKREST_REPOS", parse=_words))
    drill_dir: Path = field(default=Path("/var/backups/gept/drill"), metadata=_env("DRILL_DIR", parse=Path))
    drill_port: int = field(default=5433, metadata=_env("DRILL_PORT", parse=int))
    drill_db: str = field(default="gept_restore_drill", metadata=_env("DRILL_DB"))
    drill_kinds: list[str] = field(
        default_factory=lambda: ["dump", "pgbackrest"], metadata=_env("DRILL_KINDS", parse=_words)
    )
    drill_schemas: list[str] = field(
        default_factory=lambda: ["public"], metadata=_env("DRILL_SCHEMAS", parse=_words)
    )
    drill_start_timeout: int = field(default=3600, metadata=_env("DRILL_START_TIMEOUT", parse=int))

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> Config:
        """Every field whose variable is set, parsed; the others keep the field's default."""
        e = os.environ if env is None else env
        given = {}
        for f in fields(Config):
            value = e.get(f.metadata["env"])
            if value is not None:
                given[f.name] = f.metadata.get("parse", str)(value)
        return Config(**given)

    @property
    def drill_pgdata(self) -> Path:
        return self.drill_dir / "pgdata"

    @property
    def drill_socket_dir(self) -> Path:
        return self.drill_dir / "run"


# --- small helpers ---------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


def run(cmd: list[str], what: str, capture: bool = False, timeout: float | None = None) -> str:
    """Run a command; raise BackupError naming `what` (with its stderr) when it fails."""
    LOG.debug("run: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise BackupError(f"{what} failed (exit {proc.returncode}): {detail}")
    if proc.stderr.strip():
        LOG.info("%s: %s", what, proc.stderr.strip()[-2000:])
    return proc.stdout if capture else ""


def connect(cfg: Config, dbname: str, host: str | None = None, port: int | None = None):
    conn = psycopg2.connect(
        dbname=dbname,
        host=host or cfg.pghost,
        port=port or cfg.pgport,
        options=SESSION_OPTIONS,
        application_name="gept-backup",
        connect_timeout=10,
    )
    return conn


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


@contextlib.contextmanager
def exclusive(cfg: Config, name: str) -> Iterator[None]:
    """One drill or point-in-time restore at a time (they share the scratch directory)."""
    cfg.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (cfg.state_dir / f"{name}.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BackupError(f"another {name} is running (lock {fh.name})") from exc
        yield


# --- metrics ------------------------------------------------------------------------------------


class Metrics:
    """Writes one node_exporter textfile (<state_dir>/metrics/<name>.prom) atomically."""

    def __init__(self, cfg: Config, name: str) -> None:
        self.path = cfg.state_dir / "metrics" / f"{name}.prom"
        self.lines: list[str] = []
        self.described: set[str] = set()

    def add(self, metric: str, value: float, help_text: str, labels: dict[str, str] | None = None) -> None:
        if metric not in self.described:
            self.lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
            self.described.add(metric)
        label_text = ""
        if labels:
            label_text = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        self.lines.append(f"{metric}{label_text} {value:.6f}".rstrip("0").rstrip("."))

    def write(self) -> None:
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomic(self.path, "\n".join(self.lines) + "\n", mode=0o644)


def backup_metrics(cfg: Config, kind: str, ok: bool, last_success: float | None, size: int | None) -> None:
    m = Metrics(cfg, f"backup_{kind}")
    labels = {"kind": kind}
    m.add("gept_backup_last_run_ok", 1 if ok else 0, "1 if the last backup run succeeded, else 0.", labels)
    if last_success is not None:
        m.add(
            "gept_backup_last_success_timestamp_seconds",
            last_success,
            "Unix time the newest successful backup finished.",
            labels,
        )
    if size is not None:
        m.add("gept_backup_size_bytes", size, "Size of the newest successful backup in bytes.", labels)
    m.write()
