"""Outbound calls: LiveKit SIP dials a number through an outbound trunk into a room.

The room is created first, with the agent to dispatch in its configuration,
so the agent is on its way while the phone rings. A call that fails (busy,
no answer, rejected) deletes the room this command created: nothing is left
behind for the operator to clean up.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass

from livekit import api

from trunkline.errors import TrunklineError
from trunkline.livekit import Connection, LiveKit, describe_error
from trunkline.telephony.state import DEFAULT_OWNER, unwrap_metadata

BUSY = {486, 600}  # Busy Here, Busy Everywhere
NO_ANSWER = {408, 480, 487}  # Request Timeout, Temporarily Unavailable, Request Terminated


class CallFailed(TrunklineError):
    """The far end or LiveKit refused the call; ``sip_status`` says how, when known,
    and ``outcome`` sorts it for scripts: busy, no-answer, rejected or failed."""

    def __init__(
        self, message: str, sip_status: int | None = None, reason: str = "", outcome: str = ""
    ):
        super().__init__(message)
        self.sip_status, self.reason = sip_status, reason
        self.outcome = outcome or outcome_of(sip_status)


def outcome_of(sip_status: int | None) -> str:
    if sip_status in BUSY:
        return "busy"
    if sip_status in NO_ANSWER:
        return "no-answer"
    return "rejected" if sip_status else "failed"


@dataclass
class Call:
    number: str
    trunk: str
    trunk_id: str
    room: str
    agent: str
    participant_identity: str
    participant_id: str = ""
    sip_call_id: str = ""
    answered: bool = False


async def _trunk_id(lk: LiveKit, name: str, owner: str) -> str:
    listing = await lk.call(
        "list outbound trunks", False, lk.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())
    )
    matches = [t for t in listing.items if (t.name or t.sip_trunk_id) == name]
    owned = [t for t in matches if unwrap_metadata(t.metadata)[1] == owner]
    if len(owned) == 1:
        return owned[0].sip_trunk_id
    if len(matches) == 1:
        return matches[0].sip_trunk_id
    if not matches:
        raise TrunklineError(f"no outbound trunk named {name!r} in LiveKit at {lk.conn.url}")
    ids = ", ".join(t.sip_trunk_id for t in matches)
    raise TrunklineError(f"{len(matches)} outbound trunks are named {name!r} ({ids})")


async def _place(lk: LiveKit, call: Call, wait: bool, ring_timeout: int, owner: str) -> Call:
    call.trunk_id = await _trunk_id(lk, call.trunk, owner)
    room_req = api.CreateRoomRequest(name=call.room, empty_timeout=60)
    if call.agent:
        room_req.agents.append(api.RoomAgentDispatch(agent_name=call.agent))
    await lk.call(f"create room {call.room!r}", True, lk.room.create_room(room_req))
    req = api.CreateSIPParticipantRequest(
        sip_trunk_id=call.trunk_id,
        sip_call_to=call.number,
        room_name=call.room,
        participant_identity=call.participant_identity,
        participant_name=call.number,
        wait_until_answered=wait,
    )
    req.ringing_timeout.seconds = ring_timeout
    try:
        info = await lk.sip.create_sip_participant(req, timeout=ring_timeout + 15)
    except api.SipCallError as exc:
        await _delete_room(lk, call.room)
        status, reason = exc.sip_status_code, exc.sip_status or exc.message
        raise CallFailed(
            f"call to {call.number} failed: SIP {status} {reason}", status, reason
        ) from None
    except Exception as exc:
        await _delete_room(lk, call.room)
        if wait and _timed_out(exc):
            # livekit-sip cancels the INVITE (CANCEL, 487) when ringing_timeout passes.
            raise CallFailed(
                f"call to {call.number}: no answer within {ring_timeout} s",
                outcome="no-answer",
            ) from None
        raise CallFailed(f"call to {call.number} failed: {describe_error(exc)}") from None
    call.participant_id, call.sip_call_id = info.participant_id, info.sip_call_id
    call.answered = wait
    return call


def _timed_out(exc: Exception) -> bool:
    code = getattr(exc, "code", "")
    return code in ("deadline_exceeded", "canceled") or "timed out" in str(exc)


async def _delete_room(lk: LiveKit, room: str) -> None:
    # Best effort: an empty room also expires by itself (empty_timeout).
    with contextlib.suppress(Exception):
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))


def place_call(
    conn: Connection,
    number: str,
    trunk: str,
    room: str = "",
    agent: str = "",
    wait: bool = False,
    ring_timeout: int = 30,
    owner: str = DEFAULT_OWNER,
) -> Call:
    room = room or f"call-{number.lstrip('+')}-{secrets.token_hex(3)}"
    call = Call(number, trunk, "", room, agent, f"sip-{number.lstrip('+')}")

    async def run():
        async with LiveKit(conn) as lk:
            return await _place(lk, call, wait, ring_timeout, owner)

    return asyncio.run(run())
