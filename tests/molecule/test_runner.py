"""The scenario runner (tests/support/scenarios.py) on a real program standing in for Molecule's
command line: a script that prints Molecule's action lines and exits as Molecule does. What is
proved: a failure while the test host is built (create, prepare) gets one more attempt and its
first log is kept; a failure in the project's own steps is final; a failed run explains itself
with the failing task's message; lanes run side by side and every scenario ends."""

from __future__ import annotations

import stat
from pathlib import Path

from support.scenarios import ScenarioRunner

# Prints what `molecule test -s S` prints for each action and fails in the action named by
# $FAIL_<S> (once, when $ONCE_<S> names a marker file that does not exist yet).
FAKE = """#!/usr/bin/env bash
set -u
s=$3
fail_var=FAIL_$s; once_var=ONCE_$s
fail=${!fail_var:-}; once=${!once_var:-}
if [[ -n $once && -e $once ]]; then fail=""; fi
[[ -n $once ]] && touch "$once"
for action in destroy create prepare converge idempotence verify destroy; do
  echo -e "\\e[36mINFO    \\e[0m $s \\u279c $action: Executing"
  if [[ $action == "$fail" ]]; then
    echo "  TASK [Do the thing]"
    echo '  fatal: [gept-molecule-x]: FAILED! => {"changed": false, "msg": "the mirror said 503"}'
    echo ""
    echo "ERROR    $s \\u279c $action: Executed: Failed"
    exit 2
  fi
  echo "INFO     $s \\u279c $action: Executed: Successful"
done
"""


def runner(tmp_path: Path, scenarios: list[str], lanes: int = 2) -> ScenarioRunner:
    fake = tmp_path / "molecule"
    fake.write_text(FAKE)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    run = ScenarioRunner(scenarios, lanes, timeout_s=60, molecule=str(fake), log_dir=tmp_path / "logs")
    run.start()
    return run


def test_a_failure_while_building_the_host_gets_one_more_attempt(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIL_a", "prepare")
    monkeypatch.setenv("ONCE_a", str(tmp_path / "a-failed-once"))
    outcome = runner(tmp_path, ["a"]).wait("a")
    assert outcome.returncode == 0 and outcome.attempts == 2
    assert outcome.first_failure.startswith("prepare: ")
    assert "the mirror said 503" in outcome.first_failure
    assert (tmp_path / "logs" / "a.attempt1.log").is_file()


def test_a_failure_in_the_projects_steps_is_final_and_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIL_b", "converge")
    outcome = runner(tmp_path, ["b"]).wait("b")
    assert outcome.returncode == 2 and outcome.attempts == 1
    assert outcome.failed_action() == "converge"
    summary = outcome.failure_summary()
    assert "TASK [Do the thing]" in summary and "msg: the mirror said 503" in summary


def test_a_second_failure_while_building_is_final(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIL_c", "create")
    outcome = runner(tmp_path, ["c"]).wait("c")
    assert outcome.returncode == 2 and outcome.attempts == 2


def test_lanes_run_every_scenario(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIL_e", "verify")
    run = runner(tmp_path, ["d", "e", "f"], lanes=2)
    results = {s: run.wait(s).returncode for s in ("d", "e", "f")}
    assert results == {"d": 0, "e": 2, "f": 0}
    assert run.ended >= run.started > 0
