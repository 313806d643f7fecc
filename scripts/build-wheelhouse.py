#!/usr/bin/env python3
"""Build a wheelhouse for another machine's CPU architecture, Python and glibc, on the controller.

The target host then installs with `pip install --no-index --find-links WHEELHOUSE -r REQ`
and needs no PyPI access. Binary wheels only (`--only-binary=:all:`), so nothing is compiled
here for the wrong architecture. Reusable with any requirements file, e.g.

  scripts/build-wheelhouse.py -r files/collectors/requirements.txt \\
      --arch aarch64 --python-version 3.13 --glibc 2.39 --dest .cache/wheelhouse/collectors-aarch64-cp313

The destination is replaced atomically and stamped with a digest of its inputs; a second run
with the same inputs does nothing and prints "up to date" (Ansible uses that for changed_when).
Exit status: 0 on success, 1 when pip fails, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARCHES = ("x86_64", "aarch64")
STAMP = ".wheelhouse-stamp"
# A requirement with no wheel for the target is final; anything else (a connection reset, a
# timeout, a truncated download) is tried again.
DOWNLOAD_ATTEMPTS = 3
NO_WHEEL = "No matching distribution found"


def platform_tags(arch: str, glibc: str) -> list[str]:
    """manylinux tags a host with this glibc accepts: manylinux2014 (= 2.17) up to its own."""
    major, minor = (int(p) for p in glibc.split(".")[:2])
    if major != 2 or minor < 17:
        raise ValueError(f"glibc {glibc}: need 2.17 or newer")
    return [f"manylinux2014_{arch}"] + [f"manylinux_2_{m}_{arch}" for m in range(17, minor + 1)]


def digest(requirements: Path, arch: str, python_version: str, glibc: str) -> str:
    h = hashlib.sha256()
    h.update(requirements.read_bytes())
    h.update(f"\0{arch}\0{python_version}\0{glibc}".encode())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-r", "--requirements", required=True, type=Path, help="requirements file (pinned)")
    p.add_argument("--arch", required=True, choices=ARCHES, help="target CPU architecture (uname -m)")
    p.add_argument("--python-version", required=True, help="target Python as X.Y, e.g. 3.13")
    p.add_argument("--glibc", default="2.28", help="target glibc version (default 2.28)")
    p.add_argument("--dest", required=True, type=Path, help="wheelhouse directory to (re)create")
    p.add_argument("--force", action="store_true", help="rebuild even when the stamp matches")
    args = p.parse_args(argv)
    if not args.requirements.is_file():
        p.error(f"{args.requirements}: no such file")
    if not args.python_version.replace(".", "").isdigit() or args.python_version.count(".") != 1:
        p.error("--python-version must look like 3.13")
    try:
        tags = platform_tags(args.arch, args.glibc)
    except ValueError as exc:
        p.error(str(exc))

    want = digest(args.requirements, args.arch, args.python_version, args.glibc)
    stamp = args.dest / STAMP
    if not args.force and stamp.is_file() and stamp.read_text().strip() == want:
        print(f"up to date: {args.dest}")
        return 0

    args.dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".wheelhouse-", dir=args.dest.parent))
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        args.python_version,
        "--dest",
        str(tmp),
        "-r",
        str(args.requirements),
    ]
    for tag in tags:
        cmd += ["--platform", tag]
    # PyPI over a busy or flaky link: pip's own retries per request, and the whole download
    # again (bounded) when it still fails.
    cmd += ["--retries", "10", "--timeout", "60"]
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603  (fixed argv)
        if done.returncode == 0 or attempt == DOWNLOAD_ATTEMPTS or NO_WHEEL in done.stdout + done.stderr:
            break
        print(
            f"pip download failed (attempt {attempt} of {DOWNLOAD_ATTEMPTS}); again in {5 * attempt} s",
            file=sys.stderr,
        )
        time.sleep(5 * attempt)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        sys.stderr.write(done.stdout + done.stderr)
        print(f"pip download failed for {args.arch} / Python {args.python_version}", file=sys.stderr)
        return 1
    (tmp / STAMP).write_text(want + "\n")
    old = args.dest.with_name(args.dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if args.dest.exists():
        args.dest.rename(old)
    tmp.rename(args.dest)
    shutil.rmtree(old, ignore_errors=True)
    wheels = sorted(w.name for w in args.dest.glob("*.whl"))
    print(f"built {len(wheels)} wheel(s) into {args.dest}:")
    for w in wheels:
        print(f"  {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
