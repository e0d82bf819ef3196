"""The desired state: parse and validate a telephony.yml into typed objects.

Pure: no network, no API. Every problem names the file, the object and the
field; all problems are collected before anything is reported, so one run
shows everything to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trunkline.config import FieldReader, interpolate, label
from trunkline.errors import ConfigError, Problem

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
HEADER_HINT = "a valid header name"
HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:(\d{1,5}))?$")
MEDIA_ENCRYPTION = ("disable", "allow", "require")
TRANSPORTS = ("auto", "udp", "tcp", "tls")
RULE_TYPES = ("individual", "direct", "callee")
SECRET_FIELDS = ("password",)


@dataclass(frozen=True)
class Auth:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class InboundTrunk:
    name: str
    numbers: tuple[str, ...]
    allowed_addresses: tuple[str, ...] = ()
    allowed_numbers: tuple[str, ...] = ()
    auth: Auth | None = None
    headers_to_attributes: tuple[tuple[str, str], ...] = ()
    media_encryption: str = "disable"
    krisp: bool = False
    ringing_timeout: int = 0  # seconds, 0 = LiveKit's default
    max_call_duration: int = 0
    metadata: str = ""


@dataclass(frozen=True)
class OutboundTrunk:
    name: str
    address: str
    numbers: tuple[str, ...]
    transport: str = "auto"
    auth: Auth | None = None
    headers: tuple[tuple[str, str], ...] = ()
    media_encryption: str = "disable"
    metadata: str = ""


@dataclass(frozen=True)
class Agent:
    name: str
    metadata: str = ""


@dataclass(frozen=True)
class DispatchRule:
    name: str
    type: str
    trunks: tuple[str, ...] = ()  # empty = every inbound trunk
    room_prefix: str = ""
    room_name: str = ""
    pin: str = ""
    called_numbers: tuple[str, ...] = ()
    caller_numbers: tuple[str, ...] = ()
    agents: tuple[Agent, ...] = ()
    hide_phone_number: bool = False
    attributes: tuple[tuple[str, str], ...] = ()
    metadata: str = ""
    krisp: bool = False
    # Recording (LiveKit Egress): the file path template of an audio-only room
    # composite started when the rule creates a room; "" = not recorded.
    record: str = ""


@dataclass(frozen=True)
class Telephony:
    inbound_trunks: tuple[InboundTrunk, ...] = ()
    outbound_trunks: tuple[OutboundTrunk, ...] = ()
    dispatch_rules: tuple[DispatchRule, ...] = ()


@dataclass
class Parsed:
    telephony: Telephony
    warnings: list[Problem]


def _auth(r: FieldReader) -> Auth | None:
    if r.get("auth") is None:
        return None
    sub = r.child("auth")
    username = sub.str("username", required=True)
    password = sub.secret("password", required=True)
    sub.done()
    return Auth(username, password) if username and password else None


def _named(reader: FieldReader) -> str:
    name = reader.str("name", required=True)
    if name and not NAME.match(name):
        reader.fail(
            "name", "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def _inbound(r: FieldReader) -> InboundTrunk:
    name = _named(r)
    numbers = r.numbers("numbers")
    trunk = InboundTrunk(
        name=name,
        numbers=numbers,
        allowed_addresses=tuple(str(n) for n in r.networks("allowed_addresses")),
        allowed_numbers=r.numbers("allowed_numbers"),
        auth=_auth(r),
        headers_to_attributes=r.pairs("headers_to_attributes", HEADER, HEADER_HINT),
        media_encryption=r.choice("media_encryption", MEDIA_ENCRYPTION, "disable"),
        krisp=r.bool("krisp"),
        ringing_timeout=r.duration("ringing_timeout"),
        max_call_duration=r.duration("max_call_duration"),
        metadata=r.str("metadata"),
    )
    if not r.data.get("numbers"):
        r.fail("numbers", "lists no number: the trunk would accept calls to any number")
    r.done()
    return trunk


def _outbound(r: FieldReader) -> OutboundTrunk:
    name = _named(r)
    address = r.str("address", required=True)
    if address.lower().startswith("sip:"):
        r.fail("address", "is host[:port] without 'sip:' (LiveKit adds the scheme)")
    elif address:
        match = HOSTPORT.match(address)
        if not match or (match.group(3) and not 0 < int(match.group(3)) < 65536):
            r.fail("address", f"{address!r} is not host[:port]")
    trunk = OutboundTrunk(
        name=name,
        address=address,
        numbers=r.numbers("numbers"),
        transport=r.choice("transport", TRANSPORTS, "auto"),
        auth=_auth(r),
        headers=r.pairs("headers", HEADER, HEADER_HINT),
        media_encryption=r.choice("media_encryption", MEDIA_ENCRYPTION, "disable"),
        metadata=r.str("metadata"),
    )
    if not r.data.get("numbers"):
        r.fail("numbers", "lists no caller ID number")
    r.done()
    return trunk


def _agents(r: FieldReader) -> tuple[Agent, ...]:
    out = []
    for i, value in enumerate(r.list("agents")):
        sub = r.child(f"agents[{i}]", value)
        name = sub.str("name", required=True)
        if name and not AGENT_NAME.match(name):
            sub.fail(
                "name", "must be the agent_name a worker registers: letters, digits, '.', '_', '-'"
            )
        out.append(Agent(name, sub.str("metadata")))
        sub.done()
    return tuple(out)


# Where `record: true` puts a call's recording: the livekit_egress role's local
# directory; Egress fills in the room (for individual rules it carries the
# caller's number) and the start time.
DEFAULT_RECORDING = "/var/lib/livekit-egress/recordings/{room_name}-{time}.ogg"
RECORDING_SUFFIXES = (".ogg",)


def _record(r: FieldReader) -> str:
    value = r.get("record")
    if value is None or value is False:
        return ""
    if value is True:
        return DEFAULT_RECORDING
    if not isinstance(value, dict):
        kind = type(value).__name__
        r.fail("record", f"must be true, false or a mapping with `filepath`, not {kind}")
        return ""
    sub = r.child("record")
    path = sub.str("filepath", DEFAULT_RECORDING)
    sub.done()
    if not path.endswith(RECORDING_SUFFIXES):
        sub.fail("filepath", f"must end with .ogg (audio-only Opus), not {path!r}")
    if "{room_name}" not in path and "{room_id}" not in path:
        sub.fail(
            "filepath", "must contain {room_name} or {room_id}: every call needs a file of its own"
        )
    if ".." in path.split("/"):
        sub.fail("filepath", "must not contain '..'")
    return path


def _rule(r: FieldReader) -> DispatchRule:
    name = _named(r)
    kind = r.choice("type", RULE_TYPES, "individual")
    trunks = []
    for i, value in enumerate(r.list("trunks")):
        if not isinstance(value, str):
            r.fail(f"trunks[{i}]", "must be a trunk name")
        else:
            trunks.append(value)
    rule = DispatchRule(
        name=name,
        type=kind,
        trunks=tuple(trunks),
        room_prefix=r.str("room_prefix"),
        room_name=r.str("room_name"),
        pin=r.str("pin"),
        called_numbers=r.numbers("called_numbers"),
        caller_numbers=r.numbers("caller_numbers"),
        agents=_agents(r),
        hide_phone_number=r.bool("hide_phone_number"),
        attributes=r.pairs("attributes"),
        metadata=r.str("metadata"),
        krisp=r.bool("krisp"),
        record=_record(r),
    )
    if kind == "direct" and not rule.room_name:
        r.fail("room_name", "is required for a direct rule (every call joins that room)")
    if kind != "direct" and rule.room_name:
        r.fail("room_name", f"applies to direct rules only; a {kind} rule uses room_prefix")
    if rule.pin and not rule.pin.isdigit():
        r.fail("pin", "must be digits only (callers type it on the keypad)")
    r.done()
    return rule


def parse(data: Any, file: str, env: Mapping[str, str]) -> Parsed:
    """Validate a loaded telephony.yml. Raises ConfigError listing every problem."""
    problems: list[Problem] = []
    warnings: list[Problem] = []
    if data is None:
        data = {}
    resolved = interpolate(data, env, file, "", problems) if isinstance(data, dict) else data
    top = FieldReader(file, "", resolved, problems, data)

    def objects(kind: str, build):
        written = data.get(kind) if isinstance(data, dict) else None
        return [
            build(top.child(f"{kind}[{label(written[i], i)}]", value, written[i]))
            for i, value in enumerate(top.list(kind))
        ]

    inbound = objects("inbound_trunks", _inbound)
    outbound = objects("outbound_trunks", _outbound)
    rules = objects("dispatch_rules", _rule)
    top.done("is not a known section")

    _check_names(
        file, "inbound_trunks", inbound, problems, others=outbound, other_kind="outbound_trunks"
    )
    _check_names(file, "dispatch_rules", rules, problems)
    _check_numbers_claimed_once(file, inbound, problems)
    _check_rule_references(
        file, rules, {t.name for t in inbound}, {t.name for t in outbound}, problems
    )
    warnings += _warn_unrouted(file, inbound, rules) + _warn_scanner_bait(file, inbound, rules)
    if problems:
        raise ConfigError(problems)
    return Parsed(Telephony(tuple(inbound), tuple(outbound), tuple(rules)), warnings)


def _check_names(file, kind, objs, problems, others=(), other_kind=""):
    seen: dict[str, str] = {}
    for obj in objs:
        if obj.name in seen:
            problems.append(
                Problem(file, f"{kind}[{obj.name}].name", f"{obj.name!r} is used twice")
            )
        seen[obj.name] = kind
    out_seen: set[str] = set()
    for obj in others:
        if obj.name in seen:
            problems.append(
                Problem(
                    file,
                    f"{other_kind}[{obj.name}].name",
                    f"{obj.name!r} is also an inbound trunk; "
                    "trunk names are unique across both kinds",
                )
            )
        if obj.name in out_seen:
            problems.append(
                Problem(file, f"{other_kind}[{obj.name}].name", f"{obj.name!r} is used twice")
            )
        out_seen.add(obj.name)


def _check_numbers_claimed_once(file, inbound, problems):
    owner: dict[str, str] = {}
    for trunk in inbound:
        for number in trunk.numbers:
            if number in owner and owner[number] != trunk.name:
                problems.append(
                    Problem(
                        file,
                        f"inbound_trunks[{trunk.name}].numbers",
                        f"{number} is already claimed by inbound trunk {owner[number]!r}",
                    )
                )
            owner.setdefault(number, trunk.name)


def _check_rule_references(file, rules, inbound_names, outbound_names, problems):
    for rule in rules:
        for name in rule.trunks:
            if name in inbound_names:
                continue
            why = (
                "is an outbound trunk; rules dispatch inbound calls"
                if name in outbound_names
                else "is not a trunk in this file"
            )
            problems.append(Problem(file, f"dispatch_rules[{rule.name}].trunks", f"{name!r} {why}"))


def _rule_matches(rule: DispatchRule, trunk: InboundTrunk, number: str) -> bool:
    return (not rule.trunks or trunk.name in rule.trunks) and (
        not rule.called_numbers or number in rule.called_numbers
    )


def _warn_unrouted(file, inbound, rules) -> list[Problem]:
    out = []
    for trunk in inbound:
        for number in trunk.numbers:
            if not any(_rule_matches(rule, trunk, number) for rule in rules):
                out.append(
                    Problem(
                        file,
                        f"inbound_trunks[{trunk.name}].numbers",
                        f"no dispatch rule takes calls to {number}: LiveKit will reject them (486)",
                    )
                )
    return out


def _warn_scanner_bait(file, inbound, rules) -> list[Problem]:
    out = []
    open_trunks = [t for t in inbound if not t.allowed_addresses and t.auth is None]
    for rule in rules:
        if rule.called_numbers or rule.caller_numbers or rule.pin:
            continue
        for trunk in open_trunks:
            if not rule.trunks or trunk.name in rule.trunks:
                out.append(
                    Problem(
                        file,
                        f"dispatch_rules[{rule.name}]",
                        f"takes every call on trunk {trunk.name!r}, which accepts any source "
                        "address without auth: SIP scanners will create rooms; "
                        "set allowed_addresses or auth",
                    )
                )
    return out
