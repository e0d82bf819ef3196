"""`trunkline probe`: place a measured test call (see trunkline.probe)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys

from trunkline.errors import TrunklineError
from trunkline.numbers import normalize_e164

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _aliases(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        alias, sep, uri = value.partition("=")
        if not sep or not alias or not uri.startswith("sip:"):
            raise ValueError(f"--service {value!r}: expected ALIAS=sip:host[:port][;transport=tcp]")
        out[alias] = uri
    return out


def _target(args: argparse.Namespace):
    from trunkline import probe

    if args.sip:
        try:
            user, host, port, opts = probe.parse_sip_uri(args.sip)
        except probe.ProbeError as exc:
            raise ValueError(f"--sip: {exc}") from None
        transport = args.transport or opts.get("transport", "udp")
        return probe.Target(host, port, user, transport.lower(), {}, "direct"), ""
    params = {
        "CallSid": f"probe-{secrets.token_hex(8)}",
        "AccountSid": "trunkline-probe",
        "From": args.caller,
        "To": args.did,
        "Direction": "inbound",
        "CallStatus": "ringing",
    }
    token = args.cxml_token or os.environ.get("TRUNKLINE_CXML_TOKEN", "")
    document = probe.ask_cxml(args.cxml, params, token, ca_file=args.cxml_ca or "")
    target, instead = probe.resolve_cxml(document, args.aliases, args.transport or "udp")
    if target is not None and args.transport:
        target.transport = args.transport
    return target, instead


def _print_text(r) -> None:
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
    from trunkline import probe
    from trunkline.cli import UsageError, _connection

    try:
        if bool(args.sip) == bool(args.cxml):
            raise UsageError("give either --cxml URL (with --did) or --sip URI")
        if args.cxml and not args.did:
            raise UsageError("--cxml needs --did (the number Cloudonix would ask about)")
        args.aliases = _aliases(args.service)
        args.caller = normalize_e164(args.caller)
        if args.did:
            args.did = normalize_e164(args.did)
        conn = None if args.no_livekit else _connection(args)
    except (ValueError, UsageError) as exc:
        print(f"trunkline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        target, instead = _target(args)
    except ValueError as exc:
        print(f"trunkline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if target is None:
        message = f"the CXML endpoint did not send the call anywhere: {instead}"
        if args.json:
            print(json.dumps({"ok": False, "error": message}, indent=2))
        else:
            print(f"trunkline: {message}", file=sys.stderr)
        return EXIT_FAILED
    try:
        result = probe.call(
            target, args.caller, codec=args.codec, conn=conn, speech_text=args.speech,
            hold_ms=int(args.hold * 1000),
        )  # fmt: skip
    except PermissionError:
        raise TrunklineError("the packet socket needs root (or CAP_NET_RAW)") from None
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        _print_text(result)
    return EXIT_OK if result.ok else EXIT_FAILED


def register_probe(sub) -> None:
    from trunkline import probe

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
    from trunkline.cli import _connection_options

    _connection_options(p)
    p.set_defaults(func=_cmd_probe)
