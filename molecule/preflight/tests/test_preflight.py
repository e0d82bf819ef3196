"""Every bad inventory in cases.yml stops in preflight, with its own message,
before anything changes on the host."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import testinfra
import yaml

from conftest import run_playbook

CASES = yaml.safe_load((Path(__file__).parent / "cases.yml").read_text())

# What the site would put on a host; none of it may appear after a refused run.
FOOTPRINT = [
    "/etc/livekit",
    "/opt/livekit",
    "/etc/redis/redis.conf",
    "/etc/sysctl.d/60-trunkline-media.conf",
    "/etc/systemd/system/livekit-server.service",
]


# The preflight logic does not depend on the Debian release: each bad case runs
# once, against the first platform.
TARGET = "trunkline-preflight-deb12"


# A refused run changes nothing on the host (each case checks it), so its facts
# stay what the first run gathered: the cases share them through a fact cache
# instead of gathering them again, 1.3-2.2 s a run.
FACTS_ONCE = {
    "ANSIBLE_GATHERING": "smart",
    "ANSIBLE_CACHE_PLUGIN": "jsonfile",
    "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(
        Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/tmp")) / "preflight-facts"
    ),
}


@pytest.fixture(scope="module")
def target():
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_host(f"ansible://{TARGET}?ansible_inventory={inventory}")


def test_cases_have_distinct_messages():
    assert len(CASES) >= 20
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids))


def test_good_inventory_passes_preflight(host):
    report = run_playbook("converge.yml", "--limit", host.backend.get_hostname())
    assert report["rc"] == 0, report["failed_messages"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_bad_inventory_stops_in_preflight(target, case, tmp_path):
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(case["vars"]))
    args = ["-e", f"@{extra}"]
    if case.get("hosts") != "all":
        args += ["--limit", TARGET]
    report = run_playbook("site.yml", *args, env=FACTS_ONCE)
    assert report["rc"] != 0, f"{case['id']}: site.yml did not fail"
    plays = [p["play"]["name"] for p in report["plays"]]
    assert plays == ["Preflight"], f"{case['id']}: the run went past preflight: {plays}"
    messages = " | ".join(report["failed_messages"])
    assert case["expect"] in messages, f"{case['id']}: expected {case['expect']!r} in {messages!r}"
    for path in FOOTPRINT:
        assert not target.file(path).exists, f"{case['id']}: {path} exists after a refused run"
    assert not target.package("redis-server").is_installed
