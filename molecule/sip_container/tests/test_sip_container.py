"""livekit_sip's container method, checked the way its user would: by protocol.

Debian 12 ran the binary method first (prepare.yml) and converge switched it to
the container method; Debian 13 was installed in the container method from
scratch. Both must end the same.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import host_address, local_address_towards
from trunkline_testing import sipp_peer
from trunkline_testing.services import ARTIFACTS, VERSIONS

SIP = VERSIONS["LIVEKIT_SIP_VERSION"]
TARBALL = f"livekit-sip_{SIP}_linux_amd64.tar.gz"
SHA = next(
    line.split()[0]
    for line in (ARTIFACTS / "checksums.txt").read_text().splitlines()
    if line.split()[-1] == TARBALL
)
DOCKERFILE = hashlib.sha256((Path(__file__).parent.parent / "image/Dockerfile").read_bytes())
IMAGE = f"trunkline/livekit-sip:{SIP}-{SHA[:12]}-{DOCKERFILE.hexdigest()[:8]}"


def inspect(host) -> dict:
    return json.loads(host.check_output("docker inspect livekit-sip"))[0]


def healthy(addr: str, timeout: float = 60) -> bool:
    """Started and serving within `timeout` s: health 200 OK, or 429 UnderLoad
    while the host's CPU is busy (503 NotStarted is not)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{addr}:8080/", timeout=5) as resp:
                if resp.status == 200 and resp.read().decode() == "OK":
                    return True
        except urllib.error.HTTPError as err:
            if err.code == 429 and err.read().decode() == "UnderLoad":
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(1)


def options(host, transport: str, workdir):
    addr = host_address(host)
    return sipp_peer.options(addr, 5060, transport, local_address_towards(addr), workdir)


def test_health_port_answers_from_the_network(host):
    assert healthy(host_address(host))


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sip_answers_options_from_a_sip_peer(host, transport, tmp_path):
    proc = options(host, transport, tmp_path)
    assert proc.returncode == 0, proc.stdout[-1500:]


def test_container_uses_host_networking_and_the_configured_image(host):
    info = inspect(host)
    assert info["State"]["Running"]
    assert info["HostConfig"]["NetworkMode"] == "host"
    assert info["Config"]["Image"] == IMAGE
    assert info["Image"] == host.check_output(f"docker image inspect -f '{{{{.Id}}}}' {IMAGE}")


def test_container_runs_unprivileged_with_the_config_read_only(host):
    info = inspect(host)
    uid = host.check_output("id -u livekit-sip")
    gid = host.check_output("id -g livekit-sip")
    assert info["Config"]["User"] == f"{uid}:{gid}"
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["HostConfig"]["CapDrop"] == ["ALL"]
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/sip/config.yaml"]["Source"] == "/etc/livekit/sip.yaml"
    assert mounts["/sip/config.yaml"]["RW"] is False


def test_one_livekit_sip_and_nothing_left_of_the_binary(host):
    assert host.check_output("pgrep -c -x livekit-sip") == "1"
    assert host.check_output("docker ps -q --filter name=^livekit-sip$ | wc -l") == "1"
    assert host.service("livekit-sip").is_running
    assert "docker run" in host.check_output("systemctl show livekit-sip -p ExecStart --value")
    assert not host.file("/usr/local/bin/livekit-sip").exists
    assert not host.file("/opt/livekit/livekit-sip").exists
    units = host.check_output("systemctl list-units --all --plain --no-legend 'livekit-sip*'")
    assert [u.split()[0] for u in units.splitlines()] == ["livekit-sip.service"]


def test_sip_output_reaches_the_journal(host):
    """Through the attached `docker run` (the container logs nowhere else)."""
    out = host.check_output("journalctl -u livekit-sip _COMM=docker -o cat --no-pager")
    assert "sip signaling listening on" in out


def test_check_diff_reports_no_change(check_run):
    assert check_run["rc"] == 0, check_run["failed_messages"]
    assert check_run["changed_tasks"] == []


def test_killed_container_is_replaced_and_answers(host, tmp_path):
    before = inspect(host)["Id"]
    host.run_test("docker kill livekit-sip")
    for _ in range(60):
        time.sleep(1)
        now = host.run("docker inspect -f '{{.Id}} {{.State.Running}}' livekit-sip").stdout.split()
        if now and now[0] != before and now[1] == "true":
            break
    else:
        journal = host.run("journalctl -u livekit-sip -n 50 --no-pager").stdout
        pytest.fail(f"no new livekit-sip container 60 s after docker kill:\n{journal}")
    assert healthy(host_address(host))
    proc = options(host, "u1", tmp_path)
    assert proc.returncode == 0, proc.stdout[-1500:]
    assert host.check_output("pgrep -c -x livekit-sip") == "1"


def test_docker_and_the_firewall_live_side_by_side(host):
    """The firewall replaced only its own table: Docker's rules stay through a
    reload, and the host-networked SIP container still answers from outside."""
    before = host.check_output("nft list ruleset")
    assert "table inet trunkline" in before
    docker_chains = sorted(line.strip() for line in before.splitlines() if "DOCKER" in line)
    assert docker_chains, "Docker's chains are missing"
    host.run_test("systemctl reload trunkline-firewall")
    after = host.check_output("nft list ruleset")
    assert sorted(line.strip() for line in after.splitlines() if "DOCKER" in line) == docker_chains
    assert healthy(host_address(host))
