"""What the installed Alertmanager can do, decided from its Debian package version.

The releases this project accepts ship different Alertmanagers (Ubuntu 22.04: 0.23, Debian 12:
0.25, Ubuntu 24.04: 0.26, Debian 13: 0.28), and the receivers' secret fields arrived one by
one. Pure Python, so the role (filter ``alertmanager_features``) and the unit tests
(tests/monitoring/test_version_decisions.py) run the same code.

- ``discord``: ``discord_configs`` at all (0.25)
- ``discord_webhook_url_file``: Discord's ``webhook_url_file`` (0.28; accepted but broken before)
- ``webhook_url_file``: ``webhook_configs[].url_file`` (0.26)
- ``slack_api_url_file``: ``slack_configs[].api_url_file`` (0.22)
- ``smtp_auth_password_file``: ``global.smtp_auth_password_file`` (0.25)

Where a ``*_file`` field is missing the role writes the secret into alertmanager.yml itself,
which is then 0640 root:prometheus like the secret files.
"""

from __future__ import annotations

import re

FEATURES: dict[str, tuple[int, int]] = {
    "discord": (0, 25),
    "discord_webhook_url_file": (0, 28),
    "webhook_url_file": (0, 26),
    "slack_api_url_file": (0, 22),
    "smtp_auth_password_file": (0, 25),
}


def upstream_version(package_version: str) -> tuple[int, int]:
    """(major, minor) of a Debian package version: '0.28.1+ds-1' -> (0, 28)."""
    upstream = package_version.strip().split(":", 1)[-1]
    match = re.match(r"(\d+)\.(\d+)", upstream)
    if not match:
        raise ValueError(f"not a package version: {package_version!r}")
    return int(match.group(1)), int(match.group(2))


def alertmanager_features(package_version: str) -> dict[str, bool]:
    version = upstream_version(package_version)
    return {name: version >= since for name, since in FEATURES.items()}


class FilterModule:
    def filters(self):
        return {"alertmanager_features": alertmanager_features}
