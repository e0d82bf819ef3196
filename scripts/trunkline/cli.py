"""The ``trunkline`` command: argument parsing and output only.

Exit codes (stable; scripts may rely on them):
  0  success
  1  the operation failed (a check did not pass, an API refused)
  2  usage error or invalid input (nothing was changed)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata

from trunkline import __version__
from trunkline.config import environment, load_yaml
from trunkline.cxml.cli import register as register_cxml
from trunkline.errors import ConfigError, TrunklineError
from trunkline.numbers import normalize_e164
from trunkline.probe_cli import register_probe
from trunkline.telephony.model import Parsed, parse
from trunkline.telephony.state import DEFAULT_OWNER

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# Components whose versions Trunkline pins and reports.
_PACKAGES = ("ansible-core", "ansible", "livekit-api", "livekit-protocol")


def _versions() -> dict[str, str]:
    found = {"trunkline": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _cmd_version(args: argparse.Namespace) -> int:
    versions = _versions()
    if args.json:
        print(json.dumps(versions, indent=2, sort_keys=True))
    else:
        width = max(map(len, versions))
        for name, version in versions.items():
            print(f"{name:<{width}}  {version}")
    return EXIT_OK


def _cmd_telephony_validate(args: argparse.Namespace) -> int:
    try:
        parsed = parse(load_yaml(args.file), args.file, environment())
    except ConfigError as exc:
        if args.json:
            problems = [
                {"file": p.file, "path": p.path, "message": p.message} for p in exc.problems
            ]
            print(json.dumps({"valid": False, "errors": problems}, indent=2))
        else:
            for problem in exc.problems:
                print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    t = parsed.telephony
    counts = {
        "inbound_trunks": len(t.inbound_trunks),
        "outbound_trunks": len(t.outbound_trunks),
        "dispatch_rules": len(t.dispatch_rules),
    }
    if args.json:
        warnings = [{"file": w.file, "path": w.path, "message": w.message} for w in parsed.warnings]
        print(json.dumps({"valid": True, "warnings": warnings, **counts}, indent=2))
    else:
        for warning in parsed.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(
            f"{args.file}: valid ({counts['inbound_trunks']} inbound trunks, "
            f"{counts['outbound_trunks']} outbound trunks, "
            f"{counts['dispatch_rules']} dispatch rules, "
            f"{len(parsed.warnings)} warnings)"
        )
    return EXIT_OK


def _problems_json(problems) -> list[dict]:
    return [{"file": p.file, "path": p.path, "message": p.message} for p in problems]


def _load_telephony(args: argparse.Namespace) -> Parsed:
    """Parse and validate the file; warnings go to stderr. ConfigError propagates."""
    parsed = parse(load_yaml(args.file), args.file, environment())
    if not args.json:
        for warning in parsed.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return parsed


def _connection(args: argparse.Namespace):
    from trunkline.telephony.livekit import Connection

    env = environment()
    values = {}
    for attr, var in (("url", "LIVEKIT_URL"), ("api_key", "LIVEKIT_API_KEY"),
                      ("api_secret", "LIVEKIT_API_SECRET")):  # fmt: skip
        values[attr] = getattr(args, attr) or env.get(var, "")
        if not values[attr]:
            option = "--" + attr.replace("_", "-")
            raise UsageError(f"no LiveKit {attr.replace('_', ' ')}: pass {option} or set {var}")
    return Connection(timeout=args.timeout, **values)


class UsageError(TrunklineError):
    """Missing or contradictory options (exit 2, nothing was changed)."""


def _invalid_file(args: argparse.Namespace, exc: ConfigError, invalid_code: int) -> int:
    if args.json:
        print(json.dumps({"valid": False, "errors": _problems_json(exc.problems)}, indent=2))
    else:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print("Nothing was changed.", file=sys.stderr)
    return invalid_code


def _cmd_telephony_plan(args: argparse.Namespace, do_apply: bool = False) -> int:
    from trunkline.telephony import ops
    from trunkline.telephony.apply import Options

    invalid_code = EXIT_FAILED if getattr(args, "detailed_exitcode", False) else EXIT_USAGE
    try:
        parsed = _load_telephony(args)
        conn = _connection(args)
    except ConfigError as exc:
        return _invalid_file(args, exc, invalid_code)
    except UsageError as exc:
        print(f"trunkline: {exc}", file=sys.stderr)
        return invalid_code
    opts = Options(owner=args.owner, prune=args.prune, adopt=args.adopt)
    result = (ops.apply if do_apply else ops.plan)(parsed.telephony, conn, opts)
    if args.json:
        data = ops.result_dict(result)
        data["warnings"] = _problems_json(parsed.warnings)
        print(json.dumps(data, indent=2))
    else:
        print(ops.plan_text(result.plan))
        if result.plan.conflicts:
            print("Nothing was changed: resolve the conflicts above.", file=sys.stderr)
        elif result.outcome is not None and not result.plan.empty:
            print(ops.outcome_text(result.outcome))
    if not result.ok:
        return EXIT_FAILED
    if not do_apply and args.detailed_exitcode and not result.plan.empty:
        return EXIT_USAGE  # 2 = changes pending (terraform's convention)
    return EXIT_OK


def _cmd_telephony_apply(args: argparse.Namespace) -> int:
    return _cmd_telephony_plan(args, do_apply=True)


def _cmd_telephony_export(args: argparse.Namespace) -> int:
    from trunkline.telephony import ops

    try:
        conn = _connection(args)
    except UsageError as exc:
        print(f"trunkline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    text, _calls = ops.export(conn, args.owner, args.owned)
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _cmd_call(args: argparse.Namespace) -> int:
    from trunkline.calls import CallFailed, place_call

    try:
        number = normalize_e164(args.number)
        conn = _connection(args)
    except (ValueError, UsageError) as exc:
        print(f"trunkline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        call = place_call(
            conn, number, args.trunk, args.room or "", args.agent or "", args.wait,
            args.ring_timeout, args.owner,
        )  # fmt: skip
    except CallFailed as exc:
        if args.json:
            print(json.dumps({"status": exc.outcome, "sip_status": exc.sip_status,
                              "reason": exc.reason, "error": str(exc)}, indent=2))  # fmt: skip
        else:
            print(f"trunkline: {exc}", file=sys.stderr)
        return EXIT_FAILED
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
        print(json.dumps(data, indent=2))
    else:
        state = "answered" if call.answered else "dialing (not waiting for an answer)"
        agent = f", agent {call.agent!r} dispatched" if call.agent else ""
        print(f"{call.number} {state}: room {call.room!r}{agent}, SIP call {call.sip_call_id}")
    return EXIT_OK


def _print_recordings(recs, as_json: bool) -> None:
    if as_json:
        print(json.dumps([r.as_dict() for r in recs], indent=2))
        return
    for r in recs:
        files = ", ".join(f["location"] or f["filename"] for f in r.files) or "-"
        took = f"{r.duration_s:.1f} s" if r.duration_s is not None else "-"
        error = f"  error: {r.error}" if r.error else ""
        started = r.started_at or "-"
        print(f"{r.egress_id}  {r.status:<13} {started:<25} {took:>9}  {r.room}  {files}{error}")


def _cmd_egress(args: argparse.Namespace) -> int:
    from trunkline.egress import list_recordings, start_recording, stop_recording

    try:
        conn = _connection(args)
        caller = normalize_e164(args.caller) if getattr(args, "caller", None) else ""
    except (ValueError, UsageError) as exc:
        print(f"trunkline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.egress_command == "list":
        recs = list_recordings(conn, args.room or "", caller, args.call_sid or "", args.active)
        _print_recordings(recs, args.json)
        return EXIT_OK
    if args.egress_command == "start":
        if not args.filepath.endswith(".ogg") or "{" not in args.filepath:
            print("trunkline: --filepath must end with .ogg and contain {room_name} or {time} "
                  "(each recording needs a file of its own)", file=sys.stderr)  # fmt: skip
            return EXIT_USAGE
        rec = start_recording(conn, args.room, args.filepath)
    else:
        rec = stop_recording(conn, args.egress_id)
    _print_recordings([rec], args.json)
    return EXIT_OK


def _connection_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "LiveKit connection",
        "Each option falls back to its environment variable. Prefer the variable for the "
        "secret: command lines are visible to other users in `ps`.",
    )
    g.add_argument("--url", help="LiveKit server URL, e.g. https://livekit.example.com "
                   "(env LIVEKIT_URL)")  # fmt: skip
    g.add_argument("--api-key", dest="api_key", help="API key (env LIVEKIT_API_KEY)")
    g.add_argument("--api-secret", dest="api_secret", help="API secret (env LIVEKIT_API_SECRET)")
    g.add_argument("--timeout", type=float, default=15.0,
                   help="seconds per API request (default 15)")  # fmt: skip
    p.add_argument("--owner", default=DEFAULT_OWNER,
                   help="ownership marker: Trunkline manages only objects carrying it "
                   f"(default {DEFAULT_OWNER!r}; one per deployment sharing a LiveKit)",
                   )  # fmt: skip


def _reconcile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the telephony.yml describing the desired state")
    p.add_argument("--prune", action="store_true",
                   help="delete owned objects the file no longer names")  # fmt: skip
    p.add_argument("--adopt", action="store_true",
                   help="take ownership of unowned objects whose names the file uses")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the plan and outcome as JSON")
    _connection_options(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trunkline",
        description=(
            "Trunkline puts a self-hosted LiveKit voice stack on the phone network. "
            "The Ansible playbooks deploy it; this command manages what runs on it."
        ),
        epilog="Exit codes: 0 success, 1 operation failed, 2 usage error or invalid input.",
    )
    parser.add_argument("--version", action="version", version=f"trunkline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_version = sub.add_parser(
        "version",
        help="show the versions of Trunkline and the pinned components it uses",
        description="Show the versions of Trunkline, Python and the pinned packages it uses.",
    )
    p_version.add_argument("--json", action="store_true", help="print a JSON object")
    p_version.set_defaults(func=_cmd_version)

    p_tel = sub.add_parser(
        "telephony",
        help="LiveKit SIP trunks and dispatch rules as code (telephony.yml)",
        description="Manage LiveKit's SIP trunks and dispatch rules from one telephony.yml.",
    )
    tel = p_tel.add_subparsers(dest="telephony_command", metavar="ACTION")
    p_validate = tel.add_parser(
        "validate",
        help="check a telephony.yml without contacting LiveKit",
        description=(
            "Load FILE, resolve its ${ENV_VAR} references and check it: E.164 numbers, "
            "addresses and CIDRs, unique names, rules that name unknown trunks, numbers claimed "
            "twice, literal secrets. Prints every problem with its file, object and field; "
            "warnings (numbers no rule takes, catch-all rules on open trunks) do not fail."
        ),
        epilog="Exit codes: 0 valid (warnings may be printed), 2 invalid.",
    )
    p_validate.add_argument("file", help="the telephony.yml to check")
    p_validate.add_argument("--json", action="store_true", help="print the result as JSON")
    p_validate.set_defaults(func=_cmd_telephony_validate)

    p_plan = tel.add_parser(
        "plan",
        help="show what apply would change in LiveKit (reads only)",
        description=(
            "Validate FILE, read LiveKit's SIP trunks and dispatch rules, and print the "
            "field-level changes that would make LiveKit match the file. Makes no writes. "
            "Objects not owned by Trunkline are never changed; a name the file shares with one "
            "is a conflict unless --adopt. Passwords are compared by keyed hash, never shown."
        ),
        epilog=(
            "Exit codes: 0 success; 1 conflicts or an API error; 2 invalid file or options. "
            "With --detailed-exitcode: 0 nothing to do, 2 changes pending, 1 any error."
        ),
    )
    _reconcile_options(p_plan)
    p_plan.add_argument("--detailed-exitcode", action="store_true",
                        help="exit 2 when changes are pending, 1 on any error")  # fmt: skip
    p_plan.set_defaults(func=_cmd_telephony_plan)

    p_apply = tel.add_parser(
        "apply",
        help="make LiveKit match the file",
        description=(
            "Plan as `plan` does, then carry out exactly that plan: create, update in place "
            "(IDs stay), adopt (--adopt) and delete (--prune only). A plan with conflicts "
            "changes nothing. An API failure stops the run and lists what was applied and "
            "what was not; running apply again converges. A second apply makes no writes."
        ),
        epilog="Exit codes: 0 applied (or nothing to do), 1 conflicts or API failure, "
        "2 invalid file or options (nothing changed).",
    )
    _reconcile_options(p_apply)
    p_apply.set_defaults(func=_cmd_telephony_apply)

    p_export = tel.add_parser(
        "export",
        help="write a telephony.yml from what LiveKit holds",
        description=(
            "Read LiveKit's SIP trunks and dispatch rules and print them as a telephony.yml. "
            "Passwords are never exported: each becomes a ${TRUNK_NAME_PASSWORD} reference. "
            "Review the file, then `apply --adopt` it to take the objects over."
        ),
        epilog="Exit codes: 0 written, 1 API error, 2 usage error.",
    )
    p_export.add_argument("-o", "--output", help="write to this file instead of stdout")
    p_export.add_argument("--owned", action="store_true",
                          help="only objects owned by --owner")  # fmt: skip
    _connection_options(p_export)
    p_export.set_defaults(func=_cmd_telephony_export)
    p_tel.set_defaults(func=lambda _args: (p_tel.print_help(), EXIT_USAGE)[1])

    p_call = sub.add_parser(
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
    p_call.add_argument("number", help="the number to call, E.164 (+ country code)")
    p_call.add_argument("--trunk", required=True, help="outbound trunk name")
    p_call.add_argument("--room", help="room to put the call in (default: call-<number>-<random>)")
    p_call.add_argument("--agent", help="agent_name to dispatch into the room")
    p_call.add_argument("--wait", action="store_true", help="wait until the call is answered")
    p_call.add_argument("--ring-timeout", dest="ring_timeout", type=int, default=30,
                        help="seconds to let it ring (default 30)")  # fmt: skip
    p_call.add_argument("--json", action="store_true", help="print the call as JSON")
    _connection_options(p_call)
    p_call.set_defaults(func=_cmd_call)

    from trunkline.telephony.model import DEFAULT_RECORDING

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
    _connection_options(p_list)
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
    _connection_options(p_start)
    p_stop = eg.add_parser(
        "stop",
        help="stop a recording (the file is closed and kept)",
        description="Stop the recording EGRESS_ID; Egress closes the file and reports its length.",
        epilog="Exit codes: 0 stopped, 1 unknown or finished egress, 2 usage error.",
    )
    p_stop.add_argument("egress_id", help="the recording's egress ID (EG_...)")
    p_stop.add_argument("--json", action="store_true", help="print the recording as JSON")
    _connection_options(p_stop)
    for p in (p_list, p_start, p_stop):
        p.set_defaults(func=_cmd_egress)
    p_eg.set_defaults(func=lambda _args: (p_eg.print_help(), EXIT_USAGE)[1])

    register_cxml(sub)
    register_probe(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("trunkline: interrupted", file=sys.stderr)
        return 130
    except TrunklineError as exc:
        print(f"trunkline: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
