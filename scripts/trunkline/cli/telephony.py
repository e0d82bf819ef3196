"""``trunkline telephony validate|plan|apply|export``: telephony.yml as code."""

from __future__ import annotations

import argparse
import sys

from trunkline.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    connection,
    connection_options,
    error,
    needs_action,
    print_json,
    print_problems,
    problems_json,
)
from trunkline.config import environment, load_yaml
from trunkline.errors import ConfigError, UsageError
from trunkline.telephony.model import Parsed, parse


def _invalid(args: argparse.Namespace, exc: ConfigError, code: int, changed_nothing: bool) -> int:
    if args.json:
        print_json({"valid": False, "errors": problems_json(exc.problems)})
    else:
        print_problems(exc.problems)
        if changed_nothing:
            print("Nothing was changed.", file=sys.stderr)
    return code


def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        parsed = parse(load_yaml(args.file), args.file, environment())
    except ConfigError as exc:
        return _invalid(args, exc, EXIT_USAGE, changed_nothing=False)
    t = parsed.telephony
    counts = {
        "inbound_trunks": len(t.inbound_trunks),
        "outbound_trunks": len(t.outbound_trunks),
        "dispatch_rules": len(t.dispatch_rules),
    }
    if args.json:
        print_json({"valid": True, "warnings": problems_json(parsed.warnings), **counts})
    else:
        print_problems(parsed.warnings, "warning")
        print(
            f"{args.file}: valid ({counts['inbound_trunks']} inbound trunks, "
            f"{counts['outbound_trunks']} outbound trunks, "
            f"{counts['dispatch_rules']} dispatch rules, "
            f"{len(parsed.warnings)} warnings)"
        )
    return EXIT_OK


def _load(args: argparse.Namespace) -> Parsed:
    """Parse and validate the file; warnings go to stderr. ConfigError propagates."""
    parsed = parse(load_yaml(args.file), args.file, environment())
    if not args.json:
        print_problems(parsed.warnings, "warning")
    return parsed


def _cmd_plan(args: argparse.Namespace, do_apply: bool = False) -> int:
    from trunkline.telephony import ops
    from trunkline.telephony.apply import Options

    invalid_code = EXIT_FAILED if getattr(args, "detailed_exitcode", False) else EXIT_USAGE
    try:
        parsed = _load(args)
        conn = connection(args)
    except ConfigError as exc:
        return _invalid(args, exc, invalid_code, changed_nothing=True)
    except UsageError as exc:
        return error(exc, invalid_code)
    opts = Options(owner=args.owner, prune=args.prune, adopt=args.adopt)
    result = (ops.apply if do_apply else ops.plan)(parsed.telephony, conn, opts)
    if args.json:
        data = ops.result_dict(result)
        data["warnings"] = problems_json(parsed.warnings)
        print_json(data)
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


def _cmd_apply(args: argparse.Namespace) -> int:
    return _cmd_plan(args, do_apply=True)


def _cmd_export(args: argparse.Namespace) -> int:
    from trunkline.telephony import ops

    try:
        conn = connection(args)
    except UsageError as exc:
        return error(exc)
    text, _calls = ops.export(conn, args.owner, args.owned)
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _reconcile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the telephony.yml describing the desired state")
    p.add_argument("--prune", action="store_true",
                   help="delete owned objects the file no longer names")  # fmt: skip
    p.add_argument("--adopt", action="store_true",
                   help="take ownership of unowned objects whose names the file uses")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the plan and outcome as JSON")
    connection_options(p)


def register(sub) -> None:
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
    p_validate.set_defaults(func=_cmd_validate)

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
    p_plan.set_defaults(func=_cmd_plan)

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
    p_apply.set_defaults(func=_cmd_apply)

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
    connection_options(p_export)
    p_export.set_defaults(func=_cmd_export)
    needs_action(p_tel)
