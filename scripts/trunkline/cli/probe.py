"""``trunkline probe``: a measured test call, Cloudonix-style (see trunkline.probe)."""

from __future__ import annotations

import argparse
import os
import sys

from trunkline import probe
from trunkline.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    connection,
    connection_options,
    error,
    print_json,
)
from trunkline.errors import TrunklineError, UsageError
from trunkline.numbers import normalize_e164


def _aliases(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        alias, sep, uri = value.partition("=")
        if not sep or not alias or not uri.startswith("sip:"):
            raise ValueError(f"--service {value!r}: expected ALIAS=sip:host[:port][;transport=tcp]")
        out[alias] = uri
    return out


def _target(args: argparse.Namespace, caller: str, did: str, aliases: dict[str, str]):
    """Where to call: --sip as written, or where the CXML endpoint sends a call to --did."""
    if args.sip:
        try:
            return probe.direct_target(args.sip, args.transport or ""), ""
        except probe.ProbeError as exc:
            raise ValueError(f"--sip: {exc}") from None
    token = args.cxml_token or os.environ.get("TRUNKLINE_CXML_TOKEN", "")
    return probe.cxml_target(
        args.cxml, did, caller, aliases, token, args.cxml_ca or "", args.transport or ""
    )


def _print_text(r: probe.ProbeResult) -> None:
    status = f"{r.final_status} {r.final_reason}" if r.final_status else "no final answer"
    print(f"call {r.codec.upper()}/{r.transport.upper()} to {r.target} ({r.how}): {status}")
    if r.answered_ms is not None:
        print(f"  answered in {r.answered_ms:.0f} ms")
    if r.agent_joined_ms is not None:
        print(f"  agent joined in {r.agent_joined_ms:.0f} ms (room {r.room})")
    if r.first_agent_audio_ms is not None:
        print(f"  first agent audio {r.first_agent_audio_ms:.0f} ms after answer")
    after = r.speech_in_after_caller_spoke
    print(f"  caller sent {r.rtp_out} RTP packets ({r.speech_out} speech), received {r.rtp_in} "
          f"({r.speech_in} speech, {after} after the caller spoke)")  # fmt: skip
    if r.agent_heard_frames is not None:
        print(f"  agent heard {r.agent_heard_frames} frames, {r.agent_heard_nonsilent} not silent")
    if r.room_emptied_ms is not None:
        print(f"  room empty {r.room_emptied_ms:.0f} ms after BYE")
    if r.capture_drops:
        print(f"  warning: the packet socket dropped {r.capture_drops} packets; "
              "wire figures may be incomplete")  # fmt: skip
    both = r.checks.get("caller_heard_agent") and r.checks.get("agent_heard_caller", True)
    failed = [k for k, v in r.checks.items() if not v]
    print(f"  audio both ways {'OK' if both else 'FAILED'}; "
          f"{'all checks OK' if r.ok else 'failed: ' + ', '.join(failed)}")  # fmt: skip
    if r.log:
        print(r.log, file=sys.stderr)


def _cmd_probe(args: argparse.Namespace) -> int:
    try:
        if bool(args.sip) == bool(args.cxml):
            raise UsageError("give either --cxml URL (with --did) or --sip URI")
        if args.cxml and not args.did:
            raise UsageError("--cxml needs --did (the number Cloudonix would ask about)")
        aliases = _aliases(args.service)
        caller = normalize_e164(args.caller)
        did = normalize_e164(args.did) if args.did else args.did
        conn = None if args.no_livekit else connection(args)
    except (ValueError, UsageError) as exc:
        return error(exc)
    try:
        target, instead = _target(args, caller, did, aliases)
    except ValueError as exc:
        return error(exc)
    if target is None:
        message = f"the CXML endpoint did not send the call anywhere: {instead}"
        if args.json:
            print_json({"ok": False, "error": message})
            return EXIT_FAILED
        return error(message, EXIT_FAILED)
    try:
        result = probe.call(
            target, caller, codec=args.codec, conn=conn, speech_text=args.speech,
            hold_ms=int(args.hold * 1000),
        )  # fmt: skip
    except PermissionError:
        raise TrunklineError("the packet socket needs root (or CAP_NET_RAW)") from None
    if args.json:
        print_json(result.as_dict())
    else:
        _print_text(result)
    return EXIT_OK if result.ok else EXIT_FAILED


def register(sub) -> None:
    p = sub.add_parser(
        "probe",
        help="place a measured test call, Cloudonix-style, to an agent",
        description=(
            "Play Cloudonix's part for one test call: ask the CXML endpoint (--cxml) what to "
            "do with a call to --did, follow its <Dial> (a <Service provider=ALIAS> through "
            "--service ALIAS=sip:host:port), or call --sip directly. sipp places the call "
            "with speech (espeak-ng, G.711). The caller's side is measured on the wire: "
            "answer time, first agent audio after answer, RTP both ways. With LiveKit "
            "credentials, the room is watched too: when the agent joined, what it heard "
            "(the example agent's trunkline.* attributes), and that the room empties after "
            "BYE. Needs root (packet socket), sipp, espeak-ng and sox."
        ),
        epilog="Exit codes: 0 every check passed, 1 the call or a check failed, 2 usage error.",
    )
    how = p.add_argument_group("where to call")
    how.add_argument("--cxml", help="the voice application URL (the CXML endpoint)")
    how.add_argument("--cxml-token", dest="cxml_token",
                     help="bearer token for the CXML endpoint "
                     "(env TRUNKLINE_CXML_TOKEN)")  # fmt: skip
    how.add_argument("--cxml-ca", dest="cxml_ca", metavar="PEM",
                     help="trust this CA for an https --cxml "
                     "(e.g. Caddy's internal CA)")  # fmt: skip
    how.add_argument("--did", help="the dialled number (To) to ask the CXML endpoint about")
    how.add_argument("--service", action="append", default=[], metavar="ALIAS=SIP_URI",
                     help="what Cloudonix resolves a service provider alias to "
                     "(repeatable)")  # fmt: skip
    how.add_argument(
        "--sip", help="skip CXML and call this URI, e.g. sip:+12127773456@10.0.0.5:5060"
    )
    p.add_argument("--caller", default="+12125550100", help="From number (default +12125550100)")
    p.add_argument("--codec", choices=sorted(probe.CODECS), default="pcmu")
    p.add_argument("--transport", choices=sorted(probe.TRANSPORTS),
                   help="SIP transport (default: the URI's, else udp)")  # fmt: skip
    p.add_argument("--hold", type=float, default=6.0,
                   help="seconds from the caller's speech start to BYE (default 6)")  # fmt: skip
    p.add_argument("--speech", default=probe.DEFAULT_SPEECH, help="what the caller says")
    p.add_argument("--no-livekit", dest="no_livekit", action="store_true",
                   help="do not watch the room (no LiveKit credentials needed)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the measurements as JSON")
    connection_options(p)
    p.set_defaults(func=_cmd_probe)
