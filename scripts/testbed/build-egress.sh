#!/usr/bin/env bash
# Build the LiveKit Egress image at the pinned version from its Go module,
# since no container registry is reachable here:
#   1. builder image: Debian 13 with GStreamer 1.26 headers, gcc, Node;
#   2. the module's web template (template-default) built with pnpm at its
#      lockfile, embedded by the binary (cmd/server/templates);
#   3. the binary, cgo against GStreamer, with the host's Go toolchain and
#      module cache mounted into the builder;
#   4. the runtime image: Debian 13, Chromium, Xvfb, PulseAudio, GStreamer
#      plugins, flattened to one layer (a nested engine's vfs driver copies
#      every layer in full) and tagged trunkline/egress:<version>.
# Cached in the engine: an image whose trunkline.recipe label matches is kept.
# Also saved as <artifact dir>/egress_<v>_image.tar for nested engines.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
# shellcheck source=progress.sh
. "$here/progress.sh"
out=${1:?usage: build-egress.sh ARTIFACT_DIR}
cache=${TRUNKLINE_CACHE:-$HOME/.cache/trunkline}
v=$LIVEKIT_EGRESS_VERSION
PNPM=pnpm@9.15.9
image=trunkline/egress:$v
tarball=egress_${v}_image.tar
recipe=$(cat "$0" "$here/versions.env" "$here/egress/"* | sha256sum | cut -c1-16)
builder=trunkline/egress-builder:$(sha256sum <"$here/egress/Dockerfile.builder" | cut -c1-16)

have=$(docker image inspect -f '{{ index .Config.Labels "trunkline.recipe" }}' "$image" 2>/dev/null || true)
if [ "$have" = "$recipe" ] && [ -f "$out/$tarball" ] && [ "$(cat "$out/$tarball.recipe" 2>/dev/null)" = "$recipe" ]; then
  echo "  $image: cached ($recipe)"
  exit 0
fi

work=$(mktemp -d /var/tmp/trunkline-egress.XXXXXX)
trap 'rm -rf "$work"; docker rm -f "trunkline-egress-flatten-$$" >/dev/null 2>&1 || true' EXIT
t0=$SECONDS

if [ "$have" != "$recipe" ]; then
  if ! docker image inspect "$builder" >/dev/null 2>&1; then
    progress --log "$work/builder.log" "building the Egress builder image" \
      docker build -q -t "$builder" -f "$here/egress/Dockerfile.builder" "$here/egress" ||
      { tail -30 "$work/builder.log" >&2; exit 1; }
    echo "  $builder: built ($((SECONDS - t0)) s)"
  fi

  export GOFLAGS=-buildvcs=false GOTOOLCHAIN=${GOTOOLCHAIN:-local}
  # sum.golang.org has no record of this version: skip it for this one
  # module and compare the module's hash with the pin in versions.env.
  json=$(GONOSUMDB=github.com/livekit/egress go mod download -json "github.com/livekit/egress@v$v" || true)
  if grep -q '"Error"' <<<"$json"; then
    echo "go mod download github.com/livekit/egress@v$v failed: $(sed -n 's/^[[:space:]]*"Error": "\(.*\)",*$/\1/p' <<<"$json")" >&2
    exit 3
  fi
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
  sum=$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p' <<<"$json")
  if [ "$sum" != "$LIVEKIT_EGRESS_MODULE_SUM" ]; then
    echo "github.com/livekit/egress@v$v: module hash $sum is not the pinned $LIVEKIT_EGRESS_MODULE_SUM" >&2
    exit 1
  fi
  cp -r "$dir" "$work/src"
  chmod -R u+w "$work/src"

  # The build containers reach the npm registry and the Go module proxy with
  # the host's trust store (a site's TLS-inspecting proxy has its CA there).
  ca=/etc/ssl/certs/ca-certificates.crt
  tls=()
  [ -f "$ca" ] && tls=(-v "$ca:$ca:ro" -e "NODE_EXTRA_CA_CERTS=$ca" -e "SSL_CERT_FILE=$ca" -e "npm_config_cafile=$ca")

  # 2. the template, as upstream's build/template/Dockerfile does (pnpm
  # install + build), with npm's and pnpm's caches kept outside the clone.
  mkdir -p "$cache/egress-npm" "$cache/egress-gocache"
  t1=$SECONDS
  # The npm registry here serves @livekit/egress-sdk 0.2.1 but not the 0.2.0
  # the lockfile names (404); pin the patch release and let pnpm move only
  # that entry of the lockfile.
  python3 - "$work/src/template-default/package.json" <<'PY'
import json, sys
path = sys.argv[1]
pkg = json.load(open(path))
pkg.setdefault("pnpm", {})["overrides"] = {"@livekit/egress-sdk": "0.2.1"}
json.dump(pkg, open(path, "w"), indent=2)
PY
  progress --log "$work/template.log" "building the Egress web template" \
    docker run --rm "${tls[@]}" -v "$work/src/template-default:/t" -v "$cache/egress-npm:/root/.npm" \
    -v "$cache/egress-npm/pnpm-store:/root/.local/share/pnpm" -w /t -e CI=true "$builder" \
    sh -c "npx -y $PNPM install --no-frozen-lockfile --reporter=append-only && npx -y $PNPM build >/dev/null" ||
    { tail -30 "$work/template.log" >&2; exit 1; }
  rm -rf "$work/src/cmd/server/templates"
  cp -r "$work/src/template-default/build" "$work/src/cmd/server/templates"
  find "$work/src/cmd/server/templates" -name '*.map' -delete
  rm -rf "$work/src/template-default/node_modules"
  echo "  template: built ($((SECONDS - t1)) s)"

  # 3. the binary
  t1=$SECONDS
  goroot=$(go env GOROOT)
  progress --log "$work/go.log" "building the Egress binary" \
    docker run --rm "${tls[@]}" -v "$goroot:/usr/local/go:ro" -v "$(go env GOMODCACHE):/gomod" \
    -v "$cache/egress-gocache:/gocache" -v "$work/src:/src" -w /src \
    -e GOMODCACHE=/gomod -e GOCACHE=/gocache -e GOFLAGS -e GOTOOLCHAIN=local \
    -e GOPROXY="$(go env GOPROXY)" -e GOSUMDB="$(go env GOSUMDB)" -e CGO_ENABLED=1 \
    "$builder" /usr/local/go/bin/go build -trimpath -ldflags "-s -w" -o /src/egress ./cmd/server ||
    { tail -30 "$work/go.log" >&2; exit 1; }
  echo "  egress binary: built ($((SECONDS - t1)) s)"

  # 4. the runtime image, flattened
  t1=$SECONDS
  cp "$work/src/egress" "$here/egress/entrypoint.sh" "$work/"
  cp "$here/egress/Dockerfile.runtime" "$work/Dockerfile"
  progress --log "$work/runtime.log" "building the Egress runtime image" \
    docker build -q -t "trunkline/egress-stage:$v" "$work" || { tail -30 "$work/runtime.log" >&2; exit 1; }
  docker create --name "trunkline-egress-flatten-$$" "trunkline/egress-stage:$v" /bin/true >/dev/null
  docker export "trunkline-egress-flatten-$$" | docker import \
    -c 'USER egress' -c 'WORKDIR /home/egress' \
    -c 'ENV XDG_RUNTIME_DIR=/home/egress/.cache/xdgr' \
    -c 'ENTRYPOINT ["/entrypoint.sh"]' \
    -c "LABEL trunkline.recipe=$recipe org.opencontainers.image.version=v$v org.opencontainers.image.source=github.com/livekit/egress" \
    - "$image" >/dev/null
  docker rm -f "trunkline-egress-flatten-$$" >/dev/null
  docker rmi "trunkline/egress-stage:$v" >/dev/null
  docker image prune -f >/dev/null
  echo "  $image: image built ($((SECONDS - t1)) s, $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%d MB", $1/1e6}'))"
fi

docker run --rm --entrypoint /bin/egress "$image" --version 2>&1 | grep -q "$v" ||
  { echo "$image: /bin/egress --version does not report $v" >&2; exit 1; }
docker save "$image" -o "$out/$tarball.tmp"
mv "$out/$tarball.tmp" "$out/$tarball"
echo "$recipe" >"$out/$tarball.recipe"
echo "  $image: ready in $((SECONDS - t0)) s"
