"""Run Molecule scenarios side by side: a fixed number of lanes, each taking the next scenario
in the given order when its last one ends.

On two cores a scenario spends much of its time waiting (package scripts, systemd, the real
5-minute windows of the `live` and `legacy` scenarios), so two lanes finish the same scenarios
in far less wall time than one (docs/benchmarks.md, "CI stages"). Every scenario has its own
container, apt archive and Molecule state, so they do not share anything but the machine.

Each scenario's output streams live, every line prefixed with `[scenario]`, and is kept whole
in `.cache/molecule-logs/<scenario>.log`. A scenario that runs past its bound is killed (its
whole process group) and its containers destroyed, so a hang fails rather than eats CI's budget.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*m")
FAILED_ACTION = re.compile(r"\S+ \S+ (\w+): Executed: Failed")
# Actions that only build the test host and its before-state from outside sources (Debian's
# archive, PyPI): a failure there is tried once more. A failure in converge, idempotence or
# verify (the project's own code) is final.
RETRIED_ACTIONS = ("create", "prepare")
ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = ROOT / ".cache" / "molecule-logs"


@dataclass
class Outcome:
    """What one scenario's `molecule test` did."""

    scenario: str
    returncode: int | None = None
    started: float = 0.0
    ended: float = 0.0
    timed_out: bool = False
    attempts: int = 0
    # Why the first attempt failed, when a second one ran (see ScenarioRunner._run).
    first_failure: str = ""
    log: Path = field(default_factory=Path)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def failed_action(self) -> str:
        """The Molecule action (create, prepare, converge...) that failed, from the log."""
        try:
            text = ANSI.sub("", self.log.read_text(errors="replace"))
        except OSError:
            return ""
        found = FAILED_ACTION.findall(text)
        return found[-1] if found else ""

    def failure_summary(self, limit: int = 40) -> str:
        """The failed tasks' names and messages from the log, so a failure explains itself in
        the last lines CI prints (the whole log stays in `log`)."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"(no log: {exc})"
        plain = [ANSI.sub("", line).replace("\u2502", "").strip() for line in lines]
        picked: list[str] = []
        for markers in (("fatal:", "failed:", "FAILED!"), ("ERROR", "CRITICAL", "FAILED ", "Error")):
            shown_to = 0
            for i, line in enumerate(plain):
                if i < shown_to:
                    continue
                if not any(line.startswith(m) or (m == "FAILED!" and m in line) for m in markers):
                    continue
                task = next(
                    (plain[j] for j in range(i, max(i - 40, -1), -1) if plain[j].startswith("TASK [")), ""
                )
                if task and task not in picked:
                    picked.append(task)
                end = next(
                    (j for j in range(i, min(i + 80, len(plain))) if not plain[j]), min(i + 80, len(plain))
                )
                block = " ".join(plain[i:end])
                picked.extend(plain[i : min(end, i + 3)])
                # Ansible's result is one long JSON line wrapped by Molecule: its message and
                # stderr are what explain it.
                for key in ("msg", "stderr"):
                    found = re.search(rf'"{key}": "((?:[^"\\]|\\.)*)"', block)
                    if found and found.group(1):
                        text = found.group(1)
                        # A traceback ends with what went wrong; a message starts with it.
                        picked.append(f"  {key}: " + (text[-600:] if key == "stderr" else text[:600]))
                shown_to = end
            if picked:
                break
        if not picked:
            picked = plain[-limit:]
        return "\n".join(picked[:limit])


class ScenarioRunner:
    """Start `molecule test -s S` for every scenario, `lanes` at a time, in order."""

    def __init__(
        self,
        scenarios: list[str],
        lanes: int,
        timeout_s: float,
        molecule: str | None = None,
        log_dir: Path = LOG_DIR,
    ) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, got {lanes}")
        self.molecule = molecule or shutil.which("molecule") or str(ROOT / ".venv" / "bin" / "molecule")
        self.log_dir = log_dir
        self.scenarios = scenarios
        self.lanes = lanes
        self.timeout_s = timeout_s
        self.outcomes = {s: Outcome(s, log=log_dir / f"{s}.log") for s in scenarios}
        self._next = 0
        self._lock = threading.Lock()
        self._print_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.started = 0.0
        self.ended = 0.0

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        for lane in range(min(self.lanes, len(self.scenarios))):
            thread = threading.Thread(target=self._lane, name=f"molecule-lane-{lane}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wait(self, scenario: str) -> Outcome:
        outcome = self.outcomes[scenario]
        # Bounded: every attempt is killed at its own bound, so this cannot wait longer than
        # all of them (a second attempt included) in one lane.
        outcome.done.wait(timeout=2 * self.timeout_s * len(self.scenarios) + 600)
        return outcome

    def _take(self) -> str | None:
        with self._lock:
            if self._next >= len(self.scenarios):
                return None
            scenario = self.scenarios[self._next]
            self._next += 1
            return scenario

    def _lane(self) -> None:
        while (scenario := self._take()) is not None:
            outcome = self.outcomes[scenario]
            try:
                self._run(outcome)
            finally:
                outcome.done.set()
                if all(o.done.is_set() for o in self.outcomes.values()):
                    self.ended = time.monotonic()

    def _say(self, scenario: str, line: str) -> None:
        with self._print_lock:
            sys.__stdout__.write(f"[{scenario}] {line}")
            sys.__stdout__.flush()

    def _run(self, outcome: Outcome) -> None:
        scenario = outcome.scenario
        outcome.started = time.monotonic()
        while True:
            outcome.attempts += 1
            self._attempt(outcome)
            action = outcome.failed_action() if outcome.returncode else ""
            if (
                outcome.returncode == 0
                or outcome.timed_out
                or outcome.attempts > 1
                or action not in RETRIED_ACTIONS
            ):
                break
            outcome.first_failure = f"{action}: " + outcome.failure_summary(limit=12)
            kept = outcome.log.with_name(f"{scenario}.attempt1.log")
            outcome.log.replace(kept)
            self._say(scenario, f"!!! {action} failed (log: {kept}); once more, from a new host\n")
        outcome.ended = time.monotonic()
        minutes = outcome.seconds / 60
        tries = f" ({outcome.attempts} attempts)" if outcome.attempts > 1 else ""
        self._say(scenario, f"=== {scenario}: exit {outcome.returncode} after {minutes:.1f} min{tries} ===\n")

    def _attempt(self, outcome: Outcome) -> None:
        scenario = outcome.scenario
        molecule = self.molecule
        self._say(scenario, f"=== molecule test -s {scenario} (log: {outcome.log}) ===\n")
        with outcome.log.open("w") as log:
            proc = subprocess.Popen(
                [molecule, "test", "-s", scenario],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                start_new_session=True,
            )

            def kill() -> None:
                outcome.timed_out = True
                self._say(scenario, f"!!! over {self.timeout_s / 60:g} min: killing it\n")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

            timer = threading.Timer(self.timeout_s, kill)
            timer.start()
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    log.write(line)
                    self._say(scenario, line)
                outcome.returncode = proc.wait()
            finally:
                timer.cancel()
        if outcome.timed_out:
            # Molecule's own destroy never ran: remove the scenario's containers (bounded).
            subprocess.run(
                [molecule, "destroy", "-s", scenario],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=300,
                check=False,
            )


_runner: ScenarioRunner | None = None


def runner(scenarios: list[str], lanes: int, timeout_s: float) -> ScenarioRunner:
    """The session's one runner, started on first use."""
    global _runner
    if _runner is None:
        _runner = ScenarioRunner(scenarios, lanes, timeout_s)
        _runner.start()
    return _runner


def current() -> ScenarioRunner | None:
    return _runner
