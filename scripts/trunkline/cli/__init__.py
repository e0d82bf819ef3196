"""The ``trunkline`` command: argument parsing and output only.

One module per command group (``telephony``, ``call``, ``egress``, ``cxml``,
``probe``, ``version``), each with ``register(subparsers)``; ``common`` holds
what they share (LiveKit connection options, exit codes, problem output).
The work is done by the core modules they call.

Exit codes (stable; scripts may rely on them):
  0  success
  1  the operation failed (a check did not pass, an API refused)
  2  usage error or invalid input (nothing was changed)
"""

from __future__ import annotations

import argparse

from trunkline import __version__
from trunkline.cli.common import EXIT_FAILED, EXIT_USAGE, error
from trunkline.errors import TrunklineError


def build_parser() -> argparse.ArgumentParser:
    # Imported here, not above: `python -m trunkline.cxml` (the CXML endpoint's
    # service) loads trunkline.cli.cxml, and so this package, but none of the
    # other commands.
    from trunkline.cli import call, cxml, egress, probe, telephony, version

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
    for group in (version, telephony, call, egress, cxml, probe):
        group.register(sub)
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
        return error("interrupted", 130)
    except TrunklineError as exc:
        return error(exc, EXIT_FAILED)
