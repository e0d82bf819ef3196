"""Replication and Sentinel as converge.yml deployed them, then a failover.

The failover test is last in this file and leaves the replica as master:
molecule destroys the hosts after verify."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import uuid

import pytest
from redis_hosts import MASTER, REPLICA, SENTINEL_ONLY, SENTINELS, get_host
from test_redis import PASSWORD, host_addr, redis_cli, resp_ping

from conftest import _host_results, run_playbook, secret
from trunkline_testing.services import timed_wait

SENTINEL_PASSWORD = secret("redis_sentinel_password")
NAME = "trunkline"  # redis_sentinel_master_name's default


@pytest.fixture(params=SENTINELS)
def sentinel(request):
    """Each host that runs a sentinel."""
    return get_host(request.param)


def sentinel_cli(host, *args, auth=True):
    env = f"REDISCLI_AUTH={SENTINEL_PASSWORD} " if auth else ""
    return host.run(f"{env}redis-cli --no-auth-warning -h 127.0.0.1 -p 26379 " + " ".join(args))


def info(host, section="replication") -> dict[str, str]:
    out = redis_cli(host, "INFO", section).stdout
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def test_the_replica_follows_the_initial_master():
    master, replica = get_host(MASTER), get_host(REPLICA)
    assert info(master)["role"] == "master"
    assert info(master)["connected_slaves"] == "1"
    got = info(replica)
    assert (got["role"], got["master_host"], got["master_link_status"]) == (
        "slave",
        host_addr(master),
        "up",
    )


def test_a_write_on_the_master_reaches_the_replica_which_refuses_writes():
    master, replica = get_host(MASTER), get_host(REPLICA)
    key, value = f"trunkline-test-{uuid.uuid4().hex}", uuid.uuid4().hex
    assert redis_cli(master, "SET", key, value).stdout.strip() == "OK"
    timed_wait(lambda: redis_cli(replica, "GET", key).stdout.strip() == value, 10,
               "the key on the replica")  # fmt: skip
    assert "READONLY" in redis_cli(replica, "SET", key, "x").stdout


def test_sentinel_refuses_clients_without_the_password(sentinel):
    addr = host_addr(sentinel)
    assert resp_ping(addr, 26379, None).startswith("-NOAUTH")
    assert resp_ping(addr, 26379, SENTINEL_PASSWORD) == "+PONG"
    # Nor does the data password open it.
    with socket.create_connection((addr, 26379), timeout=5) as sock:
        sock.sendall(f"AUTH {PASSWORD}\r\n".encode())
        assert sock.recv(200).startswith(b"-WRONGPASS")


def test_every_sentinel_names_the_master_and_can_elect(sentinel):
    master = get_host(MASTER)
    assert sentinel_cli(sentinel, "SENTINEL", "get-master-addr-by-name", NAME).stdout.split() == [
        host_addr(master),
        "6379",
    ]
    assert sentinel_cli(sentinel, "SENTINEL", "ckquorum", NAME).stdout.startswith("OK 3 usable")
    assert sentinel_cli(sentinel, "SENTINEL", "sentinels", NAME).stdout.count("runid") == 2
    replicas = sentinel_cli(sentinel, "SENTINEL", "replicas", NAME).stdout
    assert host_addr(get_host(REPLICA)) in replicas


def test_sentinel_runs_the_role_settings(sentinel):
    lines = sentinel_cli(sentinel, "SENTINEL", "master", NAME).stdout.split()
    got = dict(zip(lines[0::2], lines[1::2], strict=False))
    assert (got["quorum"], got["down-after-milliseconds"], got["parallel-syncs"]) == (
        "2",
        "2000",
        "1",
    )


def test_sentinel_conf_is_private_and_keeps_the_marker(sentinel):
    conf = sentinel.file("/etc/redis/sentinel.conf")
    assert (conf.user, conf.group, conf.mode) == ("redis", "redis", 0o640)
    assert conf.contains("^# trunkline: written once by trunkline.voice.redis")
    assert SENTINEL_PASSWORD not in sentinel.check_output("ps -eo args")


def test_the_sentinel_only_host_runs_no_redis_server():
    host = get_host(SENTINEL_ONLY)
    assert host.service("redis-sentinel").is_running
    assert not host.package("redis-server").is_installed
    assert host.check_output("ss -Htln 'sport = :6379'") == ""


def test_redis_cannot_rewrite_its_own_config():
    """A failover's CONFIG REWRITE must fail: the files Ansible writes stay the truth."""
    master = get_host(MASTER)
    before = hashlib.sha256(master.file("/etc/redis/redis.conf").content).hexdigest()
    out = redis_cli(master, "CONFIG", "REWRITE").stdout
    assert "ERR" in out and "Read-only file system" in out
    assert hashlib.sha256(master.file("/etc/redis/redis.conf").content).hexdigest() == before


def changed_tasks(report: dict) -> set[tuple[str, str]]:
    """(host, task name) of every changed result in a run_playbook report."""
    return {(host, name) for name, host, r in _host_results(report) if r.get("changed")}


def _master_per(host) -> str:
    return " ".join(sentinel_cli(host, "SENTINEL", "get-master-addr-by-name", NAME).stdout.split())


def test_zz_failover_then_converge_records_the_new_master():
    """Freeze the master's host (docker pause: its Redis and its sentinel stop
    answering), see the two other sentinels promote the replica, thaw it and
    see it come back as a replica; then a converge records the new master in
    the replication files without restarting Redis, and a second changes nothing."""
    master, replica, third = get_host(MASTER), get_host(REPLICA), get_host(SENTINEL_ONLY)
    new = f"{host_addr(replica)} 6379"
    run_ids = {h: info(get_host(h), "server")["run_id"] for h in (MASTER, REPLICA)}
    subprocess.run(["docker", "pause", MASTER], check=True)
    try:
        took = timed_wait(
            lambda: (
                _master_per(replica) == new
                and _master_per(third) == new
                and info(replica)["role"] == "master"
            ),
            60,
            "the replica promoted",
        )
        print(f"promoted {took:.1f} s after the master's host froze (down-after 2 s)")
    finally:
        subprocess.run(["docker", "unpause", MASTER], check=True)
    took = timed_wait(
        lambda: (
            (i := info(master))["role"] == "slave"
            and i["master_host"] == host_addr(replica)
            and i.get("master_link_status") == "up"
        ),
        60,
        "the old master back as a replica of the new one",
    )
    print(f"old master replicating the new one {took:.1f} s after the thaw")

    first = run_playbook("converge.yml")
    assert first["rc"] == 0, first["failed_messages"]
    record = "redis : Record which Redis this one replicates (none on the master)"
    changed = {(host, name.rsplit(".", 1)[-1]) for host, name in changed_tasks(first)}
    assert changed == {(MASTER, record), (REPLICA, record)}
    assert {h: info(get_host(h), "server")["run_id"] for h in (MASTER, REPLICA)} == run_ids
    conf = "/etc/redis/trunkline-replication.conf"
    assert replica.file(conf).contains("^# This host is the master")
    assert master.file(conf).contains(f"^replicaof {new}$")
    assert info(replica)["role"] == "master" and info(master)["role"] == "slave"

    second = run_playbook("converge.yml")
    assert (second["rc"], second["changed_tasks"]) == (0, [])
