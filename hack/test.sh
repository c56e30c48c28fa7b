#!/usr/bin/env bash
# Runs Ferry's whole test suite: unit tests, and integration tests on a real local control plane and real git
# servers. Builds the control plane first (cached in ~/.cache/ferry after the first run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/prereqs.sh
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin:$HOME/.cargo/bin" GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
FERRY_CONTROLPLANE_BIN=$(bash hack/controlplane-build.sh)
export FERRY_CONTROLPLANE_BIN
exec cargo test "$@"
