"""Shared fixtures for the molecule scenarios' testinfra verifiers.

Molecule runs the verifier after converge and idempotence, so the hosts are
converged here; ``check_run`` replays the scenario's converge playbook with
``--check --diff`` and reports what it would change.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

# The project's test harness (SIP peers, service versions, recordings) serves the
# verifiers too: they import it as trunkline_testing, which make venv installs.


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "calls: places real calls and measures them (make test runs these alone: "
        "scripts/run-tests.py, PYTEST_ADDOPTS='-m calls', then the rest with -m 'not calls')",
    )


EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))


def secret(name: str) -> str:
    """A secret the scenario generated into molecule's ephemeral directory."""
    return (EPHEMERAL / "secrets" / name).read_text().split()[0]


def host_address(host) -> str:
    """The test host's address on the scenario's Docker network."""
    return host.interface("eth0").addresses[0]


def local_address_towards(addr: str) -> str:
    """This controller's own address on the route to a test host."""
    out = subprocess.run(
        ["ip", "-o", "route", "get", addr], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[out.index("src") + 1]


def _host_results(report: dict):
    """(task name, host, result) for every task result in a JSON-callback report."""
    for play in report.get("plays", []):
        for task in play.get("tasks", []):
            for host, result in task.get("hosts", {}).items():
                yield task["task"]["name"], host, result


def _changed_tasks(report: dict) -> list[str]:
    return [
        f"{host}: {name} {json.dumps(result.get('diff') or [])[:2000]}"
        for name, host, result in _host_results(report)
        if result.get("changed")
    ]


def failed_messages(report: dict) -> list[str]:
    """The messages of every failed task (and failed loop item) in a JSON-callback report."""
    out = []
    for _name, host, result in _host_results(report):
        if result.get("failed"):
            out.append(f"{host}: {result.get('msg', '')}")
            out += [
                f"{host}: {i.get('msg', '')}" for i in result.get("results", []) if i.get("failed")
            ]
    return out


def _playbook(name: str) -> str:
    """A playbook of the collection by FQCN (trunkline.voice.site), else a file of
    this scenario."""
    if re.fullmatch(r"\w+\.\w+\.\w+", name):
        return name
    return str(Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / name)


def run_playbook(name: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run a playbook (see _playbook) against the scenario's hosts; the JSON report plus rc.
    ``env``: more environment for ansible-playbook."""
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", **(env or {}))
    # The inventory directory, as molecule passes it: besides its generated file
    # it holds what molecule.yml links in (a scenario's hosts.yml, group_vars).
    inventory = str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent)
    proc = subprocess.run(
        ["ansible-playbook", "-i", inventory, _playbook(name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"{name} printed no JSON (rc={proc.returncode}): {proc.stderr[-3000:]}")
    report["rc"] = proc.returncode
    if not report.get("stats"):
        pytest.fail(f"{name} ran on no host (rc={proc.returncode}): check the inventory")
    report["changed_tasks"] = _changed_tasks(report)
    report["failed_messages"] = failed_messages(report)
    return report


def ansible_log() -> str:
    """All that Ansible printed in this scenario so far, for scenarios whose
    molecule.yml sets ANSIBLE_LOG_PATH to the ephemeral directory's ansible.log
    (and converge's --diff): create, the converge on fresh hosts, idempotence,
    and the verifiers' own runs."""
    path = EPHEMERAL / "ansible.log"
    assert path.is_file(), f"{path} missing: the scenario's molecule.yml sets ANSIBLE_LOG_PATH"
    return path.read_text(errors="replace")


def task_output(log: str, task: str) -> str:
    """What the runs in an Ansible log printed under every TASK header naming ``task``."""
    out, inside = [], False
    for line in log.splitlines():
        if "TASK [" in line:
            inside = task in line
        elif inside:
            out.append(line)
    return "\n".join(out)


@pytest.fixture(scope="session")
def check_run() -> dict:
    """Run converge.yml in check+diff mode against the converged hosts."""
    return run_playbook("converge.yml", "--check", "--diff")
