"""The first phone call, end to end (see molecule.yml): the controller plays
Cloudonix against a host where site.yml deployed the whole stack."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

import pytest
from livekit import api

from trunkline import probe
from trunkline.telephony.livekit import Connection, LiveKit

from conftest import host_address, secret

CADDY_CA = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"
CALLER = "+12125550142"


def get(host, url: str) -> str:
    """An HTTP GET from the test host itself (health ports are not for the outside)."""
    code = (
        "import urllib.request; "
        f"print(urllib.request.urlopen({url!r}, timeout=3).read().decode(), end='')"
    )
    return host.run(f'python3 -c "{code}"').stdout


@pytest.fixture(scope="module")
def conn(host) -> Connection:
    key = "API" + secret("livekit_api_key")
    return Connection(f"http://{host_address(host)}:7880", key, secret("livekit_api_secret"))


@pytest.fixture(scope="module")
def ca_file(host, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ca") / "caddy-root.crt"
    path.write_text(host.file(CADDY_CA).content_string)
    return str(path)


def cloudonix(host, ca_file: str, did: str) -> str:
    """What the CXML endpoint answers Cloudonix for a call to ``did``, via Caddy."""
    params = {
        "CallSid": f"e2e-{secrets.token_hex(6)}",
        "AccountSid": "e2e",
        "From": CALLER,
        "To": did,
        "Direction": "inbound",
        "CallStatus": "ringing",
    }
    return probe.ask_cxml(
        f"https://{host_address(host)}/cxml/", params, secret("cxml_auth_token"), ca_file=ca_file
    )


CASES = [
    # (DNID, what the CXML says, codec): both Dial types, both codecs, both transports.
    ("+12127773456", "Dial/Sip", "pcmu"),
    ("+12127773456", "Dial/Sip", "pcma"),
    ("+12127773457", "Dial/Service[e2e-livekit]", "pcma"),
    ("+12127773457", "Dial/Service[e2e-livekit]", "pcmu"),
]


@pytest.mark.parametrize(("did", "how", "codec"), CASES)
def test_a_call_reaches_the_agent_and_both_sides_hear_each_other(
    host, conn, ca_file, tmp_path, did, how, codec
):
    address = host_address(host)
    aliases = {"e2e-livekit": f"sip:{address}:5060;transport=tcp"}
    target, instead = probe.resolve_cxml(cloudonix(host, ca_file, did), aliases, "udp")
    assert target is not None, instead
    assert target.how == how and target.host == address and target.number == did
    assert target.transport == ("udp" if how == "Dial/Sip" else "tcp")
    result = probe.call(target, CALLER, codec=codec, conn=conn, cache=tmp_path, hold_ms=6000)
    print(json.dumps(result.as_dict(), indent=1))
    # 1. answered, the dispatch rule made the room, the agent joined it
    assert result.final_status == 200, result.log
    assert result.room.startswith("call-"), result.room
    assert result.agent_joined_ms is not None
    # 2. the caller heard the agent (greeting, then the echo of what it said) and
    # the agent heard the caller (its own count of non-silent frames)
    assert result.speech_in >= 25, "the caller heard (almost) nothing from the agent"
    assert result.speech_in_after_caller_spoke >= 10, "no reply after the caller spoke"
    assert result.speech_out >= 25
    assert (result.agent_heard_nonsilent or 0) >= 50, "the agent heard (almost) nothing"
    # 3. BYE completed and the room emptied
    assert result.checks["bye_completed"] and result.checks["room_emptied"], result.checks
    assert result.ok, result.checks


def _job_record(host, room: str) -> dict | None:
    """The example agent's record of the job in ``room`` (one JSON file per job)."""
    for path in host.run("ls /var/lib/trunkline-agents/records/").stdout.split():
        if path.endswith(".json"):
            data = json.loads(host.file(f"/var/lib/trunkline-agents/records/{path}").content_string)
            if data["room"] == room:
                return data
    return None


def test_bye_ends_the_agent_job_and_the_room(host, conn, ca_file, tmp_path):
    target, _ = probe.resolve_cxml(cloudonix(host, ca_file, "+12127773456"), {}, "udp")
    result = probe.call(target, CALLER, conn=conn, cache=tmp_path, hold_ms=3000)
    assert result.ok, result.checks
    deadline = time.monotonic() + 30
    record = None
    while time.monotonic() < deadline:
        record = _job_record(host, result.room)
        if record and "ended" in record:
            break
        time.sleep(0.5)
    assert record and "ended" in record, record
    assert record["caller_kind"] == api.ParticipantInfo.Kind.SIP
    assert record["nonsilent_frames"] > 0

    async def rooms() -> list[str]:
        async with LiveKit(conn) as lk:
            return [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]

    # The room closes once empty (LiveKit's departure timeout, 20 s by default).
    deadline = time.monotonic() + 40
    while result.room in asyncio.run(rooms()) and time.monotonic() < deadline:
        time.sleep(1)
    assert result.room not in asyncio.run(rooms())


def test_a_number_without_an_agent_route_gets_no_dial(host, ca_file):
    target, instead = probe.resolve_cxml(cloudonix(host, ca_file, "+12127770100"), {}, "udp")
    assert target is None and "Say" in instead


def test_workers_are_healthy_and_registered(host):
    assert host.service("trunkline-agent@trunkline-agent-1").is_running
    assert get(host, "http://127.0.0.1:8081/") == "OK"
    info = json.loads(get(host, "http://127.0.0.1:8081/worker"))
    assert info["agent_name"] == "trunkline-agent"


def test_worker_secrets_are_root_only_and_out_of_ps(host):
    env = host.file("/etc/trunkline-agents/secrets.env")
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    worker = host.file("/etc/trunkline-agents/workers/trunkline-agent-1.env")
    assert (worker.user, worker.group, worker.mode) == ("root", "trunkline-agent", 0o640)
    assert secret("livekit_api_secret") not in host.run("ps auxww").stdout
    procs = host.run("ps -eo user:32=,args=").stdout.splitlines()
    users = {p.split()[0] for p in procs if "/opt/trunkline-agents/venv/bin/python" in p}
    assert users == {"trunkline-agent"}, procs


def test_venv_matches_the_role_constraints(host):
    constraints = Path(__file__).resolve().parents[3] / "roles/livekit_agents/files/constraints.txt"
    wanted = {line.strip().lower() for line in constraints.read_text().splitlines() if "==" in line}
    freeze = host.run("/opt/trunkline-agents/venv/bin/pip freeze --disable-pip-version-check")
    installed = {line.strip().lower() for line in freeze.stdout.splitlines() if "==" in line}
    assert installed == wanted, installed ^ wanted


def test_killed_worker_is_restarted_by_systemd(host):
    pid = host.run("systemctl show -p MainPID --value trunkline-agent@trunkline-agent-1").stdout
    host.run(f"kill -9 {pid.strip()}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if get(host, "http://127.0.0.1:8081/") == "OK":
            break
        time.sleep(1)
    new = host.run("systemctl show -p MainPID --value trunkline-agent@trunkline-agent-1").stdout
    assert new.strip() != pid.strip()
    assert get(host, "http://127.0.0.1:8081/") == "OK"


def test_check_diff_reports_no_change(check_run):
    assert check_run["rc"] == 0, check_run["failed_messages"]
    assert check_run["changed_tasks"] == []
