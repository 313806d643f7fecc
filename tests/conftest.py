"""Session-wide pytest settings for the controller test suite."""

import os
import time
from pathlib import Path

import pytest
from support import scenarios
from support.monitoring import render_rules_and_dashboards

# Stage timings (printed when `make test` sets GEPT_STAGES_FILE): the stages before pytest
# (setup, builds, lint) are recorded there by scripts/timed.sh; the session adds its own
# (controller tests, the Molecule scenarios' wall time and each scenario's own time).
STAGES_FILE = os.environ.get("GEPT_STAGES_FILE", "")
_clock = {"session": 0.0, "controller_end": 0.0}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the Molecule scenarios last: the fast controller tests fail first, and the
    suite's closing summary line covers everything."""
    items.sort(key=lambda item: item.get_closest_marker("molecule") is not None)


@pytest.fixture(scope="session")
def monitoring_rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(rules directory, dashboards directory): every alert rule file and dashboard as the
    prometheus and grafana roles deploy them (rendered from the repository's catalogue)."""
    return render_rules_and_dashboards(tmp_path_factory.mktemp("monitoring"))


def pytest_sessionstart(session: pytest.Session) -> None:
    _clock["session"] = time.monotonic()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    if item.get_closest_marker("molecule") is not None and not _clock["controller_end"]:
        _clock["controller_end"] = time.monotonic()
    return (yield)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """One table of every stage's time, printed just before pytest's summary line."""
    if not STAGES_FILE:
        return
    end = time.monotonic()
    rows: list[tuple[str, float, str]] = []
    stages_file = Path(STAGES_FILE)
    if stages_file.is_file():
        for line in stages_file.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[1].isdigit():
                rows.append((parts[0], float(parts[1]), parts[2]))
    controller_end = _clock["controller_end"] or end
    rows.append(("controller tests", controller_end - _clock["session"], ""))
    # The scenarios run side by side: each one's own time is shown, and the lanes' wall time
    # is what counts towards the total.
    lanes = scenarios.current()
    parallel: list[tuple[str, float, str]] = []
    if lanes is not None:
        for outcome in lanes.outcomes.values():
            if outcome.done.is_set() and outcome.started:
                status = "timed out" if outcome.timed_out else ("ok" if outcome.returncode == 0 else "failed")
                if outcome.attempts > 1:
                    first = outcome.first_failure[:120]
                    status += f" (attempt {outcome.attempts}; the first failed in {first})"
                parallel.append((f"  molecule {outcome.scenario}", outcome.seconds, status))
        wall = (lanes.ended or end) - lanes.started
        rows.append((f"molecule scenarios ({lanes.lanes} lanes, wall time)", wall, ""))
    terminalreporter.section("stage timings")
    for name, secs, status in rows + parallel:
        terminalreporter.write_line(f"{name:<44} {secs / 60:6.1f} min {status}")
    terminalreporter.write_line(f"{'total':<44} {sum(r[1] for r in rows) / 60:6.1f} min")
