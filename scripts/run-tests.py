#!/usr/bin/env python3
"""make test's runner (after venv, testbed, lint and collection): pytest,
ansible-test sanity and every molecule scenario named on the command line.

The suites run in TRUNKLINE_TEST_JOBS lanes at once (default 2; 1 runs them one
after another, output streamed). A suite is taken longest first from the
queue; two suites that place real calls and measure their audio (pytest, and
the scenarios in MEDIA) never run at the same time, so a call's timing is not
at the mercy of another call's CPU. Each suite writes its whole output to
.test-results/logs/SUITE.log; with more than one lane the console gets its
start, end and a heartbeat, and the end of the log of every suite that failed.
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

# Seconds each suite took in the last measured warm run (docs/testing.md):
# only the order they are taken in, longest first.
WEIGHT = {
    "pytest": 300, "sanity": 30, "redis": 50, "artifacts": 80, "preflight": 200,
    "default": 300, "cxml": 220, "sip_container": 260, "egress": 330, "e2e": 420,
}  # fmt: skip
# Suites that place calls and measure them.
MEDIA = {"pytest", "e2e", "egress"}
HEARTBEAT = 60.0


class Suite:
    def __init__(self, name: str, label: str, argv: list[str], env: dict[str, str] | None = None):
        self.name, self.label, self.argv, self.env = name, label, argv, env or {}
        prefix = "" if name in ("pytest", "sanity") else "molecule-"
        self.junit = RESULTS / f"{prefix}{name}.xml"
        self.log = LOGS / f"{name}.log"
        self.rc: int | None = None
        self.started = self.ended = 0.0


def suites(scenarios: list[str]) -> list[Suite]:
    out = [
        Suite("pytest", "pytest",
              ["scripts/testbed/netns.sh", "pytest", f"--junitxml={RESULTS / 'pytest.xml'}"]),
        Suite("sanity", "ansible-test sanity", ["scripts/testbed/sanity.sh"]),
    ]  # fmt: skip
    for s in scenarios:
        out.append(Suite(s, f"molecule {s}", ["molecule", "test", "-s", s]))
        out[-1].env["TRUNKLINE_JUNIT"] = str(out[-1].junit)
    return out


def run_suite(suite: Suite, stream: bool, t0: float) -> None:
    suite.started = time.monotonic()
    print(f"==> test: {suite.label} (at {suite.started - t0:.0f} s)", flush=True)
    env = dict(os.environ, **suite.env)
    with open(suite.log, "w", encoding="utf-8", errors="replace") as log:
        proc = subprocess.Popen(
            suite.argv, cwd=TOP, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, errors="replace",
        )  # fmt: skip
        for line in proc.stdout:
            log.write(line)
            if stream:
                sys.stdout.write(line)
                sys.stdout.flush()
        suite.rc = proc.wait()
    suite.ended = time.monotonic()
    verdict = "ok" if suite.rc == 0 else f"FAILED (exit {suite.rc})"
    print(f"<== test: {suite.label} {verdict} in {suite.ended - suite.started:.0f} s", flush=True)


def schedule(todo: list[Suite], jobs: int) -> float:
    """Run every suite in ``jobs`` lanes; returns the wall time."""
    t0 = time.monotonic()
    todo = sorted(todo, key=lambda s: -WEIGHT.get(s.name, 100))
    running: dict[threading.Thread, Suite] = {}
    stream = jobs == 1
    last_beat = t0
    while todo or running:
        for th in [t for t in running if not t.is_alive()]:
            th.join()
            del running[th]
        media_busy = any(s.name in MEDIA for s in running.values())
        while todo and len(running) < jobs:
            pick = next((s for s in todo if not (media_busy and s.name in MEDIA)), None)
            if pick is None:
                break
            todo.remove(pick)
            th = threading.Thread(target=run_suite, args=(pick, stream, t0), daemon=True)
            running[th] = pick
            th.start()
            media_busy = media_busy or pick.name in MEDIA
        now = time.monotonic()
        if not stream and running and now - last_beat >= HEARTBEAT:
            last_beat = now
            busy = ", ".join(f"{s.label} {now - s.started:.0f} s" for s in running.values())
            print(f"  ... {now - t0:.0f} s: running {busy}; {len(todo)} waiting", flush=True)
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
        if suite.junit.exists():
            for case in ET.parse(suite.junit).iter("testcase"):  # noqa: S314 - our own files
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
        print("\nusage: scripts/run-tests.py [SCENARIO ...]   (make test passes $(SCENARIOS))")
        return 0
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
    todo = suites(argv)
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
