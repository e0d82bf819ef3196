#!/usr/bin/env bash
# Install the built collection (make collection) into an empty collections
# path, the way a user installs it: molecule's dependency step for the
# scenarios that test what users install (default, e2e). Their provisioner
# points ANSIBLE_COLLECTIONS_PATH at DEST only, so the checkout is not found.
set -euo pipefail
dest=${1:?usage: install-collection.sh DEST}
top=$(cd "$(dirname "$0")/../.." && pwd)
# Built from this tree now (2 s), so a scenario never tests a stale tarball.
"$top/scripts/collection.sh"
version=$(sed -n 's/^version: *//p' "$top/galaxy.yml")
tarball=$top/dist/trunkline-voice-$version.tar.gz
rm -rf "$dest"
mkdir -p "$dest"
# --offline: the collection's dependencies (community.docker, ansible.utils)
# are the ones the pinned `ansible` package installed; Galaxy is not asked.
# DEST as the only collections path (and --force), so the checkout that
# ansible.cfg links never counts as "already installed".
ANSIBLE_COLLECTIONS_PATH=$dest "$top/.venv/bin/ansible-galaxy" collection install --offline --force \
  -p "$dest" "$tarball"
