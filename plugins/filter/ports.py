"""What each component listens on and who may reach it: the one table the
preflight's overlap check and the firewall both read (pure functions,
unit-tested in tests/test_filters.py).

Adding a port to a component touches the component (its default and argument
spec) and one row of PORTS here, nothing else.

    {{ vars | trunkline.voice.host_ports(group_names) }}

`vars` holds the host's inventory, play and extra vars and the defaults of the
roles loaded in the play; a component role the play did not load is read from
its own roles/<role>/defaults/main.yml in this collection.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleFilterError

# Where a port may be reached from (roles/firewall turns each into sources):
#   public      anyone (WebRTC media, TURN, the HTTPS front end)
#   sip         firewall_sip_provider_networks, or anyone when that is empty
#   sip_media   firewall_sip_media_networks, or anyone when that is empty
#   deployment  the deployment's own hosts + firewall_deployment_networks
#   monitoring  the deployment's own hosts + firewall_monitoring_networks
EXPOSURES = ("public", "sip", "sip_media", "deployment", "monitoring")

# Inventory group -> the role that runs the component (and holds its defaults).
COMPONENTS = {
    "livekit_server": "livekit_server",
    "livekit_sip": "livekit_sip",
    "livekit_egress": "livekit_egress",
    "redis": "redis",
    "cxml": "cxml_endpoint",
    "tls_proxy": "tls_proxy",
    "livekit_agents": "livekit_agents",
}

# The roles of this collection: plugins/filter/ports.py -> <collection>/roles.
ROLES_DIR = Path(__file__).parents[2] / "roles"


@dataclass(frozen=True)
class When:
    """A port that exists only when `var` passes `test` (e.g. TLS enabled)."""

    var: str
    test: Callable[[Any], bool]


def enabled(var: str) -> When:
    return When(var, bool)


def positive(var: str) -> When:
    return When(var, lambda value: _number(var, value) > 0)


def not_positive(var: str) -> When:
    return When(var, lambda value: _number(var, value) <= 0)


@dataclass(frozen=True)
class Port:
    """One row: a port (or range) of the component run by `group`.

    `name` is what overlap messages and firewall comments call it; `start`
    (default: `name`) and `end` are the variables holding the port numbers.
    `each` turns the start variable's value into several ports (one per agent
    worker)."""

    group: str
    name: str
    proto: str
    exposure: str
    start: str = ""
    end: str = ""
    when: When | None = None
    each: Callable[[Any], list[int]] | None = None

    @property
    def reads(self) -> list[str]:
        """The variables this row reads."""
        names = [self.start or self.name, self.end, self.when.var if self.when else ""]
        return [n for n in names if n]


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


def _agent_health_ports(workers: list[dict]) -> list[int]:
    return [i["health_port"] for i in agent_instances(workers)]


# In the order overlaps are reported: server, SIP, Egress, Redis, CXML, the
# TLS front end, agent workers.
# fmt: off
PORTS = (
    Port("livekit_server", "livekit_server_port", "tcp", "deployment"),
    Port("livekit_server", "livekit_server_rtc_tcp_port", "tcp", "public"),
    Port("livekit_server", "livekit_server_rtc_udp_port", "udp", "public",
         when=positive("livekit_server_rtc_udp_port")),
    Port("livekit_server", "livekit_server_rtc_port_range", "udp", "public",
         start="livekit_server_rtc_port_range_start", end="livekit_server_rtc_port_range_end",
         when=not_positive("livekit_server_rtc_udp_port")),
    Port("livekit_server", "livekit_server_turn_udp_port", "udp", "public",
         when=enabled("livekit_server_turn_enabled")),
    Port("livekit_server", "livekit_server_turn_tls_port", "tcp", "public",
         when=enabled("livekit_server_turn_enabled")),
    Port("livekit_server", "livekit_server_prometheus_port", "tcp", "monitoring",
         when=positive("livekit_server_prometheus_port")),
    Port("livekit_sip", "livekit_sip_port", "tcp", "sip"),
    Port("livekit_sip", "livekit_sip_port", "udp", "sip"),
    Port("livekit_sip", "livekit_sip_rtp_port range", "udp", "sip_media",
         start="livekit_sip_rtp_port_start", end="livekit_sip_rtp_port_end"),
    Port("livekit_sip", "livekit_sip_health_port", "tcp", "monitoring"),
    Port("livekit_sip", "livekit_sip_tls_port", "tcp", "sip",
         when=enabled("livekit_sip_tls_enabled")),
    Port("livekit_sip", "livekit_sip_prometheus_port", "tcp", "monitoring",
         when=positive("livekit_sip_prometheus_port")),
    Port("livekit_egress", "livekit_egress_health_port", "tcp", "deployment"),
    Port("livekit_egress", "livekit_egress_template_port", "tcp", "deployment"),
    Port("livekit_egress", "livekit_egress_prometheus_port", "tcp", "deployment",
         when=positive("livekit_egress_prometheus_port")),
    Port("redis", "redis_port", "tcp", "deployment", when=enabled("redis_server_enabled")),
    Port("redis", "redis_sentinel_port", "tcp", "deployment",
         when=enabled("redis_sentinel_enabled")),
    Port("cxml", "cxml_endpoint_port", "tcp", "deployment"),
    Port("tls_proxy", "tls_proxy_http_port", "tcp", "public"),
    Port("tls_proxy", "tls_proxy_https_port", "tcp", "public"),
    Port("livekit_agents", "livekit_agents_health_port", "tcp", "monitoring",
         start="livekit_agents_workers", each=_agent_health_ports),
)
# fmt: on


@functools.cache
def role_defaults(role: str) -> dict:
    """roles/<role>/defaults/main.yml of this collection."""
    path = ROLES_DIR / role / "defaults" / "main.yml"
    try:
        return yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise AnsibleFilterError(f"host_ports: cannot read {path}: {e}") from e


def is_template(value: Any) -> bool:
    """Whether a default holds Jinja (which this plugin cannot evaluate)."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(is_template(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(is_template(v) for v in value)
    return False


def _number(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"{name} must be a port number, not {value!r}") from None


def _lookup(variables: Mapping, role: str, name: str) -> Any:
    """The host's value of `name`: its own, else the component role's default."""
    if name in variables:
        return variables[name]
    defaults = role_defaults(role)
    if name not in defaults:
        raise AnsibleFilterError(f"host_ports: {name} is not set and {role} has no default for it")
    value = defaults[name]
    if is_template(value):
        raise AnsibleFilterError(
            f"host_ports: {role}'s default for {name} is a template; port defaults must be literals"
        )
    return value


def host_ports(variables: Mapping, groups: Iterable[str]) -> list[dict]:
    """The ports the components of a host in `groups` use, as dicts with `name`,
    `proto`, `start`, `end` (= start for a single port) and `exposure`."""
    groups = set(groups)
    out = []
    for port in PORTS:
        if port.group not in groups:
            continue
        role = COMPONENTS[port.group]

        def get(name: str, role: str = role) -> Any:
            return _lookup(variables, role, name)

        if port.when and not port.when.test(get(port.when.var)):
            continue
        start_var = port.start or port.name
        if port.each:
            spans = [(p, p) for p in port.each(get(start_var))]
        else:
            start = _number(start_var, get(start_var))
            end = _number(port.end, get(port.end)) if port.end else start
            spans = [(start, end)]
        use = {"name": port.name, "proto": port.proto, "exposure": port.exposure}
        out += [{**use, "start": s, "end": e} for s, e in spans]
    return out


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


def _span(proto: str, start: int, end: int) -> str:
    return f"{proto} {start}" if start == end else f"{proto} {start}-{end}"


def agent_port(instance: dict) -> dict:
    """An agent instance's health port as a port use (see port_conflicts)."""
    return {"name": "livekit_agents_health_port", "proto": "tcp", "start": instance["health_port"]}


class FilterModule:
    def filters(self):
        return {
            "host_ports": host_ports,
            "port_conflicts": port_conflicts,
            "agent_instances": agent_instances,
            "agent_port": agent_port,
        }
