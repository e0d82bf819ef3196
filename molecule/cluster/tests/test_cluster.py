"""The three-host staging inventory, deployed (see molecule.yml): Redis under
Sentinel, two LiveKit servers on it, and calls that Cloudonix would place,
through the CXML endpoint behind Caddy, landing on both SIP nodes, in rooms on
both servers, with jobs on agent workers of both agent hosts.

Hosts are reached with testinfra's docker backend (as root): the staging
inventory logs in as `admin`, which testbed-vars.yml overrides for Ansible
runs only."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import ssl
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import testinfra
import yaml

from trunkline import probe
from trunkline.livekit import Connection

from conftest import run_playbook, secret

SCENARIO = Path(__file__).resolve().parents[1]
STAGING = SCENARIO.parents[1] / "inventories" / "staging"
HOSTS = ("lk-1.example.net", "lk-2.example.net", "lk-3.example.net")
PRIVATE = {h: f"10.20.0.1{i}" for i, h in enumerate(HOSTS, 1)}
PUBLIC = {h: f"198.51.100.1{i}" for i, h in enumerate(HOSTS, 1)}
SERVERS = SIP = HOSTS[:2]
AGENT_HOSTS = HOSTS[1:]
EDGE = HOSTS[2]
DOMAIN = "livekit.example.net"
CADDY_CA = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"
CALLER = "+12125550142"
DID = "+12127773456"
EXTRA = ("-e", f"@{SCENARIO / 'testbed-vars.yml'}")


def node(name: str):
    return testinfra.get_host(f"docker://{name}")


def redis(*args: str, on: str = HOSTS[0], raw: bool = False) -> str | bytes:
    """redis-cli against the current master (asked of the sentinel on ``on``);
    ``raw``: the reply as bytes (LiveKit stores protobuf)."""
    h = node(on)
    env = f"REDISCLI_AUTH={secret('redis_sentinel_password')} "
    master = h.check_output(
        f"{env}redis-cli --no-auth-warning -p 26379 SENTINEL get-master-addr-by-name trunkline"
    ).split()
    env = f"REDISCLI_AUTH={secret('redis_password')} "
    out = h.run(f"{env}redis-cli --no-auth-warning -h {master[0]} -p {master[1]} {' '.join(args)}")
    assert out.rc == 0, out.stderr
    return out.stdout_bytes if raw else out.stdout_bytes.decode(errors="replace")


def test_the_inventory_deployed_is_staging():
    """The example users copy is the one this scenario ran (molecule.yml links it)."""
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    assert (inventory / "hosts").resolve() == (STAGING / "hosts.yml").resolve()
    assert (inventory / "group_vars").resolve() == (STAGING / "group_vars").resolve()
    staged = yaml.safe_load((STAGING / "hosts.yml").read_text())
    groups = staged["all"]["children"]["trunkline"]["children"]
    assert sorted({h for g in groups.values() for h in (g.get("hosts") or {})}) == list(HOSTS)


def test_redis_master_replica_and_three_sentinels():
    for name in HOSTS:
        env = f"REDISCLI_AUTH={secret('redis_sentinel_password')} "
        ask = f"{env}redis-cli --no-auth-warning -p 26379 SENTINEL"
        h = node(name)
        assert h.check_output(f"{ask} get-master-addr-by-name trunkline").split() == [
            PRIVATE[HOSTS[0]],
            "6379",
        ]
        assert h.check_output(f"{ask} ckquorum trunkline").startswith("OK 3 usable")
    replica = redis("INFO", "replication", on=HOSTS[1])
    assert "connected_slaves:1" in replica and f"ip={PRIVATE[HOSTS[1]]}" in replica
    assert not node(HOSTS[2]).package("redis-server").is_installed


def server_nodes() -> dict[str, str]:
    """LiveKit node ID -> host, from the `nodes` hash every server writes to Redis."""
    out = {}
    for node_id in redis("HKEYS", "nodes").split():
        blob = redis("HGET", "nodes", node_id, raw=True)
        out[node_id] = next(h for h in SERVERS if PUBLIC[h].encode() in blob)
    return out


def test_both_livekit_servers_are_nodes_of_one_deployment():
    assert sorted(server_nodes().values()) == sorted(SERVERS)


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ca") / "caddy-root.crt"
    path.write_text(node(EDGE).file(CADDY_CA).content_string)
    return str(path)


class _EdgeConnection(http.client.HTTPSConnection):
    """HTTPS to lk-3's public address, verified as livekit.example.net (no DNS here)."""

    def connect(self):
        sock = socket.create_connection((PUBLIC[EDGE], 443), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def cloudonix(ca_file: str, did: str) -> str:
    """What the CXML endpoint answers Cloudonix for a call to ``did``, via Caddy."""
    params = {"CallSid": f"cluster-{secrets.token_hex(6)}", "AccountSid": "cluster", "From": CALLER,
              "To": did, "Direction": "inbound", "CallStatus": "ringing"}  # fmt: skip
    conn = _EdgeConnection(
        DOMAIN, 443, timeout=5, context=ssl.create_default_context(cafile=ca_file)
    )
    conn.request("GET", "/cxml/?" + urllib.parse.urlencode(params),
                 headers={"Authorization": f"Bearer {secret('cxml_auth_token')}"})  # fmt: skip
    resp = conn.getresponse()
    body = resp.read().decode()
    assert resp.status == 200, (resp.status, body)
    return body


def agent_host_of(room: str) -> str | None:
    """The agent host whose example agent kept a record of the job in ``room``."""
    for name in AGENT_HOSTS:
        out = node(name).run("cat /var/lib/trunkline-agents/records/*.json 2>/dev/null").stdout
        if f'"room": "{room}"' in out or f'"room":"{room}"' in out:
            return name
    return None


@pytest.mark.calls
def test_calls_spread_over_both_sip_nodes_both_servers_and_both_agent_hosts(ca_file, tmp_path):
    """Calls one after another until each tier has served one on every node
    (round robin makes that two calls for SIP; the server a room lands on and
    the worker a job goes to are LiveKit's choice, random for rooms): at most
    14 calls (all 14 rooms on one server: p = 2^-13)."""
    nodes = server_nodes()
    conn = Connection(f"http://{PRIVATE[HOSTS[0]]}:7880", "API" + secret("livekit_api_key"),
                      secret("livekit_api_secret"))  # fmt: skip
    placed: dict[str, str] = {}  # room -> node id, seen while the call is up
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            pairs = str(redis("HGETALL", "room_node_map")).split()
            placed.update(zip(pairs[0::2], pairs[1::2], strict=False))
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    calls = []
    try:
        for _ in range(14):
            target, instead = probe.resolve_cxml(cloudonix(ca_file, DID), {}, "tcp")
            assert target is not None, instead
            result = probe.call(target, CALLER, conn=conn, cache=tmp_path, hold_ms=4000)
            assert result.ok, (result.checks, result.log[-2000:])
            calls.append({"sip": target.host, "room": result.room,
                          "answered_ms": result.answered_ms,
                          "agent_joined_ms": result.agent_joined_ms})  # fmt: skip
            time.sleep(0.5)
            for c in calls:
                c.setdefault("server", nodes.get(placed.get(c["room"], ""), None))
                c["agent"] = c.get("agent") or agent_host_of(c["room"])
            if all({c[k] for c in calls} >= set(want) for k, want in
                   (("sip", [PUBLIC[h] for h in SIP]), ("server", SERVERS),
                    ("agent", AGENT_HOSTS))):  # fmt: skip
                break
    finally:
        stop.set()
        watcher.join(timeout=5)
    print(json.dumps(calls, indent=1))
    assert {c["sip"] for c in calls} == {PUBLIC[h] for h in SIP}
    assert {c["server"] for c in calls} == set(SERVERS)
    assert {c["agent"] for c in calls} == set(AGENT_HOSTS)


def test_check_diff_reports_no_change():
    report = run_playbook("converge.yml", "--check", "--diff", *EXTRA)
    assert report["rc"] == 0, report["failed_messages"]
    assert report["changed_tasks"] == []


def _cxml_targets(ca_file: str, n: int) -> list[str]:
    """The SIP hosts the CXML endpoint sends ``n`` calls in a row to."""
    out = []
    for _ in range(n):
        target, instead = probe.resolve_cxml(cloudonix(ca_file, DID), {}, "tcp")
        assert target is not None, instead
        out.append(target.host)
    return out


@pytest.mark.calls
def test_a_stopped_sip_node_gets_no_call_and_the_other_takes_them(ca_file, tmp_path):
    """livekit-sip stopped on lk-1: within the endpoint's health interval (2 s)
    every call goes to lk-2, and it is answered there; started again, lk-1
    takes its turns again."""
    conn = Connection(f"http://{PRIVATE[HOSTS[1]]}:7880", "API" + secret("livekit_api_key"),
                      secret("livekit_api_secret"))  # fmt: skip
    lk1, lk2 = PUBLIC[HOSTS[0]], PUBLIC[HOSTS[1]]
    node(HOSTS[0]).run("systemctl stop livekit-sip")
    stopped = time.monotonic()
    try:
        deadline = stopped + 20
        while set(_cxml_targets(ca_file, 4)) != {lk2}:
            assert time.monotonic() < deadline, "lk-1 still routed 20 s after its SIP stopped"
            time.sleep(0.2)
        print(f"lk-1 out of the route {time.monotonic() - stopped:.1f} s after its SIP stopped")
        for _ in range(2):
            target, _ = probe.resolve_cxml(cloudonix(ca_file, DID), {}, "tcp")
            assert target.host == lk2
            result = probe.call(target, CALLER, conn=conn, cache=tmp_path, hold_ms=2000)
            assert result.ok, (result.checks, result.log[-2000:])
    finally:
        node(HOSTS[0]).run("systemctl start livekit-sip")
    started = time.monotonic()
    while set(_cxml_targets(ca_file, 4)) != {lk1, lk2}:
        assert time.monotonic() < started + 30, "lk-1 not routed again 30 s after its SIP started"
        time.sleep(0.5)
    print(f"lk-1 back in the route {time.monotonic() - started:.1f} s after its SIP started")
