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
from trunkline.errors import ConfigError, TrunklineError
from trunkline.telephony.model import parse

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
    p_tel.set_defaults(func=lambda _args: (p_tel.print_help(), EXIT_USAGE)[1])
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
