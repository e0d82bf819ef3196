#!/usr/bin/env bash
# make venv: the pinned Python toolchain in .venv, trunkline installed editable.
set -euo pipefail
python=${1:-python3} venv=${2:-.venv}
# shellcheck source=progress.sh
. "$(dirname "$0")/progress.sh"
t0=$SECONDS
if ! "$python" -c 'import sys; assert (3, 11) <= sys.version_info[:2] < (3, 14)' 2>/dev/null; then
  echo "make venv: $python must be Python 3.11 to 3.13 (found: $("$python" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian/Ubuntu split venv/ensurepip into python3-venv.
    echo "==> venv: installing python3-venv"
    rm -rf "$venv"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    "$python" -m venv "$venv"
  fi
fi
# The agent runtime the tests run the example agent with: livekit-agents and
# the silero plugin at the livekit_agents role's default pins and constraints.
# Built beside .venv (the two installs leave a core idle each); its output
# goes to a log, shown if it fails.
agent_venv=${venv}-agent
agent_log=$(mktemp)
agent_pid=""
trap '[ -z "$agent_pid" ] || kill "$agent_pid" 2>/dev/null; rm -f "$agent_log"' EXIT
echo "==> venv: $agent_venv (the example agent's livekit-agents runtime), in the background"
(
  [ -x "$agent_venv/bin/python" ] || "$python" -m venv "$agent_venv"
  "$agent_venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip==25.3"
  "$agent_venv/bin/python" -m pip install -q --disable-pip-version-check \
    -c roles/livekit_agents/files/constraints.txt livekit-agents livekit-plugins-silero
) >"$agent_log" 2>&1 &
agent_pid=$!
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip==25.3"
# The controller's Ansible (requirements.txt), trunkline editable with the
# CXML endpoint's extra, the dev tools, and the named test-support package.
echo "==> venv: $venv (pinned Ansible, trunkline, dev tools)"
progress "pip install into $venv" "$venv/bin/python" -m pip install -q --disable-pip-version-check \
  -c constraints.txt -r requirements.txt --group dev -e '.[cxml]' -e tests/support
# Wheels of everything trunkline[cxml] needs, at the constraints' pins, for
# installs without an index (tests/test_packaging.py puts the built wheel
# into an empty venv from them).
rm -rf "$venv/wheelhouse"
"$venv/bin/python" -m pip download -q --disable-pip-version-check --only-binary :all: \
  -c constraints.txt -d "$venv/wheelhouse" '.[cxml]'
# This checkout as the collection trunkline.voice (ansible.cfg's collections_path):
# ansible-playbook trunkline.voice.site runs what is here.
mkdir -p "$venv/collections/ansible_collections/trunkline"
ln -sfn ../../../.. "$venv/collections/ansible_collections/trunkline/voice"
rc=0
progress_wait "pip install into $agent_venv" "$agent_pid" || rc=$?
agent_pid=""
if [ "$rc" != 0 ]; then
  cat "$agent_log" >&2
  echo "make venv: building $agent_venv failed (above)" >&2
  exit 1
fi
echo "==> venv: ready in $((SECONDS - t0)) s ($("$venv/bin/trunkline" --version))"
