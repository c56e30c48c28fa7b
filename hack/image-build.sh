#!/usr/bin/env bash
# Builds what Ferry's container image holds into OUT (default target/image): `ferry` in release mode and the
# pinned `kustomize` and `helm` from their Go modules. The Dockerfile runs exactly this script in its build stage, and CI runs
# it too, so the image recipe cannot rot unnoticed. Checks the result: the binaries run, and the install
# manifests name the image tag this build is (ferry:<Cargo.toml version>).
#
#   bash hack/image-build.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/versions.sh
source hack/versions.sh
OUT=${1:-target/image}
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin:$HOME/.cargo/bin"
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto} CGO_ENABLED=0 GOFLAGS=-buildvcs=false
log() { echo "image-build: $*" >&2; }

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log "cargo build --release --locked (ferry)"
cargo build --release --locked --quiet --bin ferry
install -m 0755 target/release/ferry "$OUT/ferry"

log "kustomize ${KUSTOMIZE_VERSION} from its Go module"
GOBIN="$OUT" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}"

log "helm ${HELM_VERSION} from its Go module"
GOBIN="$OUT" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
"$OUT/ferry" --version | grep -qx "ferry ${version}" || { log "ferry --version is not ${version}"; exit 1; }
"$OUT/kustomize" version | grep -q "${KUSTOMIZE_VERSION}" || { log "kustomize is not ${KUSTOMIZE_VERSION}"; exit 1; }
"$OUT/helm" version --short | grep -q "${HELM_VERSION%.*}" || { log "helm is not ${HELM_VERSION}"; exit 1; }
grep -q "image: ferry:${version}\$" manifests/deployment.yaml || {
  log "manifests/deployment.yaml does not run image ferry:${version}"
  exit 1
}
log "ok: $OUT/ferry (${version}), $OUT/kustomize (${KUSTOMIZE_VERSION}), $OUT/helm (${HELM_VERSION}); image tag ferry:${version}"
