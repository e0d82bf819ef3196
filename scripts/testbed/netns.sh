#!/usr/bin/env bash
# Run a command in a private network namespace made for it: loopback plus a
# veth pair (tl0 10.99.0.1 <-> tl1), no route anywhere else. The pytest suite
# runs in one, which guarantees its traffic stays on this machine, and gives
# LiveKit's WebRTC media a non-loopback address: pion (inside livekit-sip and
# the agents) gathers no loopback ICE candidates, so calls cannot bridge into
# a room over 127.0.0.1 alone. The namespace vanishes with the command.
set -euo pipefail
if [ "${1:-}" = "--inside" ]; then
  shift
  ip link set lo up
  ip link add tl0 type veth peer name tl1
  ip addr add 10.99.0.1/24 dev tl0
  ip link set tl0 up
  ip link set tl1 up
  export TRUNKLINE_TEST_MEDIA_IP=10.99.0.1 TRUNKLINE_TEST_MEDIA_IF=tl0
  exec "$@"
fi
if [ -n "${TRUNKLINE_TEST_MEDIA_IP:-}" ]; then exec "$@"; fi # already inside one
exec unshare --net -- "$0" --inside "$@"
