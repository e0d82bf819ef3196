"""Comparable views of telephony objects, desired (from the file) and actual
(from LiveKit), and the ownership marker that tells Trunkline's objects apart.

Pure: no network. Both sides become ``Obj`` values whose ``fields`` hold only
what Trunkline manages, normalized so that equal means "nothing to do".

Where the ownership marker lives, and why:
- Trunks: an envelope in the trunk's ``metadata``:
  ``{"trunkline": {"owner": ..., "auth": <keyed hash>}, "metadata": <yours>}``.
  LiveKit never copies trunk metadata to participants, so the envelope reaches
  no agent; the user's own metadata string is kept inside it, unchanged.
- Dispatch rules: the attribute ``trunkline.owner``. A rule's ``metadata`` is
  copied to the SIP participant's metadata and reaches agents as-is, so
  Trunkline leaves it alone; its ``attributes`` also reach the participant,
  where one namespaced key does no harm (agents see ``trunkline.owner``).
- Passwords: LiveKit Cloud does not give them back, and a self-hosted server
  does; Trunkline relies on neither. It keeps an HMAC-SHA256 of the password,
  keyed from the API secret, in the trunk's envelope, and compares hashes.
  Whoever can read the hash can already call the API with that secret.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from trunkline.telephony.model import DispatchRule, InboundTrunk, OutboundTrunk, Telephony

KINDS = ("inbound_trunk", "outbound_trunk", "dispatch_rule")
KIND_LABEL = {
    "inbound_trunk": "inbound trunk",
    "outbound_trunk": "outbound trunk",
    "dispatch_rule": "dispatch rule",
}
OWNER_ATTRIBUTE = "trunkline.owner"
DEFAULT_OWNER = "trunkline"
SECRET_FIELDS = ("auth_password",)
# An unowned object's password, which no hash ever equals.
UNKNOWN_SECRET = "unknown"  # noqa: S105 - a marker, not a password


@dataclass
class Obj:
    """One telephony object as Trunkline compares it."""

    kind: str
    name: str
    fields: dict[str, Any]
    id: str = ""  # LiveKit's ID (actual objects only)
    owner: str = ""  # "" = not owned by any Trunkline
    source: Any = field(default=None, repr=False)  # model object or LiveKit proto


def hash_key(api_secret: str) -> bytes:
    """The key of the password hashes, derived from (never equal to) the API secret."""
    return hmac.new(api_secret.encode(), b"trunkline telephony auth v1", hashlib.sha256).digest()


def secret_hash(key: bytes, kind: str, name: str, username: str, password: str) -> str:
    message = "\0".join((kind, name, username, password)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


# ---------------------------------------------------------------- marker
def wrap_metadata(user_metadata: str, owner: str, auth_hash: str) -> str:
    """The trunk metadata envelope that marks a trunk as owned."""
    marker = {"owner": owner}
    if auth_hash:
        marker["auth"] = auth_hash
    return json.dumps(
        {"trunkline": marker, "metadata": user_metadata}, sort_keys=True, separators=(",", ":")
    )


def unwrap_metadata(metadata: str) -> tuple[str, str, str]:
    """(user metadata, owner, auth hash) from a trunk's metadata; unowned if no envelope."""
    if metadata.startswith('{"'):
        try:
            data = json.loads(metadata)
        except ValueError:
            data = None
        marker = data.get("trunkline") if isinstance(data, dict) else None
        if isinstance(marker, dict) and isinstance(marker.get("owner"), str):
            user = data.get("metadata", "")
            return (
                user if isinstance(user, str) else json.dumps(user),
                marker["owner"],
                str(marker.get("auth", "")),
            )
    return metadata, "", ""


# ---------------------------------------------------------------- desired
def _sorted(values) -> tuple:
    return tuple(sorted(values))


def _auth_fields(key: bytes, kind: str, name: str, auth) -> dict[str, str]:
    if auth is None:
        return {"auth_username": "", "auth_password": ""}
    return {
        "auth_username": auth.username,
        "auth_password": secret_hash(key, kind, name, auth.username, auth.password),
    }


def desired_inbound(t: InboundTrunk, key: bytes) -> Obj:
    fields = {
        "numbers": _sorted(t.numbers),
        "allowed_addresses": _sorted(t.allowed_addresses),
        "allowed_numbers": _sorted(t.allowed_numbers),
        **_auth_fields(key, "inbound_trunk", t.name, t.auth),
        "headers_to_attributes": tuple(sorted(t.headers_to_attributes)),
        "media_encryption": t.media_encryption,
        "krisp": t.krisp,
        "ringing_timeout": t.ringing_timeout,
        "max_call_duration": t.max_call_duration,
        "metadata": t.metadata,
    }
    return Obj("inbound_trunk", t.name, fields, source=t)


def desired_outbound(t: OutboundTrunk, key: bytes) -> Obj:
    fields = {
        "address": t.address,
        "transport": t.transport,
        "numbers": _sorted(t.numbers),
        **_auth_fields(key, "outbound_trunk", t.name, t.auth),
        "headers": tuple(sorted(t.headers)),
        "media_encryption": t.media_encryption,
        "metadata": t.metadata,
    }
    return Obj("outbound_trunk", t.name, fields, source=t)


def desired_rule(r: DispatchRule) -> Obj:
    fields = {
        "type": r.type,
        "room_prefix": r.room_prefix,
        "room_name": r.room_name,
        "pin": r.pin,
        "trunks": _sorted(r.trunks),
        "called_numbers": _sorted(r.called_numbers),
        "caller_numbers": _sorted(r.caller_numbers),
        "agents": tuple((a.name, a.metadata) for a in r.agents),
        "hide_phone_number": r.hide_phone_number,
        "attributes": tuple(sorted(r.attributes)),
        "metadata": r.metadata,
        "krisp": r.krisp,
        "record": r.record,
    }
    return Obj("dispatch_rule", r.name, fields, source=r)


def desired_objects(telephony: Telephony, key: bytes) -> list[Obj]:
    return (
        [desired_inbound(t, key) for t in telephony.inbound_trunks]
        + [desired_outbound(t, key) for t in telephony.outbound_trunks]
        + [desired_rule(r) for r in telephony.dispatch_rules]
    )


def normalize_address(value: str) -> str:
    """CIDRs compare in ipaddress's form; anything else (LiveKit accepts more) as-is."""
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        return value
