"""The first phone call, end to end (see molecule.yml): the controller plays
Cloudonix against a host where site.yml deployed the whole stack."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from pathlib import Path

import pytest
from livekit import api

from trunkline import probe
from trunkline.livekit import Connection, LiveKit

from conftest import host_address, run_playbook, secret

CADDY_CA = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"
CALLER = "+12125550142"
UNIT = "trunkline-agent@trunkline-agent-1"


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


@pytest.mark.calls
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


@pytest.mark.calls
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


def _wait_registered(host, since: float, timeout: float = 60) -> None:
    """Until the worker started after ``since`` has registered with livekit-server
    (its health port answers a little earlier; a call then would find no worker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = host.run(f"journalctl -u {UNIT} -o cat --no-pager --since @{int(since)}").stdout
        if "registered worker" in out:
            return
        time.sleep(1)
    pytest.fail(f"{UNIT} did not register with livekit-server within {timeout} s")


def test_killed_worker_is_restarted_by_systemd(host):
    pid = host.run("systemctl show -p MainPID --value trunkline-agent@trunkline-agent-1").stdout
    killed = time.time()
    host.run(f"kill -9 {pid.strip()}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if get(host, "http://127.0.0.1:8081/") == "OK":
            break
        time.sleep(1)
    new = host.run("systemctl show -p MainPID --value trunkline-agent@trunkline-agent-1").stdout
    assert new.strip() != pid.strip()
    assert get(host, "http://127.0.0.1:8081/") == "OK"
    _wait_registered(host, killed - 1)


AGENTS_PLAYBOOK = "trunkline.voice.livekit_agents"


def _journal_time(host, unit: str, text: str, since: float) -> float | None:
    """When systemd logged ``text`` for ``unit`` (first time after ``since``), epoch seconds."""
    out = host.run(f"journalctl -u {unit} -o short-unix --no-pager --since @{int(since)}").stdout
    for line in out.splitlines():
        if text in line:
            return float(line.split()[0])
    return None


@pytest.mark.calls
def test_agent_upgrade_drains_the_call_in_progress(host, conn, ca_file, tmp_path):
    """An upgrade during a call: the playbook runs with a changed worker environment
    (what new agent code or a new venv also does), its handler restarts the worker;
    SIGTERM drains; the caller keeps talking to the agent until its BYE; only then
    does the old worker exit and the new one start."""
    target, _ = probe.resolve_cxml(cloudonix(host, ca_file, "+12127773456"), {}, "udp")
    env = {"TRUNKLINE_AGENT_MODE": "offline", "TRUNKLINE_AGENT_LOAD_THRESHOLD": "0.95"}
    pid = host.run(f"systemctl show -p MainPID --value {UNIT}").stdout.strip()
    since = host.run(f"systemctl show -p ExecMainStartTimestampMonotonic --value {UNIT}")
    uptime = float(host.file("/proc/uptime").content_string.split()[0])
    _wait_registered(host, time.time() - (uptime - int(since.stdout.strip()) / 1e6) - 1)
    t0 = time.time()
    box: dict = {}
    # The caller speaks 60 s after the answer: after the playbook got to its handler.
    caller = threading.Thread(
        target=lambda: box.update(r=probe.call(target, CALLER, conn=conn, cache=tmp_path,
                                               speech_delay_ms=60000, hold_ms=6000)),
        daemon=True,
    )  # fmt: skip
    caller.start()
    time.sleep(3)
    upgrade = run_playbook(
        AGENTS_PLAYBOOK, "-e", json.dumps({"livekit_agents_environment": {**env, "E2E_MARK": "2"}})
    )
    caller.join(timeout=120)
    result = box.get("r")
    restore = run_playbook(AGENTS_PLAYBOOK)  # as converged, for the --check --diff test
    stopping = _journal_time(host, UNIT, "Stopping", t0)
    started = _journal_time(host, UNIT, "Started", t0)
    new_pid = host.run(f"systemctl show -p MainPID --value {UNIT}").stdout.strip()
    assert upgrade["rc"] == 0 and restore["rc"] == 0, upgrade["failed_messages"]
    assert any("Restart livekit agents" in t for t in upgrade["changed_tasks"]), upgrade
    assert result is not None, "the call did not end"
    print(json.dumps(result.as_dict(), indent=1))
    print(f"SIGTERM {stopping - t0:.1f} s, new worker {started - t0:.1f} s after the call began")
    assert stopping is not None and stopping < t0 + 55, "SIGTERM came after the caller spoke"
    assert result.ok, result.checks
    # The draining worker heard the caller and answered after its SIGTERM ...
    assert result.speech_in_after_caller_spoke >= 10, "no echo after SIGTERM"
    # ... and the new one started only after the call had ended.
    call_end = t0 + 3 + 60 + 6  # rough lower bound of the BYE
    assert started is not None and started > call_end - 10, (started - t0, call_end - t0)
    assert new_pid != pid


def test_unit_stop_timeouts_cover_the_drain(host):
    """systemd must wait out the drain before it kills (agents: drain + 30 s)."""
    agent = host.run(f"systemctl show -p TimeoutStopUSec --value {UNIT}").stdout.strip()
    sip = host.run("systemctl show -p TimeoutStopUSec --value livekit-sip").stdout.strip()
    assert (agent, sip) == ("30min 30s", "30min")


def test_check_diff_reports_no_change(check_run):
    assert check_run["rc"] == 0, check_run["failed_messages"]
    assert check_run["changed_tasks"] == []
