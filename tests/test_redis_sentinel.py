"""LiveKit on Redis Sentinel, with the real programs (the ground #17's cluster
stands on): livekit-server and livekit-sip configured with Sentinel's settings
only (``sentinel_master_name``, ``sentinel_addresses``, ``sentinel_password``:
no single Redis address), a master, a replica and three sentinels on loopback
with AUTH on both ports.

The master is killed with SIGKILL: Sentinel promotes the replica, every trunk
and dispatch rule Trunkline applied is still there (``telephony plan`` finds
nothing to change), LiveKit takes writes again, livekit-sip stays up, and the
old master comes back as a replica. The times are printed (``-s`` shows them):
they are measurements, not asserts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from trunkline.cli import main

from trunkline_testing import services
from trunkline_testing.services import timed_wait

TELEPHONY = {
    "inbound_trunks": [
        {"name": "carrier-in", "numbers": ["+12127773456"], "allowed_addresses": ["127.0.0.1/32"]}
    ],
    "dispatch_rules": [
        {
            "name": "support",
            "trunks": ["carrier-in"],
            "type": "individual",
            "room_prefix": "support-",
            "called_numbers": ["+12127773456"],
        }
    ],
}
AFTER = {
    **TELEPHONY,
    "dispatch_rules": [
        *TELEPHONY["dispatch_rules"],
        {"name": "after-failover", "trunks": ["carrier-in"], "type": "direct",
         "room_name": "after-failover", "called_numbers": ["+12127773457"]},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not (services.ARTIFACTS / "checksums.txt").exists():
        pytest.fail(".artifacts/ is missing: run `make testbed` first (make test does).")
    work = tmp_path_factory.mktemp("sentinel")
    rs = services.start_redis_sentinel(work)
    started = [rs]
    try:
        server = services.start_livekit_server(work, rs)
        started.append(server)
        sip = services.start_livekit_sip(work, rs, server)
        started.append(sip)
        yield rs, server, sip, work
    finally:
        for svc in reversed(started):
            svc.stop()


@pytest.fixture
def lk_env(stack, monkeypatch):
    _, server, _, _ = stack
    monkeypatch.setenv("LIVEKIT_URL", server.info["url"])
    monkeypatch.setenv("LIVEKIT_API_KEY", server.info["api_key"])
    monkeypatch.setenv("LIVEKIT_API_SECRET", server.info["api_secret"])


def _write(tmp_path: Path, data: dict, name: str) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_livekit_runs_on_sentinel_alone(stack):
    _, server, sip, work = stack
    for config in ("livekit.yaml", "sip.yaml"):
        redis = yaml.safe_load((work / config).read_text())["redis"]
        assert "address" not in redis and len(redis["sentinel_addresses"]) == 3, redis
    assert services.http_get(server.info["url"] + "/") == (200, "OK")
    status, body = services.http_get(f"http://127.0.0.1:{sip.info['health_port']}/")
    assert (status, body) in ((200, "OK"), (429, "UnderLoad")), (status, body)


def test_a_master_failover_keeps_every_trunk_and_rule(stack, lk_env, tmp_path, capsys):
    rs, _, sip, _ = stack
    before = _write(tmp_path, TELEPHONY, "telephony.yml")
    assert main(["telephony", "apply", before]) == 0
    master, replica = rs.info["first_master"], rs.info["first_replica"]
    # Replication is asynchronous: the replica has every write before the kill.
    assert services.redis_cli(master, rs.info["password"], "WAIT", "1", "5000") == "1"
    os.kill(rs.nodes[master].proc.pid, signal.SIGKILL)
    rs.nodes[master].proc.wait(timeout=5)
    t0 = time.monotonic()

    promoted = timed_wait(lambda: rs.master_port() == replica, 60, "Sentinel promoting the replica")
    assert rs.role(replica) == "master"

    after = _write(tmp_path, AFTER, "after.yml")

    def writes() -> bool:
        return main(["telephony", "apply", after]) == 0

    written = timed_wait(writes, 60, "LiveKit taking a write after the failover") + promoted
    capsys.readouterr()
    # Everything applied before the kill and after it is there: nothing to change
    # (exit 2 would be changes pending; plan never counts the extra rule, it prunes
    # only with --prune).
    assert main(["telephony", "plan", "--detailed-exitcode", before]) == 0
    assert main(["telephony", "plan", "--detailed-exitcode", after]) == 0
    capsys.readouterr()
    assert sip.proc.poll() is None, sip.log_tail()
    status, _ = services.http_get(f"http://127.0.0.1:{sip.info['health_port']}/")
    assert status in (200, 429), status
    with capsys.disabled():
        print(f"\n  failover: replica promoted {promoted:.1f} s after the master's SIGKILL;"
              f" LiveKit's first write {written:.1f} s after it"
              f" ({time.monotonic() - t0:.1f} s in all)")  # fmt: skip


def test_the_old_master_comes_back_as_a_replica(stack, capsys):
    rs, _, _, _ = stack
    master, replica = rs.info["first_master"], rs.info["first_replica"]
    rs.restart(master)
    took = timed_wait(
        lambda: rs.role(master) == "slave", 60, "the old master rejoining as a replica"
    )
    info = services.redis_cli(master, rs.info["password"], "INFO", "replication")
    assert f"master_port:{replica}" in info, info
    assert rs.master_port() == replica
    with capsys.disabled():
        print(f"\n  the old master a replica again {took:.1f} s after its restart")


def _egress_check(stack, **overrides) -> dict:
    """trunkline.voice.livekit_egress_check as Ansible runs it, on this machine,
    pointed at the server's Redis through the sentinels."""
    rs, server, _, _ = stack
    args = {
        "url": server.info["ws_url"], "api_key": server.info["api_key"],
        "api_secret": server.info["api_secret"], "redis_address": "unused:6379",
        "redis_password": rs.info["password"],
        "sentinel_addresses": rs.info["livekit_redis"]["sentinel_addresses"],
        "sentinel_master_name": rs.info["master_name"],
        "sentinel_password": rs.info["sentinel_password"],
    } | overrides  # fmt: skip
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("ansible")), "localhost", "-c", "local", "-i",
         "localhost,", "-e", f"ansible_python_interpreter={sys.executable}",
         "-m", "trunkline.voice.livekit_egress_check", "-a", json.dumps(args)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(services.ROOT / ".venv/collections"),
             "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"},
    )  # fmt: skip
    out = json.loads(proc.stdout)
    result = out["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert rs.info["password"] not in proc.stdout + proc.stderr
    assert rs.info["sentinel_password"] not in proc.stdout + proc.stderr
    return result


def test_the_egress_check_finds_the_master_through_the_sentinels(stack):
    """No Egress worker runs here: the check must get as far as counting the
    master's channels (none) and say where it looked; a wrong sentinel password
    is an error from the sentinels."""
    rs = stack[0]
    got = _egress_check(stack)
    assert got.get("failed"), got
    assert got["msg"].startswith(f"no Egress worker is subscribed on Redis {rs.info['master_name']}"
                                 " (via Sentinel 127.0.0.1:"), got["msg"]  # fmt: skip
    bad = _egress_check(stack, sentinel_password="wrong-password-0123456789")
    assert bad.get("failed") and bad["msg"].startswith("Redis trunkline (via Sentinel"), bad["msg"]
