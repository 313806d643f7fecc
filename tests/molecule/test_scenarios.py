"""Each Molecule scenario CI runs, as one test: create -> converge -> idempotence (changed=0)
-> verify (Testinfra) -> destroy, containers removed also on failure.

The scenarios run side by side, GEPT_SCENARIO_LANES at a time (default 2), each lane taking
the next scenario in GEPT_SCENARIOS' order when its last one ends (tests/support/scenarios.py):
list the longest first. Select with GEPT_SCENARIOS="live bookworm legacy default adopt" (the
default) or skip them all with `pytest -m "not molecule"`. Molecule's output streams live, each
line prefixed with its scenario, and is kept whole in .cache/molecule-logs/<scenario>.log.
"""

import os
from pathlib import Path

import pytest
from support import scenarios

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = os.environ.get("GEPT_SCENARIOS", "live bookworm legacy default adopt").split()
LANES = int(os.environ.get("GEPT_SCENARIO_LANES", "2"))
# A scenario that hangs is killed and fails rather than eat CI's budget.
TIMEOUT_S = float(os.environ.get("GEPT_SCENARIO_TIMEOUT_MIN", "55")) * 60


@pytest.mark.molecule
@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str, capfd: pytest.CaptureFixture[str]) -> None:
    if not (ROOT / "molecule" / scenario / "molecule.yml").is_file():
        pytest.fail(f"molecule scenario {scenario!r} does not exist")
    present = [s for s in SCENARIOS if (ROOT / "molecule" / s / "molecule.yml").is_file()]
    # pytest's capture is off while this waits, so the lanes' output reaches the terminal live.
    with capfd.disabled():
        outcome = scenarios.runner(present, LANES, TIMEOUT_S).wait(scenario)
    what = f"molecule test -s {scenario}"
    if outcome.timed_out:
        pytest.fail(f"{what} ran over {TIMEOUT_S / 60:g} min and was killed (log: {outcome.log})")
    if outcome.returncode != 0:
        pytest.fail(
            f"{what} exited {outcome.returncode} (log: {outcome.log}); what failed:\n"
            f"{outcome.failure_summary()}"
        )
