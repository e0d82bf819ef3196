"""Switching livekit_sip's install method back: container -> binary.

converge.yml already switched Debian 12 binary -> container and installed
Debian 13 in the container method (test_sip_container.py checks the result).
This runs last, on the converged container hosts: the switch must leave
exactly one livekit-sip, answering, and no container.
"""

from __future__ import annotations

import os

import pytest
import testinfra
from test_sip_container import healthy

from conftest import host_address, local_address_towards, run_playbook
from trunkline_testing import sipp_peer


@pytest.fixture(scope="module")
def hosts():
    return testinfra.get_hosts(
        ["ansible://all"], ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"]
    )


def test_container_to_binary(hosts, tmp_path):
    report = run_playbook("sip.yml", "-e", "sip_install_method=binary")
    assert report["rc"] == 0, report["failed_messages"]
    assert any("Write the systemd unit" in t for t in report["changed_tasks"])
    for host in hosts:
        assert host.check_output("docker ps -aq --filter name=^livekit-sip$") == ""
        exec_start = host.check_output("systemctl show livekit-sip -p ExecStart --value")
        assert "/opt/livekit/livekit-sip/current/livekit-sip" in exec_start
        assert host.check_output("ps -o user= -C livekit-sip") == "livekit-sip"
        assert host.file("/usr/local/bin/livekit-sip").is_symlink
        addr = host_address(host)
        assert healthy(addr)
        for transport in ("u1", "t1"):
            proc = sipp_peer.options(addr, 5060, transport, local_address_towards(addr), tmp_path)
            assert proc.returncode == 0, f"{transport}: {proc.stdout[-1500:]}"
