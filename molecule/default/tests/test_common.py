"""The common role's effects on the converged host."""

from conftest import assert_running


def test_timezone_is_utc(host):
    assert host.file("/etc/localtime").linked_to.endswith("/UTC")
    assert host.run("date +%Z").stdout.strip() == "UTC"


TIME_DAEMONS = ("chrony", "ntpsec", "systemd-timesyncd")


def test_time_sync_unit_enabled(host):
    # One time daemon (they conflict): the one the host had, else systemd-timesyncd.
    installed = [name for name in TIME_DAEMONS if host.package(name).is_installed]
    assert len(installed) == 1, f"expected one time daemon, found {installed}"
    # A scenario whose host had a time daemon before GePT (bookworm: chrony) says so here.
    before = host.file("/var/lib/gept-test-preinstalled-time-daemon")
    if before.exists:
        assert installed == [before.content_string.strip()], "the host's own time daemon was replaced"
    svc = host.service(installed[0])
    assert svc.is_enabled
    # In a container the kernel clock is the host's; timesyncd's ConditionVirtualization
    # may keep it inactive. On a VM or metal host it must run.
    virt = host.run("systemd-detect-virt --container").stdout.strip()
    if virt in ("", "none"):
        assert_running(host, installed[0])


def test_gept_group_and_directories(host):
    assert host.group("gept").exists
    expected = {
        "/opt/gept": ("root", "gept", 0o755),
        "/etc/gept": ("root", "gept", 0o750),
        "/var/lib/gept": ("root", "gept", 0o750),
        "/var/log/gept": ("root", "gept", 0o770),
    }
    for path, (owner, group, mode) in expected.items():
        f = host.file(path)
        assert f.is_directory, path
        assert (f.user, f.group, f.mode) == (owner, group, mode), path


def test_journald_limits(host):
    conf = host.file("/etc/systemd/journald.conf.d/gept.conf")
    assert conf.contains("^SystemMaxUse=")
    out = host.run("systemd-analyze cat-config systemd/journald.conf")
    assert "SystemMaxUse=" in out.stdout


def test_systemd_is_pid1_and_healthy(host):
    assert host.run("cat /proc/1/comm").stdout.strip() == "systemd"
    state = host.run("systemctl is-system-running").stdout.strip()
    if state not in ("running",):
        failed = host.run("systemctl --failed --no-legend --plain").stdout
        raise AssertionError(f"system state {state}; failed units:\n{failed}")
