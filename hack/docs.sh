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

have_version() { command -v mdbook >/dev/null 2>&1 && [ "$(mdbook --version 2>/dev/null)" = "mdbook v${MDBOOK_VERSION}" ]; }
if ! have_version; then
  command -v cargo >/dev/null || { log "cargo (rustup) is required to install mdbook"; exit 1; }
  log "installing mdbook ${MDBOOK_VERSION} (cargo install --locked; a few minutes the first time)"
  nice -n 19 cargo install mdbook --locked --version "${MDBOOK_VERSION}" --quiet
  hash -r
  have_version || { log "mdbook ${MDBOOK_VERSION} is not the mdbook on PATH after installing it: $(command -v mdbook)"; exit 1; }
fi
command -v python3 >/dev/null || { log "python3 is required for the link check (hack/prereqs.sh installs it)"; exit 1; }

log "mdbook build docs ($(mdbook --version))"
mdbook build docs
log "link check"
python3 hack/check-links.py
