#!/usr/bin/env bash
# Builds Flux's source-controller and kustomize-controller from their pinned upstream Go modules into the control
# plane cache, next to the control plane binaries, with their CRDs, for the side-by-side benchmark
# (`cargo bench --bench flux`). Idempotent: a finished build is detected by its stamp file and reused.
#
#   hack/bench-flux.sh        # builds (or reuses) and prints the directory holding bin/ and crds/
set -euo pipefail

# shellcheck source=hack/versions.sh
source "$(dirname "${BASH_SOURCE[0]}")/versions.sh"

CACHE=${FERRY_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry/controlplane}
KEY="flux_source-controller-${FLUX_SOURCE_CONTROLLER_VERSION}_kustomize-controller-${FLUX_KUSTOMIZE_CONTROLLER_VERSION}"
OUT="$CACHE/$KEY"

if [ -f "$OUT/.complete" ]; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build Flux" >&2; exit 1; }
mkdir -p "$OUT/bin" "$OUT/crds"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# No checksum database (GOSUMDB=off, as in the recipe that works here); go.sum is still written and verified within
# the build.
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOSUMDB=off
log() { echo "bench-flux: $*" >&2; }

# build <controller> <version>: a scratch module that requires the controller as a tool, with the replaces the
# controller's own go.mod makes that matter (replaces in a dependency's go.mod are ignored, so they are repeated
# here): its api module at the same version, and the go-digest fork. kustomize-controller's pin of kustomize's
# api/kyaml (v0.21.1) is what its requires select anyway (check with `go version -m`).
build() {
  local name=$1 version=$2 mod="github.com/fluxcd/$1"
  if [ ! -x "$OUT/bin/$name" ]; then
    log "building $name $version (several minutes on a cold cache)"
    mkdir -p "$WORK/$name" && cd "$WORK/$name"
    go mod init "ferry.dev/bench-flux/$name" >/dev/null 2>&1
    go mod edit \
      -require="$mod@$version" \
      -replace="$mod/api=$mod/api@$version" \
      -replace="github.com/opencontainers/go-digest=github.com/opencontainers/go-digest@v1.0.1-0.20220411205349-bde1400a84be" \
      -tool="$mod"
    go mod tidy >/dev/null
    go build -trimpath -ldflags "-s -w" -o "$OUT/bin/$name" "$mod"
  fi
  local src
  src=$(go mod download -json "$mod@$version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$src/config/crd/bases" ] || { log "no CRDs in $src/config/crd/bases"; exit 1; }
  cp "$src"/config/crd/bases/*.yaml "$OUT/crds/"
}

build source-controller "$FLUX_SOURCE_CONTROLLER_VERSION"
build kustomize-controller "$FLUX_KUSTOMIZE_CONTROLLER_VERSION"

touch "$OUT/.complete"
log "done: $OUT"
echo "$OUT"
