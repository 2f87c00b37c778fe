#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what it needs, checks format and
# lints, runs the host tests, the oracle tests (systemd-measure, pesign, sbsign, openssl) and the
# QEMU boot tests (OVMF + swtpm: plain, Secure Boot, credentials/sysext, unsigned refused), then
# the attested cluster end to end (key service, two good nodes over wg0, a tampered UKI refused),
# the image's reproducibility (two clean mkosi builds, ~4 min and ~2 x 2 GB from deb.debian.org)
# and a CVM variant (~1 min on the warm cache).
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
for f in scripts/*.sh scripts/lib/*.sh tests/e2e/*.sh tests/image/*.sh; do bash -n "$f"; done
echo "== CI workflows: syntax (ci/check-workflows.py)"
python3 ci/check-workflows.py
echo "== cargo test (host tests, oracles, QEMU boots)"
cargo test --workspace
echo "== attested cluster: key service + three OVMF/swtpm guests (tests/e2e/cluster.sh)"
tests/e2e/cluster.sh
echo "== image: reproducibility and input sensitivity (tests/image/reproducible.sh)"
tests/image/reproducible.sh
echo "== image: variants (tests/image/variants.sh)"
tests/image/variants.sh --cache target/tmp/reproducible/cache-a
