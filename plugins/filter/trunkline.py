"""Filters that look across the inventory: which Redis a component uses, which
addresses a deployment's hosts send from (pure functions, unit-tested in
tests/test_filters.py). Ports: ports.py; config files as data: config.py."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
# Hosts of one inventory form one deployment unless trunkline_deployment splits them.
DEFAULT_DEPLOYMENT = "default"


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
    name, _sep, port = str(address).rpartition(":")
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


def deployment_addresses(
    hostvars: Mapping,
    hosts: Iterable[str],
    deployment: str = DEFAULT_DEPLOYMENT,
    local_interfaces: str = r"^lo$",
) -> list[str]:
    """The addresses the `hosts` of `deployment` send from, by their gathered facts:
    every interface's IPv4 address and secondaries and its IPv6 addresses but
    link-local ones, skipping interfaces matching `local_interfaces` (loopback,
    container bridges: traffic from other hosts never comes from them)."""
    out = []
    for host in hosts:
        hv = hostvars[host]
        if hv.get("trunkline_deployment", DEFAULT_DEPLOYMENT) != deployment:
            continue
        for iface in hv.get("ansible_interfaces") or []:
            if re.match(local_interfaces, iface):
                continue
            facts = hv.get("ansible_" + iface.replace("-", "_").replace(".", "_")) or {}
            ipv4 = facts.get("ipv4") or {}
            if "address" in ipv4:
                out.append(ipv4["address"])
            out += [a["address"] for a in facts.get("ipv4_secondaries") or []]
            out += [
                a["address"]
                for a in facts.get("ipv6") or []
                if not re.match(r"(?i)^fe80:", a["address"])
            ]
    return out


class FilterModule:
    def filters(self):
        return {
            "redis_endpoint": redis_endpoint,
            "deployment_addresses": deployment_addresses,
        }
