"""The livekit_agents role's preflight on the controller itself: every bad input
stops the run with a message naming the variable, before any task changes
anything; a good inventory passes. (The preflight scenario's hosts carry no
agents; the checks are pure assertions, so localhost serves.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from trunkline_testing.services import run_local_play

SECRET = "s" * 40

PLAY = """
- name: Agents preflight
  hosts: localhost
  gather_facts: true
  gather_subset: ["!all", "min"]
  tasks:
    - name: Check the livekit_agents inputs
      ansible.builtin.include_role:
        name: trunkline.voice.livekit_agents
        tasks_from: preflight
"""

GOOD = {
    "vault_livekit_api_key": "APIkey",
    "vault_livekit_api_secret": SECRET,
    "livekit_agents_workers": [
        {"name": "support", "agent_name": "support-agent", "count": 2, "health_port": 8081},
        {"name": "sales", "agent_name": "sales-agent", "health_port": 8090},
    ],
}

CASES = [
    (
        "unpinned-package",
        {"livekit_agents_packages": ["livekit-agents>=1.8"]},
        "must pin each package",
    ),
    ("no-workers", {"livekit_agents_workers": []}, "livekit_agents_workers must list groups"),
    (
        "duplicate-group",
        {"livekit_agents_workers": [GOOD["livekit_agents_workers"][0]] * 2},
        "a unique `name`",
    ),
    (
        "overlapping-ports",
        {
            "livekit_agents_workers": [
                {"name": "a", "agent_name": "a", "count": 3, "health_port": 8081},
                {"name": "b", "agent_name": "b", "health_port": 8083},
            ]
        },
        "ports now: 8081, 8082, 8083, 8083",
    ),
    (
        "count-zero",
        {
            "livekit_agents_workers": [
                {"name": "a", "agent_name": "a", "count": 0, "health_port": 8081}
            ]
        },
        "a `count` from 1 to 64",
    ),
    (
        "git-without-version",
        {"livekit_agents_source": {"type": "git", "url": "https://git.example/a"}},
        "git: `url` and `version`",
    ),
    (
        "directory-missing",
        {"livekit_agents_source": {"type": "directory", "path": "/nonexistent"}},
        "directory: `path`",
    ),
    ("secret-short", {"vault_livekit_api_secret": "short"}, "at least 32 characters"),
    ("url-scheme", {"livekit_agents_url": "livekit:7880"}, "must be a ws(s)://"),
    (
        "reserved-env",
        {"livekit_agents_environment": {"LIVEKIT_API_SECRET": "x"}},
        "LIVEKIT_API_SECRET",
    ),
    ("env-value-quote", {"livekit_agents_secrets": {"OPENAI_API_KEY": 'sk-"x'}}, "OPENAI_API_KEY"),
]


def run(tmp_path: Path, extra: dict) -> subprocess.CompletedProcess:
    return run_local_play(tmp_path, PLAY, {**GOOD, **extra})


def test_good_workers_pass(tmp_path):
    proc = run(tmp_path, {})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "changed=0" in proc.stdout


@pytest.mark.parametrize(("case", "extra", "expect"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_stops_with_its_message(tmp_path, case, extra, expect):
    proc = run(tmp_path, extra)
    assert proc.returncode != 0, f"{case}: passed"
    assert expect in proc.stdout, proc.stdout[-3000:]
    assert "changed=0" in proc.stdout
