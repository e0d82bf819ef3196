"""What a user of the redis role relies on, checked on each redis-server host
(``node``: the master and the replica)."""

import os
import socket
from pathlib import Path

import pytest
from redis_hosts import DATA_NODES, get_host

PASSWORD = (
    Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "secrets", "redis_password")
    .read_text()
    .split()[0]
)


@pytest.fixture(params=DATA_NODES)
def node(request):
    """Each redis-server host (the sentinel-only host has none)."""
    return get_host(request.param)


def redis_cli(host, *args, auth=True, addr="127.0.0.1"):
    env = f"REDISCLI_AUTH={PASSWORD} " if auth else ""
    return host.run(f"{env}redis-cli --no-auth-warning -h {addr} -p 6379 " + " ".join(args))


def resp_ping(addr, port, password):
    """PING over a raw socket from the controller, optionally after AUTH; the first reply line."""
    with socket.create_connection((addr, port), timeout=5) as sock:
        stream = sock.makefile("rwb")
        if password:
            stream.write(f"AUTH {password}\r\n".encode())
            stream.flush()
            assert stream.readline() == b"+OK\r\n"
        stream.write(b"PING\r\n")
        stream.flush()
        return stream.readline().decode().strip()


def host_addr(host):
    return host.interface("eth0").addresses[0]


def test_ping_without_auth_is_refused(node):
    out = redis_cli(node, "PING", auth=False)
    assert "NOAUTH" in out.stdout + out.stderr


def test_wrong_password_is_refused(node):
    out = node.run("REDISCLI_AUTH=not-the-password redis-cli --no-auth-warning PING")
    assert "PONG" not in out.stdout
    assert "WRONGPASS" in out.stdout + out.stderr or "invalid" in out.stdout + out.stderr


def test_ping_with_auth_answers(node):
    assert redis_cli(node, "PING").stdout.strip() == "PONG"


def test_config_applied(node):
    assert redis_cli(node, "CONFIG", "GET", "maxmemory").stdout.split() == [
        "maxmemory",
        "134217728",
    ]
    out = redis_cli(node, "CONFIG", "GET", "maxmemory-policy").stdout.split()
    assert out == ["maxmemory-policy", "noeviction"]
    assert redis_cli(node, "CONFIG", "GET", "protected-mode").stdout.split()[1] == "yes"


def test_listens_only_where_configured(node):
    listening = {
        line.split()[3] for line in node.check_output("ss -Htln 'sport = :6379'").splitlines()
    }
    assert listening == {"127.0.0.1:6379", f"{host_addr(node)}:6379"}


def test_reachable_from_the_network_only_with_auth(node):
    # From the controller to the test node's own address (a container this run made).
    assert resp_ping(host_addr(node), 6379, None).startswith("-NOAUTH")
    assert resp_ping(host_addr(node), 6379, PASSWORD) == "+PONG"


def test_config_not_world_readable(node):
    conf = node.file("/etc/redis/redis.conf")
    assert conf.user == "redis"
    assert conf.group == "redis"
    assert conf.mode == 0o640


def test_password_not_in_process_list(node):
    assert PASSWORD not in node.check_output("ps -eo args")


def test_service_enabled_and_hardened(node):
    svc = node.service("redis-server")
    assert svc.is_running
    assert svc.is_enabled
    props = node.check_output(
        "systemctl show redis-server -p ProtectSystem -p NoNewPrivileges -p User"
    )
    assert "ProtectSystem=strict" in props or "ProtectSystem=full" in props
    assert "NoNewPrivileges=yes" in props
    assert "User=redis" in props


@pytest.mark.parametrize("key", ["rc", "stats"])
def test_check_diff_run_completed(check_run, key):
    assert key in check_run
    assert check_run["rc"] == 0


def test_check_diff_reports_no_change(check_run):
    assert check_run["changed_tasks"] == []
    assert all(s["changed"] == 0 for s in check_run["stats"].values())
