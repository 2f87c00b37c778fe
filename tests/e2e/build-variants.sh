#!/usr/bin/env bash
# Build the boot variants the measurement tests need, from this machine's packages
# (systemd-stub 252, Debian kernel, busybox-static, OVMF) and Debian trixie's systemd-stub 257.
#
# Usage: tests/e2e/build-variants.sh OUTDIR [--kernel /boot/vmlinuz-X] [--stub STUB]
#                                    [--trixie-dir DIR | --no-stub257]
#   OUTDIR/common/      initrd.cpio (capture initrd), os-release, cmdline, sysext/credential inputs
#   OUTDIR/plain/       uki.efi, disk.img                    Secure Boot off
#   OUTDIR/sb/          uki.efi (signed with the own db key), disk.img, vars.fd, sb-keys/
#   OUTDIR/extra/       uki.efi (= plain), disk.img with BOOTX64.EFI.extra.d/test.{cred,raw}
#                       and loader/credentials/global.cred    Secure Boot off
#   OUTDIR/sb-unsigned/ uki.efi (= plain, unsigned), disk.img, vars.fd (= sb's): must be refused
#   OUTDIR/stub257/     uki.efi (plain's sections on trixie's systemd-stub 257), disk.img, stub.version
#                       Secure Boot off. The stub comes from scripts/lib/fetch-trixie-systemd.sh
#                       (pinned .debs from deb.debian.org, cached in --trixie-dir, default
#                       OUTDIR/trixie-systemd; network only the first time); --no-stub257 skips it.
#   OUTDIR/plain-sha384/ disk.img (hard link to plain's), banks ("sha256,sha384"): plain booted
#                       with a sha256+sha384 swtpm
# Everything but the signature is deterministic; Secure Boot keys in OUTDIR/sb/sb-keys are kept
# across runs (delete them to make new ones). Boot them with tests/e2e/capture-all.sh OUTDIR.
set -euo pipefail

help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
here=$(cd "$(dirname "$0")" && pwd)
lib=$(cd "$here/../../scripts/lib" && pwd)

out="" kernel="" stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub trixie_dir="" stub257=1
while (($#)); do
  case "$1" in
    --trixie-dir) trixie_dir="$2"; shift 2 ;;
    --no-stub257) stub257=0; shift ;;
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
mkdir -p "$common" "$out"/{plain,sb,extra,sb-unsigned,plain-sha384}
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

# plain-sha384: the plain disk, booted with sha256 and sha384 banks (capture-all reads `banks`)
ln -f "$out/plain/disk.img" "$out/plain-sha384/disk.img" 2>/dev/null \
  || cp "$out/plain/disk.img" "$out/plain-sha384/disk.img"
echo "sha256,sha384" >"$out/plain-sha384/banks"
log "plain-sha384: plain's disk, banks sha256,sha384"

# stub257: plain's sections on trixie's systemd-stub 257 (same layout as make-uki.sh's; ukify 257
# would also add .uname and merge the kernel's SBAT into .sbat, which Debian 12's kernel lacks)
if ((stub257)); then
  paths=$("$lib/fetch-trixie-systemd.sh" "${trixie_dir:-$out/trixie-systemd}") \
    || { log "cannot fetch trixie's systemd-stub 257 (offline? use --no-stub257)"; exit 1; }
  stub257_efi=$(head -n1 <<<"$paths")
  mkdir -p "$out/stub257"
  "$lib/make-uki.sh" --stub "$stub257_efi" --kernel "$kernel" --initrd "$common/initrd.cpio" \
    --cmdline-file "$common/cmdline" --osrel "$common/os-release" --out "$out/stub257/uki.efi"
  "$lib/make-esp-disk.sh" --efi "$out/stub257/uki.efi" --out "$out/stub257/disk.img"
  grep -ao 'systemd-stub [0-9][^ ]*' "$stub257_efi" | head -n1 >"$out/stub257/stub.version"
  log "stub257: $(cat "$out/stub257/stub.version"), $(stat -c %s "$out/stub257/uki.efi") byte UKI"
else
  rm -rf "$out/stub257"
  log "stub257: skipped (--no-stub257)"
fi
log "done: $out/{plain,sb,extra,sb-unsigned,plain-sha384$( ((stub257)) && echo ,stub257)}"
