"""The duckdb release the migration installs, per host Python (duckdb_migration_duckdb_versions in
roles/duckdb_migration/defaults/main.yml), has a wheel for every supported release and CPU:
resolved against PyPI for each target's Python, glibc and architecture, and for Ubuntu 22.04 on
aarch64 (Python 3.10, which duckdb 2.x does not cover) downloaded for real by the same
scripts/build-wheelhouse.py the role runs. Needs PyPI (the controller reaches it)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.roles import role_defaults

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "scripts" / "build-wheelhouse.py"
spec = importlib.util.spec_from_file_location("build_wheelhouse", BUILD)
assert spec and spec.loader
wheelhouse = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wheelhouse)

# Supported releases (roles/common common_supported_platforms): their Python and glibc.
TARGETS = {
    "Ubuntu 22.04": ("3.10", "2.35"),
    "Ubuntu 24.04": ("3.12", "2.39"),
    "Debian 12": ("3.11", "2.36"),
    "Debian 13": ("3.13", "2.41"),
}
ARCHES = ("x86_64", "aarch64")

pytestmark = pytest.mark.slow


def release_for(python: str) -> str:
    """The role's choice (tasks/wheelhouse.yml): the pin for this Python, else `default`."""
    versions = role_defaults("duckdb_migration")["duckdb_migration_duckdb_versions"]
    return str(versions.get(python) or versions["default"])


def resolve(
    requirement: str, arch: str, python: str, glibc: str, tmp: Path
) -> subprocess.CompletedProcess[str]:
    """pip resolves the requirement for that target without installing (wheel tags only)."""
    argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check"]
    argv += ["--only-binary=:all:", "--implementation", "cp", "--python-version", python]
    argv += ["--ignore-installed", "--target", str(tmp / "t"), "--report", str(tmp / "report.json")]
    for tag in wheelhouse.platform_tags(arch, glibc):
        argv += ["--platform", tag]
    return subprocess.run([*argv, requirement], capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.replace(" ", ""))
def test_pinned_release_has_a_wheel_for_each_supported_host(target: str, arch: str, tmp_path: Path) -> None:
    python, glibc = TARGETS[target]
    release = release_for(python)
    done = resolve(f"duckdb=={release}", arch, python, glibc, tmp_path)
    assert done.returncode == 0, f"{target} {arch}: duckdb {release}: {done.stderr[-800:]}"
    wheel = json.loads((tmp_path / "report.json").read_text())["install"][0]["download_info"]["url"]
    assert f"duckdb-{release}-cp" in wheel and arch in wheel, wheel


def test_the_newest_release_has_no_wheel_for_python_310(tmp_path: Path) -> None:
    """Why Python 3.10 has its own pin: the default release does not cover it."""
    default = str(role_defaults("duckdb_migration")["duckdb_migration_duckdb_versions"]["default"])
    assert release_for("3.10") != default
    done = resolve(f"duckdb=={default}", "aarch64", "3.10", "2.35", tmp_path)
    assert done.returncode != 0 and "No matching distribution" in done.stderr


def test_wheelhouse_for_ubuntu_2204_aarch64_builds(tmp_path: Path) -> None:
    """The role's own build for the live server's platform: a real download."""
    req = tmp_path / "requirements.txt"
    req.write_text(f"duckdb=={release_for('3.10')}\n")
    dest = tmp_path / "wh"
    argv = [sys.executable, str(BUILD), "-r", str(req), "--arch", "aarch64", "--python-version", "3.10"]
    done = subprocess.run(
        [*argv, "--glibc", "2.35", "--dest", str(dest)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    wheels = [w.name for w in dest.glob("*.whl")]
    assert len(wheels) == 1 and "cp310" in wheels[0] and "aarch64" in wheels[0], wheels
