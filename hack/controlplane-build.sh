#!/usr/bin/env bash
# Builds the local control plane that Ferry's demo and integration tests run against, from pinned upstream Go
# modules, into a cache outside the repo (the way controller-runtime's envtest keeps its binaries).
# Idempotent: a finished build is detected by its stamp file and reused.
#
#   hack/controlplane-build.sh        # builds (or reuses) and prints the bin directory
set -euo pipefail

# shellcheck source=hack/versions.sh
source "$(dirname "${BASH_SOURCE[0]}")/versions.sh"

CACHE=${FERRY_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry/controlplane}
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_kustomize-${KUSTOMIZE_VERSION}"
OUT="$CACHE/$KEY"
BIN="$OUT/bin"

log() { echo "controlplane-build: $*" >&2; }
need_go() { command -v go >/dev/null || { echo "go is required to build the control plane" >&2; exit 1; }; }
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# go_tool NAME VERSION PACKAGE: a tool beside the control plane (registries, helm, sops, ...). Each has its own
# cache directory keyed by its version, linked into $BIN, so pinning a new tool or bumping one rebuilds only it.
go_tool() {
  local name=$1 version=$2 pkg=$3 dir="$CACHE/tools/$1-$2"
  if [ ! -x "$dir/$name" ]; then
    need_go
    log "building $name $version ($pkg)"
    GOBIN="$dir" go install -trimpath -ldflags "-s -w" "$pkg@$version" >&2
    [ -x "$dir/$name" ] || { log "$pkg@$version did not produce $name"; exit 1; }
  fi
  ln -sfn "$dir/$name" "$BIN/$name"
}

if [ ! -f "$OUT/.complete" ]; then
need_go
mkdir -p "$BIN"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# --- Kubernetes: apiserver, controller-manager, scheduler, kubectl --------------------------------------------
if [ ! -x "$BIN/kube-apiserver" ] || [ ! -x "$BIN/kube-controller-manager" ] || [ ! -x "$BIN/kube-scheduler" ] || [ ! -x "$BIN/kubectl" ]; then
  log "building Kubernetes ${K8S_VERSION} (a few minutes on a cold cache)"
  mkdir -p "$WORK/k8s" && cd "$WORK/k8s"
  gomod=$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$gomod" ] || { log "could not download k8s.io/kubernetes@${K8S_VERSION}"; exit 1; }
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  staging="v0.${K8S_VERSION#v1.}"
  {
    echo "module ferry.dev/controlplane"
    echo
    grep -E '^go [0-9]' "$gomod"
    grep -E '^godebug ' "$gomod" || true
    echo
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo
    echo "replace ("
    # Every staging module that upstream replaces with ./staging/src/... is pinned to its published version.
    grep -E '^\s*k8s\.io/[^ ]+ => \./staging/' "$gomod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy -e >/dev/null 2>&1 || true
  go mod download
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
  ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION} -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=${minor}"
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    log "  go build ${cmd}"
    go build -tags selinux,notest,tools -trimpath -ldflags "$ldflags" -o "$BIN/$cmd" "k8s.io/kubernetes/cmd/$cmd"
  done
fi

# --- etcd ------------------------------------------------------------------------------------------------------
if [ ! -x "$BIN/etcd" ]; then
  log "building etcd ${ETCD_VERSION}"
  mkdir -p "$WORK/etcd" && cd "$WORK/etcd"
  go mod init ferry.dev/etcd >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >/dev/null 2>&1
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
fi

# --- kwok (simulated nodes, so workloads become healthy without a container runtime) -------------------------
if [ ! -x "$BIN/kwok" ]; then
  log "building kwok ${KWOK_VERSION}"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
  moddir=$(go env GOMODCACHE)/sigs.k8s.io/kwok@${KWOK_VERSION}
  stages="$moddir/kustomize/stage"
  : > "$OUT/kwok-stages.yaml"
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml pod/fast/pod-ready.yaml \
           pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    if [ -f "$stages/$f" ]; then
      echo "---" >> "$OUT/kwok-stages.yaml"; cat "$stages/$f" >> "$OUT/kwok-stages.yaml"
    else
      found=$(find "$stages" -name "$(basename "$f")" | head -n1)
      [ -n "$found" ] || { log "kwok stage $f not found"; exit 1; }
      echo "---" >> "$OUT/kwok-stages.yaml"; cat "$found" >> "$OUT/kwok-stages.yaml"
    fi
  done
fi

# --- kustomize -------------------------------------------------------------------------------------------------
if [ ! -x "$BIN/kustomize" ]; then
  log "building kustomize ${KUSTOMIZE_VERSION}"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}"
fi

touch "$OUT/.complete"
log "done: $BIN"
fi

# --- tools beside the control plane (one line each; see go_tool) ------------------------------------------------
go_tool sops "$SOPS_VERSION" github.com/getsops/sops/v3/cmd/sops
go_tool age "$AGE_VERSION" filippo.io/age/cmd/age
go_tool age-keygen "$AGE_VERSION" filippo.io/age/cmd/age-keygen
go_tool registry "$DISTRIBUTION_VERSION" github.com/distribution/distribution/v3/cmd/registry
go_tool crane "$CRANE_VERSION" github.com/google/go-containerregistry/cmd/crane
go_tool helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm

echo "$BIN"
