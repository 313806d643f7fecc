"""scripts/build-wheelhouse.py without the network: platform tags, argument checks and the
"up to date" short-circuit Ansible's changed_when relies on. (The real download runs in every
Molecule converge of the collectors role.)"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-wheelhouse.py"
spec = importlib.util.spec_from_file_location("build_wheelhouse", SCRIPT)
assert spec and spec.loader
wheelhouse = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wheelhouse)


def test_platform_tags_cover_manylinux2014_up_to_the_host_glibc() -> None:
    tags = wheelhouse.platform_tags("aarch64", "2.39")
    assert tags[0] == "manylinux2014_aarch64"
    assert "manylinux_2_28_aarch64" in tags and tags[-1] == "manylinux_2_39_aarch64"
    assert "manylinux_2_40_aarch64" not in tags
    with pytest.raises(ValueError):
        wheelhouse.platform_tags("x86_64", "2.12")


def test_matching_stamp_is_up_to_date_without_pip(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("nothing-to-download==1.0\n")
    dest = tmp_path / "wh"
    dest.mkdir()
    (dest / ".wheelhouse-stamp").write_text(wheelhouse.digest(req, "x86_64", "3.13", "2.41") + "\n")
    args = [
        sys.executable,
        str(SCRIPT),
        "-r",
        str(req),
        "--arch",
        "x86_64",
        "--python-version",
        "3.13",
        "--glibc",
        "2.41",
        "--dest",
        str(dest),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("up to date")
    # another Python version is another wheelhouse: the stamp no longer matches
    other = wheelhouse.digest(req, "x86_64", "3.11", "2.41")
    assert other != wheelhouse.digest(req, "x86_64", "3.13", "2.41")


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    req = tmp_path / "r.txt"
    req.write_text("x==1\n")
    for bad in (["--arch", "sparc"], ["--python-version", "313"], ["--glibc", "2.5"]):
        args = {"--arch": "x86_64", "--python-version": "3.13", "--glibc": "2.36"}
        args.update(dict(zip(bad[::2], bad[1::2], strict=True)))
        argv = [sys.executable, str(SCRIPT), "-r", str(req), "--dest", str(tmp_path / "d")]
        argv += [x for kv in args.items() for x in kv]
        assert subprocess.run(argv, capture_output=True, timeout=60).returncode == 2
