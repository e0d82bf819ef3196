"""`trunkline egress` against a real livekit-server with no Egress worker on its
Redis: usage errors exit 2 without touching LiveKit, refusals exit 1 with the
reason and no traceback, listings are JSON scripts can read. (The recording
itself, with a real Egress, is proven by the molecule `egress` scenario.)"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from livekit import api

from trunkline.cli import main
from trunkline.livekit import Connection, LiveKit


@pytest.fixture
def env(livekit_server, monkeypatch) -> Connection:
    info = livekit_server.info
    monkeypatch.setenv("LIVEKIT_URL", info["url"])
    monkeypatch.setenv("LIVEKIT_API_KEY", info["api_key"])
    monkeypatch.setenv("LIVEKIT_API_SECRET", info["api_secret"])
    return Connection(info["url"], info["api_key"], info["api_secret"])


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["egress", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def make_room(conn: Connection, name: str) -> None:
    async def go():
        async with LiveKit(conn) as lk:
            await lk.room.create_room(api.CreateRoomRequest(name=name, empty_timeout=30))

    asyncio.run(go())


def test_help_explains_and_exit_codes(capsys):
    assert main(["egress", "--help"]) == 0
    out = capsys.readouterr().out
    assert "audio-only room composites" in out and "Exit codes" in out
    assert main(["egress"]) == 2  # no action: the help, and a usage error


def test_list_is_json_and_empty_without_recordings(env, capsys):
    code, out, err = cli(capsys, "list", "--json")
    assert code == 0, err
    assert json.loads(out) == []
    code, out, _ = cli(capsys, "list", "--room", "nothing-here")
    assert code == 0 and out == ""


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["list", "--caller", "not-a-number"], "not-a-number"),
        (["start", "some-room", "--filepath", "/rec/{room_name}.mp4"], "must end with .ogg"),
        (["start", "some-room", "--filepath", "/rec/one.ogg"], "contain {room_name}"),
    ],
)
def test_usage_errors_exit_2_before_any_call(env, capsys, argv, expect):
    code, out, err = cli(capsys, *argv)
    assert code == 2, (out, err)
    assert expect in err and "Traceback" not in err


def test_start_on_a_missing_room_exits_1(env, capsys):
    code, _, err = cli(capsys, "start", "no-such-room")
    assert code == 1
    assert "no room named 'no-such-room'" in err and "Traceback" not in err


def test_start_without_an_egress_worker_exits_1_with_the_servers_reason(env, capsys):
    """The failure a deployment without Egress on the server's Redis meets."""
    make_room(env, "egress-cli-room")
    t0 = time.monotonic()
    code, _, err = cli(capsys, "start", "egress-cli-room", "--timeout", "30")
    assert code == 1, err
    assert "start recording room 'egress-cli-room'" in err and "Traceback" not in err
    assert "no Egress worker took the request" in err
    print(f"refused in {time.monotonic() - t0:.1f} s: {err.strip()}")


def test_stop_of_an_unknown_recording_exits_1(env, capsys):
    code, _, err = cli(capsys, "stop", "EG_doesnotexist")
    assert code == 1 and "stop egress EG_doesnotexist" in err and "Traceback" not in err


def test_call_sid_of_no_live_call_exits_1_and_says_what_to_do(env, capsys):
    code, _, err = cli(capsys, "list", "--call-sid", "CA0123456789")
    assert code == 1
    assert "--caller" in err and "Traceback" not in err
