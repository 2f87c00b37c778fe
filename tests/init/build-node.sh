#!/usr/bin/env bash
# Build a node for direct-kernel boot tests of nacre-init: an erofs root with nacre-init, a
# dm-verity hash partition, both in a GPT disk whose partition UUIDs derive from the root hash
# (Discoverable Partitions Specification), and an initrd with nacre-init as /init plus the kernel
# modules stage 1 loads (closure from modules.dep, computed by `nacre-init --module-closure`). User space only.
#
# Usage: build-node.sh OUTDIR --init NACRE_INIT [--kernel-release REL]
#                      [--payload SCRIPT] [--add SRC:DEST]... [--add-file SRC:DEST]...
#                      [--initrd-modules "m1 m2"]
#   Writes OUTDIR/{root.erofs,verity.img,disk.img,initrd.cpio,roothash}.
#   --payload: a shell script (busybox sh) run by stage 2 in kubelet's place; default: a check
#   that the root is read-only, prints the runtime log, and "NACRE-PAYLOAD-OK".
#   --add SRC:DEST copies an executable into the root at DEST with its shared libraries (ldd);
#   --add-file SRC:DEST copies a file or directory tree as it is. Both may repeat.
#   --initrd-modules: the modules stage 1 loads (default "virtio_pci virtio_blk dm-verity erofs").
# Deterministic apart from nothing: fixed salt, UUIDs, times (SOURCE_DATE_EPOCH=0).
set -euo pipefail
die() { echo "build-node: $*" >&2; exit 1; }
out="" init="" rel="" payload="" adds=() add_files=()
initrd_modules="virtio_pci virtio_blk dm-verity erofs"
while (($#)); do
  case "$1" in
    --init) init="$2"; shift 2 ;;
    --kernel-release) rel="$2"; shift 2 ;;
    --payload) payload="$2"; shift 2 ;;
    --add) adds+=("$2"); shift 2 ;;
    --add-file) add_files+=("$2"); shift 2 ;;
    --initrd-modules) initrd_modules="$2"; shift 2 ;;
    -*) die "unknown option $1" ;;
    *) out="$1"; shift ;;
  esac
done
[[ -n "$out" && -x "$init" ]] || die "usage: build-node.sh OUTDIR --init NACRE_INIT"
[[ -n "$rel" ]] || rel=$(ls /lib/modules | sort -V | tail -n1)
moddir=/lib/modules/$rel
[[ -f "$moddir/modules.dep" ]] || die "no modules for kernel $rel"
export SOURCE_DATE_EPOCH=0
mkdir -p "$out"; out=$(realpath "$out")
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# Copy an ELF and the shared libraries it needs (ldd closure) into a tree.
copy_elf() { # SRC TREE DEST
  install -D -m 0755 "$1" "$2/$3"
  objcopy --strip-debug "$2/$3"
  ldd "$1" 2>/dev/null | grep -oE '/[^ ]+' | while read -r lib; do
    [[ -f "$lib" ]] && install -D -m 0755 "$lib" "$2$lib"
  done
}

# --- the verified root -------------------------------------------------------------------
root="$work/root"
mkdir -p "$root"/{dev,proc,sys,run,tmp,bin,etc/nacre,usr/lib/nacre,var}
copy_elf "$init" "$root" usr/lib/nacre/nacre-init
install -m 0755 /bin/busybox "$root/bin/busybox"
for a in sh cat echo touch ls grep sleep; do ln -s busybox "$root/bin/$a"; done
if [[ -n "$payload" ]]; then
  install -m 0755 "$payload" "$root/etc/nacre/check.sh"
else
  cat > "$root/etc/nacre/check.sh" <<'CHECK'
#!/bin/sh
# kubelet's stand-in for the init boot tests: what must hold when services start.
if touch /should-fail 2>/dev/null; then echo "NACRE-CHECK-FAIL root is writable"; exit 1; fi
echo "NACRE-CHECK root read-only"
echo "NACRE-RUNTIME-LOG-BEGIN"; cat /run/nacre/runtime.cel; echo "NACRE-RUNTIME-LOG-END"
echo "NACRE-PAYLOAD-OK"
CHECK
  chmod 0755 "$root/etc/nacre/check.sh"
fi
printf '[payload]\ncommand = "/etc/nacre/check.sh"\n' > "$root/etc/nacre/init.toml"
for a in "${adds[@]}"; do copy_elf "${a%%:*}" "$root" "${a#*:}"; done
for a in "${add_files[@]}"; do
  mkdir -p "$(dirname "$root/${a#*:}")"; cp -a "${a%%:*}" "$root/${a#*:}"
done
find "$root" -exec touch -h -d @0 {} +
rm -f "$out/root.erofs" "$out/verity.img"
mkfs.erofs -T0 --all-root -U 6e616372-6500-4000-8000-000000000001 "$out/root.erofs" "$root" >/dev/null
veritysetup format "$out/root.erofs" "$out/verity.img" --salt=6e61637265 \
  --uuid=6e616372-6500-4000-8000-000000000002 > "$work/verity.txt"
roothash=$(awk '/^Root hash:/ {print $3}' "$work/verity.txt")
[[ ${#roothash} -eq 64 ]] || die "no root hash from veritysetup"
echo "$roothash" > "$out/roothash"

# --- the disk: GPT, root + verity partitions, UUIDs from the root hash -------------------
uuid() { echo "${1:0:8}-${1:8:4}-${1:12:4}-${1:16:4}-${1:20:12}"; }
sectors() { echo $(( ($(stat -c %s "$1") + 1048575) / 1048576 * 2048 )); }
rs=$(sectors "$out/root.erofs"); vs=$(sectors "$out/verity.img")
total=$(( (2048 + rs + vs + 2048) * 512 ))
rm -f "$out/disk.img"; truncate -s "$total" "$out/disk.img"
sfdisk -q "$out/disk.img" <<GPT
label: gpt
label-id: 6E616372-6500-4000-8000-000000000000
start=2048, size=$rs, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$(uuid "${roothash:0:32}"), name="root-x86-64"
start=$((2048 + rs)), size=$vs, type=2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5, uuid=$(uuid "${roothash:32:32}"), name="root-x86-64-verity"
GPT
dd if="$out/root.erofs" of="$out/disk.img" bs=512 seek=2048 conv=notrunc status=none
dd if="$out/verity.img" of="$out/disk.img" bs=512 seek=$((2048 + rs)) conv=notrunc status=none
echo $((2048 * 512)) > "$out/root-offset"

# --- the initrd: nacre-init as /init, its libraries, stage 1's modules ---------------------
rd="$work/initrd"
mkdir -p "$rd"/{dev,proc,sys,run,sysroot,etc/nacre}
copy_elf "$init" "$rd" init
mknod "$rd/dev/console" c 5 1
printf '%s\n' $initrd_modules > "$rd/etc/nacre/modules"
for f in modules.dep modules.builtin modules.softdep modules.alias; do
  install -D -m 0644 "$moddir/$f" "$rd/lib/modules/$rel/$f"
done
"$init" --module-closure "$moddir" $(cat "$rd/etc/nacre/modules") | while read -r m; do
  install -D -m 0644 "$moddir/$m" "$rd/lib/modules/$rel/$m"
done
find "$rd" -exec touch -h -d @0 {} +
(cd "$rd" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --reproducible -R 0:0 --quiet) > "$out/initrd.cpio"
echo "build-node: $out (roothash $roothash)"
