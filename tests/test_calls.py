"""`trunkline call`: LiveKit SIP (real livekit-sip) dials a sipp UAS playing the
provider's side of an outbound trunk, on loopback."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from livekit import api

from trunkline.cli import main
from trunkline.livekit import Connection, LiveKit

from trunkline_testing.sipp_peer import free_udp_tcp_port, reject_scenario


@pytest.fixture
def env(livekit_server, livekit_sip, monkeypatch):
    info = livekit_server.info
    monkeypatch.setenv("LIVEKIT_URL", info["url"])
    monkeypatch.setenv("LIVEKIT_API_KEY", info["api_key"])
    monkeypatch.setenv("LIVEKIT_API_SECRET", info["api_secret"])
    monkeypatch.setenv("CALL_TEST_PASSWORD", "trunk-pw-5b1e")
    return Connection(info["url"], info["api_key"], info["api_secret"])


def uas(workdir: Path, port: int, *extra: str) -> subprocess.Popen:
    sipp = shutil.which("sipp")
    assert sipp, "sipp (Debian's sip-tester) is missing: run `make testbed`"
    return subprocess.Popen(
        [sipp, "-i", "127.0.0.1", "-p", str(port), "-t", "u1", "-m", "1", "-nostdin",
         "-timeout", "60s", *extra],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def trunk_file(tmp_path: Path, port: int) -> str:
    data = {
        "outbound_trunks": [
            {
                "name": "provider-out",
                "address": f"127.0.0.1:{port}",
                "transport": "udp",
                "numbers": ["+12127773456"],
                "auth": {"username": "lk", "password": "${CALL_TEST_PASSWORD}"},
            }
        ]
    }
    path = tmp_path / "telephony.yml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def rooms(conn: Connection) -> list[str]:
    async def go():
        async with LiveKit(conn) as lk:
            return [r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms]

    return asyncio.run(go())


def participants(conn: Connection, room: str) -> list:
    async def go():
        async with LiveKit(conn) as lk:
            req = api.ListParticipantsRequest(room=room)
            return list((await lk.room.list_participants(req)).participants)

    return asyncio.run(go())


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_answered_call_puts_the_callee_in_the_room(env, tmp_path, capsys):
    port = free_udp_tcp_port("127.0.0.1")
    assert cli(capsys, "telephony", "apply", "--prune", trunk_file(tmp_path, port))[0] == 0
    peer = uas(tmp_path, port, "-sn", "uas")
    try:
        code, out, err = cli(
            capsys, "call", "+12127773457", "--trunk", "provider-out", "--room", "out-1",
            "--wait", "--ring-timeout", "10", "--json",
        )  # fmt: skip
        assert code == 0, err
        call = json.loads(out)
        assert call["status"] == "answered" and call["room"] == "out-1"
        assert call["sip_call_id"]
        identities = [p.identity for p in participants(env, "out-1")]
        assert call["participant_identity"] in identities
    finally:
        asyncio.run(_delete_room(env, "out-1"))
        peer.kill()
        peer.wait(timeout=10)


@pytest.mark.parametrize(("status", "reason"), [(486, "Busy Here"), (404, "Not Found")])
def test_refused_call_reports_sip_status_and_leaves_no_room(env, tmp_path, capsys, status, reason):
    port = free_udp_tcp_port("127.0.0.1")
    assert cli(capsys, "telephony", "apply", "--prune", trunk_file(tmp_path, port))[0] == 0
    peer = uas(tmp_path, port, "-sf", str(reject_scenario(tmp_path, status, reason)))
    try:
        room = f"refused-{status}"
        code, _out, err = cli(
            capsys, "call", "+12127773457", "--trunk", "provider-out", "--room", room,
            "--wait", "--ring-timeout", "10",
        )  # fmt: skip
        assert code == 1
        assert f"SIP {status}" in err and "Traceback" not in err
        assert room not in rooms(env)
        assert peer.wait(timeout=20) == 0  # the far end saw INVITE and ACK
    finally:
        if peer.poll() is None:
            peer.kill()


def test_unknown_trunk_and_bad_number(env, capsys):
    code, _, err = cli(capsys, "call", "+12127773457", "--trunk", "nope")
    assert code == 1 and "no outbound trunk named 'nope'" in err
    code, _, err = cli(capsys, "call", "2127773457", "--trunk", "nope")
    assert code == 2 and "must start with +" in err


async def _delete_room(conn, room):
    async with LiveKit(conn) as lk:
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
