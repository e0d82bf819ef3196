#!/bin/bash
# Upstream's entrypoint (build/egress/entrypoint.sh): a clean PulseAudio for
# Chrome's audio, then egress under tini.
set -euo pipefail
rm -rf /home/egress/tmp/*
rm -rf /var/run/pulse /var/lib/pulse /home/egress/.config/pulse /home/egress/.cache/xdgr/pulse
pulseaudio -D --exit-idle-time=-1 --disallow-exit
exec /usr/bin/tini -- /bin/egress "$@"
