"""Import a repository file that is not a package module (a role's script, a collector entry
point) by its path: the tests run the very code the roles install."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load(name: str, path: Path) -> ModuleType:
    """The module in `path`, imported under `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader, f"cannot import {path}"
    module = importlib.util.module_from_spec(spec)
    # Registered first: a dataclass in the module looks its own module up while it is defined.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
