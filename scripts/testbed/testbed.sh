#!/usr/bin/env bash
# make testbed: everything the tests and the lab stand on, idempotent and
# cached. Each step prints its duration.
#   1. host packages (Debian's docker.io, debootstrap, sipp, redis, caddy, build deps)
#   2. a running Docker engine
#   3. systemd base images trunkline/debian:12 and :13 (debootstrap + import)
#   4. LiveKit programs built from their Go modules into the artifact cache,
#      linked into the clone as .artifacts/, and the Egress image
#      (trunkline/egress:<v>, saved there too for nested engines)
# `testbed.sh --lab` (make lab) builds only what the lab host uses: its one
# base image and the LiveKit programs, not the Egress image (the lab runs none).
set -euo pipefail
lab=false
[ "${1:-}" = --lab ] && lab=true
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
# shellcheck source=progress.sh
. "$here/progress.sh"
cache=${TRUNKLINE_CACHE:-$HOME/.cache/trunkline}
export DEBIAN_FRONTEND=noninteractive

step() { # step NAME FUNCTION
  local t0=$SECONDS
  echo "==> testbed: $1"
  "$2"
  echo "<== testbed: $1 ($((SECONDS - t0)) s)"
}

# Debian packages the test bed itself needs on the machine that runs it.
HOST_PACKAGES=(
  docker.io debootstrap            # engine; base images without a registry
  sip-tester redis-server          # real SIP peer (sipp) and Redis for the smoke tests
  caddy                            # the tls_proxy tests run Debian's Caddy (the one the role installs)
  espeak-ng sox                    # speech for test calls (caller side and the example agent)
  ffmpeg                           # ffprobe/volumedetect: length and loudness of Egress recordings
  pkg-config libopus-dev libopusfile-dev libsoxr-dev   # livekit-sip is cgo
  libopus0 libopusfile0 libsoxr0   # ... and links against these at run time
  iproute2 util-linux              # the tests' private network namespace (scripts/testbed/netns.sh)
  curl ca-certificates
)

host_packages() {
  local missing=()
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then echo "  all present"; return; fi
  echo "  installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's caddy starts caddy.service (:80, admin on :2019) where systemd
  # runs; the tests start their own Caddy, so the build host serves nothing.
  if [[ " ${missing[*]} " == *" caddy "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now caddy.service >/dev/null 2>&1 || true
  fi
}

# The Go toolchain for the LiveKit builds. The modules declare go 1.26; an
# older or missing go is bootstrapped from Debian's golang-go, which then
# fetches the pinned toolchain from the Go module proxy (GOTOOLCHAIN).
GO_TOOLCHAIN=go1.26.8
go_toolchain() {
  local have
  have=$(go env GOVERSION 2>/dev/null || true)
  if [ -n "$have" ] && printf '%s\n%s\n' go1.26 "$have" | sort -V -C; then
    echo "  $have"
    return
  fi
  if ! command -v go >/dev/null; then
    echo "  installing Debian's golang-go to bootstrap $GO_TOOLCHAIN"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends golang-go >/dev/null
  fi
  export GOTOOLCHAIN=$GO_TOOLCHAIN
  echo "  $(go version) (GOTOOLCHAIN=$GOTOOLCHAIN)"
}

docker_engine() {
  if docker info >/dev/null 2>&1; then echo "  engine answers"; return; fi
  command -v dockerd >/dev/null || { echo "dockerd missing after install" >&2; exit 1; }
  # A stale pid file (dockerd killed with the previous session) makes dockerd
  # refuse to start; remove it only when no live dockerd owns it.
  if [ -f /var/run/docker.pid ]; then
    pid=$(cat /var/run/docker.pid 2>/dev/null || true)
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
      echo "  removing stale /var/run/docker.pid"
      rm -f /var/run/docker.pid
    fi
  fi
  for pidf in /run/docker/containerd/containerd.pid; do
    [ -f "$pidf" ] && ! kill -0 "$(cat "$pidf")" 2>/dev/null && rm -f "$pidf"
  done
  mkdir -p "$cache"
  setsid dockerd >"$cache/dockerd.log" 2>&1 </dev/null 9>&- &
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then echo "  dockerd started (log: $cache/dockerd.log)"; return; fi
    sleep 1
  done
  echo "dockerd did not answer within 60 s; last lines of its log:" >&2
  tail -20 "$cache/dockerd.log" >&2
  exit 1
}

# What goes into the base images; the image carries a hash of this recipe
# as a label, so a changed recipe rebuilds it. Bump IMAGE_RECIPE when the
# steps in image_one change.
IMAGE_RECIPE=3
IMAGE_PACKAGES=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,iproute2,procps,ca-certificates,gnupg
mirror() { # the Debian mirror this machine's apt sources use
  local m
  m=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
    grep -oE 'https?://[^ ]+' | head -1)
  echo "${m:-http://deb.debian.org/debian}"
}

rootfs_cleanup() { # unmount what debootstrap may have left mounted, then remove
  local root=$1 m
  [ -n "$root" ] && [ -d "$root" ] || return 0
  for m in $(findmnt -rn -o TARGET | grep -F "$root/" | sort -r); do umount -l "$m" || true; done
  rm -rf --one-file-system "$root" "$root.log"
}

security_mirror() {
  local m
  m=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian-security/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
    grep -oE 'https?://[^ ]+' | head -1)
  echo "${m:-http://deb.debian.org/debian-security}"
}

image_one() { # image_one SUITE TAG
  local suite=$1 tag=$2 name=trunkline/debian:$2 recipe have root
  recipe=$(printf '%s|%s|%s' "$suite" "$IMAGE_PACKAGES" "$IMAGE_RECIPE" | sha256sum | cut -c1-16)
  have=$(docker image inspect -f '{{ index .Config.Labels "trunkline.recipe" }}' "$name" 2>/dev/null || true)
  if [ "$have" = "$recipe" ]; then echo "  $name: cached ($recipe)"; return; fi
  root=$(mktemp -d /var/tmp/trunkline-rootfs.XXXXXX)
  # shellcheck disable=SC2064 # expand now: the trap must clean this rootfs
  trap "rootfs_cleanup '$root'" EXIT
  local t0=$SECONDS
  progress --log "$root.log" "debootstrap $suite" \
    debootstrap --variant=minbase --include="$IMAGE_PACKAGES" "$suite" "$root" "$(mirror)" ||
    { tail -20 "$root.log" >&2; exit 1; }
  # A container, not a machine: nothing should try to manage consoles,
  # clocks or the kernel. Time sync stays off (no NTP to public pools).
  # apt sources like an installed Debian host: release, updates, security.
  cat >"$root/etc/apt/sources.list" <<SOURCES
deb $(mirror) $suite main
deb $(mirror) $suite-updates main
deb $(security_mirror) $suite-security main
SOURCES
  chroot "$root" /bin/sh -c '
    systemctl mask getty@tty1.service serial-getty@.service console-getty.service \
      systemd-timesyncd.service systemd-firstboot.service sys-kernel-config.mount \
      systemd-remount-fs.service >/dev/null 2>&1 || true
    : > /etc/machine-id
    apt-get clean; rm -rf /var/lib/apt/lists/*
    # empty lists must not look fresh to apt cache_valid_time checks
    touch -d @0 /var/lib/apt/lists'
  tar -C "$root" -c . | docker import \
    -c 'CMD ["/lib/systemd/systemd"]' \
    -c "LABEL trunkline.recipe=$recipe trunkline.suite=$suite" - "$name" >/dev/null
  rootfs_cleanup "$root"
  trap - EXIT
  echo "  $name: built from $suite in $((SECONDS - t0)) s"
}

images() {
  local pair want=""
  # The lab's image only (trunkline/debian:12 unless TRUNKLINE_LAB_IMAGE says otherwise).
  $lab && want=${TRUNKLINE_LAB_IMAGE:-trunkline/debian:12} && want=${want##*:}
  for pair in $DEBIAN_SUITES; do
    [ -z "$want" ] || [ "${pair##*:}" = "$want" ] || continue
    image_one "${pair%%:*}" "${pair##*:}"
  done
}

artifacts() {
  mkdir -p "$cache/artifacts"
  "$here/build-livekit.sh" "$cache/artifacts"
  # Egress: an image (upstream ships no binary), built from the Go module.
  if $lab; then echo "  Egress image: not needed by the lab (make testbed builds it)"; else
    "$here/build-egress.sh" "$cache/artifacts"
  fi
  # .artifacts in the clone points at the cache, so fresh clones stay warm.
  if [ ! -L "$top/.artifacts" ] || [ "$(readlink "$top/.artifacts")" != "$cache/artifacts" ]; then
    rm -rf "$top/.artifacts"
    ln -s "$cache/artifacts" "$top/.artifacts"
  fi
  (cd "$top/.artifacts" && sha256sum -c checksums.txt | sed 's/^/  /')
}

t_all=$SECONDS
# One test bed per machine: clones running `make testbed` at once would build
# into the same cache. The second waits for the first.
mkdir -p "$cache"
exec 9>"$cache/.testbed.lock"
if ! flock -n 9; then
  echo "==> testbed: another make testbed is running on this machine; waiting for it"
  flock 9
fi
step "host packages" host_packages
step "go toolchain" go_toolchain
step "docker engine" docker_engine
step "base images" images
step "livekit artifacts" artifacts
echo "testbed ready in $((SECONDS - t_all)) s"
