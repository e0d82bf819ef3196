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


if __name__ == "__main__":
    sys.exit(main())
