"""What this scenario ran is what users install: trunkline.voice from the
tarball `make collection` built, installed into an empty collections path by
the dependency step; the checkout is not on the collections path."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path


def test_the_collection_is_the_installed_tarball():
    ephemeral = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]).resolve()
    paths = os.environ["ANSIBLE_COLLECTIONS_PATH"].split(":")
    assert [Path(p).resolve() for p in paths] == [ephemeral / "collections"]
    listed = subprocess.run(
        ["ansible-galaxy", "collection", "list", "trunkline.voice", "--format", "json"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    found = {Path(path).resolve(): cols for path, cols in json.loads(listed.stdout).items()}
    assert list(found) == [ephemeral / "collections/ansible_collections"], found
    installed = ephemeral / "collections/ansible_collections/trunkline/voice"
    assert not installed.is_symlink() and (installed / "MANIFEST.json").is_file()
    manifest = json.loads((installed / "MANIFEST.json").read_text())["collection_info"]
    (listing,) = found.values()
    assert manifest["version"] == listing["trunkline.voice"]["version"]
    assert not (installed / "tests").exists() and not (installed / "molecule").exists()
