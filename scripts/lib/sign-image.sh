#!/usr/bin/env bash
# Sign a built image (scripts/build-image.sh OUTDIR) for Secure Boot with an own key set
# (make-sb-keys.sh), in user space: sign OUTDIR/uki.efi with the db key, put the signed UKI into
# the disk's ESP as \EFI\BOOT\BOOTX64.EFI (mtools on DISK@@OFFSET, the offset from the GPT), and
# write the OVMF variable store with PK/KEK/db enrolled and Secure Boot on.
#
# Usage: sign-image.sh OUTDIR --keys DIR [--sign-time EPOCH] [--vars-in OVMF_VARS_4M.fd]
#   Writes OUTDIR/uki.signed.efi, OUTDIR/vars.fd, and OUTDIR/disk.img in place (the ESP's
#   BOOTX64.EFI, which must be OUTDIR/uki.efi or a signature of it; nothing else changes).
#   OUTDIR/uki.efi, the reproducible unsigned build, is kept.
#   --sign-time  the signing time sbsign embeds (default: $SOURCE_DATE_EPOCH, else 0 = the image's
#                SourceDateEpoch). Fixed, so the same key gives byte-identical signed UKI and disk.
# Reproducibility: the signature covers the UKI's Authenticode digest, which is the unsigned
# build's (the digest skips the checksum and certificate table), so PCR 4 and the golden values
# follow from the reproducible uki.efi alone; anyone can rebuild it and compare the Authenticode
# digests `nacre-measure inspect` prints for it and for the published signed UKI. The ESP's
# timestamps come from SOURCE_DATE_EPOCH (as mkosi's), and the new file is laid out from the first
# free cluster, as mkosi laid out the unsigned one.
set -euo pipefail
die() { echo "sign-image: $*" >&2; exit 1; }
help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
lib=$(cd "$(dirname "$0")" && pwd)
out="" keys="" sign_time=${SOURCE_DATE_EPOCH:-0} vars_in=/usr/share/OVMF/OVMF_VARS_4M.fd
while (($#)); do
  case "$1" in
    --keys) keys="${2:?}"; shift 2 ;;
    --sign-time) sign_time="${2:?}"; shift 2 ;;
    --vars-in) vars_in="${2:?}"; shift 2 ;;
    -h|--help) help; exit 0 ;;
    -*) echo "sign-image: unknown option $1" >&2; help >&2; exit 2 ;;
    *) [[ -z "$out" ]] || { help >&2; exit 2; }; out="$1"; shift ;;
  esac
done
[[ -n "$out" && -n "$keys" ]] || { help >&2; exit 2; }
disk=$out/disk.img uki=$out/uki.efi
[[ -f "$disk" && -f "$uki" ]] || die "no $disk or $uki (scripts/build-image.sh $out)"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sign-image.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

"$lib/make-sb-vars.sh" --keys "$keys" --vars-in "$vars_in" --vars-out "$tmp/vars.fd" \
  --sign "$uki" --signed-out "$tmp/uki.signed.efi" --sign-time "$sign_time"

# The ESP: the one partition of type EFI System in the GPT.
read -r ss start < <(sfdisk -J "$disk" | python3 -c '
import json, sys
t = json.load(sys.stdin)["partitiontable"]
assert t["label"] == "gpt", "not a GPT disk"
esp = [p for p in t["partitions"] if p["type"].upper() == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"]
assert len(esp) == 1, "%d ESPs" % len(esp)
print(t.get("sectorsize", 512), esp[0]["start"])') || die "no single ESP in $disk's GPT"
offset=$((ss * start)) img="$disk@@$((ss * start))"
export MTOOLS_SKIP_CHECK=1 SOURCE_DATE_EPOCH=$sign_time
target=::/EFI/BOOT/BOOTX64.EFI
mcopy -n -i "$img" "$target" "$tmp/current.efi" || die "no \\EFI\\BOOT\\BOOTX64.EFI on the ESP"
cmp -s "$tmp/current.efi" "$uki" || cmp -s "$tmp/current.efi" "$tmp/uki.signed.efi" \
  || die "the ESP's BOOTX64.EFI is neither $uki nor its signed form: rebuild the image"

# Replace the file. FAT32 keeps a "next free cluster" hint in its FSInfo sector; mdel leaves it
# behind the deleted file, so reset it to "unknown" (0xFFFFFFFF) for mcopy to allocate from the
# first free cluster: the signed UKI then takes the old one's clusters plus a few, contiguously.
mdel -i "$img" "$target"
python3 - "$disk" "$offset" <<'PY'
import struct, sys
path, base = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(base); bpb = f.read(512)
    if struct.unpack_from("<H", bpb, 22)[0] != 0 or bpb[82:87] != b"FAT32":
        sys.exit(0)  # FAT12/16: no FSInfo, mtools allocates from the start anyway
    bps, fsinfo = struct.unpack_from("<HH", bpb, 11)[0], struct.unpack_from("<H", bpb, 48)[0]
    f.seek(base + fsinfo * bps); s = f.read(512)
    if s[0:4] != b"RRaA" or s[484:488] != b"rrAa" or s[510:512] != b"\x55\xaa":
        sys.exit("sign-image: bad FSInfo sector")
    f.seek(base + fsinfo * bps + 492); f.write(b"\xff\xff\xff\xff")
PY
touch -d "@$sign_time" "$tmp/uki.signed.efi"
mcopy -m -i "$img" "$tmp/uki.signed.efi" "$target"
mcopy -n -i "$img" "$target" "$tmp/check.efi"
cmp -s "$tmp/check.efi" "$tmp/uki.signed.efi" || die "the signed UKI read back from the ESP differs"
mv "$tmp/uki.signed.efi" "$out/uki.signed.efi"
mv "$tmp/vars.fd" "$out/vars.fd"
echo "sign-image: $disk: ESP (at byte $offset) \\EFI\\BOOT\\BOOTX64.EFI = $out/uki.signed.efi (db key $keys/db.crt, signing time $(date -u -d "@$sign_time" +%FT%TZ)); varstore $out/vars.fd" >&2
