"""A throwaway PostgreSQL 17 + TimescaleDB full (TSL) edition server in a Docker container, for
the controller tests and the benchmarks: the real engine production runs, from the package
scripts/build-timescaledb.sh built (.cache/timescaledb) and Debian's postgresql-17.

The container (base image gept-base:trixie, no systemd: only the server runs) installs
postgresql-17 from Debian and the built timescaledb-2-postgresql-17 .deb, starts the cluster
with TimescaleDB preloaded, listens on its Docker bridge address with a random password, and
is removed by name at the end. ``shared()`` starts one per process for every test area (about
20-35 s, once) and removes it when the process exits; ``Server.database()`` hands each user a
fresh database of its own. Skips the test (``pytest.skip``) when Docker, the base image or the
built package is missing (scripts/setup-controller.sh provides all three)."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

REPO = Path(__file__).resolve().parents[2]
IMAGE = "gept-base:trixie"
VERSION = "2.29.2"
PG_MAJOR = 17

# Small and quick; benchmarks pass their own (bigger memory). No background workers: tests
# call the policies' work themselves, deterministically (the Molecule scenario proves that the
# job scheduler runs them).
TEST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "timescaledb.max_background_workers": "0",
}

INSTALL = r"""
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# Never start services from maintainer scripts (no init here; the cluster is started below).
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
apt-get update -qq
apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-unsafe-io \
    "postgresql-$PG_MAJOR" "$DEB" >/dev/null
[ -d "/etc/postgresql/$PG_MAJOR/main" ] || pg_createcluster "$PG_MAJOR" main >/dev/null
printf '%s\n' "$CONF" > "/etc/postgresql/$PG_MAJOR/main/conf.d/90-gept-test.conf"
echo "host all all 0.0.0.0/0 scram-sha-256" >> "/etc/postgresql/$PG_MAJOR/main/pg_hba.conf"
# The caller's own step (root, cluster created and stopped), e.g. the data directory moved.
[ -z "${SETUP:-}" ] || bash -euo pipefail -c "$SETUP"
pg_ctlcluster "$PG_MAJOR" main start
runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -v pw="$PGPASS" <<'SQL'
ALTER ROLE postgres PASSWORD :'pw';
CREATE EXTENSION timescaledb;
SQL
"""


class Unavailable(RuntimeError):
    """Docker, the base image or the built TimescaleDB package is missing."""


def package(version: str = VERSION) -> Path:
    """The built timescaledb-2-postgresql-17 .deb of `version` (scripts/build-timescaledb.sh)."""
    found = sorted((REPO / ".cache" / "timescaledb").glob(f"{version}-pg{PG_MAJOR}-trixie-*/*.deb"))
    if len(found) != 1:
        raise Unavailable(
            f"expected one built timescaledb-2-postgresql-{PG_MAJOR} {version} package in "
            f".cache/timescaledb, found {len(found)}: scripts/build-timescaledb.sh {version} "
            f"{PG_MAJOR} trixie (scripts/setup-controller.sh runs it)"
        )
    return found[0]


def _docker(*args: str, timeout: float = 60, stdin: str | None = None) -> str:
    run = subprocess.run(  # noqa: S603 - fixed argv
        ["docker", *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if run.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:2])} failed: {run.stderr.strip()[-2000:]}")
    return run.stdout.strip()


@dataclass
class Server:
    name: str
    host: str
    password: str
    version: str
    started_s: float

    def params(self, dbname: str = "postgres") -> dict[str, Any]:
        return {
            "host": self.host,
            "port": 5432,
            "dbname": dbname,
            "user": "postgres",
            "password": self.password,
            "sslmode": "disable",
            "connect_timeout": 10,
        }

    def dsn(self, dbname: str = "postgres") -> str:
        return " ".join(f"{k}={v}" for k, v in self.params(dbname).items())

    def database(self, dbname: str) -> dict[str, Any]:
        """A fresh, empty database `dbname` with the timescaledb extension; its parameters."""
        conn = psycopg2.connect(**self.params())
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
                cur.execute(f'CREATE DATABASE "{dbname}"')
        finally:
            conn.close()
        conn = psycopg2.connect(**self.params(dbname))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE EXTENSION timescaledb")
        finally:
            conn.close()
        return self.params(dbname)


def start(
    name: str,
    settings: dict[str, str] | None = None,
    version: str = VERSION,
    docker_args: tuple[str, ...] = (),
    setup: str = "",
) -> Server:
    """Start the container `name` and return the running server (raises Unavailable).
    `docker_args`: extra `docker run` options (e.g. a capability); `setup`: a shell script run
    as root in the container once the cluster exists, before it first starts (e.g. to put its
    data directory on a filesystem of its own; PG_MAJOR is set)."""
    if shutil.which("docker") is None:
        raise Unavailable("docker not installed (scripts/setup-controller.sh installs it)")
    deb = package(version)
    try:
        _docker("image", "inspect", IMAGE)
    except RuntimeError as exc:
        raise Unavailable(f"no {IMAGE} image: scripts/build-base-image.sh") from exc
    t0 = time.monotonic()
    conf = {
        "shared_preload_libraries": "timescaledb",
        "timescaledb.telemetry_level": "off",
        "listen_addresses": "*",
        **TEST_SETTINGS,
        **(settings or {}),
    }
    password = secrets.token_urlsafe(18)
    # The default (64 MB) /dev/shm is too small for parallel hash joins over big tables.
    _docker(
        "run", "-d", "--name", name, "--shm-size", "1g", *docker_args,
        "-v", f"{deb.parent}:/srv/timescaledb:ro",
        IMAGE, "sleep", "infinity",
    )  # fmt: skip
    try:
        _docker(
            "exec", "-i",
            "-e", f"PG_MAJOR={PG_MAJOR}", "-e", f"DEB=/srv/timescaledb/{deb.name}",
            "-e", f"PGPASS={password}", "-e", f"SETUP={setup}",
            "-e", "CONF=" + "\n".join(f"{k} = '{v}'" for k, v in conf.items()),
            name, "bash", "-s",
            stdin=INSTALL, timeout=600,
        )  # fmt: skip
        host = _docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)
        server = Server(name, host, password, "", 0.0)
        conn = psycopg2.connect(**server.params())
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT split_part(version(), ' ', 2) || ', TimescaleDB ' || extversion || ' ('"
                    " || current_setting('timescaledb.license') || ')' FROM pg_extension"
                    " WHERE extname = 'timescaledb'"
                )
                server.version = cur.fetchone()[0]
        finally:
            conn.close()
        server.started_s = time.monotonic() - t0
        return server
    except BaseException:
        stop(name)
        raise


def stop(name: str) -> None:
    """Remove the container `name` (and its data)."""
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=120, check=False)  # noqa: S603, S607


_shared: dict[str, Any] = {}


def shared() -> Server:
    """One server per process (started on first use, removed when the process exits); skips
    the calling test when the engine cannot be had, and fails every caller alike when it
    could not start."""
    import pytest

    if "server" not in _shared:
        if "error" in _shared:
            raise RuntimeError(f"the TimescaleDB test server did not start: {_shared['error']}")
        name = os.environ.get("GEPT_TIMESCALEDB_TEST_CONTAINER", f"gept-timescaledb-test-{os.getpid()}")
        try:
            _shared["server"] = start(name)
        except Unavailable as exc:
            pytest.skip(str(exc))
        except Exception as exc:
            _shared["error"] = exc
            raise
        atexit.register(stop, name)
    return _shared["server"]
