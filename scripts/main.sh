#!/usr/bin/env bash
# The main job, end to end on one machine: build a Secure-Boot-signed node boot image, precompute
# and sign its golden measurements, boot it under QEMU (OVMF with Secure Boot enforced + swtpm),
# and attest it: the PCRs and event log the booted node reports are checked against the signed
# golden values.
#
# Usage: scripts/main.sh [OUTDIR]          (default: ./out/main)
#
# What is real and what is not yet (see README "Status"): the UKI is systemd-stub 252 + Debian's
# kernel + a small busybox initrd that reports the node's measurements; the mkosi-built image with
# nacre-init, dm-verity root and state disk (issues 3 and 4) will take its place. The signing keys
# are generated on first use in OUTDIR/keys (a release uses its own keys: see ci/README.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$root/out/main}")
lib="$root/scripts/lib"
mkdir -p "$out/keys"
step() { printf '\n== %s\n' "$*"; }

step "installing dependencies"
"$root/scripts/install-deps.sh"

step "building nacre-measure"
cargo build --release -q --manifest-path "$root/Cargo.toml" -p nacre-measure
measure="$root/target/release/nacre-measure"

step "building the boot image"
kernel=$(ls /boot/vmlinuz-* | sort -V | tail -n1)
"$lib/capture-initrd.sh" "$out/initrd.cpio"
printf 'ID=nacre\nNAME="Nacre"\nVERSION_ID=dev\n' > "$out/os-release"
"$lib/make-uki.sh" --kernel "$kernel" --initrd "$out/initrd.cpio" \
  --cmdline "console=ttyS0 nacre.platform=qemu-vtpm" --osrel "$out/os-release" --out "$out/uki.efi"
"$lib/make-sb-keys.sh" "$out/keys/secure-boot"
"$lib/make-sb-vars.sh" --keys "$out/keys/secure-boot" --vars-out "$out/vars.fd" \
  --sign "$out/uki.efi" --signed-out "$out/uki.signed.efi"
"$lib/make-esp-disk.sh" --efi "$out/uki.signed.efi" --out "$out/disk.img"

step "precomputing and signing the golden measurements"
[[ -f "$out/keys/measurements.key" ]] || "$measure" keygen --prefix "$out/keys/measurements"
# No nacre-init in this image yet, so no runtime phase is extended into PCR 11 (--phase none).
"$measure" golden "$out/disk.img" --vars "$out/vars.fd" --phase none \
  --version dev --variant qemu-vtpm --out "$out/measurements.json" --key "$out/keys/measurements.key"
"$measure" export constellation "$out/measurements.json" > "$out/constellation-measurements.json"
"$measure" predict "$out/disk.img" --vars "$out/vars.fd" --phase none

step "booting under OVMF (Secure Boot enforced) + swtpm"
"$root/scripts/qemu-capture.sh" "$out/disk.img" "$out/boot" --secure-boot "$out/vars.fd"

step "attesting the booted node against the signed golden measurements"
"$measure" verify "$out/measurements.json" --key "$out/keys/measurements.pub" \
  --pcrs "$out/boot/pcrs.json" --eventlog "$out/boot/eventlog.bin"
echo
echo "main job OK: $out/measurements.json (+ .sig) verified against the booted node"
