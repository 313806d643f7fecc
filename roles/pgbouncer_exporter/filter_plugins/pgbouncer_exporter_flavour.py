"""Which program a `prometheus-pgbouncer-exporter` package version is.

Two different exporters share the Debian/Ubuntu package name:

- ``go``: prometheus-community/pgbouncer_exporter (Debian 13: ``1:0.10.2-2``): flags
  ``--web.listen-address`` and ``--pgBouncer.connectionString`` (the env file), ``pgbouncer_up``.
- ``python``: the 2016 Python exporter 1.7 (Debian 12, Ubuntu 22.04/24.04: ``1.7-*``): no
  EnvironmentFile, listens on 0.0.0.0:9127, runs as ``postgres``, reads ``SHOW STATS`` columns
  PgBouncer dropped in 1.8, and has no ``pgbouncer_up``.

The role configures the Go exporter and installs it where the release packages the Python one.
Pure Python: the role (filter) and tests/monitoring/test_version_decisions.py share it.
"""

from __future__ import annotations

import re


def pgbouncer_exporter_flavour(package_version: str) -> str:
    match = re.fullmatch(r"(?:(\d+):)?(\d+)\.[^\s]*", package_version.strip())
    if not match:
        raise ValueError(f"not a package version: {package_version!r}")
    epoch, major = int(match.group(1) or 0), int(match.group(2))
    # Debian gave the Go exporter epoch 1 when it replaced the Python 1.7 (0.x < 1.7).
    return "go" if epoch >= 1 or major == 0 else "python"


class FilterModule:
    def filters(self):
        return {"pgbouncer_exporter_flavour": pgbouncer_exporter_flavour}
