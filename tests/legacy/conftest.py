"""The legacy/migration tests' throwaway PostgreSQL cluster (tests/support/pg.py), session-wide."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.pg import PgCluster

PASSWORD = "legacy-test-password"  # noqa: S105  (throwaway cluster)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    cluster = PgCluster(PASSWORD, prefix="gept-legacy-pg-")
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()
