"""Each Molecule scenario CI runs, as one test: create -> converge -> idempotence (changed=0)
-> verify (Testinfra) -> destroy, containers removed also on failure.

Select with GEPT_SCENARIOS="default legacy bookworm adopt live" (the default) or skip them all with
`pytest -m "not molecule"`. Molecule's own output streams live so a long run shows progress.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = os.environ.get("GEPT_SCENARIOS", "default legacy bookworm adopt live").split()


@pytest.mark.molecule
@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str, capfd: pytest.CaptureFixture[str]) -> None:
    if not (ROOT / "molecule" / scenario / "molecule.yml").is_file():
        pytest.fail(f"molecule scenario {scenario!r} does not exist")
    molecule = shutil.which("molecule") or str(ROOT / ".venv" / "bin" / "molecule")
    with capfd.disabled():
        print(f"\n=== molecule test -s {scenario} ===", flush=True)
        # Bounded: a scenario that hangs is killed and fails rather than eat CI's budget.
        result = subprocess.run([molecule, "test", "-s", scenario], cwd=ROOT, timeout=40 * 60, check=False)
    assert result.returncode == 0, f"molecule test -s {scenario} exited {result.returncode}"
