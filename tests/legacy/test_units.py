"""The legacy role's reader of `systemctl show` (roles/legacy/filter_plugins/legacy_units.py),
on output captured from systemd 257 in the trixie test host (`systemctl show
--property=Id,LoadState,UnitFileState,ActiveState,FragmentPath -- UNIT...`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "roles" / "legacy" / "filter_plugins"))
import legacy_units as lu  # noqa: E402

SHOWN = """Id=cron.service
LoadState=loaded
ActiveState=active
FragmentPath=/usr/lib/systemd/system/cron.service
UnitFileState=enabled

Id=gept-collector-fivemin.service
LoadState=loaded
ActiveState=active
FragmentPath=/etc/systemd/system/gept-collector-fivemin.service
UnitFileState=enabled

Id=nothing-here.service
LoadState=not-found
ActiveState=inactive
FragmentPath=
UnitFileState=

Id=osrs-old.service
LoadState=loaded
ActiveState=inactive
FragmentPath=/usr/lib/systemd/system/osrs-old.service
UnitFileState=disabled

Id=osrs-starting.service
LoadState=loaded
ActiveState=activating
FragmentPath=/usr/lib/systemd/system/osrs-starting.service
UnitFileState=disabled
"""


def test_every_block_in_order():
    units = lu.systemctl_show(SHOWN)
    assert [u["Id"] for u in units] == [
        "cron.service",
        "gept-collector-fivemin.service",
        "nothing-here.service",
        "osrs-old.service",
        "osrs-starting.service",
    ]
    assert units[2] == {
        "Id": "nothing-here.service",
        "LoadState": "not-found",
        "ActiveState": "inactive",
        "FragmentPath": "",
        "UnitFileState": "",
    }


def test_loaded_leaves_out_units_that_do_not_exist():
    assert "nothing-here.service" not in [u["Id"] for u in lu.loaded(lu.systemctl_show(SHOWN))]


def test_units_to_stop_enabled_or_running_and_masked_only_outside_etc():
    assert lu.units_to_stop(lu.systemctl_show(SHOWN)) == [
        {"name": "cron.service", "enabled": True, "active": True, "mask": True},
        # Its file is in /etc/systemd/system: masking would have to replace it, so it is not masked.
        {"name": "gept-collector-fivemin.service", "enabled": True, "active": True, "mask": False},
        {"name": "osrs-starting.service", "enabled": False, "active": True, "mask": True},
    ]


def test_empty_output_is_no_units():
    assert lu.systemctl_show("") == []


@pytest.mark.parametrize("bad", ["Id=a.service\nthis is not systemctl\n", "LoadState=loaded\n"])
def test_output_it_does_not_understand_stops_the_play(bad):
    with pytest.raises(lu.ParseError):
        lu.systemctl_show(bad)
