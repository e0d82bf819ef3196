"""What real livekit-sip refuses, and that a refusal leaves nothing behind.

Each stray INVITE comes from sipp on loopback (127.0.0.2 plays an address
outside a trunk's allowed_addresses). What LiveKit answered is read from the
wire; then: no room was created, no agent was dispatched, livekit-sip counts no
active call. A scanner-like burst runs while a real caller talks to the agent.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

import pytest
import yaml
from livekit import api

from trunkline.cli import main
from trunkline.livekit import Connection, LiveKit
from trunkline.probe import Target, call

from conftest import AGENT_NAME
from trunkline_testing import services
from trunkline_testing.sipp_peer import free_udp_tcp_port, stray_invite

GUARDED, AUTHED, NO_RULE, UNCLAIMED = "+12127770001", "+12127770002", "+12127770003", "+19995550000"
PASSWORD = "in-trunk-pw-41ab"
OUTSIDE = "127.0.0.2"  # loopback, but not in the trunks' allowed_addresses


@pytest.fixture(scope="module")
def telephony(conn, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("LIVEKIT_URL", conn.url)
    mp.setenv("LIVEKIT_API_KEY", conn.api_key)
    mp.setenv("LIVEKIT_API_SECRET", conn.api_secret)
    mp.setenv("IN_TRUNK_PASSWORD", PASSWORD)
    data = {
        "inbound_trunks": [
            {"name": "guarded-in", "numbers": [GUARDED], "allowed_addresses": ["127.0.0.1/32"]},
            {
                "name": "authed-in",
                "numbers": [AUTHED],
                "auth": {"username": "lk-in", "password": "${IN_TRUNK_PASSWORD}"},
            },
            {"name": "norule-in", "numbers": [NO_RULE], "allowed_addresses": ["127.0.0.1/32"]},
        ],
        "dispatch_rules": [
            {
                "name": "refusal-rule",
                "trunks": ["guarded-in", "authed-in"],
                "type": "individual",
                "room_prefix": "call-",
                "agents": [{"name": AGENT_NAME}],
            }
        ],
    }
    path = tmp_path_factory.mktemp("refusals") / "telephony.yml"
    path.write_text(yaml.safe_dump(data))
    assert main(["telephony", "apply", "--prune", str(path)]) == 0
    yield path
    mp.undo()


def rooms(conn: Connection) -> list[str]:
    async def go():
        async with LiveKit(conn) as lk:
            return [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]

    return asyncio.run(go())


def settled(livekit_sip, conn, timeout: float = 15) -> list:
    """Wait (bounded) until livekit-sip counts no active call and no room is
    left; return its metrics then."""
    deadline = time.monotonic() + timeout
    while True:
        m = services.metrics(livekit_sip.info["metrics_port"])
        left = rooms(conn)
        active = services.metric(m, "livekit_sip_calls_active")
        if active == 0 and not left:
            return m
        assert time.monotonic() < deadline, f"active calls {active}, rooms {left}"
        time.sleep(0.2)


# name: (number, source, credentials, what LiveKit answers on the wire, the reason
# livekit-sip's calls_terminated counter gives). livekit-server tells livekit-sip
# to drop, without a word, an INVITE for a number no trunk claims, one from an
# address a trunk does not allow, and one no dispatch rule takes: a scanner
# learns nothing. An auth trunk challenges (407), and refuses a wrong answer (401).
CASES = {
    "unclaimed-number": (UNCLAIMED, "127.0.0.1", None, [], "flood"),
    "outside-allowed-addresses": (GUARDED, OUTSIDE, None, [], "flood"),
    "auth-missing": (AUTHED, "127.0.0.1", None, [407], "unauthorized"),
    "auth-wrong": (AUTHED, "127.0.0.1", ("lk-in", "not-" + PASSWORD), [407, 401], "unauthorized"),
    "no-dispatch-rule": (NO_RULE, "127.0.0.1", None, [], "flood"),
}


@pytest.mark.parametrize("case", CASES)
def test_refused_invite_gets_livekits_answer_and_leaves_nothing(
    case, conn, telephony, livekit_sip, agent_worker, tmp_path
):
    number, source, auth, answers, reason = CASES[case]
    terminated = "livekit_sip_calls_terminated"
    before = settled(livekit_sip, conn)
    wire = stray_invite(livekit_sip.info["sip_port"], number, tmp_path, source, auth, wait_ms=3000)
    print(case, "answers", wire.final_statuses, "invites", wire.invites)
    assert wire.invites == (2 if auth else 1), "sipp did not send its INVITE(s)"
    assert wire.final_statuses == answers
    after = settled(livekit_sip, conn)  # no room, no active call
    assert services.metric(after, terminated, reason=reason) > services.metric(
        before, terminated, reason=reason
    ), f"livekit-sip did not count a call ended for {reason!r}"
    assert services.metric(after, terminated, reason="hangup") == services.metric(
        before, terminated, reason="hangup"
    ), "a refused INVITE became a call"


def test_scanner_burst_leaves_the_real_caller_unharmed(
    conn, telephony, livekit_sip, agent_worker, tmp_path
):
    """1500 INVITEs at 100/s from an address no trunk allows (numbers a scanner
    tries: short extensions, a claimed DID, an unclaimed one), and meanwhile a
    real caller from the allowed address talks to the agent."""
    sipp = shutil.which("sipp")
    numbers = tmp_path / "numbers.csv"
    numbers.write_text(
        "SEQUENTIAL\n"
        + "".join(f"{n};\n" for n in ("100", GUARDED, "1000", UNCLAIMED, "00972599999999"))
    )
    scenario = tmp_path / "scan.xml"
    scenario.write_text(SCAN)
    before = settled(livekit_sip, conn)
    port = free_udp_tcp_port(OUTSIDE)
    scan = subprocess.Popen(
        [sipp, f"127.0.0.1:{livekit_sip.info['sip_port']}", "-sf", str(scenario),
         "-inf", str(numbers),
         "-t", "u1", "-i", OUTSIDE, "-p", str(port), "-r", "100", "-m", "1500", "-l", "200",
         "-nostdin", "-nr", "-nd", "-timeout", "60s"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(1)
        target = Target("127.0.0.1", livekit_sip.info["sip_port"], GUARDED, "udp")
        result = call(target, "+12125550102", conn=conn, cache=tmp_path)
        scan_running = scan.poll() is None
        scan.wait(timeout=70)
    finally:
        if scan.poll() is None:
            scan.kill()
    print(result.as_dict())
    assert scan_running, "the burst ended before the call did: not a test of the burst"
    assert result.ok, result.checks
    assert result.speech_in >= 25 and result.agent_heard_nonsilent >= 50
    after = settled(livekit_sip, conn, timeout=30)
    raw = services.metric(after, "livekit_sip_invite_requests_raw") - services.metric(
        before, "livekit_sip_invite_requests_raw"
    )
    flood = services.metric(
        after, "livekit_sip_calls_terminated", reason="flood"
    ) - services.metric(before, "livekit_sip_calls_terminated", reason="flood")
    print(f"burst: {raw:.0f} INVITEs reached livekit-sip, {flood:.0f} dropped as flood")
    assert raw >= 1500 and flood >= 1500
    assert services.http_get(f"http://127.0.0.1:{livekit_sip.info['health_port']}/")[0] == 200


# A scanner's INVITE: sent once (no retransmission), nothing awaited.
SCAN = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="scanner">
  <send>
    <![CDATA[
      INVITE sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "sipvicious"<sip:100@1.1.1.1>;tag=[call_number]
      To: <sip:[field0]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:100@[local_ip]:[local_port]>
      Max-Forwards: 70
      User-Agent: friendly-scanner
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="200"/>
</scenario>
"""


def test_a_right_password_is_let_in(conn, telephony, livekit_sip, agent_worker, tmp_path):
    """The control for the auth cases: the same trunk admits the right credentials."""
    before = settled(livekit_sip, conn)
    wire = stray_invite(
        livekit_sip.info["sip_port"], AUTHED, tmp_path, auth=("lk-in", PASSWORD), wait_ms=8000
    )
    assert wire.final_statuses[:1] == [407] and 200 in wire.final_statuses, wire.final_statuses

    async def clear_rooms():  # the caller hung up (BYE); the agent's room need not linger
        async with LiveKit(conn) as lk:
            for room in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms:
                await lk.room.delete_room(api.DeleteRoomRequest(room=room.name))

    asyncio.run(clear_rooms())
    after = settled(livekit_sip, conn)
    hangups = services.metric(after, "livekit_sip_calls_terminated", reason="hangup")
    assert hangups > services.metric(before, "livekit_sip_calls_terminated", reason="hangup"), (
        "livekit-sip did not count the admitted call's BYE as a hangup"
    )
