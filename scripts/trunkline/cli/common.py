"""What the commands share: exit codes, the LiveKit connection options, and
the output of problems and errors.

Exit codes (stable; scripts may rely on them):
  0  success
  1  the operation failed (a check did not pass, an API refused)
  2  usage error or invalid input (nothing was changed)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from trunkline.config import environment
from trunkline.errors import Problem, UsageError
from trunkline.telephony.state import DEFAULT_OWNER

if TYPE_CHECKING:
    from trunkline.livekit import Connection

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_CONNECTION = (
    ("url", "LIVEKIT_URL"),
    ("api_key", "LIVEKIT_API_KEY"),
    ("api_secret", "LIVEKIT_API_SECRET"),
)


def connection_options(p: argparse.ArgumentParser) -> None:
    """--url, --api-key, --api-secret, --timeout and --owner."""
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


def connection(args: argparse.Namespace) -> Connection:
    """The LiveKit connection of connection_options; UsageError when a setting is missing."""
    # Imported here: `python -m trunkline.cxml` (the CXML endpoint) loads this
    # module but never talks to LiveKit, and does not load its client.
    from trunkline.livekit import Connection

    env = environment()
    values = {}
    for attr, var in _CONNECTION:
        values[attr] = getattr(args, attr) or env.get(var, "")
        if not values[attr]:
            option = "--" + attr.replace("_", "-")
            raise UsageError(f"no LiveKit {attr.replace('_', ' ')}: pass {option} or set {var}")
    return Connection(timeout=args.timeout, **values)


def needs_action(parser: argparse.ArgumentParser) -> None:
    """A command group run without an ACTION prints its help and exits 2."""

    def show_help(_args: argparse.Namespace) -> int:
        parser.print_help()
        return EXIT_USAGE

    parser.set_defaults(func=show_help)


def print_json(data: Any, sort_keys: bool = False) -> None:
    print(json.dumps(data, indent=2, sort_keys=sort_keys))


def problems_json(problems: Iterable[Problem]) -> list[dict]:
    return [{"file": p.file, "path": p.path, "message": p.message} for p in problems]


def print_problems(problems: Iterable[Problem], label: str = "error") -> None:
    """One ``label: file: object.field: message`` line per problem, on stderr."""
    for problem in problems:
        print(f"{label}: {problem}", file=sys.stderr)


def error(message: Any, code: int = EXIT_USAGE) -> int:
    """Print ``trunkline: message`` on stderr; return the exit code."""
    print(f"trunkline: {message}", file=sys.stderr)
    return code
