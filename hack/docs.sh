#!/usr/bin/env bash
# Builds the book in docs/ (mdBook, into docs/book/) and checks the links of docs/src/ and README.md
# (hack/check-links.py: relative links and #anchors must resolve; external links are counted, not fetched).
# Installs the pinned mdBook (hack/versions.sh) with cargo when `mdbook` is missing or another version.
# CI runs it (.ci/run); so can you: bash hack/docs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:$HOME/.cargo/bin"
source hack/versions.sh

log() { echo "docs: $*" >&2; }

# The mdbook to run: the one on PATH if it is the pinned version, else cargo's (installed if need be).
version_ok() { [ "$("$1" --version 2>/dev/null)" = "mdbook v${MDBOOK_VERSION}" ]; }
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
MDBOOK=mdbook
if ! version_ok mdbook; then
  MDBOOK="$CARGO_BIN/mdbook"
  if ! version_ok "$MDBOOK"; then
    command -v cargo >/dev/null || { log "cargo (rustup) is required to install mdbook"; exit 1; }
    log "installing mdbook ${MDBOOK_VERSION} (cargo install --locked; a few minutes the first time)"
    nice -n 19 cargo install mdbook --locked --version "${MDBOOK_VERSION}" --quiet
    version_ok "$MDBOOK" || { log "cargo install did not leave mdbook ${MDBOOK_VERSION} at $MDBOOK"; exit 1; }
  fi
fi
command -v python3 >/dev/null || { log "python3 is required for the link check (hack/prereqs.sh installs it)"; exit 1; }

log "mdbook build docs ($("$MDBOOK" --version))"
"$MDBOOK" build docs
log "link check"
python3 hack/check-links.py
