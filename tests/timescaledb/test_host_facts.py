"""Unit tests of the readers behind the timescaledb role's host facts
(roles/timescaledb/filter_plugins/timescaledb_host.py): pg_lsclusters' plain output, apt
source files of both formats, and the choice of the cluster the role manages."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "roles" / "timescaledb" / "filter_plugins"))
import timescaledb_host as th  # noqa: E402

# Ubuntu 22.04 (postgresql-common 238) after its postinst created 17/main beside 14/main.
UBUNTU_TWO = """\
Ver Cluster Port Status Owner    Data directory              Log file
14  main    5432 online postgres /var/lib/postgresql/14/main /var/log/postgresql/postgresql-14-main.log
17  main    5433 online postgres /var/lib/postgresql/17/main /var/log/postgresql/postgresql-17-main.log
"""
# trixie (278) with bookworm's 15 and one stopped cluster without a log file.
TRIXIE = """\
Ver Cluster Port Status Owner    Data directory               Log file
15  main    5432 online postgres /srv/pg/15/main              /var/log/postgresql/postgresql-15-main.log
15  old     5434 down,binaries_missing postgres /var/lib/postgresql/15/old <unknown>
"""


def test_lsclusters_reads_every_field() -> None:
    clusters = th.lsclusters(UBUNTU_TWO)
    assert [(c["major"], c["cluster"], c["port"], c["online"]) for c in clusters] == [
        (14, "main", 5432, True),
        (17, "main", 5433, True),
    ]
    assert clusters[0]["data_dir"] == "/var/lib/postgresql/14/main"
    assert clusters[1]["log_file"] == "/var/log/postgresql/postgresql-17-main.log"


def test_lsclusters_status_suffixes_and_unknown_log() -> None:
    clusters = th.lsclusters(TRIXIE)
    assert clusters[0]["data_dir"] == "/srv/pg/15/main"
    assert clusters[1]["status"] == "down,binaries_missing"
    assert clusters[1]["online"] is False
    assert clusters[1]["log_file"] is None


def test_lsclusters_empty_and_colour() -> None:
    assert th.lsclusters("") == []
    assert th.lsclusters("Ver Cluster Port Status Owner Data directory Log file\n") == []
    coloured = "\x1b[1;32m15  main    5432 online postgres /var/lib/postgresql/15/main log\x1b[0m\n"
    assert th.lsclusters(coloured)[0]["status"] == "online"


def test_lsclusters_rejects_what_it_does_not_understand() -> None:
    with pytest.raises(th.ParseError, match="unexpected pg_lsclusters line"):
        th.lsclusters("Error: invalid line\n")


TS_URI = "http://172.17.0.1:8707/debian/"
FILES = {
    # Timescale's docs: one line, no signed-by, key in trusted.gpg.d.
    "/etc/apt/sources.list.d/timescaledb.list": f"deb {TS_URI.rstrip('/')} bookworm main\n",
    "/etc/apt/sources.list.d/pgdg.list": (
        "# PGDG\ndeb [arch=arm64 signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] "
        "https://apt.postgresql.org/pub/repos/apt jammy-pgdg main\n"
    ),
    "/etc/apt/sources.list.d/debian.sources": (
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie trixie-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "# off\nTypes: deb\nURIs: http://deb.debian.org/debian\nSuites: experimental\nEnabled: no\n"
    ),
    "/etc/apt/sources.list.d/timescaledb.sources": (
        f"X-Repolib-Name: timescaledb\nTypes: deb\nURIs: {TS_URI}\nSuites: trixie\nComponents: main\n"
        "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n"
    ),
}


def test_apt_entries_both_formats() -> None:
    entries = th.apt_entries(FILES)
    by_path = {}
    for e in entries:
        by_path.setdefault(e["path"], []).append(e)
    ts_list = by_path["/etc/apt/sources.list.d/timescaledb.list"][0]
    assert (ts_list["format"], ts_list["suites"], ts_list["signed_by"]) == ("list", ["bookworm"], None)
    pgdg = by_path["/etc/apt/sources.list.d/pgdg.list"][0]
    assert pgdg["signed_by"].endswith("apt.postgresql.org.asc")
    assert pgdg["line"] == 2
    debian = by_path["/etc/apt/sources.list.d/debian.sources"]
    assert [d["enabled"] for d in debian] == [True, False]
    assert debian[0]["suites"] == ["trixie", "trixie-updates"]
    own = by_path["/etc/apt/sources.list.d/timescaledb.sources"][0]
    assert own["signed_by"].startswith("-----BEGIN PGP")


def test_apt_entries_for_matches_uri_and_leaves_out_the_roles_file() -> None:
    entries = th.apt_entries(FILES)
    own = "/etc/apt/sources.list.d/timescaledb.sources"
    found = th.apt_entries_for(entries, TS_URI, own)
    assert [e["path"] for e in found] == ["/etc/apt/sources.list.d/timescaledb.list"]
    assert len(th.apt_entries_for(entries, TS_URI)) == 2
    assert th.apt_entries_for(entries, "https://apt.postgresql.org/pub/repos/apt/")[0]["format"] == "list"
    # Disabled stanzas do not count.
    assert (
        th.apt_entries_for(th.apt_entries({k: v for k, v in FILES.items() if "debian" in k}), "http://x")
        == []
    )


def test_apt_entries_reject_garbage() -> None:
    with pytest.raises(th.ParseError, match="unexpected source line"):
        th.apt_entries({"/etc/apt/sources.list": "dep http://x y\n"})
    with pytest.raises(th.ParseError, match="without URIs"):
        th.apt_entries({"/etc/apt/sources.list.d/x.sources": "Types: deb\nSuites: x\n"})


def decide(text: str, port: int = 5432, version: int = 17, adopt: bool = True) -> dict:
    return th.cluster_decision(th.lsclusters(text), port, version, "main", adopt)


def test_fresh_host() -> None:
    assert decide("")["action"] == "fresh"


def test_adopts_the_running_cluster_of_another_major() -> None:
    d = decide("15 main 5432 online postgres /var/lib/postgresql/15/main x\n")
    assert (d["action"], d["cluster"]["major"], d["adopted_other"]) == ("use", 15, True)


def test_refuses_another_major_when_adoption_is_off() -> None:
    d = decide("14 main 5432 online postgres /var/lib/postgresql/14/main x\n", adopt=False)
    assert d["action"] == "refuse"
    assert "timescaledb_adopt_running_cluster" in d["reason"] and "14/main" in d["reason"]


def test_same_major_is_used_even_when_adoption_is_off() -> None:
    d = decide("17 main 5432 online postgres /var/lib/postgresql/17/main x\n", adopt=False)
    assert (d["action"], d["adopted_other"]) == ("use", False)


def test_refuses_a_second_online_cluster() -> None:
    d = decide(UBUNTU_TWO)
    assert d["action"] == "refuse"
    assert "17/main (port 5433" in d["reason"] and "pg_dropcluster --stop 17 main" in d["reason"]


def test_a_stopped_cluster_on_another_port_is_left_alone() -> None:
    d = decide(TRIXIE, version=15)
    assert d["action"] == "use" and [c["cluster"] for c in d["others"]] == ["old"]


def test_refuses_when_nothing_runs_on_the_port() -> None:
    d = decide("14 main 5433 online postgres /var/lib/postgresql/14/main x\n")
    assert d["action"] == "refuse" and "gept_db_port" in d["reason"]


def test_uses_the_configured_cluster_when_stopped_on_another_port() -> None:
    d = decide("17 main 5433 down postgres /var/lib/postgresql/17/main x\n")
    assert d["action"] == "use" and d["cluster"]["port"] == 5433


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("tags", ["backup", "postgres_exporter", "timescaledb_configure"])
def test_site_reads_the_cluster_first_in_a_run_limited_by_tags(tags: str) -> None:
    """The facts play is site.yml's first and runs whatever --tags says, so the roles of a
    limited run use the cluster found, not the configured defaults."""
    import subprocess

    bin_dir = Path(sys.executable).parent
    out = subprocess.run(
        [
            str(bin_dir / "ansible-playbook"),
            "-i",
            "inventories/demo",
            "site.yml",
            "--list-tasks",
            "--tags",
            tags,
            "--vault-password-file",
            ".secrets/demo-vault-pass",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "HOME": str(ROOT),
        },
    )
    assert out.returncode == 0, out.stderr
    plays = out.stdout.split("  play #")
    assert "What the database host already runs" in plays[1]
    assert "List the existing PostgreSQL clusters" in plays[1]
    assert "Use the cluster found" in plays[1]


def test_dpkg_installed_keeps_only_installed_packages() -> None:
    lines = [
        "installed timescaledb-2-postgresql-15 2.28.3~debian12",
        "config-files postgresql-14 14.19-1",
        "half-installed postgresql-17 17.6-1",
        "",
        "not-installed postgresql-16 ",
        "installed postgresql-15 15.14-0+deb12u1",
    ]
    assert th.dpkg_installed(lines) == [
        {"name": "timescaledb-2-postgresql-15", "version": "2.28.3~debian12"},
        {"name": "postgresql-15", "version": "15.14-0+deb12u1"},
    ]


def test_dpkg_installed_rejects_a_line_it_does_not_understand() -> None:
    with pytest.raises(th.ParseError, match="dpkg-query"):
        th.dpkg_installed(["installed postgresql-15"])
