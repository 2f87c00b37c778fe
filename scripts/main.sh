#!/usr/bin/env bash
# The main job, end to end on one machine: build the node image (mkosi: Debian trixie, nacre-init,
# erofs root + dm-verity, UKI), sign it for Secure Boot with own keys, precompute and sign its
# golden measurements, boot it under QEMU (OVMF with Secure Boot enforced + swtpm), and attest it:
# the PCRs, firmware event log and nacre-init's runtime log the booted node reports are checked
# against the signed golden values. Then a UKI with one byte changed must be refused by the
# firmware.
#
# Usage: scripts/main.sh [OUTDIR] [--cache DIR]      (default OUTDIR: ./out/main)
#   (scripts/test.sh runs it too, on the reproducibility check's warm cache)
#   --cache  the image build's cache (scripts/build-image.sh --cache; default target/image-cache;
#            a cold one first bootstraps mkosi's trixie tools tree, a few minutes)
#   Writes OUTDIR/disk.img (signed), uki.efi (unsigned, reproducible), uki.signed.efi, vars.fd
#   (OVMF varstore, own PK/KEK/db enrolled), measurements.json + .sig, constellation-measurements.json,
#   boot/ (console, pcrs.json, eventlog.bin, runtime.cel), tampered/, main-timings.
#
# The keys are generated on first use in OUTDIR/keys (secure-boot/: PK, KEK, db; measurements.key
# and .pub: the golden values' signing key) and kept, so PCR 7 and the signatures stay stable
# across runs. A release uses its own keys (see ci/README.md). The payload in kubelet's place is
# the test payload (mkosi.conf.d/10-test-payload), which prints the measurements after `ready`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="" cache="$root/target/image-cache"
while (($#)); do
  case "$1" in
    --cache) cache="${2:?}"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "main: unknown option $1" >&2; exit 2 ;;
    *) [[ -z "$out" ]] || { echo "main: one OUTDIR only" >&2; exit 2; }; out="$1"; shift ;;
  esac
done
out=$(realpath -m "${out:-$root/out/main}")
lib="$root/scripts/lib"
mkdir -p "$out/keys"
timings=""
t0=$(date +%s.%N) tstep=$t0
step() { printf '\n== %s\n' "$*"; }
lap() { # NAME: record the time since the previous lap
  local now; now=$(date +%s.%N)
  timings+=$(printf '%-34s %6.1f s' "$1" "$(awk -v a="$tstep" -v b="$now" 'BEGIN { print b - a }')")$'\n'
  tstep=$now
}

step "installing dependencies"
"$root/scripts/install-deps.sh"
lap "dependencies"

step "building nacre-measure"
cargo build --release -q --manifest-path "$root/Cargo.toml" -p nacre-measure
measure="$root/target/release/nacre-measure"
lap "nacre-measure (cargo)"

step "building the node image (mkosi, cache $cache)"
"$root/scripts/build-image.sh" "$out" --cache "$cache"
lap "image (nacre-init + mkosi)"

step "signing the image for Secure Boot (own PK/KEK/db)"
"$lib/make-sb-keys.sh" "$out/keys/secure-boot"
"$lib/sign-image.sh" "$out" --keys "$out/keys/secure-boot"
lap "Secure Boot signing + varstore"

step "precomputing and signing the golden measurements"
[[ -f "$out/keys/measurements.key" ]] || "$measure" keygen --prefix "$out/keys/measurements"
# The test payload reads the PCRs after nacre-init measured `ready` into PCR 11.
"$measure" golden "$out/disk.img" --vars "$out/vars.fd" --phase ready \
  --version dev --variant qemu-vtpm --out "$out/measurements.json" --key "$out/keys/measurements.key"
"$measure" export constellation "$out/measurements.json" >"$out/constellation-measurements.json"
"$measure" predict "$out/disk.img" --vars "$out/vars.fd" --phase ready | grep -E '^PCR +[0-9]+:'
lap "golden measurements"

step "booting under OVMF (Secure Boot enforced) + swtpm"
"$root/scripts/qemu-capture.sh" "$out/disk.img" "$out/boot" --secure-boot "$out/vars.fd" --timeout 300
[[ -s "$out/boot/runtime.cel" ]] || { echo "main: the node printed no runtime log" >&2; exit 1; }
"$lib/console-text.sh" "$out/boot/console.log" | grep "NACRE-CHECK containerd running" >/dev/null \
  || { echo "main: containerd did not run on the node" >&2; exit 1; }
"$lib/console-text.sh" "$out/boot/console.log" | grep "NACRE-CONTAINER-42" >/dev/null \
  || { echo "main: the node did not run a container through containerd" >&2; exit 1; }
lap "boot (TCG)"

step "attesting the booted node against the signed golden measurements"
"$measure" verify "$out/measurements.json" --key "$out/keys/measurements.pub" \
  --pcrs "$out/boot/pcrs.json" --eventlog "$out/boot/eventlog.bin" --runtime-log "$out/boot/runtime.cel"
lap "verify"

step "negative check: one byte of the UKI changed, the firmware must refuse it"
neg=$out/tampered
rm -rf "$neg"; mkdir -p "$neg"
cp "$out/disk.img" "$neg/disk.img"
# Flip one byte in the middle of the UKI's .linux section (covered by the Authenticode digest).
python3 - "$out/uki.signed.efi" "$neg/uki.efi" <<'PY'
import struct, sys
d = bytearray(open(sys.argv[1], "rb").read())
pe = struct.unpack_from("<I", d, 0x3C)[0]
n, opt = struct.unpack_from("<H", d, pe + 6)[0], struct.unpack_from("<H", d, pe + 20)[0]
for i in range(n):
    h = pe + 24 + opt + 40 * i
    if d[h:h + 8].rstrip(b"\0") == b".linux":
        size, ptr = struct.unpack_from("<II", d, h + 16)
        off = ptr + size // 2
d[off] ^= 0xFF
open(sys.argv[2], "wb").write(d)
print("main: flipped the byte at file offset %d (in .linux) of the signed UKI" % off)
PY
if sbverify --cert "$out/keys/secure-boot/db.crt" "$neg/uki.efi" >/dev/null 2>&1; then
  echo "main: sbverify accepts the tampered UKI" >&2; exit 1
fi
esp=$(sfdisk -J "$neg/disk.img" | jq '.partitiontable as $t | $t.partitions[]
  | select(.type == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B") | .start * ($t.sectorsize // 512)')
MTOOLS_SKIP_CHECK=1 SOURCE_DATE_EPOCH=0 mcopy -o -i "$neg/disk.img@@$esp" "$neg/uki.efi" ::/EFI/BOOT/BOOTX64.EFI
rc=0
"$root/scripts/qemu-capture.sh" "$neg/disk.img" "$neg/boot" --secure-boot "$out/vars.fd" --timeout 300 || rc=$?
if ((rc != 3)); then
  echo "main: the tampered UKI was not refused by the firmware (qemu-capture exit $rc, expected 3)" >&2
  exit 1
fi
echo "main: OK, the firmware refused the tampered UKI ($(grep -o -m1 'Access Denied' "$neg/boot/console.log" || echo refused))"
lap "negative check (boot)"

timings+=$(printf '%-34s %6.1f s' total "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')")
printf '%s\n' "$timings" >"$out/main-timings"
step "summary"
echo "image:        $out/disk.img ($(du -h --apparent-size "$out/disk.img" | cut -f1)), roothash $(cat "$out/roothash")"
echo "UKI:          $out/uki.efi (unsigned, reproducible), uki.signed.efi (in the ESP), Authenticode $("$measure" inspect "$out/uki.signed.efi" | awk '/^Authenticode sha256:/ {print $4}')"
echo "golden:       $out/measurements.json (+ .sig, key keys/measurements.pub), constellation-measurements.json"
echo "booted node:  PCRs, firmware event log and runtime log verified (Secure Boot on: $(jq -r .kernel_secureboot "$out/boot/capture.json"))"
echo "tampered UKI: refused by the firmware (qemu-capture exit 3)"
echo "timings ($out/main-timings; the image build's own: $out/timings):"
printf '%s\n' "$timings"
echo
echo "main job OK"
