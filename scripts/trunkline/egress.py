"""Recordings through LiveKit Egress: list, start and stop them.

A phone call is recorded as an audio-only room composite (caller and agent
mixed) to an Ogg/Opus file. Dispatch rules with ``record`` start one when
they create a room; ``start`` records a room that is already up. File names
carry the room (for individual rules: the caller's number) and the start time.

A call's recording is found by room, by caller number, or (while the call is
up) by any SIP attribute value such as the CallSid a CXML route forwards in a
header mapped by the trunk's headers_to_attributes.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from livekit import api

from trunkline.errors import TrunklineError
from trunkline.livekit import Connection, LiveKit, LiveKitError
from trunkline.telephony.model import DEFAULT_RECORDING

STATUS = {
    api.EGRESS_STARTING: "starting",
    api.EGRESS_ACTIVE: "active",
    api.EGRESS_ENDING: "ending",
    api.EGRESS_COMPLETE: "complete",
    api.EGRESS_FAILED: "failed",
    api.EGRESS_ABORTED: "aborted",
    api.EGRESS_LIMIT_REACHED: "limit-reached",
}


class EgressError(TrunklineError):
    """LiveKit refused an Egress request or found nothing to act on."""


@dataclass
class Recording:
    egress_id: str
    room: str
    status: str
    started_at: str | None
    ended_at: str | None
    duration_s: float | None
    files: list[dict] = field(default_factory=list)
    error: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _time(ns: int) -> str | None:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds") if ns else None


def _file(f) -> dict:
    duration = round(f.duration / 1e9, 3) if f.duration else None
    return {"filename": f.filename, "location": f.location, "size": f.size, "duration_s": duration}


def recording_of(info) -> Recording:
    # file_results; older servers fill only the deprecated single `file`
    results = list(info.file_results) or ([info.file] if info.HasField("file") else [])
    files = [_file(f) for f in results]
    duration = None
    if info.started_at and info.ended_at:
        duration = round((info.ended_at - info.started_at) / 1e9, 3)
    return Recording(
        info.egress_id, info.room_name, STATUS.get(info.status, str(info.status)),
        _time(info.started_at), _time(info.ended_at), duration, files, info.error,
    )  # fmt: skip


def _digits(number: str) -> str:
    return re.sub(r"\D", "", number)


async def _rooms_with_attribute(lk: LiveKit, value: str) -> list[str]:
    """Live rooms with a participant carrying ``value`` in an attribute (a CallSid)."""
    rooms = await lk.call("list rooms", False, lk.room.list_rooms(api.ListRoomsRequest()))
    found = []
    for room in rooms.rooms:
        people = await lk.call(
            f"list participants of {room.name!r}", False,
            lk.room.list_participants(api.ListParticipantsRequest(room=room.name)),
        )  # fmt: skip
        if any(value in p.attributes.values() for p in people.participants):
            found.append(room.name)
    return found


def list_recordings(
    conn: Connection, room: str = "", caller: str = "", call_sid: str = "", active: bool = False
) -> list[Recording]:
    async def run() -> list[Recording]:
        async with LiveKit(conn) as lk:
            rooms = [room] if room else []
            if call_sid:
                rooms = await _rooms_with_attribute(lk, call_sid)
                if not rooms:
                    raise EgressError(
                        f"no live room has a participant with {call_sid!r} in its attributes "
                        "(the call has ended, or its route does not forward it as a header); "
                        "find the recording by the caller's number (--caller) and time"
                    )
            found = []
            for name in rooms or [""]:
                listing = await lk.call(
                    "list egress", False,
                    lk.egress.list_egress(api.ListEgressRequest(room_name=name, active=active)),
                )  # fmt: skip
                found.extend(listing.items)
            if caller:
                digits = _digits(caller)
                found = [i for i in found if digits and digits in _digits(i.room_name)]
            found.sort(key=lambda i: i.started_at or i.updated_at)
            return [recording_of(i) for i in found]

    return asyncio.run(run())


def start_recording(conn: Connection, room: str, filepath: str = DEFAULT_RECORDING) -> Recording:
    req = api.RoomCompositeEgressRequest(
        room_name=room,
        audio_only=True,
        file_outputs=[api.EncodedFileOutput(file_type=api.EncodedFileType.OGG, filepath=filepath)],
    )

    async def run():
        async with LiveKit(conn) as lk:
            rooms = await lk.call(
                "list rooms", False, lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
            )
            if not rooms.rooms:
                raise EgressError(f"no room named {room!r} is up in LiveKit at {conn.url}")
            try:
                info = await lk.call(
                    f"start recording room {room!r}", True,
                    lk.egress.start_room_composite_egress(req),
                )  # fmt: skip
            except LiveKitError as exc:
                if "no response" not in str(exc):
                    raise
                raise EgressError(
                    f"{exc}: no Egress worker took the request (is livekit-egress running, on "
                    "the server's Redis, with CPU to spare? `systemctl status livekit-egress`)"
                ) from None
            return recording_of(info)

    return asyncio.run(run())


def stop_recording(conn: Connection, egress_id: str) -> Recording:
    async def run():
        async with LiveKit(conn) as lk:
            info = await lk.call(
                f"stop egress {egress_id}", True,
                lk.egress.stop_egress(api.StopEgressRequest(egress_id=egress_id)),
            )  # fmt: skip
            return recording_of(info)

    return asyncio.run(run())
