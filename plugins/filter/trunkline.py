"""Filters that look across the inventory: which Redis a component uses (one
address or Sentinel), which addresses a deployment's hosts send from (pure
functions, unit-tested in tests/test_filters.py). Ports: ports.py; config
files as data: config.py."""

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


def redis_sentinel_endpoint(
    addresses: Iterable[str], master_name: str, host: str, hostvars: dict, db: Any = 0
) -> str:
    """The Redis a component reaches through Sentinel, named so that two
    components share it exactly when the names are equal: `sentinel NAME@` and
    the sentinels as redis_endpoint names them, sorted, then `/DB`."""
    at = sorted(redis_endpoint(a, host, hostvars, 0).rsplit("/", 1)[0] for a in addresses)
    return f"sentinel {master_name}@{','.join(at)}/{db}"


def sentinel_problems(
    addresses: Any, master_name: str, who: str, password: Any = None, sentinels_auth: bool = False
) -> list[str]:
    """What is wrong with a component's Sentinel settings (`who`: its variable
    prefix), as messages; [] when they are usable or Sentinel is not used.
    `sentinels_auth`: the inventory's sentinels (redis role) require a password,
    so an empty `password` is refused."""
    if not addresses:
        return []
    if isinstance(addresses, str) or not isinstance(addresses, Iterable):
        return [f"{who}_redis_sentinel_addresses must be a list of HOST:PORT (it is {addresses!r})"]
    addresses = [str(a) for a in addresses]
    out = []
    bad = [a for a in addresses if not re.fullmatch(r"[^:\s]+:[0-9]{1,5}", a)]
    if bad:
        out.append(f"{who}_redis_sentinel_addresses: {', '.join(bad)} not HOST:PORT")
    if len(set(addresses)) != len(addresses):
        out.append(f"{who}_redis_sentinel_addresses lists a sentinel twice")
    n = len(set(addresses))
    if n < 3 or n % 2 == 0:
        out.append(
            f"{who}_redis_sentinel_addresses has {n} sentinel(s): use an odd number, at least 3, "
            "so a majority can still elect a master when one is lost"
        )
    if not str(master_name or "").strip():
        out.append(f"{who}_redis_sentinel_master_name must name the master the sentinels monitor")
    if sentinels_auth and not password:
        out.append(
            f"{who}_redis_sentinel_password is empty, but the sentinels of the redis group "
            "require one: set vault_redis_sentinel_password"
        )
    return out


def sentinel_master(answers: Iterable[Mapping], fallback: str) -> dict:
    """Which Redis is the master, from `SENTINEL get-master-addr-by-name` as
    each sentinel answered it (registered command results: `rc`, `stdout_lines`).

    {address, source, votes, asked, problem}: `source` is `sentinels` when most
    of those that answered agree, `inventory` (address = `fallback`, the
    initial master) when none answered (a first deployment), and `problem`
    says why neither holds (the answers split, e.g. during a failover). A
    sentinel that is down says nothing and is not counted."""
    answers = list(answers)
    said: dict[str, int] = {}
    for a in answers:
        lines = [str(x).strip() for x in a.get("stdout_lines") or []]
        if a.get("rc") == 0 and len(lines) == 2 and lines[1].isdigit():
            host = lines[0]
            key = f"[{host}]:{lines[1]}" if ":" in host else f"{host}:{lines[1]}"
            said[key] = said.get(key, 0) + 1
    out = {"address": fallback, "source": "inventory", "votes": 0, "asked": len(answers),
           "problem": ""}  # fmt: skip
    if not said:
        return out
    address, votes = max(said.items(), key=lambda kv: kv[1])
    answered = sum(said.values())
    if votes * 2 <= answered:
        split = ", ".join(f"{k}: {v}" for k, v in sorted(said.items()))
        out["problem"] = (
            f"the sentinels do not agree on the master ({split}, of {len(answers)} asked); "
            "run again once the failover has settled"
        )
        return out
    return {**out, "address": address, "source": "sentinels", "votes": votes}


def address_is_local(address: str, local: Iterable[str], port: Any) -> bool:
    """Whether HOST:PORT names this host (one of its `local` addresses, on `port`)."""
    host, _sep, at = str(address).rpartition(":")
    names = {str(x).lstrip("-").strip("[]") for x in local}
    return at == str(port) and host.strip("[]") in names


def runs_sentinels(hosts: Iterable[str], hostvars: Mapping) -> bool:
    """Whether any of `hosts` (the redis group) runs the redis role's sentinels,
    which always require a password."""
    return any(hostvars[h].get("redis_sentinel_enabled") for h in hosts)


SENTINEL_SETTINGS = ("quorum", "down-after-milliseconds", "failover-timeout", "parallel-syncs")


def sentinel_drift(lines: Iterable[str], desired: Mapping) -> list[list[str]]:
    """The [name, value] pairs to `SENTINEL SET` so the monitor settings of a
    sentinel (`SENTINEL MASTER NAME`'s output: name and value lines in turn)
    equal `desired`; [] when they do."""
    lines = [str(x).strip() for x in lines]
    have = dict(zip(lines[0::2], lines[1::2], strict=False))
    return [[k, str(desired[k])] for k in SENTINEL_SETTINGS
            if k in desired and have.get(k) != str(desired[k])]  # fmt: skip


REDIS_CLIENTS = ("livekit_server", "livekit_sip", "livekit_egress")


def redis_endpoints(
    v: Mapping, groups: Iterable[str], host: str, hostvars: dict, deployment: str
) -> list[dict]:
    """The Redis each LiveKit component on `host` uses (`v`: the host's
    variables, `groups`: its groups), as {who, host, deployment, at}: `at` is
    redis_endpoint or redis_sentinel_endpoint, so equal means the same Redis."""
    out = []
    for role in REDIS_CLIENTS:
        if role not in groups:
            continue
        sentinels = v.get(f"{role}_redis_sentinel_addresses") or []
        db = v.get(f"{role}_redis_db", 0)
        if sentinels:
            who = f"{role}_redis_sentinel_addresses"
            name = v.get(f"{role}_redis_sentinel_master_name", "")
            at = redis_sentinel_endpoint(sentinels, name, host, hostvars, db)
        else:
            who = f"{role}_redis_address"
            at = redis_endpoint(v[f"{role}_redis_address"], host, hostvars, db)
        out.append({"who": who, "host": host, "deployment": deployment, "at": at})
    return out


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
            "redis_sentinel_endpoint": redis_sentinel_endpoint,
            "sentinel_problems": sentinel_problems,
            "redis_endpoints": redis_endpoints,
            "sentinel_master": sentinel_master,
            "runs_sentinels": runs_sentinels,
            "sentinel_drift": sentinel_drift,
            "address_is_local": address_is_local,
            "deployment_addresses": deployment_addresses,
        }
