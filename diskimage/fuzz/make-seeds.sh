#!/usr/bin/env bash
# Builds seed corpora for the fuzz targets from real tools: mkfs.vfat + mtools volumes
# (FAT12/16/32, 512- and 4096-byte sectors) and sfdisk/fdisk disks, encoded in the sparse
# input format described in src/lib.rs so even FAT32 seeds stay a few KiB.
set -euo pipefail
cd "$(dirname "$0")"
export MTOOLS_SKIP_CHECK=1 LC_ALL=C.UTF-8 PATH="$PATH:/usr/sbin:/sbin"
for t in mkfs.vfat mcopy mmd sfdisk fdisk python3; do
  command -v "$t" >/dev/null || { echo "make-seeds: $t missing: run scripts/install-deps.sh" >&2; exit 1; }
done
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p corpus/fat corpus/gpt

sparse() { # sparse IMAGE OUT: non-zero 512-byte blocks as chunks
  python3 - "$1" "$2" <<'PY'
import struct, sys
data = open(sys.argv[1], 'rb').read()
out = bytearray(b'SPRS' + struct.pack('<I', len(data) // 1024))
i = 0
while i < len(data):
    if any(data[i:i + 512]):
        j = i
        while j < len(data) and j - i < 65024 and any(data[j:j + 512]):
            j += 512
        out += struct.pack('<IH', i, j - i) + data[i:j]
        i = j
    else:
        i += 512
open(sys.argv[2], 'wb').write(out)
PY
}

fill() { # fill IMAGE: ESP-like tree, long names, a multi-cluster directory
  echo uki > "$work/f"
  mmd -i "$1" ::/EFI ::/EFI/BOOT ::/EFI/BOOT/BOOTX64.EFI.extra.d ::/loader ::/many
  mcopy -i "$1" "$work/f" ::/EFI/BOOT/BOOTX64.EFI
  mcopy -i "$1" "$work/f" "::/EFI/BOOT/BOOTX64.EFI.extra.d/Long Credential Name.cred"
  for i in $(seq 1 20); do mcopy -i "$1" "$work/f" "::/many/a long file name $i.txt"; done
}

for spec in "12 512 256K" "12 4096 4M" "16 512 4M" "16 4096 32M" "32 512 34M" "32 4096 280M"; do
  set -- $spec
  img="$work/fat$1-$2.img"
  truncate -s "$3" "$img"
  mkfs.vfat -F "$1" -S "$2" -s 1 "$img" >/dev/null 2>&1
  fill "$img"
  sparse "$img" "corpus/fat/fat$1-$2"
done
# One raw (not sparse) seed too.
truncate -s 64K "$work/raw.img"; mkfs.vfat -F 12 -r 16 "$work/raw.img" >/dev/null
echo x > "$work/f"; mmd -i "$work/raw.img" ::/EFI; mcopy -i "$work/raw.img" "$work/f" "::/EFI/Long name.efi"
cp "$work/raw.img" corpus/fat/raw-fat12

truncate -s 1M "$work/d512.img"
printf 'label: gpt\nsize=256K, type=U, name="ESP"\nsize=128K, type=L\ntype=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"\n' \
  | sfdisk -q "$work/d512.img"
sparse "$work/d512.img" corpus/gpt/sfdisk-512
truncate -s 4M "$work/d4k.img"
printf 'g\nn\n1\n\n+1M\nt\n1\nn\n2\n\n\nw\n' | fdisk -b 4096 "$work/d4k.img" >/dev/null
sparse "$work/d4k.img" corpus/gpt/fdisk-4096
ls -l corpus/fat corpus/gpt
