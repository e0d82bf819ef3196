"""LiveKit's config files as data (pure functions, unit-tested in
tests/test_filters.py). Each role's template merges its *_extra_config into
the dict and dumps it:

    {{ vars | trunkline.voice.livekit_sip_config | combine(livekit_sip_extra_config, recursive=True)
       | to_nice_yaml(indent=2, sort_keys=true) }}

The functions read the role's variables by their full names from `variables`
(the magic `vars`: inventory, play and extra vars over the role's defaults).
Optional keys appear only when set, as upstream's own examples leave them out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.plugins.filter.core import to_bool
from jinja2.filters import do_int


def _int(value: Any) -> int:
    """Jinja's `int` filter (the templates these functions replace used it)."""
    return do_int(value)


def redis_config(
    address: str,
    password: str = "",
    username: str = "",
    db: Any = 0,
    sentinel_master_name: str = "",
    sentinel_addresses: Sequence[str] = (),
    sentinel_username: str = "",
    sentinel_password: str = "",
    use_tls: Any = False,
) -> dict:
    """The `redis:` block LiveKit server, SIP and Egress read (livekit/protocol's
    RedisConfig): the address (or, with `sentinel_addresses`, the sentinels and the
    master's name), credentials when set, the database, TLS when asked for."""
    out = {"address": address, "db": _int(db)}
    if password:
        out["password"] = password
    if username:
        out["username"] = username
    if sentinel_addresses:
        out["sentinel_master_name"] = sentinel_master_name
        out["sentinel_addresses"] = list(sentinel_addresses)
        if sentinel_username:
            out["sentinel_username"] = sentinel_username
        if sentinel_password:
            out["sentinel_password"] = sentinel_password
    if to_bool(use_tls):
        out["use_tls"] = True
    return out


def livekit_server_config(v: Mapping) -> dict:
    """livekit.yaml, from the livekit_server role's variables."""
    rtc = {
        "tcp_port": _int(v["livekit_server_rtc_tcp_port"]),
        "use_external_ip": to_bool(v["livekit_server_rtc_use_external_ip"]),
    }
    if _int(v["livekit_server_rtc_udp_port"]) > 0:
        rtc["udp_port"] = _int(v["livekit_server_rtc_udp_port"])
    else:
        rtc["port_range_start"] = _int(v["livekit_server_rtc_port_range_start"])
        rtc["port_range_end"] = _int(v["livekit_server_rtc_port_range_end"])
    if v["livekit_server_rtc_node_ip"]:
        rtc["node_ip"] = v["livekit_server_rtc_node_ip"]
    if v["livekit_server_rtc_stun_servers"]:
        rtc["stun_servers"] = v["livekit_server_rtc_stun_servers"]
    interfaces = {}
    if v["livekit_server_rtc_interfaces_include"]:
        interfaces["includes"] = v["livekit_server_rtc_interfaces_include"]
    if v["livekit_server_rtc_interfaces_exclude"]:
        interfaces["excludes"] = v["livekit_server_rtc_interfaces_exclude"]
    if interfaces:
        rtc["interfaces"] = interfaces

    config = {
        "port": _int(v["livekit_server_port"]),
        "keys": {v["livekit_server_api_key"]: v["livekit_server_api_secret"]}
        | dict(v["livekit_server_extra_keys"]),
        "redis": redis_config(
            v["livekit_server_redis_address"],
            password=v["livekit_server_redis_password"],
            username=v["livekit_server_redis_username"],
            db=v["livekit_server_redis_db"],
            sentinel_master_name=v["livekit_server_redis_sentinel_master_name"],
            sentinel_addresses=v["livekit_server_redis_sentinel_addresses"],
            sentinel_username=v["livekit_server_redis_sentinel_username"],
            sentinel_password=v["livekit_server_redis_sentinel_password"],
        ),
        "rtc": rtc,
        "room": {
            "auto_create": to_bool(v["livekit_server_room_auto_create"]),
            "empty_timeout": _int(v["livekit_server_room_empty_timeout"]),
            "departure_timeout": _int(v["livekit_server_room_departure_timeout"]),
            "max_participants": _int(v["livekit_server_room_max_participants"]),
        },
        "logging": {
            "level": v["livekit_server_log_level"],
            "json": to_bool(v["livekit_server_log_json"]),
        },
    }
    if v["livekit_server_bind_addresses"]:
        config["bind_addresses"] = v["livekit_server_bind_addresses"]
    if v["livekit_server_turn_enabled"]:
        turn = {
            "enabled": True,
            "domain": v["livekit_server_turn_domain"],
            "tls_port": _int(v["livekit_server_turn_tls_port"]),
            "udp_port": _int(v["livekit_server_turn_udp_port"]),
            "external_tls": to_bool(v["livekit_server_turn_external_tls"]),
        }
        if v["livekit_server_turn_cert_file"]:
            turn["cert_file"] = v["livekit_server_turn_cert_file"]
            turn["key_file"] = v["livekit_server_turn_key_file"]
        config["turn"] = turn
    if v["livekit_server_webhook_urls"]:
        config["webhook"] = {
            "api_key": v["livekit_server_api_key"],
            "urls": v["livekit_server_webhook_urls"],
        }
    if _int(v["livekit_server_prometheus_port"]) > 0:
        config["prometheus_port"] = _int(v["livekit_server_prometheus_port"])
    return config


def _server_client(v: Mapping, role: str) -> dict:
    """What SIP and Egress both say about the server they work for: its API
    credentials and URL, and its Redis (they take jobs over it)."""
    return {
        "api_key": v[f"{role}_api_key"],
        "api_secret": v[f"{role}_api_secret"],
        "ws_url": v[f"{role}_ws_url"],
        "redis": redis_config(
            v[f"{role}_redis_address"],
            password=v[f"{role}_redis_password"],
            username=v[f"{role}_redis_username"],
            db=v[f"{role}_redis_db"],
            sentinel_master_name=v[f"{role}_redis_sentinel_master_name"],
            sentinel_addresses=v[f"{role}_redis_sentinel_addresses"],
            sentinel_username=v[f"{role}_redis_sentinel_username"],
            sentinel_password=v[f"{role}_redis_sentinel_password"],
        ),
    }


def livekit_sip_config(v: Mapping) -> dict:
    """sip.yaml, from the livekit_sip role's variables."""
    config = {
        **_server_client(v, "livekit_sip"),
        "sip_port": _int(v["livekit_sip_port"]),
        "rtp_port": f"{v['livekit_sip_rtp_port_start']}-{v['livekit_sip_rtp_port_end']}",
        "use_external_ip": to_bool(v["livekit_sip_use_external_ip"]),
        "health_port": _int(v["livekit_sip_health_port"]),
        "logging": {"level": v["livekit_sip_log_level"]},
    }
    if v["livekit_sip_nat_1_to_1_ip"]:
        config["nat_1_to_1_ip"] = v["livekit_sip_nat_1_to_1_ip"]
    if v["livekit_sip_listen_ip"]:
        config["listen_ip"] = v["livekit_sip_listen_ip"]
    if _int(v["livekit_sip_prometheus_port"]) > 0:
        config["prometheus_port"] = _int(v["livekit_sip_prometheus_port"])
    if _int(v["livekit_sip_max_active_calls"]) > 0:
        config["max_active_calls"] = _int(v["livekit_sip_max_active_calls"])
    if v["livekit_sip_tls_enabled"]:
        config["tls"] = {
            "port": _int(v["livekit_sip_tls_port"]),
            "certs": [
                {
                    "cert_file": v["livekit_sip_tls_cert_file"],
                    "key_file": v["livekit_sip_tls_key_file"],
                }
            ],
        }
    return config


def livekit_egress_config(v: Mapping, s3_at_top_level: Any = False) -> dict:
    """egress.yaml, from the livekit_egress role's variables. Upload settings go
    under `storage:` (Egress 1.9 and newer), or at the top level with
    `s3_at_top_level` (1.8 and older)."""
    config = {
        **_server_client(v, "livekit_egress"),
        "health_port": _int(v["livekit_egress_health_port"]),
        "template_port": _int(v["livekit_egress_template_port"]),
        "logging": {"level": v["livekit_egress_log_level"]},
        "enable_chrome_sandbox": to_bool(v["livekit_egress_chrome_sandbox"]),
    }
    if _int(v["livekit_egress_prometheus_port"]) > 0:
        config["prometheus_port"] = _int(v["livekit_egress_prometheus_port"])
    if v["livekit_egress_cpu_cost"]:
        config["cpu_cost"] = v["livekit_egress_cpu_cost"]
    if v["livekit_egress_session_limits"]:
        config["session_limits"] = v["livekit_egress_session_limits"]
    if v["livekit_egress_storage"] == "s3":
        s3 = {
            "bucket": v["livekit_egress_s3_bucket"],
            "access_key": v["livekit_egress_s3_access_key"],
            "secret": v["livekit_egress_s3_secret"],
            "force_path_style": to_bool(v["livekit_egress_s3_force_path_style"]),
        }
        if v["livekit_egress_s3_region"]:
            s3["region"] = v["livekit_egress_s3_region"]
        if v["livekit_egress_s3_endpoint"]:
            s3["endpoint"] = v["livekit_egress_s3_endpoint"]
        if to_bool(s3_at_top_level):
            config["s3"] = s3
        else:
            config["storage"] = {"s3": s3}
    return config


class FilterModule:
    def filters(self):
        return {
            "redis_config": redis_config,
            "livekit_server_config": livekit_server_config,
            "livekit_sip_config": livekit_sip_config,
            "livekit_egress_config": livekit_egress_config,
        }
