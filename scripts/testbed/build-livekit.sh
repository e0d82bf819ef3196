#!/usr/bin/env bash
# Build the LiveKit programs from their Go modules at pinned versions and
# package them the way upstream names its releases:
#   livekit_<v>_linux_amd64.tar.gz      (livekit-server, LICENSE)
#   livekit-sip_<v>_linux_amd64.tar.gz  (livekit-sip)
#   lk_<v>_linux_amd64.tar.gz           (lk)
#   checksums.txt                       (sha256, sha256sum format)
# into ARTIFACT_DIR (a cache outside the clone, keyed by version: an existing
# tarball that passes its checksum is not rebuilt).
#
# Operators use this too: it is how a livekit-sip binary tarball for an
# air-gapped site is produced (upstream publishes no SIP binary).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
# shellcheck source=progress.sh
. "$here/progress.sh"
out=${1:?usage: build-livekit.sh ARTIFACT_DIR}
mkdir -p "$out"
arch=amd64
export GOFLAGS=-buildvcs=false GOTOOLCHAIN=${GOTOOLCHAIN:-local}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

have() { # tarball exists and matches checksums.txt
  [ -f "$out/$1" ] && [ -f "$out/checksums.txt" ] &&
    (cd "$out" && grep -E "  $1\$" checksums.txt | sha256sum -c --status -) 2>/dev/null
}

record() { # add/replace one line in checksums.txt
  local f=$1 tmp
  tmp=$(mktemp)
  { grep -vE "  $f\$" "$out/checksums.txt" 2>/dev/null || true
    (cd "$out" && sha256sum "$f"); } | sort -k2 >"$tmp"
  chmod 0644 "$tmp"
  mv "$tmp" "$out/checksums.txt"
}

pack() { # pack NAME VERSION BIN_IN_WORK [LICENSE]
  local tarball=$1 stage=$work/stage-$1
  shift
  mkdir -p "$stage"
  cp "$@" "$stage/"
  # deterministic tar: fixed owner, mtime and order
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    -C "$stage" -czf "$out/$tarball.tmp" .
  mv "$out/$tarball.tmp" "$out/$tarball"
  record "$tarball"
}

module_src() { # module_src MODULE VERSION -> a writable copy of the module's source
  # Built inside the module itself, so its go.mod (and any replace directive)
  # and go.sum apply exactly as upstream's CI builds it.
  local dir json
  json=$(go mod download -json "$1@$2" || true)
  if grep -q '"Error"' <<<"$json"; then
    echo "go mod download $1@$2 failed: $(sed -n 's/^[[:space:]]*"Error": "\(.*\)",*$/\1/p' <<<"$json" | sed 's/\\n.*//')" >&2
    return 3
  fi
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
  [ -d "$dir" ] || { echo "go mod download $1@$2 gave no source" >&2; exit 1; }
  rm -rf "$work/src"
  cp -r "$dir" "$work/src"
  chmod -R u+w "$work/src"
  echo "$work/src"
}

build() { # build TARBALL MODULE VERSION PACKAGE BINARY CGO LDFLAGS
  local tarball=$1 module=$2 version=$3 pkg=$4 bin=$5 cgo=$6 ldflags=$7 src
  if have "$tarball"; then echo "  $tarball: cached"; return; fi
  src=$(module_src "$module" "v$version") || return $?
  mkdir -p "$work/bin"
  (cd "$src" && progress "building $bin $version" env CGO_ENABLED=$cgo go build -trimpath \
    -ldflags "-s -w $ldflags" -o "$work/bin/$bin" "./$pkg")
  "$work/bin/$bin" --version 2>&1 | grep -q "$version" ||
    { echo "$bin does not report version $version: $("$work/bin/$bin" --version 2>&1)" >&2; exit 1; }
  # the module's license and notice files travel with the binary (Apache-2.0)
  # shellcheck disable=SC2046 # file names without spaces, one word each
  pack "$tarball" "$work/bin/$bin" $(find "$src" -maxdepth 1 -type f \( -name 'LICENSE*' -o -name NOTICE \) | sort)
  rm -rf "$work/bin/$bin" "$src"
  echo "  $tarball: built"
}

build_server() {
  build "livekit_${LIVEKIT_SERVER_VERSION}_linux_${arch}.tar.gz" \
    github.com/livekit/livekit-server "$LIVEKIT_SERVER_VERSION" cmd/server livekit-server 0 ""
}

build_sip() {
  for p in libopus-dev libopusfile-dev libsoxr-dev pkg-config; do
    dpkg -s "$p" >/dev/null 2>&1 || { echo "missing build package $p (make testbed installs it)" >&2; exit 1; }
  done
  build "livekit-sip_${LIVEKIT_SIP_VERSION}_linux_${arch}.tar.gz" \
    github.com/livekit/sip "$LIVEKIT_SIP_VERSION" cmd/livekit-sip livekit-sip 1 \
    "-X github.com/livekit/sip/version.Version=$LIVEKIT_SIP_VERSION"
}

build_lk() {
  # Optional: the module proxy here serves no livekit-cli version (see
  # versions.env). Report it and go on; fail on any other error.
  local rc=0
  build "lk_${LK_CLI_VERSION}_linux_${arch}.tar.gz" \
    github.com/livekit/livekit-cli/v2 "$LK_CLI_VERSION" cmd/lk lk 0 "" || rc=$?
  if [ "$rc" = 3 ]; then
    echo "  lk_${LK_CLI_VERSION}: not built (module not served here); optional, skipped"
  elif [ "$rc" != 0 ]; then
    return "$rc"
  fi
}

case "${2:-all}" in
  server) build_server ;;
  sip) build_sip ;;
  lk) build_lk ;;
  all) build_server; build_sip; build_lk ;;
esac
(cd "$out" && sha256sum -c --quiet checksums.txt)
