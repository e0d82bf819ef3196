"""Outbound calls end to end: `trunkline call` asks real livekit-sip to dial
through an outbound trunk with digest credentials; sipp plays the provider
(401 challenge, then verifies the credentials) and the person who picks up
(speaks, then hangs up). The example agent, dispatched into the call's room,
greets and echoes. Measured on the wire by trunkline_testing.callee."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml
from livekit import api

from trunkline.cli import main
from trunkline.livekit import Connection, LiveKit

from conftest import AGENT_NAME
from trunkline_testing.callee import Callee
from trunkline_testing.sipp_peer import free_udp_tcp_port

NUMBER = "+12125550199"
PASSWORD = "out-trunk-pw-7c2d"


@pytest.fixture
def trunk(conn, tmp_path, monkeypatch):
    """An outbound trunk (digest auth) to a free loopback port; returns the port."""
    monkeypatch.setenv("LIVEKIT_URL", conn.url)
    monkeypatch.setenv("LIVEKIT_API_KEY", conn.api_key)
    monkeypatch.setenv("LIVEKIT_API_SECRET", conn.api_secret)
    monkeypatch.setenv("OUT_TRUNK_PASSWORD", PASSWORD)
    port = free_udp_tcp_port("127.0.0.1")
    data = {
        "outbound_trunks": [
            {
                "name": "provider-out",
                "address": f"127.0.0.1:{port}",
                "transport": "udp",
                "numbers": ["+12127773456"],
                "auth": {"username": "lk-out", "password": "${OUT_TRUNK_PASSWORD}"},
            }
        ]
    }
    path = tmp_path / "telephony.yml"
    path.write_text(yaml.safe_dump(data))
    assert main(["telephony", "apply", "--prune", str(path)]) == 0
    return port


def rooms(conn: Connection) -> list[str]:
    async def go():
        async with LiveKit(conn) as lk:
            return [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]

    return asyncio.run(go())


def dial(capsys, room: str, *extra: str) -> tuple[int, dict | None, str]:
    argv = ["call", NUMBER, "--trunk", "provider-out", "--room", room, "--wait", "--json"]
    code = main([*argv, *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, json.loads(out), err


@pytest.mark.parametrize("codec", ["pcmu", "pcma"])
def test_outbound_call_reaches_the_callee_and_the_agent_both_ways(
    conn, trunk, agent_worker, capsys, tmp_path, codec
):
    room = f"out-agent-{codec}"
    with Callee(
        "127.0.0.1", trunk, codec=codec, auth=("lk-out", PASSWORD), conn=conn, room=room,
        cache=tmp_path,
    ) as callee:  # fmt: skip
        code, call, err = dial(capsys, room, "--agent", AGENT_NAME, "--ring-timeout", "15")
        assert code == 0, err
        assert call["status"] == "answered" and call["agent"] == AGENT_NAME
        result = callee.result()
    print(json.dumps(result.as_dict(), indent=1))
    assert result.challenges == 1 and result.invites == 2, "digest: 401, then an INVITE with it"
    assert result.final_status == 200, f"capture drops {result.capture_drops}\n{result.log}"
    assert result.sipp_exit == 0, result.log
    assert result.agent_joined, agent_worker.log_tail()
    # The agent greets once the callee answered, and echoes what it said.
    assert result.speech_in >= 25, "the callee heard no speech from the agent"
    assert result.speech_in_after_callee_spoke >= 10, "no echo of the callee's words"
    assert result.agent_heard_nonsilent and result.agent_heard_nonsilent >= 50
    assert result.hung_up_by == "callee" and result.room_emptied_ms is not None
    assert room not in rooms(conn)


def test_wrong_trunk_password_is_refused_with_403_and_leaves_no_room(conn, trunk, capsys, tmp_path):
    room = "out-bad-auth"
    with Callee("127.0.0.1", trunk, auth=("lk-out", "not-" + PASSWORD), cache=tmp_path) as c:
        code, call, err = dial(capsys, room, "--ring-timeout", "10")
        result = c.result()
    print(call)
    assert code == 1 and call["status"] == "rejected" and call["sip_status"] == 403, call
    assert "SIP 403" in call["error"] and PASSWORD not in json.dumps(call) + err
    assert result.challenges == 1 and result.final_status == 403
    assert room not in rooms(conn)


def test_no_answer_is_reported_and_leaves_no_room(conn, trunk, capsys, tmp_path):
    room = "out-no-answer"
    with Callee("127.0.0.1", trunk, behaviour="no-answer", cache=tmp_path) as c:
        code, call, _err = dial(capsys, room, "--ring-timeout", "3")
        result = c.result(timeout_s=20)
    print(call, json.dumps(result.as_dict(), indent=1))
    assert code == 1 and call["status"] == "no-answer", call
    assert result.final_status == 487, "LiveKit cancelled the ringing call"
    assert room not in rooms(conn)


def test_busy_callee_is_reported_as_busy(conn, trunk, capsys, tmp_path):
    room = "out-busy"
    with Callee(
        "127.0.0.1", trunk, behaviour="busy", auth=("lk-out", PASSWORD), cache=tmp_path
    ) as c:
        code, call, _err = dial(capsys, room, "--ring-timeout", "10")
        result = c.result()
    assert code == 1 and call["status"] == "busy" and call["sip_status"] == 486, call
    assert result.challenges == 1 and result.final_status == 486
    assert room not in rooms(conn)
