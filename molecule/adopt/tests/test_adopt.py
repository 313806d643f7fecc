"""A host that ran PostgreSQL 15 + TimescaleDB before GePT (prepare.yml): the role adopted
that cluster instead of installing a second one, kept the owner's apt entries, clients,
listen addresses and preloaded library, and stops, naming the conflict, where it cannot
proceed safely (side_effect.yml)."""

import json

import pytest

STATE = "/var/lib/gept-test-adopt"


def psql(host, sql: str, db: str = "postgres") -> str:
    out = host.run(f'runuser -u postgres -- psql -XAt -d {db} -c "{sql}"')
    assert out.rc == 0, out.stderr
    return out.stdout.strip()


def test_one_cluster_still_15_on_5432(host):
    out = host.check_output("pg_lsclusters --no-header")
    rows = [line.split() for line in out.splitlines() if line.strip()]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [("15", "main", "5432", "online")], out
    assert not host.file("/etc/postgresql/17").exists
    assert not host.file("/var/lib/postgresql/17").exists


def test_later_plays_see_the_adopted_cluster(host):
    seen = json.loads(host.file(f"{STATE}/effective.json").content_string)
    assert seen == {
        "version": 15,
        "cluster": "main",
        "data_dir": "/var/lib/postgresql/15/main",
        "conf_dir": "/etc/postgresql/15/main",
        "unit": "postgresql@15-main.service",
    }
    saved = json.loads(host.file("/etc/ansible/facts.d/gept_postgresql.fact").content_string)
    assert saved == {"version": "15", "cluster": "main", "origin": "adopted"}


def test_role_config_went_to_the_adopted_cluster(host):
    assert host.file("/etc/postgresql/15/main/conf.d/40-gept-base.conf").exists
    files = psql(host, "SELECT DISTINCT sourcefile FROM pg_file_settings")
    assert "/etc/postgresql/15/main/conf.d/40-gept-base.conf" in files


def test_package_installed_beside_the_cluster_without_a_new_one(host):
    """postgresql-15-hypopg was installed by the role while 15/main existed; createcluster.conf
    (switched for the install) is back byte for byte (next test), no cluster was added."""
    assert host.package("postgresql-15-hypopg").is_installed
    conf = host.file("/etc/postgresql-common/createcluster.conf")
    assert "create_main_cluster = false" not in conf.content_string
    assert (conf.mode, conf.user, conf.group) == (0o644, "root", "root")


def test_owner_files_and_apt_entries_unchanged(host):
    out = host.run(f"sha256sum --check {STATE}/before.sha256")
    assert out.rc == 0, out.stdout + out.stderr


def test_one_entry_per_uri_and_apt_update_clean(host):
    names = host.check_output("ls /etc/apt/sources.list.d").split()
    assert "timescaledb.sources" not in names and "pgdg.sources" not in names, names
    out = host.run("apt-get update 2>&1")
    assert out.rc == 0, out.stdout
    bad = [line for line in out.stdout.splitlines() if line.startswith(("W:", "E:", "Err:"))]
    assert bad == [], out.stdout


def test_timescaledb_from_the_owners_entry(host):
    pkg = host.package("timescaledb-2-postgresql-15")
    assert pkg.is_installed and pkg.version.startswith("2.28.3")
    assert psql(host, "SHOW timescaledb.license", db="osrs_data") == "timescale"


def test_owner_hba_lines_kept_below_the_roles_block(host):
    hba = host.file("/etc/postgresql/15/main/pg_hba.conf").content_string.splitlines()
    begin = next(i for i, line in enumerate(hba) if line.startswith("# BEGIN GePT logins"))
    end = next(i for i, line in enumerate(hba) if line.startswith("# END GePT logins"))
    assert begin == 0
    block = [line for line in hba[begin + 1 : end] if line and not line.startswith("#")]
    # The block names the role's logins only: no line for all users.
    assert all(
        line.split()[0] == "local" and line.split()[2] == "postgres" or "gept_" in line for line in block
    )
    rest = [line for line in hba[end + 1 :] if line.strip() and not line.startswith("#")]
    owner = host.file(f"{STATE}/hba-owner-lines").content_string.splitlines()
    assert rest == owner
    assert psql(host, "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL") == "0"


def test_owner_listen_address_and_library_kept(host):
    """The values the files now give (in effect at the next restart) keep the owner's."""
    applied = dict(
        line.split("|", 1)
        for line in psql(
            host,
            # The last entry per name wins (applied is false while a restart is pending).
            "SELECT DISTINCT ON (name) name, setting FROM pg_file_settings WHERE name IN "
            "('listen_addresses', 'shared_preload_libraries') ORDER BY name, seqno DESC",
        ).splitlines()
    )
    listen = applied["listen_addresses"].split(",")
    assert "10.213.7.1" in listen and "127.0.0.1" in listen, listen
    preload = applied["shared_preload_libraries"].split(",")
    assert preload[0] == "timescaledb" and "pg_stat_statements" in preload, preload
    # Running as before (not restarted): the owner's bridge address is still bound.
    assert "10.213.7.1" in psql(host, "SHOW listen_addresses")


@pytest.mark.parametrize("address", ["10.213.7.1", "127.0.0.1"])
def test_owner_client_still_connects(host, address):
    """The ML login over the bridge (scram line) and locally (md5 line, md5-stored password)."""
    out = host.run(
        f"PGPASSWORD=owner-secret psql -XAt -h {address} -U osrs_user -d osrs_data -c 'SELECT current_user'"
    )
    assert out.rc == 0 and out.stdout.strip() == "osrs_user", out.stderr


def test_adopted_cluster_was_not_restarted(host):
    before = host.file(f"{STATE}/start-time").content_string.strip()
    assert psql(host, "SELECT pg_postmaster_start_time()") == before


def test_refusals_name_the_conflict_and_the_variable(host):
    msgs = json.loads(host.file(f"{STATE}/refusals.json").content_string)
    second = msgs["second_cluster"]
    assert second.startswith("Not changing this host"), second
    assert "15/postinst (port 5433, online" in second and "pg_dropcluster --stop 15 postinst" in second
    adopt = msgs["adoption_off"]
    assert "15/main" in adopt and "timescaledb_adopt_running_cluster" in adopt and "17/main" in adopt


def test_after_the_owners_restart_every_client_still_connects(host):
    """Last: the restart the run left to the owner loads the merged settings, and the owner's
    login still connects over the bridge and locally."""
    host.run_expect([0], "systemctl restart postgresql@15-main")
    listen = psql(host, "SHOW listen_addresses").split(",")
    assert {"10.213.7.1", "127.0.0.1"} <= set(listen), listen
    assert "pg_stat_statements" in psql(host, "SHOW shared_preload_libraries")
    assert psql(host, "SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"
    for address in ("10.213.7.1", "127.0.0.1"):
        out = host.run(
            f"PGPASSWORD=owner-secret psql -XAt -h {address} -U osrs_user -d osrs_data -c 'SELECT 1'"
        )
        assert out.rc == 0, out.stderr
