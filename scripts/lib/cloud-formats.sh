#!/usr/bin/env bash
# Convert a raw node disk image into a cloud's upload format, deterministically (same disk.img,
# same bytes out), with qemu-img.
#
# Usage: cloud-formats.sh DISK.img OUTDIR FORMAT...
#   qcow2    OUTDIR/disk.qcow2   (QEMU, OpenStack)
#   vhd      OUTDIR/disk.vhd     Azure: fixed VHD, virtual size rounded up to 1 MiB (the raw copy is
#            grown and its backup GPT moved to the new end with sfdisk --relocate); qemu-img's
#            random UUID and creation time in the footer are replaced by ones derived from the
#            image (UUID from its sha256, time 0) and the footer checksum recomputed
#   gcp      OUTDIR/disk.tar.gz  GCP: disk.raw in a GNU tar (--format=oldgnu, sparse), owner 0:0,
#            mtime SOURCE_DATE_EPOCH (default 0), gzip -n
#   raw      OUTDIR/disk.raw     (AWS import-snapshot takes raw images)
set -euo pipefail
help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "cloud-formats: $*" >&2; exit 1; }
(($# >= 3)) || { help >&2; exit 2; }
disk=$1 out=$2; shift 2
[[ -f "$disk" ]] || die "no $disk"
mkdir -p "$out"
epoch=${SOURCE_DATE_EPOCH:-0}
for fmt in "$@"; do
  case "$fmt" in
    qcow2)
      qemu-img convert -q -f raw -O qcow2 "$disk" "$out/disk.qcow2.tmp"
      mv "$out/disk.qcow2.tmp" "$out/disk.qcow2" ;;
    raw)
      cp --sparse=always "$disk" "$out/disk.raw" ;;
    vhd)
      tmp=$out/disk.vhd.raw
      cp --sparse=always "$disk" "$tmp"
      size=$(stat -c %s "$tmp") mib=$((1024 * 1024))
      aligned=$(( (size + mib - 1) / mib * mib ))
      if ((aligned != size)); then
        truncate -s "$aligned" "$tmp"
        sfdisk --quiet --no-reread --no-tell-kernel --relocate gpt-bak-std "$tmp" 2>/dev/null
      fi
      qemu-img convert -q -f raw -O vpc -o subformat=fixed,force_size=on "$tmp" "$out/disk.vhd.tmp"
      rm -f "$tmp"
      python3 - "$out/disk.vhd.tmp" <<'PY'
import hashlib, os, sys
p = sys.argv[1]
with open(p, "r+b") as f:
    f.seek(-512, os.SEEK_END)
    footer = bytearray(f.read(512))
    assert footer[:8] == b"conectix", "no VHD footer"
    f.seek(0)
    h = hashlib.sha256()
    left = os.path.getsize(p) - 512
    while left:
        b = f.read(min(left, 1 << 20)); h.update(b); left -= len(b)
    footer[24:28] = b"\0\0\0\0"                      # timestamp
    u = bytearray(h.digest()[:16]); u[6] = (u[6] & 0x0F) | 0x40; u[8] = (u[8] & 0x3F) | 0x80
    footer[68:84] = u                                 # unique id
    footer[64:68] = b"\0\0\0\0"
    footer[64:68] = ((~sum(footer)) & 0xFFFFFFFF).to_bytes(4, "big")
    f.seek(-512, os.SEEK_END); f.write(footer)
    size = int.from_bytes(footer[48:56], "big")
    assert size % (1 << 20) == 0 and os.path.getsize(p) == size + 512, f"VHD size {size} not 1 MiB aligned"
PY
      mv "$out/disk.vhd.tmp" "$out/disk.vhd" ;;
    gcp)
      stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
      cp --sparse=always "$disk" "$stage/disk.raw"
      tar --format=oldgnu -S -C "$stage" --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
        --mode=0644 -cf - disk.raw | gzip -n -9 >"$out/disk.tar.gz.tmp"
      mv "$out/disk.tar.gz.tmp" "$out/disk.tar.gz"
      rm -rf "$stage"; trap - EXIT ;;
    *) die "unknown format $fmt (qcow2, vhd, gcp, raw)" ;;
  esac
  echo "cloud-formats: $fmt done" >&2
done
