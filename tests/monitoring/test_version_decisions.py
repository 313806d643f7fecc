"""What the roles decide from installed package versions, for every release the preflight
accepts (Ubuntu 22.04 and 24.04 cannot run here, so their decisions are proved here, by the
roles' own filter code, with the versions those releases ship)."""

from __future__ import annotations

import sys

import pytest
from monitoring_lib import REPO

sys.path.insert(0, str(REPO / "roles" / "alertmanager" / "filter_plugins"))
from alertmanager_features import alertmanager_features, upstream_version  # noqa: E402

# prometheus-alertmanager as each release ships it.
ALERTMANAGER = {
    "ubuntu-22.04": "0.23.0-4ubuntu0.2",
    "debian-12": "0.25.0-1+b4",
    "ubuntu-24.04": "0.26.0+ds-1ubuntu0.1",
    "debian-13": "0.28.1+ds-1",
}


@pytest.mark.parametrize(
    ("release", "discord", "discord_file", "webhook_file", "smtp_file"),
    [
        ("ubuntu-22.04", False, False, False, False),
        ("debian-12", True, False, False, True),
        ("ubuntu-24.04", True, False, True, True),
        ("debian-13", True, True, True, True),
    ],
)
def test_alertmanager_features_per_release(release, discord, discord_file, webhook_file, smtp_file):
    features = alertmanager_features(ALERTMANAGER[release])
    assert features["discord"] is discord
    assert features["discord_webhook_url_file"] is discord_file
    assert features["webhook_url_file"] is webhook_file
    assert features["smtp_auth_password_file"] is smtp_file
    assert features["slack_api_url_file"] is True


def test_epoch_and_revision_are_ignored():
    assert upstream_version("1:0.28.1+ds-1") == (0, 28)
    assert upstream_version("0.25.0-1+b4") == (0, 25)


def test_garbage_version_is_an_error():
    with pytest.raises(ValueError, match="not a package version"):
        upstream_version("(none)")


sys.path.insert(0, str(REPO / "roles" / "pgbouncer_exporter" / "filter_plugins"))
from pgbouncer_exporter_flavour import pgbouncer_exporter_flavour  # noqa: E402

# prometheus-pgbouncer-exporter as each release ships it: the Python exporter 1.7 up to
# Debian 12 / Ubuntu 24.04, the Go exporter (epoch 1) from Debian 13.
PGBOUNCER_EXPORTER = {
    "ubuntu-22.04": ("1.7-1", "python"),
    "debian-12": ("1.7-2.1", "python"),
    "ubuntu-24.04": ("1.7-2.1", "python"),
    "debian-13": ("1:0.10.2-2", "go"),
}


@pytest.mark.parametrize("release", sorted(PGBOUNCER_EXPORTER))
def test_pgbouncer_exporter_flavour_per_release(release):
    version, flavour = PGBOUNCER_EXPORTER[release]
    assert pgbouncer_exporter_flavour(version) == flavour


def test_pgbouncer_exporter_flavour_rejects_garbage():
    with pytest.raises(ValueError, match="not a package version"):
        pgbouncer_exporter_flavour("(none)")
