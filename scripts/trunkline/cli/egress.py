"""``trunkline egress list|start|stop``: call recordings (LiveKit Egress)."""

from __future__ import annotations

import argparse

from trunkline.cli.common import (
    EXIT_OK,
    connection,
    connection_options,
    error,
    needs_action,
    print_json,
)
from trunkline.errors import UsageError
from trunkline.numbers import normalize_e164
from trunkline.telephony.model import DEFAULT_RECORDING


def _print_recordings(recs, as_json: bool) -> None:
    if as_json:
        print_json([r.as_dict() for r in recs])
        return
    for r in recs:
        files = ", ".join(f["location"] or f["filename"] for f in r.files) or "-"
        took = f"{r.duration_s:.1f} s" if r.duration_s is not None else "-"
        failure = f"  error: {r.error}" if r.error else ""
        started = r.started_at or "-"
        print(f"{r.egress_id}  {r.status:<13} {started:<25} {took:>9}  {r.room}  {files}{failure}")


def _cmd_egress(args: argparse.Namespace) -> int:
    from trunkline.egress import list_recordings, start_recording, stop_recording

    try:
        conn = connection(args)
        caller = normalize_e164(args.caller) if getattr(args, "caller", None) else ""
    except (ValueError, UsageError) as exc:
        return error(exc)
    if args.egress_command == "list":
        recs = list_recordings(conn, args.room or "", caller, args.call_sid or "", args.active)
        _print_recordings(recs, args.json)
        return EXIT_OK
    if args.egress_command == "start":
        if not args.filepath.endswith(".ogg") or "{" not in args.filepath:
            return error("--filepath must end with .ogg and contain {room_name} or {time} "
                         "(each recording needs a file of its own)")  # fmt: skip
        rec = start_recording(conn, args.room, args.filepath)
    else:
        rec = stop_recording(conn, args.egress_id)
    _print_recordings([rec], args.json)
    return EXIT_OK


def register(sub) -> None:
    p_eg = sub.add_parser(
        "egress",
        help="call recordings (LiveKit Egress): list, start, stop",
        description=(
            "Recordings are audio-only room composites (every voice in the room mixed) written as "
            "Ogg/Opus by the livekit_egress hosts, locally or to S3. Dispatch rules with `record` "
            "start one for each call; `start` records a room that is already up."
        ),
        epilog="Exit codes: 0 success, 1 LiveKit refused or found nothing, 2 usage error.",
    )
    eg = p_eg.add_subparsers(dest="egress_command", metavar="ACTION")
    p_list = eg.add_parser(
        "list",
        help="list recordings, oldest first",
        description=(
            "List recordings with their status, start time, length and file. Narrow by --room, "
            "--caller (individual rules put the caller's number in the room name) or --call-sid "
            "(any SIP attribute value of a live call, e.g. the CallSid a CXML route forwards as a "
            "header; after the call, use --caller and the time)."
        ),
        epilog="Exit codes: 0 listed (possibly none), 1 LiveKit error or no live call with "
        "that CallSid, 2 usage error.",
    )
    p_list.add_argument("--room", help="exact room name")
    p_list.add_argument("--caller", help="caller number (E.164)")
    p_list.add_argument(
        "--call-sid", dest="call_sid", help="CallSid (or other attribute) of a live call"
    )
    p_list.add_argument("--active", action="store_true", help="only recordings still running")
    p_list.add_argument("--json", action="store_true", help="print a JSON list")
    connection_options(p_list)
    p_start = eg.add_parser(
        "start",
        help="start recording a room that is up",
        description="Start an audio-only room composite recording of ROOM to --filepath.",
        epilog="Exit codes: 0 started, 1 no such room or Egress refused (none running, no CPU "
        "left), 2 usage error.",
    )
    p_start.add_argument("room", help="the room to record")
    p_start.add_argument(
        "--filepath",
        default=DEFAULT_RECORDING,
        help="Egress file path template ({room_name}, {room_id}, {time}, {utc}); a local path "
        f"on the Egress host or an S3 key (default {DEFAULT_RECORDING})",
    )
    p_start.add_argument("--json", action="store_true", help="print the recording as JSON")
    connection_options(p_start)
    p_stop = eg.add_parser(
        "stop",
        help="stop a recording (the file is closed and kept)",
        description="Stop the recording EGRESS_ID; Egress closes the file and reports its length.",
        epilog="Exit codes: 0 stopped, 1 unknown or finished egress, 2 usage error.",
    )
    p_stop.add_argument("egress_id", help="the recording's egress ID (EG_...)")
    p_stop.add_argument("--json", action="store_true", help="print the recording as JSON")
    connection_options(p_stop)
    for p in (p_list, p_start, p_stop):
        p.set_defaults(func=_cmd_egress)
    needs_action(p_eg)
