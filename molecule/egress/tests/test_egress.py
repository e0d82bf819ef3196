"""livekit_egress on a host with Redis, LiveKit server and SIP: checked the way an
operator would, by protocol, and by recording a real phone call.

The controller (this machine, the network's gateway) plays the provider: sipp
calls the host's livekit-sip; the dispatch rule with `record: true` has the
server start an audio-only room composite on the Egress worker, which writes
Ogg/Opus to the host's recordings directory.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from trunkline.cli import main as trunkline
from trunkline.livekit import Connection

from conftest import host_address, local_address_towards, run_playbook, secret
from trunkline_testing import recording

RECORDINGS = "/var/lib/livekit-egress/recordings"
RECORDED_DID, PLAIN_DID = "+12127773456", "+12127773457"
HOLD = 12.0


@pytest.fixture(scope="module")
def conn(host) -> Connection:
    key = "API" + secret("livekit_api_key")
    return Connection(f"http://{host_address(host)}:7880", key, secret("livekit_api_secret"))


@pytest.fixture(scope="module")
def lk_env(conn, monkeypatch_module):
    monkeypatch_module.setenv("LIVEKIT_URL", conn.url)
    monkeypatch_module.setenv("LIVEKIT_API_KEY", conn.api_key)
    monkeypatch_module.setenv("LIVEKIT_API_SECRET", conn.api_secret)
    return conn


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def inspect(host) -> dict:
    return json.loads(host.check_output("docker inspect livekit-egress"))[0]


def healthy(host) -> bool:
    """The health port answers 200 (asked from the host itself: it is not for the outside)."""
    code = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9191/', timeout=3)"
    return host.run(f'python3 -c "{code}"').rc == 0


def egress_cli(capsys, *argv: str) -> tuple[int, object]:
    code = trunkline(["egress", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else err)


def wait_status(capsys, egress_id: str, done: set[str], timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        code, items = egress_cli(capsys, "list")
        assert code == 0, items
        rec = next((i for i in items if i["egress_id"] == egress_id), None)
        if rec and rec["status"] in done:
            return rec
        if time.monotonic() > deadline:
            pytest.fail(f"{egress_id} not {done} within {timeout} s: {rec}")
        time.sleep(2)


def fetch(host, path: str, dest: Path) -> Path:
    dest.write_bytes(host.file(path).content)
    return dest


def test_health_port_answers(host):
    assert healthy(host)


def test_server_sees_the_worker(host):
    """Egress's job channel is on the server's Redis (what the server publishes
    to). The server's own psrpc client channels (`EgressInternal|CLI_...|RES`,
    `CLI.EgressInternal...`) match the pattern too and do not count."""
    pw = secret("redis_password")
    out = host.check_output(
        f"REDISCLI_AUTH={pw} redis-cli --no-auth-warning PUBSUB CHANNELS '*EgressInternal*'"
    )
    workers = [c for c in out.split() if not c.startswith("CLI.") and "|CLI_" not in c]
    assert workers, f"no Egress subscription on the server's Redis (channels: {out.split()})"


def test_config_is_not_world_readable_and_secrets_stay_in_it(host):
    f = host.file("/etc/livekit/egress.yaml")
    assert f.mode == 0o640 and f.user == "root" and f.group == "root"
    env = " ".join(inspect(host)["Config"]["Env"])
    for name in ("livekit_api_secret", "redis_password"):
        assert secret(name) not in env
    journal = host.check_output("journalctl -u livekit-egress --no-pager -o cat")
    assert secret("livekit_api_secret") not in journal and secret("redis_password") not in journal


def test_container_host_network_sandbox_caps_not_privileged(host):
    info = inspect(host)
    hc = info["HostConfig"]
    assert info["State"]["Running"]
    assert hc["NetworkMode"] == "host"
    assert hc["Privileged"] is False
    # Chrome's sandbox: its namespaces (SYS_ADMIN) and its chroot into them (SYS_CHROOT)
    assert sorted(c.removeprefix("CAP_") for c in hc["CapAdd"]) == ["SYS_ADMIN", "SYS_CHROOT"]
    assert hc["CapDrop"] == ["ALL"]
    assert info["Config"]["Image"].startswith("trunkline/egress:")
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/etc/livekit/egress.yaml"]["RW"] is False
    assert mounts[RECORDINGS]["Source"] == RECORDINGS


def test_retention_rule_and_directory(host):
    assert host.file(RECORDINGS).mode == 0o750
    assert host.file(RECORDINGS).uid == 1000
    rule = host.file("/etc/tmpfiles.d/livekit-egress.conf").content_string
    assert re.search(rf"^d {RECORDINGS} 0750 1000 0 7d$", rule, re.M), rule


@pytest.mark.calls
def test_a_recorded_call_is_on_disk_with_its_length_and_speech(host, lk_env, capsys, tmp_path):
    addr = host_address(host)
    started = time.time()
    proc = recording.call_pairs(
        addr, 5060, [RECORDED_DID], HOLD, local_address_towards(addr), tmp_path
    )
    run = recording.finish(proc, HOLD)
    assert run.successful == 2, run.output[-2500:]
    # The rule's room is a direct one: both callers met in it. The server
    # started the recording when the room was created; it ends with the room.
    code, items = egress_cli(capsys, "list", "--room", "rec-room")
    assert code == 0 and items, items
    rec = items[-1]
    rec = wait_status(capsys, rec["egress_id"], {"complete", "failed", "aborted"})
    assert rec["status"] == "complete", rec
    path = rec["files"][0]["location"] or rec["files"][0]["filename"]
    assert path.startswith(f"{RECORDINGS}/rec-room-"), path
    assert host.file(path).exists and host.file(path).uid == 1000
    local = fetch(host, path, tmp_path / "call.ogg")
    loud = recording.measure(local)
    print(json.dumps({"file": path, "egress": rec, "measured": loud.__dict__}, indent=1))
    assert loud.codec == "opus"
    # both callers speak for HOLD s; the room lasts from the first join to the room's close
    assert HOLD - 2 <= loud.duration_s <= HOLD + 40, loud
    assert loud.mean_db > -45, f"the recording is (nearly) silent: {loud}"
    assert rec["started_at"] and time.time() - started < 300


@pytest.mark.calls
def test_an_unrecorded_rule_starts_no_recording(host, lk_env, capsys, tmp_path):
    addr = host_address(host)
    proc = recording.call_pairs(addr, 5060, [PLAIN_DID], 4, local_address_towards(addr), tmp_path)
    run = recording.finish(proc, 4)
    assert run.successful == 2, run.output[-2500:]
    code, items = egress_cli(capsys, "list", "--room", "plain-room")
    assert code == 0 and items == [], items


@pytest.mark.calls
def test_operator_starts_and_stops_a_recording(host, lk_env, capsys, tmp_path):
    addr = host_address(host)
    proc = recording.call_pairs(addr, 5060, [PLAIN_DID], 20, local_address_towards(addr), tmp_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            code, started = egress_cli(
                capsys,
                "start",
                "plain-room",
                "--filepath",
                f"{RECORDINGS}/manual-{{room_name}}-{{time}}.ogg",
            )
            if code == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)  # the room appears when the first caller joins
        assert code == 0, started
        rec = started[0]
        wait_status(capsys, rec["egress_id"], {"active"}, 60)
        time.sleep(6)
        code, stopped = egress_cli(capsys, "stop", rec["egress_id"])
        assert code == 0, stopped
        done = wait_status(capsys, rec["egress_id"], {"complete", "failed", "aborted"})
        assert done["status"] == "complete", done
        path = done["files"][0]["location"] or done["files"][0]["filename"]
        assert Path(path).name.startswith("manual-plain-room-")
        loud = recording.measure(fetch(host, path, tmp_path / "manual.ogg"))
        assert 4 <= loud.duration_s <= 20, loud
        assert loud.mean_db > -45, loud
    finally:
        recording.finish(proc, 20)
    # stopping it again is an error a script can see
    code, err = egress_cli(capsys, "stop", rec["egress_id"])
    assert code == 1, err


def test_check_diff_reports_no_change(check_run):
    assert check_run["rc"] == 0, check_run["failed_messages"]
    assert check_run["changed_tasks"] == []


def test_killed_container_is_replaced_and_healthy(host):
    before = inspect(host)["Id"]
    host.run_test("docker kill livekit-egress")
    for _ in range(90):
        time.sleep(1)
        now = host.run(
            "docker inspect -f '{{.Id}} {{.State.Running}}' livekit-egress"
        ).stdout.split()
        if now and now[0] != before and now[1] == "true" and healthy(host):
            break
    else:
        pytest.fail(host.run("journalctl -u livekit-egress -n 40 --no-pager").stdout)


def test_egress_on_another_redis_is_refused_before_anything_changes():
    report = run_playbook("converge.yml", "-e", "livekit_egress_redis_address=192.0.2.20:6379")
    assert report["rc"] != 0
    assert any(
        "LiveKit server, SIP and Egress must use the same Redis" in m
        for m in report["failed_messages"]
    ), report["failed_messages"]
    assert report["changed_tasks"] == []
