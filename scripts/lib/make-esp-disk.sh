#!/usr/bin/env bash
# Build a raw GPT disk image with one EFI System Partition (FAT32, 512-byte sectors) that holds
# the given EFI binary as \EFI\BOOT\BOOTX64.EFI, plus optional extra files. User space only.
#
# Usage: make-esp-disk.sh --efi UKI.efi --out DISK.img [--size-mib 128]
#                         [--extra SRC:ESP/PATH]...   e.g. --extra c.cred:loader/credentials/global.cred
#
# Deterministic: fixed disk and partition GUIDs, fixed FAT volume id and label (mkfs.fat
# --invariant), files copied in a fixed order (BOOTX64.EFI, then extras sorted by ESP path) with
# every timestamp set to SOURCE_DATE_EPOCH (default 315532800 = 1980-01-01, FAT's epoch).
set -euo pipefail

help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "make-esp-disk: $*" >&2; exit 1; }

DISK_GUID=4E414352-0000-4000-8000-000000000001   # "NACR"
ESP_GUID=4E414352-0000-4000-8000-0000000000E5
ESP_TYPE=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
VOLID=4E414352
LABEL=NACRE-ESP

efi="" out="" size_mib=128 extras=()
while (($#)); do
  case "$1" in
    --efi) efi="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --size-mib) size_mib="$2"; shift 2 ;;
    --extra) extras+=("$2"); shift 2 ;;
    -h|--help) help; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done
[[ -n "$efi" && -n "$out" ]] || die "need --efi and --out (see --help)"
[[ -f "$efi" ]] || die "no such file: $efi"
if ! [[ "$size_mib" =~ ^[0-9]+$ ]] || ((size_mib < 40)); then
  die "--size-mib must be >= 40 (FAT32 needs 65525 clusters)"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/make-esp-disk.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# mtools takes "now" from SOURCE_DATE_EPOCH. FAT dates start in 1980 (mtools wraps earlier
# times to 2098), so the default is 1980-01-01 00:00:00 UTC.
epoch=${SOURCE_DATE_EPOCH:-315532800}
((epoch >= 315532800)) || die "SOURCE_DATE_EPOCH must be >= 315532800 (1980-01-01) for FAT"
export SOURCE_DATE_EPOCH=$epoch MTOOLS_SKIP_CHECK=1 MTOOLSRC=/dev/null TZ=UTC

# Files to copy: "SRC<TAB>ESP/PATH", BOOTX64.EFI first, the extras sorted by destination.
{
  printf '%s\t%s\n' "$efi" "EFI/BOOT/BOOTX64.EFI"
  for e in ${extras[@]+"${extras[@]}"}; do
    [[ "$e" == *:* ]] || die "--extra wants SRC:ESP/PATH, got $e"
    src=${e%%:*} dst=${e#*:}
    dst=${dst#/}
    [[ -f "$src" ]] || die "no such file: $src"
    [[ -n "$dst" && "$dst" != *..* ]] || die "bad ESP path: $dst"
    [[ "${dst^^}" != EFI/BOOT/BOOTX64.EFI ]] || die "BOOTX64.EFI comes from --efi"
    printf '%s\t%s\n' "$src" "$dst"
  done | LC_ALL=C sort -t $'\t' -k2,2
} >"$tmp/files"
dups=$(cut -f2 "$tmp/files" | tr '[:lower:]' '[:upper:]' | sort | uniq -d)
[[ -z "$dups" ]] || die "ESP path given twice: $dups"

# GPT: one ESP from 1 MiB to the last usable 1-MiB-aligned sector.
img=$tmp/disk.img
truncate -s "${size_mib}M" "$img"
sfdisk --quiet --no-reread --no-tell-kernel "$img" <<SFDISK
label: gpt
label-id: $DISK_GUID
unit: sectors
sector-size: 512

start=2048, type=$ESP_TYPE, uuid=$ESP_GUID, name="ESP"
SFDISK
read -r start sectors < <(sfdisk --json "$img" | python3 -c '
import json, sys
p = json.load(sys.stdin)["partitiontable"]["partitions"][0]
print(p["start"], p["size"])')
((start == 2048 && sectors % 2 == 0)) || die "unexpected partition geometry: start=$start size=$sectors"

# FAT32 in a separate file, then copied into the partition.
fat=$tmp/esp.fat
# --invariant first: given after -i it replaces the volume id with its own constant.
mkfs.vfat --invariant -C -F 32 -S 512 -s 1 -h "$start" -i "$VOLID" -n "$LABEL" "$fat" $((sectors / 2)) >/dev/null
declare -A made=()
while IFS=$'\t' read -r src dst; do
  dir=$(dirname "$dst") path=""
  if [[ "$dir" != . ]]; then
    IFS=/ read -ra parts <<<"$dir"
    for p in "${parts[@]}"; do
      path+="/$p"
      if [[ -z "${made[${path^^}]:-}" ]]; then
        mmd -i "$fat" "::$path"
        made[${path^^}]=1
      fi
    done
  fi
  cp "$src" "$tmp/payload"
  touch -d "@$epoch" "$tmp/payload"
  mcopy -i "$fat" -m -o "$tmp/payload" "::/$dst"
done <"$tmp/files"
mdir -i "$fat" -/ -b :: >"$tmp/listing"
while IFS=$'\t' read -r _ dst; do
  grep -qixF "::/$dst" "$tmp/listing" || die "missing on the ESP after copying: $dst"
done <"$tmp/files"
fsck.vfat -n "$fat" >/dev/null || die "fsck.vfat found problems in the ESP"

dd if="$fat" of="$img" bs=512 seek="$start" conv=notrunc,sparse status=none
mkdir -p "$(dirname "$out")"
mv "$img" "$out"
