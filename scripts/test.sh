#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what it needs, checks format and
# lints, runs the host tests, the oracle tests (systemd-measure, pesign, sbsign, openssl) and the
# QEMU boot tests (OVMF + swtpm: plain, Secure Boot, credentials/sysext, unsigned refused), then
# the attested cluster end to end (key service, two good nodes over wg0, a tampered UKI refused),
# the image's reproducibility (two clean mkosi builds, ~4 min and ~2 x 2 GB from deb.debian.org)
# and a CVM variant (~1 min on the warm cache). Before the cargo tests it builds the pinned CVM
# firmware once from its pinned sources and fails unless every output equals ovmf/SHA256SUMS (the
# sums an earlier build recorded: a rebuild on another machine and day, a stronger check than two
# builds here; `ovmf/build.sh --twice` does both), and the independent TDX MRTD oracle, so the
# launch-digest tests run on the firmware nacre ships.
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
for f in scripts/*.sh scripts/lib/*.sh tests/e2e/*.sh tests/image/*.sh ovmf/*.sh; do bash -n "$f"; done
echo "== CI workflows: syntax (ci/check-workflows.py)"
python3 ci/check-workflows.py
echo "== pinned CVM firmware: a clean build equal to the recorded ovmf/SHA256SUMS (ovmf/build.sh)"
ovmf/build.sh target/ovmf
export NACRE_OVMF_DIR=$PWD/target/ovmf
echo "== TDX MRTD oracle: mosaik's TDVF code (measurements/tests/oracle/mosaik-mrtd.sh)"
NACRE_MOSAIK_MRTD=$(measurements/tests/oracle/mosaik-mrtd.sh "$PWD/target/oracle/mosaik-mrtd" | tail -n1)
export NACRE_MOSAIK_MRTD
echo "== cargo test (host tests, oracles, QEMU boots)"
cargo test --workspace --no-fail-fast
echo "== attested cluster: key service + three OVMF/swtpm guests (tests/e2e/cluster.sh)"
tests/e2e/cluster.sh
echo "== TPM-sealed state disk across a signed image update: OVMF, systemd-stub UKIs, swtpm (tests/e2e/sealed-update.sh)"
tests/e2e/sealed-update.sh
echo "== image: reproducibility and input sensitivity (tests/image/reproducible.sh)"
tests/image/reproducible.sh
echo "== image: root hash from the UKI, its .cmdline and veritysetup agree (scripts/check-image.sh)"
scripts/check-image.sh target/tmp/reproducible/a
echo "== image: containerd config, the pinned pause image, its import with the root's containerd/ctr (tests/image/pause.sh)"
tests/image/pause.sh target/tmp/reproducible/a
echo "== main job: build, sign, measure, boot (Secure Boot, swtpm), attest, tampered UKI refused (scripts/main.sh)"
scripts/main.sh target/tmp/main --cache target/tmp/reproducible/cache-a
echo "== image: variants (tests/image/variants.sh)"
tests/image/variants.sh --cache target/tmp/reproducible/cache-a --variant qemu-tdx --ovmf "$NACRE_OVMF_DIR"
