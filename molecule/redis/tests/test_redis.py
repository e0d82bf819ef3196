"""What a user of the redis role relies on, checked on each converged host."""

import os
import socket
from pathlib import Path

import pytest

PASSWORD = (
    Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "secrets", "redis_password")
    .read_text()
    .split()[0]
)


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


def test_ping_without_auth_is_refused(host):
    out = redis_cli(host, "PING", auth=False)
    assert "NOAUTH" in out.stdout + out.stderr


def test_wrong_password_is_refused(host):
    out = host.run("REDISCLI_AUTH=not-the-password redis-cli --no-auth-warning PING")
    assert "PONG" not in out.stdout
    assert "WRONGPASS" in out.stdout + out.stderr or "invalid" in out.stdout + out.stderr


def test_ping_with_auth_answers(host):
    assert redis_cli(host, "PING").stdout.strip() == "PONG"


def test_config_applied(host):
    assert redis_cli(host, "CONFIG", "GET", "maxmemory").stdout.split() == [
        "maxmemory",
        "134217728",
    ]
    out = redis_cli(host, "CONFIG", "GET", "maxmemory-policy").stdout.split()
    assert out == ["maxmemory-policy", "noeviction"]
    assert redis_cli(host, "CONFIG", "GET", "protected-mode").stdout.split()[1] == "yes"


def test_listens_only_where_configured(host):
    listening = {
        line.split()[3] for line in host.check_output("ss -Htln 'sport = :6379'").splitlines()
    }
    assert listening == {"127.0.0.1:6379", f"{host_addr(host)}:6379"}


def test_reachable_from_the_network_only_with_auth(host):
    # From the controller to the test host's own address (a container this run made).
    assert resp_ping(host_addr(host), 6379, None).startswith("-NOAUTH")
    assert resp_ping(host_addr(host), 6379, PASSWORD) == "+PONG"


def test_config_not_world_readable(host):
    conf = host.file("/etc/redis/redis.conf")
    assert conf.user == "redis"
    assert conf.group == "redis"
    assert conf.mode == 0o640


def test_password_not_in_process_list(host):
    assert PASSWORD not in host.check_output("ps -eo args")


def test_service_enabled_and_hardened(host):
    svc = host.service("redis-server")
    assert svc.is_running
    assert svc.is_enabled
    props = host.check_output(
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
