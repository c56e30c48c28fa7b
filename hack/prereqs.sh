#!/usr/bin/env bash
# Checks, and on Debian/Ubuntu installs, what Ferry's demo and tests need on a fresh machine: git, a C toolchain
# and OpenSSL headers (git2), Go (builds the control plane), OpenSSH's sshd (SSH git tests), curl, openssl,
# python3, Chromium (browser tests).
# Says what it does; installs nothing that is already there. Sourced or run by hack/demo.sh, hack/test.sh and
# .ci/run, so none of them relies on another having run first.
set -euo pipefail

prereq_log() { echo "prereqs: $*" >&2; }

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
have git || need_apt+=(git)
have cc || need_apt+=(gcc)
# tests/sandbox.rs builds its stand-in renderers static (`cc -static`): the C library's static archive.
compgen -G "/usr/lib/*-linux-gnu/libc.a" >/dev/null || need_apt+=(libc6-dev)
have pkg-config || need_apt+=(pkg-config)
have curl || need_apt+=(curl)
# The demo signs its webhook with the openssl command (libssl-dev brings only the library).
have openssl || need_apt+=(openssl)
have python3 || need_apt+=(python3)
pkg-config --exists openssl 2>/dev/null || need_apt+=(libssl-dev)
# The source tests run a real OpenSSH server.
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
# Go builds the control plane from pinned modules (an older go fetches the toolchain it needs by itself).
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin:$HOME/.cargo/bin"
have go || need_apt+=(golang-go)
# The web view's browser tests (tests/ui.rs) drive Debian's headless Chromium.
have chromium || need_apt+=(chromium)

if [ ${#need_apt[@]} -gt 0 ]; then
  if ! have apt-get; then
    prereq_log "missing: ${need_apt[*]}; install them with your package manager" && exit 1
  fi
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  prereq_log "installing ${need_apt[*]} (apt-get)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
have cargo || { prereq_log "cargo is required (https://rustup.rs)"; exit 1; }
prereq_log "ok: git $(git --version | cut -d' ' -f3), $(go version | cut -d' ' -f3), $(cargo --version | cut -d' ' -f1-2), sshd"
