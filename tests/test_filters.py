"""The preflight's filters (plugins/filter/trunkline.py), as pure functions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "trunkline_filters", Path(__file__).resolve().parent.parent / "plugins/filter/trunkline.py"
)
filters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(filters)

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


def test_redis_db_is_part_of_the_endpoint():
    assert filters.redis_endpoint("10.0.0.5:6379", "x", HOSTVARS, 1) == "core-1:6379/1"


def test_port_conflicts_finds_overlaps_per_protocol():
    uses = [
        {"name": "rtc", "proto": "udp", "start": 50000, "end": 60000},
        {"name": "rtp", "proto": "udp", "start": 59000, "end": 61000},
        {"name": "api", "proto": "tcp", "start": 7880},
        {"name": "health", "proto": "tcp", "start": 7880},
        {"name": "sip-udp", "proto": "udp", "start": 5060},
        {"name": "sip-tcp", "proto": "tcp", "start": 5060},
    ]
    assert filters.port_conflicts(uses) == [
        "rtc (udp 50000-60000) overlaps rtp (udp 59000-61000)",
        "api (tcp 7880) overlaps health (tcp 7880)",
    ]


def test_port_conflicts_accepts_adjacent_ranges():
    uses = [
        {"name": "a", "proto": "udp", "start": 10000, "end": 19999},
        {"name": "b", "proto": "udp", "start": 20000, "end": 29999},
    ]
    assert filters.port_conflicts(uses) == []


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
    got = filters.agent_instances(workers)
    assert [(i["instance"], i["health_port"], i["agent_name"]) for i in got] == [
        ("support-1", 8081, "support-agent"),
        ("support-2", 8082, "support-agent"),
        ("sales-1", 8090, "sales-agent"),
    ]
    assert got[2]["environment"] == {"A": "1"} and got[0]["environment"] == {}
