"""Fixtures of the collectors' tests. The code lives in collectors_support.py (a module name of
its own, so it never collides with another area's conftest when the whole suite runs)."""

from collectors_support import gept_db, launch, pg, standin  # noqa: F401  (pytest fixtures)
