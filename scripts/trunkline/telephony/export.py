"""Write a telephony.yml from what LiveKit holds (the first step of adoption).

Passwords never leave LiveKit through this: each trunk with digest auth gets
a ``${<TRUNK>_PASSWORD}`` reference the operator fills from their vault.
Objects without a name are exported under their LiveKit ID.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from trunkline.telephony.state import Obj

_HEADER = """\
# telephony.yml exported by `trunkline telephony export` from {url}
# Passwords are not exported; set these environment variables from your vault:
# {variables}
# Then take the objects over with `trunkline telephony apply --adopt FILE`.
"""


def secret_variable(name: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_") + "_PASSWORD"


def _duration(seconds: int) -> str:
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _put(out: dict, key: str, value: Any) -> None:
    """Only fields that differ from the default are written."""
    if value in ("", (), [], {}, False, 0, None):
        return
    if isinstance(value, tuple):
        value = list(value)
    out[key] = value


def _auth(obj: Obj) -> dict | None:
    if not obj.fields["auth_username"]:
        return None
    return {
        "username": obj.fields["auth_username"],
        "password": "${" + secret_variable(obj.name) + "}",
    }


def _inbound(o: Obj) -> dict:
    f = o.fields
    out: dict[str, Any] = {"name": o.name}
    _put(out, "numbers", f["numbers"])
    _put(out, "allowed_addresses", f["allowed_addresses"])
    _put(out, "allowed_numbers", f["allowed_numbers"])
    _put(out, "auth", _auth(o))
    _put(out, "headers_to_attributes", dict(f["headers_to_attributes"]))
    if f["media_encryption"] != "disable":
        out["media_encryption"] = f["media_encryption"]
    _put(out, "krisp", f["krisp"])
    if f["ringing_timeout"]:
        out["ringing_timeout"] = _duration(f["ringing_timeout"])
    if f["max_call_duration"]:
        out["max_call_duration"] = _duration(f["max_call_duration"])
    _put(out, "metadata", f["metadata"])
    return out


def _outbound(o: Obj) -> dict:
    f = o.fields
    out: dict[str, Any] = {"name": o.name, "address": f["address"]}
    if f["transport"] != "auto":
        out["transport"] = f["transport"]
    _put(out, "numbers", f["numbers"])
    _put(out, "auth", _auth(o))
    _put(out, "headers", dict(f["headers"]))
    if f["media_encryption"] != "disable":
        out["media_encryption"] = f["media_encryption"]
    _put(out, "metadata", f["metadata"])
    return out


def _rule(o: Obj) -> dict:
    f = o.fields
    out: dict[str, Any] = {"name": o.name, "type": f["type"]}
    _put(out, "trunks", f["trunks"])
    _put(out, "room_prefix", f["room_prefix"])
    _put(out, "room_name", f["room_name"])
    _put(out, "pin", f["pin"])
    _put(out, "called_numbers", f["called_numbers"])
    _put(out, "caller_numbers", f["caller_numbers"])
    agents = [{"name": n, **({"metadata": m} if m else {})} for n, m in f["agents"]]
    _put(out, "agents", agents)
    _put(out, "hide_phone_number", f["hide_phone_number"])
    _put(out, "attributes", dict(f["attributes"]))
    _put(out, "metadata", f["metadata"])
    _put(out, "krisp", f["krisp"])
    _put(out, "record", {"filepath": f["record"]} if f["record"] else None)
    return out


def export_data(objects: list[Obj]) -> dict:
    by_kind = {"inbound_trunk": [], "outbound_trunk": [], "dispatch_rule": []}
    for obj in sorted(objects, key=lambda o: (o.kind, o.name, o.id)):
        by_kind[obj.kind].append(obj)
    data: dict[str, list] = {}
    if by_kind["inbound_trunk"]:
        data["inbound_trunks"] = [_inbound(o) for o in by_kind["inbound_trunk"]]
    if by_kind["outbound_trunk"]:
        data["outbound_trunks"] = [_outbound(o) for o in by_kind["outbound_trunk"]]
    if by_kind["dispatch_rule"]:
        data["dispatch_rules"] = [_rule(o) for o in by_kind["dispatch_rule"]]
    return data


def export_yaml(objects: list[Obj], url: str) -> str:
    body = yaml.safe_dump(export_data(objects), sort_keys=False, default_flow_style=False)
    variables = sorted(
        secret_variable(o.name)
        for o in objects
        if o.kind != "dispatch_rule" and o.fields["auth_username"]
    )
    header = _HEADER.format(url=url, variables=" ".join(variables) or "(none needed)")
    return header + "---\n" + body
