#!/usr/bin/env bash
# make collection: the versioned artifacts a sysadmin installs, in dist/:
#   trunkline-<v>-py3-none-any.whl   the Python package (the trunkline command,
#                                    the CXML endpoint); pip install it on the controller
#   trunkline-voice-<v>.tar.gz       the Ansible collection; it carries the same wheel
#                                    and its constraints for the CXML hosts
# The wheel is built from a clean copy of the tree (tracked and new files,
# nothing ignored) with SOURCE_DATE_EPOCH at the last commit, so the same
# tree gives the same bytes and a host sees no change.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
py=${PYTHON:-.venv/bin/python}
t0=$SECONDS
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' scripts/trunkline/__init__.py)
collection_version=$(sed -n 's/^version: *//p' galaxy.yml)
if [ -z "$version" ] || [ "$version" != "$collection_version" ]; then
  echo "make collection: trunkline.__version__ ($version) and galaxy.yml's version ($collection_version) differ" >&2
  exit 1
fi
role_version=$(sed -n 's/^_cxml_endpoint_collection_version: "\(.*\)"$/\1/p' roles/cxml_endpoint/vars/main.yml)
if [ "$role_version" != "$version" ]; then
  echo "make collection: roles/cxml_endpoint/vars/main.yml carries version $role_version, not $version" >&2
  exit 1
fi
files=roles/cxml_endpoint/files
mkdir -p dist "$files"
# One build at a time (molecule scenarios build it in their dependency step).
exec 9>dist/.lock
flock 9
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. The wheel.
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - | tar -xf - -C "$tmp"
mkdir -p "$tmp/.wheel"
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s) \
  "$py" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$tmp/.wheel" "$tmp"
wheel=trunkline-$version-py3-none-any.whl
[ -f "$tmp/.wheel/$wheel" ] || { echo "make collection: pip built no $wheel" >&2; exit 1; }
rm -f dist/trunkline-*.whl "$files"/trunkline-*.whl
cp "$tmp/.wheel/$wheel" dist/
cp "$tmp/.wheel/$wheel" "$files/"

# 2. The constraints the CXML hosts install it under: every package
# trunkline[cxml] pulls in, at constraints.txt's pins (the dev venv holds
# exactly those, so its metadata gives the dependency tree).
"$py" - "$files/trunkline-constraints.txt" <<'PY'
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

def canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()

pins = {}
for line in Path("constraints.txt").read_text().splitlines():
    if "==" in line and not line.startswith("#"):
        name, _, version = line.partition("==")
        pins[canon(name)] = version.strip()
seen, todo = {}, [("trunkline", {"cxml"})]
while todo:
    name, extras = todo.pop()
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        sys.exit(f"make collection: {name} (needed on some host Python) is not in the dev venv to pin")
    for text in dist.requires or []:
        req = Requirement(text)
        # Every Python the hosts may run (Debian 12: 3.11, Ubuntu 24.04: 3.12, Debian 13: 3.13).
        env = [{"extra": e, "python_version": v, "python_full_version": v + ".0"}
               for e in (extras or {""}) for v in ("3.11", "3.12", "3.13")]
        if req.marker and not any(req.marker.evaluate(e) for e in env):
            continue
        key = canon(req.name)
        if key not in seen or not req.extras <= seen[key]:
            seen[key] = seen.get(key, set()) | set(req.extras)
            todo.append((req.name, set(req.extras)))
lines = []
for key in sorted(seen):
    try:
        installed = metadata.version(key)
    except metadata.PackageNotFoundError:
        sys.exit(f"make collection: {key} (needed on some host Python) is not in the dev venv to pin")
    if pins.get(key) != installed:
        sys.exit(f"make collection: {key} {installed} is not pinned in constraints.txt (pin: {pins.get(key)})")
    lines.append(f"{key}=={installed}")
header = "# trunkline[cxml]'s dependencies at constraints.txt's pins (made by make collection)\n"
Path(sys.argv[1]).write_text(header + "\n".join(lines) + "\n")
PY

# 3. The collection (build_ignore in galaxy.yml keeps tests, caches and sources out).
.venv/bin/ansible-galaxy collection build --force --output-path dist . >/dev/null
tarball=dist/trunkline-voice-$version.tar.gz
[ -f "$tarball" ] || { echo "make collection: no $tarball" >&2; exit 1; }
(cd dist && sha256sum "$wheel" "$(basename "$tarball")" >SHA256SUMS)
echo "==> collection: dist/$wheel, $tarball ($((SECONDS - t0)) s)"
sed 's/^/    /' dist/SHA256SUMS
