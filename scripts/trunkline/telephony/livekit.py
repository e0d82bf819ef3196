"""The telephony adapter over the LiveKit client (trunkline.livekit): reads
and writes LiveKit's SIP trunks and dispatch rules and translates between
them and Trunkline's views (state.Obj).
"""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from livekit import api
from livekit.protocol import sip as sip_pb

# Re-exported: plugins/modules/livekit_telephony.py imports Connection from here.
from trunkline.livekit import Connection as Connection
from trunkline.livekit import LiveKit
from trunkline.telephony.model import DispatchRule, InboundTrunk, OutboundTrunk
from trunkline.telephony.state import (
    OWNER_ATTRIBUTE,
    UNKNOWN_SECRET,
    Obj,
    normalize_address,
    unwrap_metadata,
    wrap_metadata,
)

ENCRYPTION = {
    "disable": sip_pb.SIP_MEDIA_ENCRYPT_DISABLE,
    "allow": sip_pb.SIP_MEDIA_ENCRYPT_ALLOW,
    "require": sip_pb.SIP_MEDIA_ENCRYPT_REQUIRE,
}
TRANSPORT = {
    "auto": sip_pb.SIP_TRANSPORT_AUTO,
    "udp": sip_pb.SIP_TRANSPORT_UDP,
    "tcp": sip_pb.SIP_TRANSPORT_TCP,
    "tls": sip_pb.SIP_TRANSPORT_TLS,
}
_ENCRYPTION_NAME = {v: k for k, v in ENCRYPTION.items()}
_TRANSPORT_NAME = {v: k for k, v in TRANSPORT.items()}


class LiveKitSip(LiveKit):
    """A LiveKit session that reads and writes SIP trunks and dispatch rules
    as Trunkline's views of them. Use as ``async with LiveKitSip(conn) as lk``."""

    # -------------------------------------------------------------- read
    async def list_all(self) -> tuple[list, list, list]:
        inbound = await self.call(
            "list inbound trunks",
            False,
            self.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest()),
        )
        outbound = await self.call(
            "list outbound trunks",
            False,
            self.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest()),
        )
        rules = await self.call(
            "list dispatch rules",
            False,
            self.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest()),
        )
        return list(inbound.items), list(outbound.items), list(rules.items)

    async def actual_objects(self) -> list[Obj]:
        inbound, outbound, rules = await self.list_all()
        names = {t.sip_trunk_id: t.name or t.sip_trunk_id for t in (*inbound, *outbound)}
        return (
            [actual_inbound(t) for t in inbound]
            + [actual_outbound(t) for t in outbound]
            + [actual_rule(r, names) for r in rules]
        )

    # -------------------------------------------------------------- write
    async def create(self, kind: str, proto, name: str) -> str:
        what = f"create {kind.replace('_', ' ')} {name!r}"
        if kind == "inbound_trunk":
            req = api.CreateSIPInboundTrunkRequest(trunk=proto)
            made = await self.call(what, True, self.sip.create_inbound_trunk(req))
            return made.sip_trunk_id
        if kind == "outbound_trunk":
            req = api.CreateSIPOutboundTrunkRequest(trunk=proto)
            made = await self.call(what, True, self.sip.create_outbound_trunk(req))
            return made.sip_trunk_id
        req = api.CreateSIPDispatchRuleRequest(dispatch_rule=proto)
        made = await self.call(what, True, self.sip.create_dispatch_rule(req))
        return made.sip_dispatch_rule_id

    async def update(self, kind: str, obj_id: str, proto, name: str) -> None:
        """Replace the object in place (its ID, and so every reference to it, stays)."""
        what = f"update {kind.replace('_', ' ')} {name!r} ({obj_id})"
        if kind == "inbound_trunk":
            await self.call(what, True, self.sip.update_inbound_trunk(obj_id, proto))
        elif kind == "outbound_trunk":
            await self.call(what, True, self.sip.update_outbound_trunk(obj_id, proto))
        else:
            await self.call(what, True, self.sip.update_dispatch_rule(obj_id, proto))

    async def delete(self, kind: str, obj_id: str, name: str) -> None:
        what = f"delete {kind.replace('_', ' ')} {name!r} ({obj_id})"
        if kind == "dispatch_rule":
            req = api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=obj_id)
            await self.call(what, True, self.sip.delete_dispatch_rule(req))
        else:
            req = api.DeleteSIPTrunkRequest(sip_trunk_id=obj_id)
            await self.call(what, True, self.sip.delete_trunk(req))


# ------------------------------------------------------------------ actual
def _seconds(d: Duration) -> int:
    return int(d.seconds)


def _auth_actual(username: str, stored_hash: str) -> dict[str, str]:
    if not username:
        return {"auth_username": "", "auth_password": stored_hash and UNKNOWN_SECRET}
    return {"auth_username": username, "auth_password": stored_hash or UNKNOWN_SECRET}


def actual_inbound(t: sip_pb.SIPInboundTrunkInfo) -> Obj:
    user_metadata, owner, auth_hash = unwrap_metadata(t.metadata)
    fields = {
        "numbers": tuple(sorted(t.numbers)),
        "allowed_addresses": tuple(sorted(normalize_address(a) for a in t.allowed_addresses)),
        "allowed_numbers": tuple(sorted(t.allowed_numbers)),
        **_auth_actual(t.auth_username, auth_hash),
        "headers_to_attributes": tuple(sorted(t.headers_to_attributes.items())),
        "media_encryption": _ENCRYPTION_NAME.get(t.media_encryption, str(t.media_encryption)),
        "krisp": t.krisp_enabled,
        "ringing_timeout": _seconds(t.ringing_timeout),
        "max_call_duration": _seconds(t.max_call_duration),
        "metadata": user_metadata,
    }
    return Obj("inbound_trunk", t.name or t.sip_trunk_id, fields, t.sip_trunk_id, owner, t)


def actual_outbound(t: sip_pb.SIPOutboundTrunkInfo) -> Obj:
    user_metadata, owner, auth_hash = unwrap_metadata(t.metadata)
    fields = {
        "address": t.address,
        "transport": _TRANSPORT_NAME.get(t.transport, str(t.transport)),
        "numbers": tuple(sorted(t.numbers)),
        **_auth_actual(t.auth_username, auth_hash),
        "headers": tuple(sorted(t.headers.items())),
        "media_encryption": _ENCRYPTION_NAME.get(t.media_encryption, str(t.media_encryption)),
        "metadata": user_metadata,
    }
    return Obj("outbound_trunk", t.name or t.sip_trunk_id, fields, t.sip_trunk_id, owner, t)


def _rule_kind(rule: sip_pb.SIPDispatchRule) -> tuple[str, str, str, str]:
    """(type, room_prefix, room_name, pin) of a SIPDispatchRule."""
    which = rule.WhichOneof("rule")
    if which == "dispatch_rule_direct":
        d = rule.dispatch_rule_direct
        return "direct", "", d.room_name, d.pin
    if which == "dispatch_rule_callee":
        c = rule.dispatch_rule_callee
        return "callee", c.room_prefix, "", c.pin
    i = rule.dispatch_rule_individual
    return "individual", i.room_prefix, "", i.pin


def _recording(room_config) -> str:
    """The file path of the audio-only room recording a rule asks for ("" = none)."""
    if not room_config.HasField("egress") or not room_config.egress.HasField("room"):
        return ""
    room = room_config.egress.room
    outputs = list(room.file_outputs) or ([room.file] if room.HasField("file") else [])
    if outputs and room.audio_only:
        return outputs[0].filepath
    return "(a recording Trunkline does not manage)"


def actual_rule(r: sip_pb.SIPDispatchRuleInfo, trunk_names: dict[str, str]) -> Obj:
    kind, prefix, room_name, pin = _rule_kind(r.rule)
    attributes = dict(r.attributes)
    owner = attributes.pop(OWNER_ATTRIBUTE, "")
    fields = {
        "type": kind,
        "room_prefix": prefix,
        "room_name": room_name,
        "pin": pin,
        "trunks": tuple(sorted(trunk_names.get(i, i) for i in r.trunk_ids)),
        "called_numbers": tuple(sorted(r.numbers)),
        "caller_numbers": tuple(sorted(r.inbound_numbers)),
        "agents": tuple((a.agent_name, a.metadata) for a in r.room_config.agents),
        "hide_phone_number": r.hide_phone_number,
        "attributes": tuple(sorted(attributes.items())),
        "metadata": r.metadata,
        "krisp": r.krisp_enabled,
        "record": _recording(r.room_config),
    }
    return Obj(
        "dispatch_rule", r.name or r.sip_dispatch_rule_id, fields, r.sip_dispatch_rule_id, owner, r
    )


# ------------------------------------------------------------------ desired
def _duration(seconds: int) -> Duration:
    return Duration(seconds=seconds)


def _set_list(container, values) -> None:
    del container[:]
    container.extend(values)


def _set_map(container, pairs) -> None:
    container.clear()
    container.update(dict(pairs))


def inbound_proto(
    t: InboundTrunk, owner: str, auth_hash: str, base: sip_pb.SIPInboundTrunkInfo | None = None
) -> sip_pb.SIPInboundTrunkInfo:
    """The trunk as LiveKit should hold it. Starting from ``base`` (the current
    object) keeps fields Trunkline does not manage as they are."""
    p = sip_pb.SIPInboundTrunkInfo()
    if base is not None:
        p.CopyFrom(base)
    p.name = t.name
    p.metadata = wrap_metadata(t.metadata, owner, auth_hash)
    _set_list(p.numbers, t.numbers)
    _set_list(p.allowed_addresses, t.allowed_addresses)
    _set_list(p.allowed_numbers, t.allowed_numbers)
    p.auth_username = t.auth.username if t.auth else ""
    p.auth_password = t.auth.password if t.auth else ""
    _set_map(p.headers_to_attributes, t.headers_to_attributes)
    p.media_encryption = ENCRYPTION[t.media_encryption]
    p.krisp_enabled = t.krisp
    p.ringing_timeout.CopyFrom(_duration(t.ringing_timeout))
    p.max_call_duration.CopyFrom(_duration(t.max_call_duration))
    return p


def outbound_proto(
    t: OutboundTrunk, owner: str, auth_hash: str, base: sip_pb.SIPOutboundTrunkInfo | None = None
) -> sip_pb.SIPOutboundTrunkInfo:
    p = sip_pb.SIPOutboundTrunkInfo()
    if base is not None:
        p.CopyFrom(base)
    p.name = t.name
    p.metadata = wrap_metadata(t.metadata, owner, auth_hash)
    p.address = t.address
    p.transport = TRANSPORT[t.transport]
    _set_list(p.numbers, t.numbers)
    p.auth_username = t.auth.username if t.auth else ""
    p.auth_password = t.auth.password if t.auth else ""
    _set_map(p.headers, t.headers)
    p.media_encryption = ENCRYPTION[t.media_encryption]
    return p


def rule_proto(
    r: DispatchRule,
    owner: str,
    trunk_ids: dict[str, str],
    base: sip_pb.SIPDispatchRuleInfo | None = None,
) -> sip_pb.SIPDispatchRuleInfo:
    p = sip_pb.SIPDispatchRuleInfo()
    if base is not None:
        p.CopyFrom(base)
    p.name = r.name
    if r.type == "direct":
        p.rule.dispatch_rule_direct.CopyFrom(
            sip_pb.SIPDispatchRuleDirect(room_name=r.room_name, pin=r.pin)
        )
    elif r.type == "callee":
        keep = base.rule.dispatch_rule_callee.randomize if base is not None else False
        p.rule.dispatch_rule_callee.CopyFrom(
            sip_pb.SIPDispatchRuleCallee(room_prefix=r.room_prefix, pin=r.pin, randomize=keep)
        )
    else:
        keep = base.rule.dispatch_rule_individual.no_randomness if base is not None else False
        p.rule.dispatch_rule_individual.CopyFrom(
            sip_pb.SIPDispatchRuleIndividual(
                room_prefix=r.room_prefix, pin=r.pin, no_randomness=keep
            )
        )
    _set_list(p.trunk_ids, sorted(trunk_ids[name] for name in r.trunks))
    _set_list(p.numbers, r.called_numbers)
    _set_list(p.inbound_numbers, r.caller_numbers)
    p.hide_phone_number = r.hide_phone_number
    p.metadata = r.metadata
    _set_map(p.attributes, (*r.attributes, (OWNER_ATTRIBUTE, owner)))
    del p.room_config.agents[:]
    p.room_config.agents.extend(
        api.RoomAgentDispatch(agent_name=a.name, metadata=a.metadata) for a in r.agents
    )
    p.krisp_enabled = r.krisp
    if r.record:
        p.room_config.egress.CopyFrom(
            api.RoomEgress(
                room=api.RoomCompositeEgressRequest(
                    audio_only=True,
                    file_outputs=[
                        api.EncodedFileOutput(file_type=api.EncodedFileType.OGG, filepath=r.record)
                    ],
                )
            )
        )
    else:
        p.room_config.ClearField("egress")
    return p
