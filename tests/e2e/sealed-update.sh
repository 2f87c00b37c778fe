#!/usr/bin/env bash
# End to end: a TPM-sealed state disk across an image update, booted the way a node boots (QEMU
# TCG, OVMF, a systemd-stub UKI measured into PCR 11, one swtpm kept across boots).
#
# One node root (nacre-init, an erofs root under dm-verity, the image's PCR-signing public key
# at /etc/nacre/tpm2-pcr-public-key.pem, `key_source = "tpm-sealed"`) in two UKIs whose command
# lines differ: v1 and its update v2, whose PCR 11 differ. `nacre-measure export pcrsig
# --state-disk` signs each one's PCR 11 at sysinit (predicted from the UKI); the
# signature reaches the node through QEMU's fw_cfg (opt/nacre/tpm2-pcr-signature.json).
#
#   1. v1 with v1's signature: the disk is formatted, its key sealed and anchored; a marker is
#      written to /var;
#   2. v2 with v2's signature (same key): the disk opens, the marker is there (the update kept
#      the disk);
#   3. v2 with v1's signature: refused (no signature for PCR 11 as it is now), nothing written;
#   4. v2 with v2's PCR 11 signed by another key: refused, nothing written.
#
# Usage: tests/e2e/sealed-update.sh [WORKDIR]   (default target/e2e-sealed; needs root)
# Environment: CARGO_TARGET_DIR (binaries from $CARGO_TARGET_DIR/debug, built here if missing).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$repo/target/e2e-sealed}
target=${CARGO_TARGET_DIR:-$repo/target}
die() { echo "sealed-update: FAIL: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "needs root (network namespace, tap devices)"
t0=$(date +%s)

(cd "$repo" && cargo build -q -p nacre-init -p nacre-measure)
init=$target/debug/nacre-init measure=$target/debug/nacre-measure
rm -rf "$work"; mkdir -p "$work"
work=$(cd "$work" && pwd)

cat > "$work/payload.sh" <<'EOF'
#!/bin/sh
# kubelet's stand-in: /var is the state disk; what an earlier boot wrote there is still there.
echo "NACRE-STATE-MOUNT $(grep ' /var ' /proc/mounts)"
if [ -f /var/nacre-test/marker ]; then
  echo "NACRE-STATE-FOUND $(cat /var/nacre-test/marker)"
else
  busybox mkdir -p /var/nacre-test
  cat /proc/sys/kernel/random/uuid > /var/nacre-test/marker
  busybox sync
  echo "NACRE-STATE-WROTE $(cat /var/nacre-test/marker)"
fi
EOF
chmod +x "$work/payload.sh"
cat > "$work/init.toml" <<'EOF'
[payload]
command = "/etc/nacre/check.sh"

[state_disk]
serial = "nacre-state"
key_source = "tpm-sealed"
EOF

# The image's PCR-signing key (the release engineer's) and another one.
openssl genrsa -out "$work/pcr.key" 2048 2>/dev/null
openssl rsa -in "$work/pcr.key" -pubout -out "$work/pcr.pub.pem" 2>/dev/null
openssl genrsa -out "$work/other.key" 2048 2>/dev/null

tcti=$(readlink -f /usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0)
"$repo/tests/init/build-node.sh" "$work/node" --init "$init" --payload "$work/payload.sh" \
  --add /usr/sbin/mkfs.ext4:usr/sbin/mkfs.ext4 \
  --add-file "$tcti:lib/x86_64-linux-gnu/libtss2-tcti-device.so.0" \
  --add-file "$work/init.toml:etc/nacre/init.toml" \
  --add-file "$work/pcr.pub.pem:etc/nacre/tpm2-pcr-public-key.pem" \
  --initrd-modules "virtio_pci virtio_blk dm-verity erofs dm-crypt xts algif_skcipher crc32c_generic ext4 qemu_fw_cfg" \
  >/dev/null

kernel=$(ls /boot/vmlinuz-* | sort -V | tail -n1)
cmdline="console=ttyS0 panic=-1 roothash=$(cat "$work/node/roothash") nacre.insecure-platform=1"
make_esp() { # NAME CMDLINE
  "$repo/scripts/lib/make-uki.sh" --kernel "$kernel" --initrd "$work/node/initrd.cpio" \
    --cmdline "$2" --osrel /etc/os-release --out "$work/$1.efi"
  "$repo/scripts/lib/make-esp-disk.sh" --efi "$work/$1.efi" --out "$work/$1-esp.img"
}
make_esp v1 "$cmdline"
# The update: the same root, another command line (mitigations=auto is the kernel's default),
# so another .cmdline section and another PCR 11.
make_esp v2 "$cmdline mitigations=auto"

sign() { # ESP KEY OUT
  "$measure" export pcrsig "$work/$1-esp.img" --rsa-key "$work/$2" --state-disk \
    --out "$work/$3" 2>/dev/null
}
sign v1 pcr.key v1.sig.json
sign v2 pcr.key v2.sig.json
sign v2 other.key v2-other.sig.json
pol() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sha256"][0]["pol"])' "$1"; }
[[ $(pol "$work/v1.sig.json") != $(pol "$work/v2.sig.json") ]] || die "v1 and v2 have the same PCR 11"

mkdir -p "$work/tpm"
truncate -s 64M "$work/state.img"
con() { "$repo/scripts/lib/console-text.sh" "$work/$1/n/console.log"; }
has() { con "$1" | grep -- "$2" >/dev/null || { con "$1" | tail -n 40 >&2; die "$1: no \"$2\" on the console"; }; }
hasnt() { if con "$1" | grep -- "$2" >/dev/null; then con "$1" | tail -n 40 >&2; die "$1: \"$2\" on the console"; fi; }
boot() { # RUN ESP SIGNATURE
  local t=$(date +%s)
  "$repo/tests/e2e/boot-cluster.sh" "$work/$1" --timeout 300 --tpm-state-root "$work/tpm" \
    --node "n:$work/$2-esp.img:$work/node/disk.img:$work/state.img" \
    --fw-cfg-item "n:opt/nacre/tpm2-pcr-signature.json:$work/$3" >/dev/null 2>"$work/$1.err" \
    || { cat "$work/$1.err" >&2; con "$1" | tail -n 40 >&2; die "$1: boot-cluster failed"; }
  echo "sealed-update: $1: $(( $(date +%s) - t )) s"
}

boot v1 v1 v1.sig.json
has v1 "state disk: format complete"
marker=$(con v1 | sed -n 's/.*NACRE-STATE-WROTE \([0-9a-f-]*\).*/\1/p' | head -n1)
[[ -n $marker ]] || { con v1 | tail -n 40 >&2; die "v1: the payload wrote no marker"; }

boot v2 v2 v2.sig.json
hasnt v2 "formatting"
has v2 "NACRE-STATE-FOUND $marker"

cp "$work/state.img" "$work/state.before"
boot v2-old-signature v2 v1.sig.json
has v2-old-signature "FATAL: open the state disk: key source tpm-sealed: signed PCR policy: no signature for PCR 11 as it is now"
hasnt v2-old-signature "NACRE-STATE-"
boot v2-other-key v2 v2-other.sig.json
has v2-other-key "FATAL: open the state disk: key source tpm-sealed"
has v2-other-key "no sha256 PCR 11 entry signed by the image's key"
hasnt v2-other-key "NACRE-STATE-"
cmp -s "$work/state.img" "$work/state.before" || die "a refused boot wrote the state disk"

echo "sealed-update: PASS in $(( $(date +%s) - t0 )) s (v1 formats, v2 signed by the same key opens it, v1's signature and another key's are refused)"
