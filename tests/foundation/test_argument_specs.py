"""Each role documents its variables once in `defaults/main.yml` (value + comment) and once in
`meta/argument_specs.yml` (type + description, which `ansible-doc` and the role's argument
validation read). A spec's `default:` restates the role default, so the two must not drift:
these tests fail on the first disagreement, and on a role default no entry point documents.
"""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.parent.parent for p in (ROOT / "roles").glob("*/meta/argument_specs.yml"))


def _load(path: Path) -> dict:
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _spec_options(role: Path) -> dict[str, dict]:
    """Every option of every entry point, by name (an option may appear in several)."""
    options: dict[str, dict] = {}
    for entry in _load(role / "meta/argument_specs.yml")["argument_specs"].values():
        for name, option in (entry.get("options") or {}).items():
            options.setdefault(name, option)
    return options


def test_every_role_has_argument_specs() -> None:
    with_defaults = {p.parent.parent.name for p in (ROOT / "roles").glob("*/defaults/main.yml")}
    assert with_defaults <= {r.name for r in ROLES}, "roles with defaults but no meta/argument_specs.yml"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_spec_defaults_equal_role_defaults(role: Path) -> None:
    defaults = _load(role / "defaults/main.yml")
    drift = {
        name: {"argument_specs": option["default"], "defaults/main.yml": defaults.get(name, "<absent>")}
        for name, option in _spec_options(role).items()
        if "default" in option and defaults.get(name, object()) != option["default"]
    }
    assert not drift, f"{role.name}: spec default differs from defaults/main.yml: {drift}"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_every_role_default_is_documented(role: Path) -> None:
    undocumented = sorted(set(_load(role / "defaults/main.yml")) - set(_spec_options(role)))
    assert not undocumented, f"{role.name}: defaults missing from meta/argument_specs.yml: {undocumented}"
