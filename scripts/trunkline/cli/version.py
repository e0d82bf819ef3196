"""``trunkline version``: the versions of Trunkline and what it pins."""

from __future__ import annotations

import argparse
import platform
from importlib import metadata

from trunkline import __version__
from trunkline.cli.common import EXIT_OK, print_json

# Components whose versions Trunkline pins and reports.
_PACKAGES = ("ansible-core", "ansible", "livekit-api", "livekit-protocol")


def versions() -> dict[str, str]:
    found = {"trunkline": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _cmd_version(args: argparse.Namespace) -> int:
    found = versions()
    if args.json:
        print_json(found, sort_keys=True)
    else:
        width = max(map(len, found))
        for name, version in found.items():
            print(f"{name:<{width}}  {version}")
    return EXIT_OK


def register(sub) -> None:
    p = sub.add_parser(
        "version",
        help="show the versions of Trunkline and the pinned components it uses",
        description="Show the versions of Trunkline, Python and the pinned packages it uses.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=_cmd_version)
