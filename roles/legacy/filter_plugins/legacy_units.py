"""Readers of `systemctl show --property=... -- UNIT...` for the legacy role.

Pure Python with no Ansible imports at module level, so the role (through the filters below)
and the unit tests (tests/legacy/test_units.py) run the very same code.

Why `systemctl show` and not `ansible.builtin.service_facts`: the role needs, for a handful
of named units, whether each is loaded at all, its unit-file state and the path of its unit
file (a unit whose file is in /etc/systemd/system cannot be masked: masking writes a link
there). service_facts lists every unit on the host without the file path, and opens systemd
for all of them on every run; one `systemctl show` for the named units is one call.

- ``legacy_systemctl_show``: the output (blocks of Key=Value lines, separated by a blank
  line, one block per unit in the order asked) -> a list of dicts, one per unit.
- ``legacy_units_to_stop``: those dicts -> the loaded units that are enabled or not inactive,
  as {name, enabled, active, mask}.
"""

from __future__ import annotations

from typing import Any


class ParseError(ValueError):
    """Output the reader does not understand: the play stops naming it rather than guess."""


def systemctl_show(text: str) -> list[dict[str, str]]:
    units = []
    for block in text.strip().split("\n\n"):
        if not block.strip():
            continue
        unit = {}
        for line in block.splitlines():
            if "=" not in line:
                raise ParseError(f"unexpected systemctl show line: {line!r}")
            key, value = line.split("=", 1)
            unit[key] = value
        if "Id" not in unit:
            raise ParseError(f"systemctl show block without Id=: {block!r}")
        units.append(unit)
    return units


def loaded(units: list[dict[str, str]]) -> list[dict[str, str]]:
    return [u for u in units if u.get("LoadState") == "loaded"]


def units_to_stop(units: list[dict[str, str]]) -> list[dict[str, Any]]:
    found = []
    for u in loaded(units):
        if u.get("UnitFileState") == "enabled" or u.get("ActiveState", "inactive") != "inactive":
            found.append(
                {
                    "name": u["Id"],
                    "enabled": u.get("UnitFileState") == "enabled",
                    "active": u.get("ActiveState") in ("active", "activating", "reloading"),
                    "mask": not u.get("FragmentPath", "").startswith("/etc/systemd/system/"),
                }
            )
    return found


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "legacy_systemctl_show": systemctl_show,
            "legacy_loaded_units": loaded,
            "legacy_units_to_stop": units_to_stop,
        }
