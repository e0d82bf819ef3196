#!/usr/bin/env python3
"""Where the Ansible time of a test run went, per molecule scenario.

Reads the JSON lines the test bed's callback (scripts/testbed/callbacks/
task_times.py) writes during `make test` (.test-results/task-times.jsonl) and
prints, for each scenario, the wall time of each playbook run (create, prepare,
converge, idempotence, the verifiers' runs, --check --diff, destroy), its task
count, and what the tasks spent it on: fact gathering, apt, pip, the Docker API
(molecule's create and destroy), waits (wait_for, uri, async_status) and the
rest. A task on several hosts counts once, at its slowest host.

usage: scripts/testbed/task-times.py [FILE] [--json]
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

CATEGORIES = ("facts", "apt", "pip", "docker", "waits", "other")


def category(action: str) -> str:
    short = action.rsplit(".", 1)[-1]
    if action == "gather_facts" or short == "setup":
        return "facts"
    if short in ("apt", "pip"):
        return short
    if action.startswith("community.docker."):
        return "docker"
    if short in ("wait_for", "uri", "async_status", "pause"):
        return "waits"
    return "other"


def summarise(lines: list[dict]) -> list[dict]:
    runs: dict[str, list[dict]] = collections.OrderedDict()
    for rec in lines:
        runs.setdefault(rec["run"], []).append(rec)
    converges: collections.Counter = collections.Counter()
    out = []
    for recs in runs.values():
        start = next((r for r in recs if r["event"] == "playbook"), None)
        if start is None:
            continue
        end = next((r for r in reversed(recs) if r["event"] == "end"), recs[-1])
        scenario = start.get("scenario") or "-"
        playbook, parent = start["playbook"], start.get("parent", "")
        if start.get("check"):
            phase = f"{playbook} --check"
        elif parent.startswith("molecule") and playbook == "converge.yml":
            converges[scenario] += 1
            phase = "converge" if converges[scenario] == 1 else "idempotence"
        elif parent.startswith("molecule"):
            phase = playbook.removesuffix(".yml")
        else:
            phase = f"verifier: {playbook}"
        slowest: dict[str, tuple[float, str]] = {}
        for r in recs:
            if r["event"] == "task":
                key = r.get("uuid") or f"{r['name']}@{r['t'] - r['dur']:.0f}"
                d = slowest.get(key, (0.0, ""))[0]
                slowest[key] = (max(d, r["dur"]), category(r["action"]))
        spent = dict.fromkeys(CATEGORIES, 0.0)
        for d, c in slowest.values():
            spent[c] += d
        out.append({
            "scenario": scenario, "phase": phase, "wall_s": round(end["t"] - start["t"], 1),
            "tasks": len(slowest), **{k: round(v, 1) for k, v in spent.items()},
        })  # fmt: skip
    return out


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return 0
    as_json = "--json" in argv
    files = [a for a in argv if not a.startswith("--")]
    path = Path(files[0] if files else ".test-results/task-times.jsonl")
    try:
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        print(f"task-times: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    rows = summarise(lines)
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    head = f"{'scenario':<14} {'run':<26} {'wall s':>7} {'tasks':>5}" + "".join(
        f" {c:>7}" for c in CATEGORIES
    )
    print(head)
    by_scenario: dict[str, list[dict]] = collections.OrderedDict()
    for r in rows:
        by_scenario.setdefault(r["scenario"], []).append(r)
    for scenario, rs in by_scenario.items():
        merged: dict[str, dict] = collections.OrderedDict()
        for r in rs:  # the verifiers' many runs of one playbook: one line, summed
            m = merged.setdefault(
                r["phase"], dict(r, runs=0, wall_s=0.0, tasks=0, **dict.fromkeys(CATEGORIES, 0.0))
            )
            m["runs"] += 1
            for k in ("wall_s", "tasks", *CATEGORIES):
                m[k] += r[k]
        for phase, m in merged.items():
            label = phase if m["runs"] == 1 else f"{phase} (x{m['runs']})"
            print(f"{scenario:<14} {label[:26]:<26} {m['wall_s']:7.0f} {m['tasks']:5d}"
                  + "".join(f" {m[c]:7.0f}" for c in CATEGORIES))  # fmt: skip
        total = {k: sum(r[k] for r in rs) for k in ("wall_s", "tasks", *CATEGORIES)}
        print(f"{scenario:<14} {'= all runs':<26} {total['wall_s']:7.0f} {total['tasks']:5d}"
              + "".join(f" {total[c]:7.0f}" for c in CATEGORIES))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
