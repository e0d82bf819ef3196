"""The livekit_egress role's preflight on the controller itself: every bad input
stops the run with a message naming the variable before anything changes; a
small host gets a visible warning, not a stop. (The checks are assertions over
variables and facts, so localhost serves; the molecule `egress` scenario runs
the role for real.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from trunkline_testing.services import run_local_play

SECRET = "s" * 40

PLAY = """
- name: Egress preflight
  hosts: localhost
  gather_facts: true
  gather_subset: ["!all", "min", "hardware"]
  tasks:
    - name: Check the livekit_egress inputs
      ansible.builtin.include_role:
        name: trunkline.voice.livekit_egress
        tasks_from: preflight
"""

GOOD = {
    "vault_livekit_api_key": "APIkey",
    "vault_livekit_api_secret": SECRET,
    "vault_redis_password": "r" * 20,
}
S3 = {
    "livekit_egress_storage": "s3",
    "livekit_egress_s3_bucket": "calls",
    "livekit_egress_s3_endpoint": "https://s3.example.internal",
    "vault_egress_s3_access_key": "AKIAEXAMPLE",
    "vault_egress_s3_secret": "s3-secret-value",
}

CASES = [
    (
        "image-without-tag",
        {"livekit_egress_image": "livekit/egress"},
        "livekit_egress_image must be NAME:TAG",
    ),
    (
        "archive-missing",
        {"livekit_egress_image_archive": "/nonexistent/egress.tar"},
        "livekit_egress_image_archive '/nonexistent/egress.tar' must be",
    ),
    (
        "secret-short",
        {"vault_livekit_api_secret": "short"},
        "livekit_egress_api_secret at least 32",
    ),
    (
        "ws-url-scheme",
        {"livekit_egress_ws_url": "http://127.0.0.1:7880"},
        "livekit_egress_ws_url must be ws://",
    ),
    (
        "health-port-range",
        {"livekit_egress_health_port": 70000},
        "livekit_egress_health_port must be a port",
    ),
    (
        "stop-timeout",
        {"livekit_egress_stop_timeout": 1},
        "livekit_egress_stop_timeout must be 5 to 86400",
    ),
    (
        "cpus-malformed",
        {"livekit_egress_cpus": "four"},
        "livekit_egress_cpus must be a number of CPUs",
    ),
    ("memory-malformed", {"livekit_egress_memory": "6 GB"}, "livekit_egress_memory a size like 6g"),
    (
        "local-dir-relative",
        {"livekit_egress_local_dir": "recordings"},
        "livekit_egress_local_dir must be an absolute",
    ),
    (
        "local-dir-system",
        {"livekit_egress_local_dir": "/var/lib"},
        "livekit_egress_local_dir must be an absolute",
    ),
    (
        "retention-negative",
        {"livekit_egress_retention_days": -1},
        "livekit_egress_retention_days 0 (keep) or more",
    ),
    (
        "s3-no-bucket",
        {**S3, "livekit_egress_s3_bucket": ""},
        "needs livekit_egress_s3_bucket (set: False)",
    ),
    (
        "s3-no-secret",
        {**S3, "vault_egress_s3_secret": ""},
        "livekit_egress_s3_secret (0 characters)",
    ),
    (
        "s3-endpoint-scheme",
        {**S3, "livekit_egress_s3_endpoint": "s3.example.internal"},
        "endpoint: 's3.example.internal'",
    ),
]


def run(tmp_path: Path, extra: dict) -> subprocess.CompletedProcess:
    return run_local_play(tmp_path, PLAY, {**GOOD, **extra})


def test_good_local_and_s3_pass_and_secrets_stay_hidden(tmp_path):
    for extra in ({}, S3):
        proc = run(tmp_path, extra)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert "changed=0" in proc.stdout
        for secret in (SECRET, S3["vault_egress_s3_secret"], S3["vault_egress_s3_access_key"]):
            assert secret not in proc.stdout


def test_small_host_is_a_warning_not_a_stop(tmp_path):
    # This machine (2 CPUs) is below upstream's 4 CPU / 4 GB: the run goes on.
    proc = run(tmp_path, {"_livekit_egress_min_cpus": 1024})
    assert proc.returncode == 0, proc.stdout[-3000:]
    # the callback wraps long messages
    assert "upstream recommends at least 1024 CPUs" in " ".join(proc.stdout.split())
    proc = run(tmp_path, {"_livekit_egress_min_cpus": 1, "_livekit_egress_min_memory_mb": 1})
    assert "upstream recommends" not in proc.stdout


@pytest.mark.parametrize(("case", "extra", "expect"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_stops_with_its_message(tmp_path, case, extra, expect):
    proc = run(tmp_path, extra)
    assert proc.returncode != 0, f"{case}: passed"
    assert expect in proc.stdout, proc.stdout[-3000:]
    assert "changed=0" in proc.stdout


RENDER = """
- name: Render egress.yaml
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Load the role's variables
      ansible.builtin.include_role:
        name: trunkline.voice.livekit_egress
        tasks_from: preflight
        public: true
    - name: Render
      ansible.builtin.template:
        src: "{{ playbook_dir }}/roles/livekit_egress/templates/egress.yaml.j2"
        dest: "{{ out }}"
        mode: "0600"
"""


@pytest.mark.parametrize(
    ("image", "inline"),
    [("livekit/egress:v1.14.1", False), ("registry.example/egress:v1.9.0", False),
     ("trunkline/egress:1.8.6", True), ("registry.example/egress:prod-build", False)],
)  # fmt: skip
def test_s3_settings_go_where_the_image_version_reads_them(tmp_path, image, inline):
    """Egress 1.9+ reads uploads under `storage:`, 1.8 at the top level."""
    out = tmp_path / "egress.yaml"
    play = RENDER.replace("{{ playbook_dir }}", str(Path(__file__).resolve().parent.parent))
    proc = run_local_play(
        tmp_path, play, {**GOOD, **S3, "livekit_egress_image": image, "out": str(out)}
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    config = yaml.safe_load(out.read_text())
    s3 = config["s3"] if inline else config["storage"]["s3"]
    assert ("storage" in config) != inline and ("s3" in config) == inline
    assert s3["bucket"] == "calls" and s3["endpoint"] == "https://s3.example.internal"
    assert s3["access_key"] == "AKIAEXAMPLE" and s3["secret"] == "s3-secret-value"
    assert config["redis"]["password"] == GOOD["vault_redis_password"]
    assert "s3-secret-value" not in proc.stdout
