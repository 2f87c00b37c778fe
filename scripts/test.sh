#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what it needs, checks format and
# lints, runs the host tests, the oracle tests (systemd-measure, pesign, sbsign, openssl) and the
# QEMU boot tests (OVMF + swtpm: plain, Secure Boot, credentials/sysext, unsigned refused).
#
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== shell scripts: bash -n"
for f in scripts/*.sh scripts/lib/*.sh tests/e2e/*.sh; do bash -n "$f"; done
echo "== cargo test (host tests, oracles, QEMU boots)"
cargo test --workspace
