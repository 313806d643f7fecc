"""Session-wide pytest settings for the controller test suite."""

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the Molecule scenarios last: the fast controller tests fail first, and the
    suite's closing summary line covers everything."""
    items.sort(key=lambda item: item.get_closest_marker("molecule") is not None)
