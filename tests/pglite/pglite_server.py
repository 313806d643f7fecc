"""Start and stop the PGlite TimescaleDB server (server.mjs) for tests and benchmarks.

Bounded: waits at most ``timeout`` seconds for the READY line, listens on 127.0.0.1 on a
free port, and is stopped by its PID.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

PGLITE_DIR = Path(__file__).resolve().parent
# The shared test toolkit (tests/support); pytest has tests/ on the path, a benchmark may not.
if str(PGLITE_DIR.parent) not in sys.path:
    sys.path.insert(0, str(PGLITE_DIR.parent))
from support.net import free_port  # noqa: E402


class PGliteUnavailable(RuntimeError):
    """node or tests/pglite/node_modules is missing (run scripts/setup-controller.sh)."""


def start(
    log_path: Path, data_dir: Path | None = None, timeout: float = 90
) -> tuple[subprocess.Popen[bytes], int]:
    """Start server.mjs on a free loopback port; return (process, port) once it is READY."""
    if shutil.which("node") is None or not (PGLITE_DIR / "node_modules").is_dir():
        raise PGliteUnavailable(
            "PGlite engine not installed: scripts/setup-controller.sh runs npm ci in tests/pglite"
        )
    port = free_port()
    cmd = ["node", "server.mjs", "--host", "127.0.0.1", "--port", str(port)]
    if data_dir is not None:
        cmd += ["--data", str(data_dir)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=PGLITE_DIR, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if b"READY" in log_path.read_bytes():
            return proc, port
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"PGlite did not start: {log_path.read_text(errors='replace')[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server by its PID (kill it if it does not stop within 15 s)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def connect_params(port: int) -> dict[str, object]:
    """psycopg2.connect() arguments (PGlite accepts any password; no TLS)."""
    return {
        "host": "127.0.0.1",
        "port": port,
        "user": "postgres",
        "password": "postgres",  # pragma: allowlist secret  (PGlite accepts any password)
        "dbname": "postgres",
        "sslmode": "disable",
        "connect_timeout": 10,
    }
