"""The collection's filters (plugins/filter/), as pure functions: the port table
the preflight and the firewall share (ports.py), the config files as data
(config.py), and the inventory-wide helpers (trunkline.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"trunkline_filter_{name}", ROOT / "plugins/filter" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


filters = _load("trunkline")
ports = _load("ports")
config = _load("config")


def defaults(role: str) -> dict:
    return yaml.safe_load((ROOT / "roles" / role / "defaults/main.yml").read_text())


def test_every_filter_module_is_a_separate_set_of_names():
    """Ansible finds trunkline.voice.<name> in any file of plugins/filter: a name
    defined twice would be ambiguous."""
    names = [n for m in (filters, ports, config) for n in m.FilterModule().filters()]
    assert len(names) == len(set(names))
    for kept in ("agent_instances", "agent_port", "redis_endpoint", "port_conflicts"):
        assert kept in names


# --- redis_endpoint ------------------------------------------------------------------

HOSTVARS = {
    "core-1": {"ansible_host": "10.0.0.5", "ansible_default_ipv4": {"address": "10.0.0.5"}},
    "sip-1": {"ansible_host": "sip-1.example.net", "ansible_default_ipv4": {"address": "10.0.0.6"}},
}


@pytest.mark.parametrize(
    ("address", "host", "expected"),
    [
        ("127.0.0.1:6379", "core-1", "core-1:6379/0"),
        ("localhost:6379", "core-1", "core-1:6379/0"),
        ("10.0.0.5:6379", "sip-1", "core-1:6379/0"),
        ("core-1:6379", "sip-1", "core-1:6379/0"),
        ("10.0.0.6:6380", "core-1", "sip-1:6380/0"),
        ("redis.example.net:6379", "core-1", "redis.example.net:6379/0"),
    ],
)
def test_redis_endpoint_names_the_same_redis_the_same_way(address, host, expected):
    assert filters.redis_endpoint(address, host, HOSTVARS) == expected


def test_loopback_on_two_hosts_is_two_redis():
    a = filters.redis_endpoint("127.0.0.1:6379", "core-1", HOSTVARS)
    b = filters.redis_endpoint("127.0.0.1:6379", "sip-1", HOSTVARS)
    assert a != b


def test_redis_endpoint_db_is_part_of_the_endpoint():
    assert filters.redis_endpoint("10.0.0.5:6379", "x", HOSTVARS, 1) == "core-1:6379/1"


SENTINELS = ["10.0.0.5:26379", "sip-1.example.net:26379", "10.0.0.7:26379"]


def test_redis_sentinel_endpoint_is_the_same_for_the_same_sentinels_in_any_order():
    a = filters.redis_sentinel_endpoint(SENTINELS, "main", "core-1", HOSTVARS)
    b = filters.redis_sentinel_endpoint(
        ["sip-1:26379", "10.0.0.7:26379", "core-1:26379"], "main", "x", HOSTVARS
    )
    assert a == b == "sentinel main@10.0.0.7:26379,core-1:26379,sip-1:26379/0"
    assert filters.redis_sentinel_endpoint(SENTINELS, "other", "core-1", HOSTVARS) != a
    assert filters.redis_endpoint("10.0.0.5:6379", "core-1", HOSTVARS) != a


@pytest.mark.parametrize(
    ("addresses", "name", "expected"),
    [
        ([], "", []),
        (SENTINELS, "main", []),
        (SENTINELS[:2], "main", ["has 2 sentinel(s): use an odd number, at least 3"]),
        (SENTINELS[:1], "main", ["has 1 sentinel(s)"]),
        ([*SENTINELS, "10.0.0.8:26379"], "main", ["has 4 sentinel(s)"]),
        (SENTINELS, "", ["_master_name must name the master"]),
        (["s1:26379", "s1:26379", "s2:26379"], "m", ["lists a sentinel twice", "has 2"]),
        (["s1", "s2:26379", "s3:26379"], "m", ["s1 not HOST:PORT"]),
        ("s1:26379", "m", ["must be a list of HOST:PORT"]),
    ],
)
def test_sentinel_problems_name_the_variable_and_what_to_change(addresses, name, expected):
    got = filters.sentinel_problems(addresses, name, "livekit_sip")
    assert len(got) == len(expected), got
    for message, want in zip(got, expected, strict=True):
        assert message.startswith("livekit_sip_redis_sentinel_") and want in message, got


def test_redis_endpoints_compare_address_and_sentinel_clients():
    v = {
        "livekit_server_redis_address": "127.0.0.1:6379", "livekit_server_redis_db": 0,
        "livekit_server_redis_sentinel_addresses": SENTINELS,
        "livekit_server_redis_sentinel_master_name": "main",
        "livekit_sip_redis_address": "10.0.0.5:6379", "livekit_sip_redis_db": 0,
        "livekit_sip_redis_sentinel_addresses": [],
    }  # fmt: skip
    got = filters.redis_endpoints(v, ["livekit_server", "livekit_sip"], "core-1", HOSTVARS, "d")
    assert [(e["who"], e["at"]) for e in got] == [
        (
            "livekit_server_redis_sentinel_addresses",
            "sentinel main@10.0.0.7:26379,core-1:26379,sip-1:26379/0",
        ),
        ("livekit_sip_redis_address", "core-1:6379/0"),
    ]  # fmt: skip: the server on Sentinel, SIP on one address: not the same Redis
    assert {e["host"] for e in got} == {"core-1"} and {e["deployment"] for e in got} == {"d"}
    assert filters.redis_endpoints(v, ["redis"], "core-1", HOSTVARS, "d") == []


# --- deployment_addresses --------------------------------------------------------------

LOCAL = r"^(lo|docker\d*|br-[0-9a-f]+|veth.*)$"


def _host(deployment=None, **interfaces):
    hv = {"ansible_interfaces": ["lo", *interfaces]}
    if deployment:
        hv["trunkline_deployment"] = deployment
    hv["ansible_lo"] = {"ipv4": {"address": "127.0.0.1"}}
    for name, facts in interfaces.items():
        hv["ansible_" + name.replace("-", "_").replace(".", "_")] = facts
    return hv


def test_deployment_addresses_are_every_address_the_hosts_send_from():
    hostvars = {
        "core-1": _host(
            eth0={
                "ipv4": {"address": "10.0.0.5"},
                "ipv4_secondaries": [{"address": "10.0.0.50"}],
                "ipv6": [{"address": "fe80::1"}, {"address": "2001:db8::5"}],
            },
            docker0={"ipv4": {"address": "172.17.0.1"}},
        ),
        "sip-1": {**_host(**{"eth0.10": {"ipv4": {"address": "10.0.1.6"}}})},
        "no-facts": {},
    }
    got = filters.deployment_addresses(hostvars, ["core-1", "sip-1", "no-facts"], "default", LOCAL)
    assert got == ["10.0.0.5", "10.0.0.50", "2001:db8::5", "10.0.1.6"]


def test_deployment_addresses_keep_to_one_deployment():
    hostvars = {
        "a": _host("one", eth0={"ipv4": {"address": "10.0.0.1"}}),
        "b": _host("two", eth0={"ipv4": {"address": "10.0.0.2"}}),
        "c": _host(eth0={"ipv4": {"address": "10.0.0.3"}}),
    }
    assert filters.deployment_addresses(hostvars, ["a", "b", "c"], "two", LOCAL) == ["10.0.0.2"]
    assert filters.deployment_addresses(hostvars, ["a", "b", "c"], "default", LOCAL) == ["10.0.0.3"]


# --- host_ports: the port table ---------------------------------------------------------


def _table(got):
    return [(p["name"], p["proto"], p["start"], p["end"], p["exposure"]) for p in got]


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        (
            "livekit_server",
            [
                ("livekit_server_port", "tcp", 7880, 7880, "deployment"),
                ("livekit_server_rtc_tcp_port", "tcp", 7881, 7881, "public"),
                ("livekit_server_rtc_port_range", "udp", 50000, 60000, "public"),
            ],
        ),
        (
            "livekit_sip",
            [
                ("livekit_sip_port", "tcp", 5060, 5060, "sip"),
                ("livekit_sip_port", "udp", 5060, 5060, "sip"),
                ("livekit_sip_rtp_port range", "udp", 10000, 20000, "sip_media"),
                ("livekit_sip_health_port", "tcp", 8080, 8080, "monitoring"),
            ],
        ),
        (
            "livekit_egress",
            [
                ("livekit_egress_health_port", "tcp", 9191, 9191, "deployment"),
                ("livekit_egress_template_port", "tcp", 7980, 7980, "deployment"),
            ],
        ),
        ("redis", [("redis_port", "tcp", 6379, 6379, "deployment")]),
        ("cxml", [("cxml_endpoint_port", "tcp", 8088, 8088, "deployment")]),
        (
            "tls_proxy",
            [
                ("tls_proxy_http_port", "tcp", 80, 80, "public"),
                ("tls_proxy_https_port", "tcp", 443, 443, "public"),
            ],
        ),
        ("livekit_agents", [("livekit_agents_health_port", "tcp", 8081, 8081, "monitoring")]),
    ],
)
def test_each_component_group_has_its_defaults_ports(group, expected):
    """With nothing set, each group's ports come from its role's defaults file."""
    assert _table(ports.host_ports({}, [group])) == expected


def test_a_host_of_no_component_uses_no_port():
    assert ports.host_ports({"livekit_server_port": 1}, ["trunkline", "monitoring"]) == []


def test_the_hosts_own_values_override_the_defaults():
    variables = {
        "livekit_server_port": "7890",
        "livekit_sip_rtp_port_start": 11000,
        "redis_port": 6380,
    }
    got = {(p["name"], p["proto"]): p for p in ports.host_ports(variables, ports.COMPONENTS)}
    assert got["livekit_server_port", "tcp"]["start"] == 7890
    assert (
        got["livekit_sip_rtp_port range", "udp"]["start"],
        got["livekit_sip_rtp_port range", "udp"]["end"],
    ) == (
        11000,
        20000,
    )
    assert got["redis_port", "tcp"]["start"] == 6380


def test_a_port_that_is_not_a_number_is_named():
    with pytest.raises(AnsibleFilterError, match="livekit_server_port must be a port number"):
        ports.host_ports({"livekit_server_port": "http"}, ["livekit_server"])


def test_one_rtc_udp_port_replaces_the_range():
    got = _table(ports.host_ports({"livekit_server_rtc_udp_port": "7882"}, ["livekit_server"]))
    assert ("livekit_server_rtc_udp_port", "udp", 7882, 7882, "public") in got
    assert not [p for p in got if p[0] == "livekit_server_rtc_port_range"]


def test_turn_opens_its_udp_and_tls_ports():
    got = _table(ports.host_ports({"livekit_server_turn_enabled": True}, ["livekit_server"]))
    assert got[-2:] == [
        ("livekit_server_turn_udp_port", "udp", 3478, 3478, "public"),
        ("livekit_server_turn_tls_port", "tcp", 5349, 5349, "public"),
    ]


@pytest.mark.parametrize(
    ("group", "name", "exposure"),
    [
        ("livekit_server", "livekit_server_prometheus_port", "monitoring"),
        ("livekit_sip", "livekit_sip_prometheus_port", "monitoring"),
        ("livekit_egress", "livekit_egress_prometheus_port", "deployment"),
    ],
)
def test_metrics_ports_exist_only_when_set(group, name, exposure):
    assert not [p for p in ports.host_ports({}, [group]) if p["name"] == name]
    got = _table(ports.host_ports({name: 9100}, [group]))
    assert (name, "tcp", 9100, 9100, exposure) in got


def test_sip_tls_port_exists_only_with_tls():
    assert not [
        p for p in ports.host_ports({}, ["livekit_sip"]) if p["name"] == "livekit_sip_tls_port"
    ]
    got = _table(ports.host_ports({"livekit_sip_tls_enabled": True}, ["livekit_sip"]))
    assert ("livekit_sip_tls_port", "tcp", 5061, 5061, "sip") in got


def test_each_agent_worker_instance_has_its_health_port():
    workers = [
        {"name": "support", "agent_name": "support-agent", "count": 3, "health_port": 8100},
        {"name": "sales", "agent_name": "sales-agent", "health_port": 8200},
    ]
    got = _table(ports.host_ports({"livekit_agents_workers": workers}, ["livekit_agents"]))
    assert [p[2] for p in got] == [8100, 8101, 8102, 8200]
    assert {p[0] for p in got} == {"livekit_agents_health_port"}


def test_every_exposure_is_a_class_the_firewall_knows():
    assert {p.exposure for p in ports.PORTS} == set(ports.EXPOSURES)
    assert set(ports.COMPONENTS) == {p.group for p in ports.PORTS}


def test_every_port_default_the_table_reads_is_a_literal():
    """Defaults are read from the roles' files when the play did not load the
    role; the plugin cannot evaluate Jinja there."""
    for port in ports.PORTS:
        role_defaults = defaults(ports.COMPONENTS[port.group])
        for name in port.reads:
            assert name in role_defaults, f"{name}: no default in {ports.COMPONENTS[port.group]}"
            assert not ports.is_template(role_defaults[name]), f"{name}: its default is a template"


PORT_LIKE = ("_port", "_port_start", "_port_end", "_port_range_start", "_port_range_end")


def test_every_port_of_a_component_is_in_the_table():
    """A component's new port must get its row (the firewall opens only those)."""
    read = {name for port in ports.PORTS for name in port.reads}
    for role in ports.COMPONENTS.values():
        for name in defaults(role):
            if name.endswith(PORT_LIKE):
                assert name in read, f"{role}: {name} is not in plugins/filter/ports.py's PORTS"


def test_a_templated_default_is_refused(tmp_path, monkeypatch):
    (tmp_path / "redis/defaults").mkdir(parents=True)
    (tmp_path / "redis/defaults/main.yml").write_text(
        'redis_port: "{{ other }}"\nredis_server_enabled: true\nredis_sentinel_enabled: false\n'
    )
    monkeypatch.setattr(ports, "ROLES_DIR", tmp_path)
    ports.role_defaults.cache_clear()
    try:
        with pytest.raises(AnsibleFilterError, match="port defaults must be literals"):
            ports.host_ports({}, ["redis"])
        assert _table(ports.host_ports({"redis_port": 6390}, ["redis"]))[0][2] == 6390
    finally:
        ports.role_defaults.cache_clear()


def test_a_variable_without_default_is_named(tmp_path, monkeypatch):
    (tmp_path / "redis/defaults").mkdir(parents=True)
    (tmp_path / "redis/defaults/main.yml").write_text(
        "---\nredis_bind_addresses: []\nredis_server_enabled: true\nredis_sentinel_enabled: false\n"
    )
    monkeypatch.setattr(ports, "ROLES_DIR", tmp_path)
    ports.role_defaults.cache_clear()
    try:
        with pytest.raises(AnsibleFilterError, match="redis_port is not set"):
            ports.host_ports({}, ["redis"])
    finally:
        ports.role_defaults.cache_clear()


# --- port_conflicts ---------------------------------------------------------------------


def test_port_conflicts_finds_overlaps_per_protocol():
    uses = [
        {"name": "rtc", "proto": "udp", "start": 50000, "end": 60000},
        {"name": "rtp", "proto": "udp", "start": 59000, "end": 61000},
        {"name": "api", "proto": "tcp", "start": 7880},
        {"name": "health", "proto": "tcp", "start": 7880},
        {"name": "sip-udp", "proto": "udp", "start": 5060},
        {"name": "sip-tcp", "proto": "tcp", "start": 5060},
    ]
    assert ports.port_conflicts(uses) == [
        "rtc (udp 50000-60000) overlaps rtp (udp 59000-61000)",
        "api (tcp 7880) overlaps health (tcp 7880)",
    ]


def test_port_conflicts_accepts_adjacent_ranges():
    uses = [
        {"name": "a", "proto": "udp", "start": 10000, "end": 19999},
        {"name": "b", "proto": "udp", "start": 20000, "end": 29999},
    ]
    assert ports.port_conflicts(uses) == []


ALL_IN_ONE = ["trunkline", "redis", "livekit_server", "livekit_sip", "tls_proxy"]


def test_an_all_in_one_host_with_defaults_has_no_overlap():
    assert ports.port_conflicts(ports.host_ports({}, [*ALL_IN_ONE, "livekit_egress", "cxml"])) == []


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            {"livekit_sip_rtp_port_start": 55000, "livekit_sip_rtp_port_end": 56000},
            "livekit_server_rtc_port_range (udp 50000-60000) overlaps"
            " livekit_sip_rtp_port range (udp 55000-56000)",
        ),
        (
            {"livekit_sip_health_port": 7880},
            "livekit_server_port (tcp 7880) overlaps livekit_sip_health_port (tcp 7880)",
        ),
        (
            {"redis_port": 7881},
            "livekit_server_rtc_tcp_port (tcp 7881) overlaps redis_port (tcp 7881)",
        ),
        (
            {"tls_proxy_https_port": 7880},
            "livekit_server_port (tcp 7880) overlaps tls_proxy_https_port (tcp 7880)",
        ),
    ],
)
def test_overlaps_between_components_are_named_in_table_order(variables, expected):
    """The messages molecule/preflight/tests/cases.yml expects."""
    assert ports.port_conflicts(ports.host_ports(variables, ALL_IN_ONE)) == [expected]


def test_agent_instances_number_workers_and_their_health_ports():
    workers = [
        {"name": "support", "agent_name": "support-agent", "count": 2, "health_port": 8081},
        {
            "name": "sales",
            "agent_name": "sales-agent",
            "health_port": 8090,
            "environment": {"A": "1"},
        },
    ]
    got = ports.agent_instances(workers)
    assert [(i["instance"], i["health_port"], i["agent_name"]) for i in got] == [
        ("support-1", 8081, "support-agent"),
        ("support-2", 8082, "support-agent"),
        ("sales-1", 8090, "sales-agent"),
    ]
    assert got[2]["environment"] == {"A": "1"} and got[0]["environment"] == {}
    assert ports.agent_port(got[1]) == {
        "name": "livekit_agents_health_port",
        "proto": "tcp",
        "start": 8082,
    }


# --- redis_config -----------------------------------------------------------------------


def test_redis_config_is_the_address_and_db_at_least():
    assert config.redis_config("10.0.0.5:6379") == {"address": "10.0.0.5:6379", "db": 0}


def test_redis_config_adds_credentials_when_set():
    got = config.redis_config("r:6379", password="pw", username="lk", db="2")
    assert got == {"address": "r:6379", "db": 2, "password": "pw", "username": "lk"}
    assert "password" not in config.redis_config("r:6379", password="")


def test_redis_config_sentinel():
    got = config.redis_config(
        "r:6379",
        sentinel_master_name="main",
        sentinel_addresses=["s1:26379", "s2:26379"],
        sentinel_username="su",
        sentinel_password="sp",
    )
    assert got == {
        "address": "r:6379",
        "db": 0,
        "sentinel_master_name": "main",
        "sentinel_addresses": ["s1:26379", "s2:26379"],
        "sentinel_username": "su",
        "sentinel_password": "sp",
    }
    # No sentinels: their name and credentials mean nothing and stay out.
    assert config.redis_config("r:6379", sentinel_master_name="main", sentinel_password="x") == {
        "address": "r:6379",
        "db": 0,
    }


def test_redis_config_tls():
    assert config.redis_config("r:6380", use_tls=True)["use_tls"] is True
    assert "use_tls" not in config.redis_config("r:6380", use_tls="false")


# --- the LiveKit configs ----------------------------------------------------------------

SECRETS = {"api_key": "APIkey", "api_secret": "s" * 40, "redis_password": "r" * 20}


def no_sentinel(role: str) -> dict:
    """The Sentinel defaults as they render without trunkline_redis_sentinel_*."""
    return {
        f"{role}_redis_sentinel_master_name": "",
        f"{role}_redis_sentinel_addresses": [],
        f"{role}_redis_sentinel_password": "",
    }


def server_vars(**overrides) -> dict:
    v = (
        defaults("livekit_server")
        | no_sentinel("livekit_server")
        | {
            "livekit_server_api_key": SECRETS["api_key"],
            "livekit_server_api_secret": SECRETS["api_secret"],
            "livekit_server_redis_address": "10.0.0.5:6379",
            "livekit_server_redis_password": SECRETS["redis_password"],
        }
    )
    return v | overrides


def test_livekit_server_config_from_the_defaults():
    assert config.livekit_server_config(server_vars()) == {
        "port": 7880,
        "keys": {"APIkey": "s" * 40},
        "redis": {"address": "10.0.0.5:6379", "db": 0, "password": "r" * 20},
        "rtc": {
            "tcp_port": 7881,
            "use_external_ip": False,
            "port_range_start": 50000,
            "port_range_end": 60000,
            "interfaces": {"excludes": ["docker0"]},
        },
        "room": {
            "auto_create": True,
            "empty_timeout": 300,
            "departure_timeout": 20,
            "max_participants": 0,
        },
        "logging": {"level": "info", "json": False},
    }


def test_livekit_server_config_options():
    got = config.livekit_server_config(
        server_vars(
            livekit_server_extra_keys={"APIother": "t" * 40},
            livekit_server_rtc_udp_port="7882",
            livekit_server_rtc_node_ip="192.0.2.10",
            livekit_server_rtc_stun_servers=["192.0.2.10:3478"],
            livekit_server_rtc_interfaces_include=["eth0"],
            livekit_server_rtc_interfaces_exclude=[],
            livekit_server_rtc_use_external_ip="no",
            livekit_server_bind_addresses=["10.0.0.5"],
            livekit_server_webhook_urls=["https://hooks.example/lk"],
            livekit_server_prometheus_port=6789,
            livekit_server_redis_sentinel_addresses=["s1:26379"],
            livekit_server_redis_sentinel_master_name="main",
            livekit_server_log_json="yes",
        )
    )
    assert got["keys"] == {"APIkey": "s" * 40, "APIother": "t" * 40}
    assert got["rtc"] == {
        "tcp_port": 7881,
        "use_external_ip": False,
        "udp_port": 7882,
        "node_ip": "192.0.2.10",
        "stun_servers": ["192.0.2.10:3478"],
        "interfaces": {"includes": ["eth0"]},
    }
    assert got["bind_addresses"] == ["10.0.0.5"]
    assert got["webhook"] == {"api_key": "APIkey", "urls": ["https://hooks.example/lk"]}
    assert got["prometheus_port"] == 6789
    assert got["redis"]["sentinel_addresses"] == ["s1:26379"]
    assert got["logging"]["json"] is True
    assert "turn" not in got


def test_livekit_server_config_turn():
    turn = {"livekit_server_turn_enabled": True, "livekit_server_turn_domain": "turn.example.net"}
    assert config.livekit_server_config(server_vars(**turn))["turn"] == {
        "enabled": True,
        "domain": "turn.example.net",
        "tls_port": 5349,
        "udp_port": 3478,
        "external_tls": False,
    }
    files = {
        "livekit_server_turn_cert_file": "/etc/c.pem",
        "livekit_server_turn_key_file": "/etc/k.pem",
    }
    got = config.livekit_server_config(server_vars(**turn, **files))["turn"]
    assert (got["cert_file"], got["key_file"]) == ("/etc/c.pem", "/etc/k.pem")


def sip_vars(**overrides) -> dict:
    v = (
        defaults("livekit_sip")
        | no_sentinel("livekit_sip")
        | {
            "livekit_sip_api_key": SECRETS["api_key"],
            "livekit_sip_api_secret": SECRETS["api_secret"],
            "livekit_sip_ws_url": "ws://10.0.0.5:7880",
            "livekit_sip_redis_address": "10.0.0.5:6379",
            "livekit_sip_redis_password": SECRETS["redis_password"],
        }
    )
    return v | overrides


def test_livekit_sip_config_from_the_defaults():
    assert config.livekit_sip_config(sip_vars()) == {
        "api_key": "APIkey",
        "api_secret": "s" * 40,
        "ws_url": "ws://10.0.0.5:7880",
        "redis": {"address": "10.0.0.5:6379", "db": 0, "password": "r" * 20},
        "sip_port": 5060,
        "rtp_port": "10000-20000",
        "use_external_ip": False,
        "health_port": 8080,
        "logging": {"level": "info"},
    }


def test_livekit_sip_and_egress_configs_take_sentinel():
    for role, render, make in (
        ("livekit_sip", config.livekit_sip_config, sip_vars),
        ("livekit_egress", config.livekit_egress_config, egress_vars),
    ):
        got = render(make(**{
            f"{role}_redis_sentinel_addresses": SENTINELS,
            f"{role}_redis_sentinel_master_name": "main",
            f"{role}_redis_sentinel_password": "sp",
        }))["redis"]  # fmt: skip
        assert got["sentinel_addresses"] == SENTINELS and got["sentinel_master_name"] == "main"
        assert got["sentinel_password"] == "sp" and got["password"] == "r" * 20


def test_livekit_sip_config_options():
    got = config.livekit_sip_config(
        sip_vars(
            livekit_sip_nat_1_to_1_ip="192.0.2.10",
            livekit_sip_listen_ip="10.0.0.6",
            livekit_sip_prometheus_port="9100",
            livekit_sip_max_active_calls=50,
            livekit_sip_tls_enabled=True,
            livekit_sip_tls_cert_file="/etc/sip.pem",
            livekit_sip_tls_key_file="/etc/sip.key",
            livekit_sip_redis_username="sip",
            livekit_sip_redis_db=1,
        )
    )
    assert got["nat_1_to_1_ip"] == "192.0.2.10" and got["listen_ip"] == "10.0.0.6"
    assert got["prometheus_port"] == 9100 and got["max_active_calls"] == 50
    assert got["tls"] == {
        "port": 5061,
        "certs": [{"cert_file": "/etc/sip.pem", "key_file": "/etc/sip.key"}],
    }
    assert got["redis"] == {
        "address": "10.0.0.5:6379",
        "db": 1,
        "password": "r" * 20,
        "username": "sip",
    }


def egress_vars(**overrides) -> dict:
    v = (
        defaults("livekit_egress")
        | no_sentinel("livekit_egress")
        | {
            "livekit_egress_api_key": SECRETS["api_key"],
            "livekit_egress_api_secret": SECRETS["api_secret"],
            "livekit_egress_ws_url": "ws://10.0.0.5:7880",
            "livekit_egress_redis_address": "10.0.0.5:6379",
            "livekit_egress_redis_password": SECRETS["redis_password"],
            "livekit_egress_s3_access_key": "",
            "livekit_egress_s3_secret": "",
        }
    )
    return v | overrides


def test_livekit_egress_config_from_the_defaults():
    assert config.livekit_egress_config(egress_vars()) == {
        "api_key": "APIkey",
        "api_secret": "s" * 40,
        "ws_url": "ws://10.0.0.5:7880",
        "redis": {"address": "10.0.0.5:6379", "db": 0, "password": "r" * 20},
        "health_port": 9191,
        "template_port": 7980,
        "logging": {"level": "info"},
        "enable_chrome_sandbox": True,
    }


S3 = {
    "livekit_egress_storage": "s3",
    "livekit_egress_s3_bucket": "calls",
    "livekit_egress_s3_access_key": "AKIAEXAMPLE",
    "livekit_egress_s3_secret": "s3-secret",
    "livekit_egress_s3_endpoint": "https://s3.example.internal",
}


@pytest.mark.parametrize("top_level", [False, True])
def test_livekit_egress_config_s3_goes_where_the_version_reads_it(top_level):
    got = config.livekit_egress_config(egress_vars(**S3), s3_at_top_level=top_level)
    s3 = {
        "bucket": "calls",
        "access_key": "AKIAEXAMPLE",
        "secret": "s3-secret",
        "force_path_style": False,
        "endpoint": "https://s3.example.internal",
    }
    if top_level:
        assert got["s3"] == s3 and "storage" not in got
    else:
        assert got["storage"] == {"s3": s3} and "s3" not in got


def test_livekit_egress_config_options():
    got = config.livekit_egress_config(
        egress_vars(
            livekit_egress_prometheus_port=9200,
            livekit_egress_cpu_cost={"max_cpu_utilization": 0.8},
            livekit_egress_session_limits={"file_output_max_duration": "4h"},
            livekit_egress_chrome_sandbox=False,
            livekit_egress_s3_region="eu-west-1",
            **S3,
        )
    )
    assert got["prometheus_port"] == 9200
    assert got["cpu_cost"] == {"max_cpu_utilization": 0.8}
    assert got["session_limits"] == {"file_output_max_duration": "4h"}
    assert got["enable_chrome_sandbox"] is False
    assert got["storage"]["s3"]["region"] == "eu-west-1"


# --- sentinel_master, sentinel_drift, address_is_local ------------------------------------


def _said(*lines, rc=0):
    return {"rc": rc, "stdout_lines": list(lines)}


def test_sentinel_master_takes_what_most_answering_sentinels_say():
    answers = [_said("10.0.0.11", "6379"), _said("10.0.0.11", "6379"), _said(rc=1)]
    got = filters.sentinel_master(answers, "10.0.0.10:6379")
    assert got == {"address": "10.0.0.11:6379", "source": "sentinels", "votes": 2, "asked": 3,
                   "problem": ""}  # fmt: skip


def test_sentinel_master_falls_back_to_the_initial_master_when_none_answers():
    answers = [_said("Could not connect to Redis at 10.0.0.10:26379", rc=1), _said(rc=124)]
    got = filters.sentinel_master(answers, "10.0.0.10:6379")
    assert (got["address"], got["source"], got["problem"]) == ("10.0.0.10:6379", "inventory", "")
    # An unknown master name answers nil: nothing to count either.
    assert filters.sentinel_master([_said()], "a:1")["source"] == "inventory"


def test_sentinel_master_refuses_a_split():
    answers = [_said("10.0.0.10", "6379"), _said("10.0.0.11", "6379")]
    got = filters.sentinel_master(answers, "10.0.0.10:6379")
    assert "do not agree" in got["problem"] and "10.0.0.11:6379: 1" in got["problem"]


def test_sentinel_master_brackets_ipv6():
    assert filters.sentinel_master([_said("fd00::1", "6379")], "")["address"] == "[fd00::1]:6379"


@pytest.mark.parametrize(
    ("address", "local", "port", "expected"),
    [
        ("10.0.0.10:6379", ["127.0.0.1", "10.0.0.10"], 6379, True),
        ("10.0.0.10:6380", ["10.0.0.10"], 6379, False),
        ("10.0.0.11:6379", ["127.0.0.1", "-::1", "10.0.0.10"], 6379, False),
        ("[fd00::1]:6379", ["-fd00::1"], "6379", True),
    ],
)
def test_address_is_local(address, local, port, expected):
    assert filters.address_is_local(address, local, port) is expected


def test_sentinel_drift_names_only_what_differs():
    lines = ["name", "m", "quorum", "2", "down-after-milliseconds", "30000", "parallel-syncs", "1",
             "failover-timeout", "60000"]  # fmt: skip
    want = {"quorum": 2, "down-after-milliseconds": 5000, "parallel-syncs": 1,
            "failover-timeout": 60000}  # fmt: skip
    assert filters.sentinel_drift(lines, want) == [["down-after-milliseconds", "5000"]]
    assert filters.sentinel_drift(lines[:2], {"quorum": 2}) == [["quorum", "2"]]


def test_runs_sentinels_looks_at_the_redis_group():
    hostvars = {
        "a": {"redis_sentinel_enabled": False},
        "b": {},
        "c": {"redis_sentinel_enabled": True},
    }
    assert filters.runs_sentinels(["a", "b", "c"], hostvars) is True
    assert filters.runs_sentinels(["a", "b"], hostvars) is False
    assert filters.runs_sentinels([], hostvars) is False
