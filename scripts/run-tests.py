#!/usr/bin/env python3
"""make test's runner (after venv, testbed and collection): make lint, pytest,
ansible-test sanity and every molecule scenario named on the command line.

A suite is a sequence of steps (a molecule scenario: destroy, dependency, syntax,
converge, which creates and prepares the hosts first, idempotence, verify,
destroy; the last destroy runs whatever failed). TRUNKLINE_TEST_JOBS steps of
different suites run at once (default 2; 1 runs the suites one after another,
output streamed), suites taken longest first. The steps that place real calls
and measure them run alone (exclusive: the pytest files in CALL_TESTS, and in
e2e and egress the verifier's tests marked `calls`, which run first; the rest
of their verifier runs as a step of its own in a lane): on a 2-core machine a
converge beside them starves their services, and the CXML endpoint then,
rightly, answers its fallback when a health probe times out. Light steps
(lint, ansible-test sanity) run at a lower CPU priority beside an exclusive
step, where the calls leave a core mostly idle, and otherwise only when
nothing else is ready. Each suite writes its whole output to
.test-results/logs/SUITE.log; with more than one lane the console gets each
step's start and end, a heartbeat, and the end of the log of every suite that
failed.
Runs them all, then prints each suite's result and duration, and exits 1 if
anything failed.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

TOP = pathlib.Path(__file__).resolve().parent.parent
RESULTS = TOP / ".test-results"
LOGS = RESULTS / "logs"

# Seconds each suite took in a warm run (docs/testing.md): only the order
# they are taken in.
WEIGHT = {
    "pytest-calls": 200, "pytest": 120, "sanity": 50, "lint": 45, "redis": 60, "artifacts": 80,
    "preflight": 220, "default": 400, "cxml": 300, "sip_container": 380, "egress": 450,
    "e2e": 550, "cluster": 600,
}  # fmt: skip
# The scenarios whose verifiers place calls and measure them: their tests
# marked `calls` (molecule/conftest.py) run alone, the others in a lane.
EXCLUSIVE_VERIFY = {"e2e", "egress", "cluster"}
# Below the calls' priority (nice(1)) when a light step runs beside them.
LIGHT_NICE = ["nice", "-n", "15"]
# The pytest files that run real livekit-sip, agents and calls, or time a Redis
# failover (they run alone).
CALL_TESTS = [
    "tests/test_agent_call.py", "tests/test_calls.py", "tests/test_cxml_app.py",
    "tests/test_draining.py", "tests/test_inbound_refusals.py", "tests/test_outbound_call.py",
    "tests/test_smoke.py", "tests/test_redis_sentinel.py",
]  # fmt: skip
HEARTBEAT = 60.0


class Step:
    def __init__(
        self, label: str, argv: list[str], exclusive: bool = False, always: bool = False,
        light: bool = False, env: dict[str, str] | None = None,
    ):  # fmt: skip
        self.label, self.argv, self.exclusive, self.always = label, argv, exclusive, always
        self.light, self.env = light, env or {}


class Suite:
    def __init__(self, name: str, label: str, steps: list[Step], junit: str):
        self.name, self.label, self.steps = name, label, steps
        self.junit = RESULTS / junit
        self.junits = [self.junit]  # every junit file its steps write
        self.log = LOGS / f"{name}.log"
        self.env = {"TRUNKLINE_JUNIT": str(self.junit)}
        self.rc = 0  # the first failed step's status
        self.next = 0  # index of the next step
        self.started = self.ended = 0.0

    def pending(self) -> Step | None:
        """The next step to run: after a failure, only the steps that always run."""
        while self.next < len(self.steps):
            step = self.steps[self.next]
            if not self.rc or step.always:
                return step
            self.next += 1
        return None


def molecule_steps(scenario: str) -> list[Step]:
    run = ["molecule"]
    verify = [Step("verify", [*run, "verify", "-s", scenario])]
    if scenario in EXCLUSIVE_VERIFY:
        calls = RESULTS / f"molecule-{scenario}-calls.xml"
        verify = [
            Step("verify: calls", [*run, "verify", "-s", scenario], exclusive=True,
                 env={"PYTEST_ADDOPTS": "-m calls", "TRUNKLINE_JUNIT": str(calls)}),
            Step("verify: the rest", [*run, "verify", "-s", scenario],
                 env={"PYTEST_ADDOPTS": "-m 'not calls'"}),
        ]  # fmt: skip
    return [
        Step("destroy", [*run, "destroy", "-s", scenario]),
        # destroy prunes the ephemeral directory, where default and e2e install
        # the collection tarball: their syntax check needs it back
        Step("dependency", [*run, "dependency", "-s", scenario]),
        Step("syntax", [*run, "syntax", "-s", scenario]),
        Step("converge", [*run, "converge", "-s", scenario]),
        Step("idempotence", [*run, "idempotence", "-s", scenario]),
        *verify,
        Step("destroy", [*run, "destroy", "-s", scenario], always=True),
    ]


def suites(scenarios: list[str], scenarios_only: bool = False) -> list[Suite]:
    netns = ["scripts/testbed/netns.sh", "pytest"]
    calls = [*netns, *CALL_TESTS, f"--junitxml={RESULTS / 'pytest-calls.xml'}"]
    rest = [*netns, *(f"--ignore={t}" for t in CALL_TESTS), f"--junitxml={RESULTS / 'pytest.xml'}"]
    out = [
        Suite("pytest-calls", "pytest (calls)", [Step("run", calls, exclusive=True)],
              "pytest-calls.xml"),
        Suite("pytest", "pytest (the rest)", [Step("run", rest)], "pytest.xml"),
        Suite("sanity", "ansible-test sanity",
              [Step("run", [*LIGHT_NICE, "scripts/testbed/sanity.sh"], light=True)], "sanity.xml"),
        Suite("lint", "make lint", [Step("run", [*LIGHT_NICE, "make", "-s", "lint"], light=True)],
              "lint.xml"),
    ]  # fmt: skip
    if scenarios_only:
        out = []
    for s in scenarios:
        suite = Suite(s, f"molecule {s}", molecule_steps(s), f"molecule-{s}.xml")
        if s in EXCLUSIVE_VERIFY:
            suite.junits.append(RESULTS / f"molecule-{s}-calls.xml")
        out.append(suite)
    return out


def run_step(suite: Suite, step: Step, stream: bool, t0: float) -> None:
    now = time.monotonic()
    if suite.next == 0:
        suite.started = now
    if not stream:
        alone = " (alone)" if step.exclusive else ""
        print(f"==> test: {suite.label}: {step.label}{alone} (at {now - t0:.0f} s)", flush=True)
    env = {**os.environ, **suite.env, **step.env}
    with open(suite.log, "a", encoding="utf-8", errors="replace") as log:
        log.write(f"==> {suite.label}: {step.label}: {' '.join(step.argv)}\n")
        log.flush()
        proc = subprocess.Popen(
            step.argv, cwd=TOP, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, errors="replace",
        )  # fmt: skip
        for line in proc.stdout:
            log.write(line)
            if stream:
                sys.stdout.write(line)
                sys.stdout.flush()
        rc = proc.wait()
    if rc and not suite.rc:
        suite.rc = rc
    suite.next += 1
    suite.ended = time.monotonic()
    if not stream and (rc or suite.pending() is None):
        verdict = "ok" if not suite.rc else f"FAILED (exit {suite.rc}, at {step.label})"
        print(
            f"<== test: {suite.label} {verdict} in {suite.ended - suite.started:.0f} s", flush=True
        )
    elif stream and suite.pending() is None:
        print(f"<== test: {suite.label} {'ok' if not suite.rc else 'FAILED'}", flush=True)


def run_guarded(suite: Suite, step: Step, t0: float) -> None:
    """run_step in a lane: an error in the runner itself fails the step (and
    is printed) instead of leaving it to be picked again."""
    try:
        run_step(suite, step, False, t0)
    except Exception as exc:  # reported, and the suite fails
        print(f"<== test: {suite.label}: {step.label}: runner error: {exc!r}", flush=True)
        suite.rc = suite.rc or 1
        suite.next += 1
        suite.ended = time.monotonic()


def schedule(todo: list[Suite], jobs: int) -> float:
    """Run every suite's steps, ``jobs`` steps at once; returns the wall time."""
    t0 = time.monotonic()
    order = sorted(todo, key=lambda s: -WEIGHT.get(s.name, 100))
    if jobs == 1:  # one suite after the other, as written
        for suite in order:
            print(f"==> test: {suite.label}", flush=True)
            while (step := suite.pending()) is not None:
                run_step(suite, step, True, t0)
        return time.monotonic() - t0
    running: dict[threading.Thread, tuple[Suite, Step]] = {}
    last_beat = t0
    while True:
        for th in [t for t in running if not t.is_alive()]:
            th.join()
            del running[th]
        busy = {s.name for s, _ in running.values()}
        ready = [(s, st) for s in order if s.name not in busy and (st := s.pending()) is not None]
        if not ready and not running:
            break
        # A step that must run alone waits for the other lanes to end (light
        # steps aside), and nothing but a light step starts beside it; a light
        # step goes beside an exclusive one, or when nothing else is ready;
        # otherwise the longest suite's next step goes first.
        while ready and len(running) < jobs:
            heavy = [st for _, st in running.values() if not st.light]
            alone = any(st.exclusive for st in heavy)
            waiting_alone = next(((s, st) for s, st in ready if st.exclusive), None)
            light = next(((s, st) for s, st in ready if st.light), None)
            if alone or (waiting_alone is not None and heavy):
                pick = light  # beside an exclusive step, or while one waits
            elif waiting_alone is not None:
                pick = waiting_alone
            else:
                pick = next(((s, st) for s, st in ready if not st.light), light)
            if pick is None:
                break
            ready.remove(pick)
            th = threading.Thread(target=run_guarded, args=(*pick, t0), daemon=True)
            running[th] = pick
            th.start()
        now = time.monotonic()
        if running and now - last_beat >= HEARTBEAT:
            last_beat = now
            beat = ", ".join(f"{s.label}: {st.label}" for s, st in running.values())
            left = sum(1 for s in order if s.pending() is not None and s.name not in busy)
            print(f"  ... {now - t0:.0f} s: running {beat}; {left} more suites", flush=True)
        time.sleep(0.5)
    return time.monotonic() - t0


def count(done: list[Suite]) -> tuple[int, int, list[str]]:
    """Test cases passed and failed across the junit files (pytest's and the
    molecule verifiers'); a suite that failed outside its test cases (create,
    converge, idempotence) counts as one failure more. Failed cases are named
    with the first line of their message."""
    passed = failed = 0
    names: list[str] = []
    for suite in done:
        n = 0
        cases = [
            case
            for junit in suite.junits
            if junit.exists()
            for case in ET.parse(junit).iter("testcase")  # noqa: S314 - our own files
        ]
        for case in cases:
            bad = case.find("failure")
            if bad is None:
                bad = case.find("error")
            if bad is not None:
                n += 1
                msg = (bad.get("message") or "").strip().splitlines()
                names.append(
                    f"{suite.name}: {case.get('classname', '')}::{case.get('name', '')}"
                    + (f" - {msg[0][:160]}" if msg else "")
                )
            elif case.find("skipped") is None:
                passed += 1
        if suite.rc != 0 and n == 0:
            n = 1
            log = suite.log.relative_to(TOP)
            names.append(f"{suite.name}: failed outside its test cases (see {log})")
        failed += n
    return passed, failed, names


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nusage: scripts/run-tests.py [--scenarios-only] [SCENARIO ...]")
        print("  make test passes $(SCENARIOS); --scenarios-only: no lint, pytest or sanity")
        return 0
    scenarios_only = "--scenarios-only" in argv
    argv = [a for a in argv if a != "--scenarios-only"]
    jobs = int(os.environ.get("TRUNKLINE_TEST_JOBS", "2") or "2")
    if jobs < 1:
        print("TRUNKLINE_TEST_JOBS must be 1 or more", file=sys.stderr)
        return 2
    for s in argv:
        if not (TOP / "molecule" / s / "molecule.yml").exists():
            print(f"no molecule scenario {s!r} (molecule/{s}/molecule.yml)", file=sys.stderr)
            return 2
    subprocess.run(["rm", "-rf", str(RESULTS)], check=True)
    LOGS.mkdir(parents=True)
    os.environ["PATH"] = f"{TOP / '.venv/bin'}:{os.environ['PATH']}"
    # Every playbook run records its tasks' wall times (scripts/testbed/task-times.py).
    os.environ.update(
        ANSIBLE_CALLBACK_PLUGINS=str(TOP / "scripts/testbed/callbacks"),
        ANSIBLE_CALLBACKS_ENABLED="task_times",
        TRUNKLINE_TASK_TIMES=str(RESULTS / "task-times.jsonl"),
    )
    todo = suites(argv, scenarios_only)
    logs = LOGS.relative_to(TOP)
    print(f"==> test: {len(todo)} suites in {jobs} lane(s); logs in {logs}/", flush=True)
    wall = schedule(list(todo), jobs)
    passed, failed, names = count(todo)
    bad = [s for s in todo if s.rc != 0]
    if jobs > 1:
        for s in bad:
            lines = s.log.read_text(errors="replace").splitlines()
            print(f"\n---- the last 150 lines of {s.log.relative_to(TOP)} ----")
            print("\n".join(lines[-150:]))
    print(f"\nSummary ({wall:.0f} s wall, {jobs} lane(s)):")
    t0 = min(s.started for s in todo)
    for s in sorted(todo, key=lambda s: s.started):
        state = "ok" if s.rc == 0 else "FAILED"
        print(f"  {s.label:<22} {state:<6} {s.ended - s.started:5.0f} s"
              f"   (from {s.started - t0:5.0f} s to {s.ended - t0:5.0f} s)")  # fmt: skip
    if failed:
        print("failed:")
        for n in names:
            print(f"  {n}")
    times = subprocess.run(
        [sys.executable, "scripts/testbed/task-times.py", str(RESULTS / "task-times.jsonl")],
        cwd=TOP, capture_output=True, text=True, check=False,
    )  # fmt: skip
    (RESULTS / "task-times.txt").write_text(times.stdout + times.stderr)
    print(f"Ansible's time per scenario and run: {(RESULTS / 'task-times.txt').relative_to(TOP)}")
    print(f"summary: {passed} passed, {failed} failed")
    return 1 if bad or failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
