"""The all-in-one site, checked the way its user would: by protocol."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest
from livekit import api

from conftest import ansible_log, host_address, local_address_towards, secret, task_output
from trunkline_testing import sipp_peer


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - a test host's address
        return resp.status, resp.read().decode()


def list_inbound(url: str, key: str, secret_: str):
    async def run():
        lkapi = api.LiveKitAPI(url, key, secret_)
        try:
            return await lkapi.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
        finally:
            await lkapi.aclose()

    return asyncio.run(run())


def test_livekit_answers_http(host):
    assert http_get(f"http://{host_address(host)}:7880/") == (200, "OK")


def test_livekit_api_accepts_the_configured_key(host):
    url = f"http://{host_address(host)}:7880"
    result = list_inbound(url, "API" + secret("livekit_api_key"), secret("livekit_api_secret"))
    assert result is not None


def test_livekit_api_refuses_a_wrong_key(host):
    url = f"http://{host_address(host)}:7880"
    with pytest.raises(api.TwirpError) as err:
        list_inbound(url, "API" + secret("livekit_api_key"), "w" * 48)
    assert err.value.status == 401


def test_sip_health_port_answers(host):
    """Started and serving: 200 OK, or 429 UnderLoad while the host's CPU is
    busy (503 NotStarted and no answer fail)."""
    out = host.run("curl -sS -w ' %{http_code}' http://127.0.0.1:8080/").stdout.strip()
    assert out in ("OK 200", "UnderLoad 429"), out


def test_sip_listens_on_5060_udp_and_tcp(host):
    assert host.socket("udp://0.0.0.0:5060").is_listening or host.socket("udp://5060").is_listening
    assert host.socket("tcp://0.0.0.0:5060").is_listening or host.socket("tcp://5060").is_listening


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sip_answers_options_from_a_sip_peer(host, transport, tmp_path):
    addr = host_address(host)
    proc = sipp_peer.options(addr, 5060, transport, local_address_towards(addr), tmp_path)
    assert proc.returncode == 0, proc.stdout[-1500:]


def test_redis_needs_auth(host):
    out = host.run("redis-cli -h 127.0.0.1 PING")
    assert "NOAUTH" in out.stdout + out.stderr


@pytest.mark.parametrize(
    ("path", "owner"),
    [
        ("/etc/livekit/livekit.yaml", "livekit"),
        ("/etc/livekit/sip.yaml", "livekit-sip"),
        ("/etc/redis/redis.conf", "redis"),
    ],
)
def test_config_files_private_to_their_service(host, path, owner):
    f = host.file(path)
    assert f.user == owner
    assert f.group == owner
    assert f.mode & 0o007 == 0, oct(f.mode)


def test_services_run_as_their_own_users(host):
    for unit, user in (("livekit-server", "livekit"), ("livekit-sip", "livekit-sip")):
        props = host.check_output(
            f"systemctl show {unit} -p User -p NoNewPrivileges -p ProtectSystem"
        )
        assert f"User={user}" in props
        assert "NoNewPrivileges=yes" in props
        assert "ProtectSystem=strict" in props


def test_media_sysctls_written(host):
    conf = host.file("/etc/sysctl.d/60-trunkline-media.conf").content_string
    assert "net.core.rmem_max = 16777216" in conf
    assert "net.core.wmem_max = 16777216" in conf


def test_no_public_stun_handed_out(host):
    conf = host.file("/etc/livekit/livekit.yaml").content_string
    assert "stun_servers" in conf
    assert "google" not in conf.lower()


# Before the kill test: a --check run right after a restart would wait on
# livekit-sip's health check (17-26 s).
def test_check_diff_reports_no_change(check_run):
    assert check_run["rc"] == 0, check_run["failed_messages"]
    assert check_run["changed_tasks"] == []


@pytest.mark.parametrize(
    ("unit", "check"),
    [
        ("livekit-server", "curl -fsS http://127.0.0.1:7880/"),
        # 200 OK, or 429 UnderLoad while the CPU is busy: started either way
        (
            "livekit-sip",
            "curl -sS -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/"
            " | grep -qx -e 200 -e 429",
        ),
    ],
)
def test_killed_service_is_restarted_by_systemd(host, unit, check):
    before = host.check_output(f"systemctl show {unit} -p MainPID --value")
    host.run_test(f"kill -9 {before}")
    for _ in range(60):
        time.sleep(0.5)
        now = host.check_output(f"systemctl show {unit} -p MainPID --value")
        if now not in ("0", before) and host.run(check).rc == 0:
            break
    else:
        pytest.fail(f"{unit} was not restarted after kill -9")


def test_no_secret_in_converge_output(host):
    """The converge on fresh hosts wrote both configs (with --diff) and printed
    no secret; neither did any other run."""
    text = ansible_log()
    name = host.backend.get_hostname()
    for task in ("livekit_server : Write livekit.yaml", "livekit_sip : Write sip.yaml"):
        assert f"changed: [{name}]" in task_output(text, task), f"{task!r} never changed {name}"
    unit = task_output(text, "livekit_server : Write the systemd unit")
    assert "+++ after" in unit, "the converge's --diff is not in the log"
    for secret_name in ("redis_password", "livekit_api_secret"):
        assert secret(secret_name) not in text, f"{secret_name} appears in Ansible's output"
