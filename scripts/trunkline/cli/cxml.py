"""``trunkline cxml serve|check|render``: the CXML endpoint Cloudonix calls.

``register(subparsers)`` adds the ``cxml`` command to the main parser;
``main`` runs it on its own (``python -m trunkline.cxml``, what the
cxml_endpoint role's unit and validate step run). Exit codes as the main
command: 0 success, 1 failed, 2 usage error or invalid routing file.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import Any

from trunkline.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    needs_action,
    print_json,
    print_problems,
    problems_json,
)
from trunkline.config import environment, load_yaml
from trunkline.cxml import routing as rt
from trunkline.cxml.health import HealthMonitor
from trunkline.cxml.render import render
from trunkline.errors import ConfigError
from trunkline.telephony import model as telephony_model

DEFAULT_HOST = "127.0.0.1"  # behind the TLS front end on the same host
DEFAULT_PORT = 8090
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn  # only this command needs the server

    from trunkline.cxml.app import SERVER_LOG_CONFIG, CxmlApp, configure_logging, log_line

    configure_logging()
    try:
        app = CxmlApp(args.config, root_path=args.root_path)
    except ConfigError as exc:
        print_problems(exc.problems)
        return EXIT_USAGE
    print_problems(app.routing.warnings, "warning")
    log_line(
        {
            "event": "start",
            "listen": f"{args.host}:{args.port}",
            "voice_path": app.voice_path,
            "routes": len(app.routing.routes),
        }
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        http="httptools",
        loop="uvloop",
        lifespan="on",
        access_log=False,  # the app logs one JSON line per request itself
        proxy_headers=False,  # the app decides whom to believe (trusted_proxies)
        server_header=False,
        log_config=SERVER_LOG_CONFIG,
    )
    return EXIT_OK


def _cmd_render(args: argparse.Namespace) -> int:
    try:
        routing = rt.load(args.config, environment())
    except ConfigError as exc:
        print_problems(exc.problems)
        return EXIT_USAGE
    params = {"To": args.to, "CallSid": "render"}
    params.update({k: v for k, v in (("From", args.from_), ("CallerName", args.caller_name)) if v})
    if args.dial_status is not None:
        decision = rt.dial_status(routing, {**params, "DialCallStatus": args.dial_status})
    else:
        unhealthy, busy = _probe(routing) if args.check_health else (frozenset(), frozenset())
        decision = rt.decide(routing, params, unhealthy, busy=busy)
    document = render(decision.verbs).decode()
    route = routing.route_for(args.to)[1]
    if args.json:
        out: dict[str, Any] = {
            "route": decision.route or None,
            "decision": decision.outcome,
            "reason": decision.reason,
            "target": decision.target or None,
            "targets": _targets_json(routing, route) if route else [],
            "cxml": document,
        }
        print_json(out)
    else:
        if args.dial_status is None and route is not None and len(route.targets) > 1:
            chosen = decision.target or f"none ({decision.reason})"
            others = ", ".join(t.address for t in route.targets)
            print(f"target: {chosen} (targets: {others})", file=sys.stderr)
        print(document)
    return EXIT_OK


def _targets_json(routing: rt.Routing, route: rt.Route) -> list[dict[str, Any]]:
    """A route's SIP targets: where, and which health URLs (component) judge each."""
    urls = routing.health.urls()
    return [
        {
            "host": node.host,
            "port": node.port or None,
            "transport": node.transport,
            "address": node.address,
            "health": list(urls[node.health_key]) if node.health_key in urls else None,
            "health_key": node.health_key if node.health_key in urls else None,
        }
        for node in route.targets
    ]


def _routes_json(routing: rt.Routing) -> list[dict[str, Any]]:
    return [
        {
            "name": route.name,
            "type": route.type,
            "numbers": list(route.numbers),
            "trunk": route.trunk or None,
            "provider": route.provider or None,
            "agent": route.agent or None,
            "targets": _targets_json(routing, route),
        }
        for route in routing.routes
    ]


def _target_lines(routing: rt.Routing) -> list[str]:
    """One line per target of the routes written with ``targets:``; routes with
    ``host:`` add none, so their output stays the one summary line."""
    lines = []
    for route in routing.routes:
        if route.type != "sip" or route.host:
            continue
        for i, target in enumerate(_targets_json(routing, route)):
            health = " + ".join(target["health"] or ()) or "none (always takes its turn)"
            lines.append(
                f"  routes[{route.name}].targets[{i}]: {target['address']} "
                f"{target['transport']}, health {health}"
            )
    return lines


def _cmd_check(args: argparse.Namespace) -> int:
    from trunkline.cxml.app import CxmlApp  # the loader serve uses, root-path rule included

    env = environment()
    for name in args.assume_set:
        env.setdefault(name, "assumed-set")
    out: dict[str, Any] = {"file": args.config or args.telephony}
    details: list[str] = []
    try:
        if args.config:
            routing = CxmlApp(args.config, env, root_path=args.root_path).routing
            warnings, summary = (
                list(routing.warnings),
                (f"{len(routing.routes)} routes, {len(routing.by_number)} numbers"),
            )
            out.update(routes=_routes_json(routing), numbers=len(routing.by_number))
            details = _target_lines(routing)
        else:
            parsed = telephony_model.parse(load_yaml(args.telephony), args.telephony, env)
            warnings = list(parsed.warnings)
            summary = f"{len(parsed.telephony.inbound_trunks)} inbound trunks"
            out["inbound_trunks"] = [t.name for t in parsed.telephony.inbound_trunks]
    except ConfigError as exc:
        print_problems(exc.problems)
        return EXIT_USAGE
    print_problems(warnings, "warning")
    if args.json:
        print_json({**out, "warnings": problems_json(warnings)})
        return EXIT_OK
    print(f"ok: {args.config or args.telephony}: {summary}")
    for line in details:
        print(line)
    return EXIT_OK


def _env_names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    bad = [n for n in names if not ENV_NAME.match(n)]
    if bad:
        raise argparse.ArgumentTypeError(f"not environment variable names: {', '.join(bad)}")
    return names


def _root_path(value: str) -> str:
    from trunkline.cxml.app import ROOT_PATH

    if not ROOT_PATH.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} must be empty or like /cxml (no trailing /)")
    return value


def _probe(routing: rt.Routing) -> tuple[frozenset[str], frozenset[str]]:
    """Probe every health URL once; the components down, and those busy (429)."""
    monitor = HealthMonitor(lambda: routing.health)
    asyncio.run(monitor.check_once())
    for key, probe in sorted(monitor.probes.items()):
        print(f"health: {key}: {probe.state} ({probe.detail})", file=sys.stderr)
    return monitor.unhealthy, monitor.busy


def register(subparsers: Any) -> None:
    """Add ``cxml serve`` and ``cxml render`` to the main parser's subparsers."""
    p_cxml = subparsers.add_parser(
        "cxml",
        help="the CXML endpoint Cloudonix calls when a number rings",
        description=(
            "Serve the voice application Cloudonix calls (the CXML that hands calls to "
            "LiveKit), or print the CXML a call would get. Routing: a cxml.yml "
            "(see templates/cxml.yml)."
        ),
    )
    sub = p_cxml.add_subparsers(dest="cxml_command", metavar="ACTION")
    p_serve = sub.add_parser(
        "serve",
        help="serve the endpoint (HTTP; put the TLS front end before it)",
        description=(
            "Serve GET/POST / (voice requests), the Dial action path (callbacks) and "
            "/health. SIGHUP reloads the routing file; a bad file is logged and the "
            "previous one keeps serving. One JSON log line per request on stdout."
        ),
        epilog="Exit codes: 0 stopped cleanly, 2 invalid routing file.",
    )
    p_serve.add_argument("--config", required=True, help="the routing file (cxml.yml)")
    p_serve.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    p_serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p_serve.add_argument(
        "--root-path",
        type=_root_path,
        default="",
        help="the prefix a front end forwards unchanged (/cxml: voice requests at /cxml/)",
    )
    p_serve.set_defaults(func=_cmd_serve)

    p_check = sub.add_parser(
        "check",
        help="validate a routing file (or a telephony file) as serve would load it",
        description=(
            "Load and validate a routing file with the loader serve uses (its telephony "
            "file included), or a telephony file on its own, and print every problem; "
            "then the SIP targets of routes that list several (targets:). "
            "${VAR} references are resolved from the environment; --assume-set takes "
            "the named variables as set, so a file can be checked where its secrets "
            "are not (Ansible's validate step)."
        ),
        epilog="Exit codes: 0 valid, 2 invalid.",
    )
    what = p_check.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", help="the routing file (cxml.yml)")
    what.add_argument("--telephony", help="a telephony file (telephony.yml)")
    p_check.add_argument(
        "--assume-set",
        type=_env_names,
        action="extend",
        default=[],
        metavar="NAME[,NAME...]",
        help="environment variables to take as set (their values are not checked)",
    )
    p_check.add_argument("--root-path", type=_root_path, default="", help="as serve's")
    p_check.add_argument(
        "--json", action="store_true", help="print what was loaded: routes, numbers, SIP targets"
    )
    p_check.set_defaults(func=_cmd_check)

    p_render = sub.add_parser(
        "render",
        help="print the CXML a call to a number would get",
        description=(
            "Load the routing file and print the CXML a voice request (or, with "
            "--dial-status, a Dial callback) would get. Health is taken as good "
            "unless --check-health probes it now; of a route's several SIP targets, "
            "the first healthy one is dialed (serve takes turns)."
        ),
        epilog="Exit codes: 0 printed, 2 invalid routing file.",
    )
    p_render.add_argument("--config", required=True, help="the routing file (cxml.yml)")
    p_render.add_argument("--to", required=True, help="the called number (E.164)")
    p_render.add_argument("--from", dest="from_", default="", help="the caller's number")
    p_render.add_argument("--caller-name", default="", help="the caller's name")
    p_render.add_argument(
        "--dial-status", default=None, help="answer a Dial callback with this DialCallStatus"
    )
    p_render.add_argument("--check-health", action="store_true", help="probe the health URLs first")
    p_render.add_argument("--json", action="store_true", help="print route, decision and CXML")
    p_render.set_defaults(func=_cmd_render)
    needs_action(p_cxml)


def main(argv: list[str] | None = None) -> int:
    """``python -m trunkline.cxml ACTION ...``: the same commands without the main CLI."""
    parser = argparse.ArgumentParser(prog="trunkline")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    try:
        args = parser.parse_args(["cxml", *(sys.argv[1:] if argv is None else argv)])
    except SystemExit as exc:
        return int(exc.code or 0)
    return args.func(args)
