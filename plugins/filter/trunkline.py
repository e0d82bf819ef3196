"""Filters for Trunkline's preflight checks (pure functions, unit-tested in tests/)."""

from __future__ import annotations

import ipaddress
from typing import Any

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def redis_endpoint(address: str, host: str, hostvars: dict, db: Any = 0) -> str:
    """The Redis a component on `host` uses, as `INVENTORY_HOST:PORT/DB` where it is
    one of the inventory's hosts (loopback means `host` itself), else `ADDRESS:PORT/DB`.
    Two components share a Redis exactly when their endpoints are equal."""
    name, _, port = str(address).rpartition(":")
    name = name or str(address)
    if _is_loopback(name):
        return f"{host}:{port}/{db}"
    for other, hv in hostvars.items():
        candidates = {
            other,
            str(hv.get("ansible_host", "")),
            str(hv.get("ansible_default_ipv4", {}).get("address", "")),
            str(hv.get("ansible_fqdn", "")),
        }
        if name in candidates:
            return f"{other}:{port}/{db}"
    return f"{name}:{port}/{db}"


def port_conflicts(uses: list[dict]) -> list[str]:
    """Given the ports components use on one host - dicts with `name`, `proto` (tcp/udp)
    and `start` (and optionally `end` for a range) - describe every overlap."""
    spans = []
    for use in uses:
        start = int(use["start"])
        end = int(use.get("end", start))
        spans.append((use["proto"], start, end, use["name"]))
    out = []
    for i, (proto, start, end, name) in enumerate(spans):
        for proto2, start2, end2, name2 in spans[i + 1 :]:
            if proto == proto2 and start <= end2 and start2 <= end:
                first, second = _span(proto, start, end), _span(proto2, start2, end2)
                out.append(f"{name} ({first}) overlaps {name2} ({second})")
    return out


def agent_instances(workers: list[dict]) -> list[dict]:
    """One systemd instance per agent worker: ``<group>-<n>``, health port = the
    group's ``health_port`` + n - 1 (livekit_agents role)."""
    out = []
    for w in workers:
        for n in range(1, int(w.get("count", 1)) + 1):
            out.append(
                {
                    "instance": f"{w['name']}-{n}",
                    "group": w["name"],
                    "agent_name": w["agent_name"],
                    "health_port": int(w["health_port"]) + n - 1,
                    "environment": dict(w.get("environment") or {}),
                }
            )
    return out


def _span(proto: str, start: int, end: int) -> str:
    return f"{proto} {start}" if start == end else f"{proto} {start}-{end}"


class FilterModule:
    def filters(self):
        return {
            "agent_instances": agent_instances,
            "agent_port": lambda i: {
                "name": "livekit_agents_health_port",
                "proto": "tcp",
                "start": i["health_port"],
            },
            "redis_endpoint": redis_endpoint,
            "port_conflicts": port_conflicts,
        }
