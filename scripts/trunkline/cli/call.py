"""``trunkline call``: an outbound call through an outbound trunk."""

from __future__ import annotations

import argparse

from trunkline.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    connection,
    connection_options,
    error,
    print_json,
)
from trunkline.errors import UsageError
from trunkline.numbers import normalize_e164


def _cmd_call(args: argparse.Namespace) -> int:
    from trunkline.calls import CallFailed, place_call

    try:
        number = normalize_e164(args.number)
        conn = connection(args)
    except (ValueError, UsageError) as exc:
        return error(exc)
    try:
        call = place_call(
            conn, number, args.trunk, args.room or "", args.agent or "", args.wait,
            args.ring_timeout, args.owner,
        )  # fmt: skip
    except CallFailed as exc:
        if args.json:
            print_json({"status": exc.outcome, "sip_status": exc.sip_status,
                        "reason": exc.reason, "error": str(exc)})  # fmt: skip
            return EXIT_FAILED
        return error(exc, EXIT_FAILED)
    data = {
        "status": "answered" if call.answered else "dialing",
        "number": call.number,
        "trunk": call.trunk,
        "trunk_id": call.trunk_id,
        "room": call.room,
        "agent": call.agent or None,
        "participant_identity": call.participant_identity,
        "participant_id": call.participant_id,
        "sip_call_id": call.sip_call_id,
    }
    if args.json:
        print_json(data)
    else:
        state = "answered" if call.answered else "dialing (not waiting for an answer)"
        agent = f", agent {call.agent!r} dispatched" if call.agent else ""
        print(f"{call.number} {state}: room {call.room!r}{agent}, SIP call {call.sip_call_id}")
    return EXIT_OK


def register(sub) -> None:
    p = sub.add_parser(
        "call",
        help="place an outbound call through an outbound trunk",
        description=(
            "Have LiveKit SIP dial NUMBER through the outbound trunk named --trunk, into "
            "--room (created, with --agent dispatched to it). With --wait, return when the "
            "far end answers; a busy, unanswered or refused call prints the SIP status and "
            "reason, and the room is deleted."
        ),
        epilog=(
            "Exit codes: 0 answered (or dialing, without --wait), 1 call failed, 2 usage "
            "error. With --json a failed call prints status busy (486/600), no-answer "
            "(ring timeout, 408/480/487), rejected (any other SIP status) or failed (no SIP "
            "status: LiveKit or the network), with sip_status and reason."
        ),
    )
    p.add_argument("number", help="the number to call, E.164 (+ country code)")
    p.add_argument("--trunk", required=True, help="outbound trunk name")
    p.add_argument("--room", help="room to put the call in (default: call-<number>-<random>)")
    p.add_argument("--agent", help="agent_name to dispatch into the room")
    p.add_argument("--wait", action="store_true", help="wait until the call is answered")
    p.add_argument("--ring-timeout", dest="ring_timeout", type=int, default=30,
                   help="seconds to let it ring (default 30)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the call as JSON")
    connection_options(p)
    p.set_defaults(func=_cmd_call)
