#!/usr/bin/env bash
# make sanity: ansible-test sanity on the collection as users install it (the
# tarball from make collection, installed into ansible_collections/trunkline/voice
# under a scratch directory), with this repository's tests/sanity/ ignores.
# Every sanity test ansible-core 2.19 has runs, each in its own venv with the
# requirements ansible-test pins (from PyPI). ansible-test bootstraps pip in
# those venvs with a get-pip script from ci-files.testing.ansible.com, which
# this test bed cannot reach: the stand-in below runs pip from its PyPI wheel.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
work=${TRUNKLINE_SANITY_DIR:-$(mktemp -d /var/tmp/trunkline-sanity.XXXXXX)}
trap 'rm -rf "$work"' EXIT
"$top/scripts/testbed/install-collection.sh" "$work" >/dev/null
dest=$work/ansible_collections/trunkline/voice
mkdir -p "$dest/tests"
cp -r "$top/tests/sanity" "$dest/tests/"

pip_version=24.2 # what ansible-core 2.19's ansible-test bootstraps
cache=$HOME/.ansible/test/cache
getpip=$cache/get_pip_${pip_version//./_}.py
if [ ! -f "$getpip" ]; then
  mkdir -p "$cache"
  "$top/.venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps -d "$cache" "pip==$pip_version"
  cat >"$getpip" <<PY
# Test-bed stand-in for get-pip.py $pip_version (its host is unreachable here):
# runs pip from its PyPI wheel, as get-pip.py does from its embedded copy.
import os, runpy, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pip-$pip_version-py3-none-any.whl"))
sys.argv = ["pip", "install", *[a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
PY
fi
cd "$dest"
"$top/.venv/bin/ansible-test" sanity --venv --python "$("$top/.venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" --color no
