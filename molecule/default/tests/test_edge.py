"""The firewall and the TLS front end, checked from the network.

The two platforms are separate deployments (trunkline_deployment), so each is
an outside host for the other; the controller (this machine, the network's
gateway) is listed in firewall_deployment_networks and
firewall_monitoring_networks, as it would be in production.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request

import aiohttp
import pytest
import testinfra
from livekit import api
from livekit.protocol import rtc

from conftest import host_address, secret

NAMES = ("trunkline-default-deb12", "trunkline-default-deb13")


def other(host):
    """The other platform: a host outside this one's deployment."""
    name = host.backend.get_hostname()
    peer = NAMES[1] if name == NAMES[0] else NAMES[0]
    return testinfra.get_host(f"docker://{peer}")


def reaches(src, addr: str, port: int) -> bool:
    """A TCP connect from `src` (bash /dev/tcp), bounded to 3 s."""
    cmd = f"timeout 3 bash -c 'exec 3<>/dev/tcp/{addr}/{port}'"
    return src.run(cmd).rc == 0


@pytest.mark.parametrize(
    ("port", "expect", "why"),
    [
        (7881, True, "WebRTC over TCP is public"),
        (5060, True, "SIP is open (no provider networks set)"),
        (443, True, "the HTTPS front end is public"),
        (7880, False, "the LiveKit API is for the deployment only"),
        (6379, False, "Redis is for the deployment only"),
        (8080, False, "SIP health is for monitoring networks only"),
        (2019, False, "Caddy's admin API is never reachable"),
    ],
)
def test_ports_from_outside_the_deployment(host, port, expect, why):
    assert reaches(other(host), host_address(host), port) is expect, why


def test_deployment_ports_answer_the_controller(host):
    addr = host_address(host)
    with urllib.request.urlopen(f"http://{addr}:8080/", timeout=5) as resp:
        assert resp.status == 200
    assert reaches(host, "127.0.0.1", 6379)


def test_ssh_is_always_accepted(host):
    """With default-deny inbound, the SSH port still answers an outside host."""
    host.run_test("systemctl stop tl-fake-ssh 2>/dev/null; true")
    host.run_test("systemd-run --unit tl-fake-ssh python3 -m http.server 22 --bind 0.0.0.0")
    try:
        for _ in range(20):
            if host.socket("tcp://0.0.0.0:22").is_listening:
                break
            host.run("sleep 0.5")
        assert reaches(other(host), host_address(host), 22)
    finally:
        host.run("systemctl stop tl-fake-ssh")


def test_firewall_leaves_other_tables_alone(host):
    """A reload replaces table inet trunkline only (Docker's chains live beside it)."""
    host.run_test("nft add table inet operator_test")
    host.run_test("nft add chain inet operator_test keep '{ type filter hook input priority 10; }'")
    try:
        host.run_test("systemctl reload trunkline-firewall")
        tables = host.check_output("nft list tables")
        assert "table inet operator_test" in tables and "table inet trunkline" in tables
    finally:
        host.run("nft delete table inet operator_test")


def test_firewall_policy_is_default_deny(host):
    out = host.check_output("nft list chain inet trunkline input")
    assert "policy drop;" in out
    assert 'tcp dport 22 accept comment "ssh"' in out


def _ca(host) -> ssl.SSLContext:
    pem = host.file("/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt")
    return ssl.create_default_context(cadata=pem.content_string)


def test_https_through_caddy_reaches_livekit(host):
    url = f"https://{host_address(host)}/"
    with urllib.request.urlopen(url, timeout=5, context=_ca(host)) as resp:
        assert (resp.status, resp.read().decode()) == (200, "OK")


def test_untrusted_certificate_is_refused(host):
    """The certificate really is from Caddy's internal CA, not some public one."""
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"https://{host_address(host)}/", timeout=5)


def test_livekit_api_and_signalling_websocket_through_caddy(host):
    addr, ctx = host_address(host), _ca(host)
    key, secret_ = "API" + secret("livekit_api_key"), secret("livekit_api_secret")

    async def run():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            lk = api.LiveKitAPI(f"https://{addr}", key, secret_, session=session)
            trunks = await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
            token = (
                api.AccessToken(key, secret_)
                .with_identity("tls-probe")
                .with_grants(api.VideoGrants(room_join=True, room="tls-probe"))
                .to_jwt()
            )
            url = f"wss://{addr}/rtc?access_token={token}&protocol=15&auto_subscribe=1"
            async with session.ws_connect(url, timeout=10) as ws:
                msg = await ws.receive(timeout=10)
            return trunks, msg

    trunks, msg = asyncio.run(run())
    assert trunks is not None
    assert msg.type == aiohttp.WSMsgType.BINARY, msg
    signal = rtc.SignalResponse()
    signal.ParseFromString(msg.data)
    assert signal.WhichOneof("message") == "join"
    assert signal.join.room.name == "tls-probe"
