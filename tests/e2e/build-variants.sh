#!/usr/bin/env bash
# Build the boot variants the measurement tests need, from this machine's packages
# (systemd-stub 252, Debian kernel, busybox-static, OVMF).
#
# Usage: tests/e2e/build-variants.sh OUTDIR [--kernel /boot/vmlinuz-X] [--stub STUB]
#   OUTDIR/common/      initrd.cpio (capture initrd), os-release, cmdline, sysext/credential inputs
#   OUTDIR/plain/       uki.efi, disk.img                    Secure Boot off
#   OUTDIR/sb/          uki.efi (signed with the own db key), disk.img, vars.fd, sb-keys/
#   OUTDIR/extra/       uki.efi (= plain), disk.img with BOOTX64.EFI.extra.d/test.{cred,raw}
#                       and loader/credentials/global.cred    Secure Boot off
#   OUTDIR/sb-unsigned/ uki.efi (= plain, unsigned), disk.img, vars.fd (= sb's): must be refused
# Everything but the signature is deterministic; Secure Boot keys in OUTDIR/sb/sb-keys are kept
# across runs (delete them to make new ones). Boot them with tests/e2e/capture-all.sh OUTDIR.
set -euo pipefail

help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
here=$(cd "$(dirname "$0")" && pwd)
lib=$(cd "$here/../../scripts/lib" && pwd)

out="" kernel="" stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
while (($#)); do
  case "$1" in
    --kernel) kernel="$2"; shift 2 ;;
    --stub) stub="$2"; shift 2 ;;
    -h|--help) help; exit 0 ;;
    -*) echo "build-variants: unknown option $1" >&2; exit 2 ;;
    *) [[ -z "$out" ]] || { help >&2; exit 2; }; out="$1"; shift ;;
  esac
done
[[ -n "$out" ]] || { help >&2; exit 2; }
if [[ -z "$kernel" ]]; then
  kernel=$(find /boot -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)
  [[ -n "$kernel" ]] || { echo "build-variants: no /boot/vmlinuz-* (apt-get install linux-image-amd64)" >&2; exit 1; }
fi

# A fixed, made-up dm-verity root hash: sha256("nacre e2e roothash").
ROOTHASH=$(printf 'nacre e2e roothash' | sha256sum | cut -d' ' -f1)
CMDLINE="console=ttyS0 nacre.test=plain roothash=$ROOTHASH"

mkdir -p "$out"
out=$(cd "$out" && pwd)
common=$out/common
mkdir -p "$common" "$out"/{plain,sb,extra,sb-unsigned}
log() { echo "build-variants: $*" >&2; }

log "kernel $kernel, stub $stub ($(dpkg-query -W -f='${Version}' systemd-boot-efi 2>/dev/null || echo '?'))"
"$lib/capture-initrd.sh" "$common/initrd.cpio"
cat >"$common/os-release" <<'OSREL'
NAME="Nacre"
ID=nacre
PRETTY_NAME="Nacre (e2e measurement test)"
VERSION_ID=0.0.0-e2e
OSREL
printf '%s' "$CMDLINE" >"$common/cmdline"
# ESP extras for the `extra` variant: contents the stub does not interpret, only measures.
printf 'nacre e2e credential (per-image)\n' >"$common/test.cred"
printf 'nacre e2e credential (global)\n' >"$common/global.cred"
python3 -c '
import hashlib, sys
sys.stdout.buffer.write(b"".join(hashlib.sha256(b"nacre e2e sysext %d" % i).digest() for i in range(256)))
' >"$common/test.raw"   # 8 KiB, deterministic

# plain
"$lib/make-uki.sh" --stub "$stub" --kernel "$kernel" --initrd "$common/initrd.cpio" \
  --cmdline-file "$common/cmdline" --osrel "$common/os-release" --out "$out/plain/uki.efi"
"$lib/make-esp-disk.sh" --efi "$out/plain/uki.efi" --out "$out/plain/disk.img"
log "plain: $(stat -c %s "$out/plain/uki.efi") byte UKI, sha256 $(sha256sum <"$out/plain/uki.efi" | cut -c1-16)…"

# extra
cp "$out/plain/uki.efi" "$out/extra/uki.efi"
"$lib/make-esp-disk.sh" --efi "$out/extra/uki.efi" --out "$out/extra/disk.img" \
  --extra "$common/test.cred:EFI/BOOT/BOOTX64.EFI.extra.d/test.cred" \
  --extra "$common/test.raw:EFI/BOOT/BOOTX64.EFI.extra.d/test.raw" \
  --extra "$common/global.cred:loader/credentials/global.cred"
log "extra: ESP with test.cred, test.raw, global.cred"

# sb: own keys, own varstore, signed UKI
"$lib/make-sb-keys.sh" "$out/sb/sb-keys"
"$lib/make-sb-vars.sh" --keys "$out/sb/sb-keys" --vars-out "$out/sb/vars.fd" \
  --sign "$out/plain/uki.efi" --signed-out "$out/sb/uki.efi"
"$lib/make-esp-disk.sh" --efi "$out/sb/uki.efi" --out "$out/sb/disk.img"
log "sb: UKI signed by $(openssl x509 -in "$out/sb/sb-keys/db.crt" -noout -subject)"

# sb-unsigned: the plain UKI under the same Secure Boot varstore
cp "$out/plain/uki.efi" "$out/sb-unsigned/uki.efi"
cp "$out/sb/vars.fd" "$out/sb-unsigned/vars.fd"
"$lib/make-esp-disk.sh" --efi "$out/sb-unsigned/uki.efi" --out "$out/sb-unsigned/disk.img"
log "sb-unsigned: unsigned UKI with the sb varstore"
log "done: $out/{plain,sb,extra,sb-unsigned}"
