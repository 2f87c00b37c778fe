#!/usr/bin/env bash
# Benchmark only: an initrd whose /init is a busybox shell script doing what nacre-init's stage 1
# does, for a node built by build-node.sh: mount the pseudo file systems, load the same modules
# in the order nacre-init computes from modules.dep, with busybox insmod), map the dm-verity root with dmsetup, mount
# it and switch root to /etc/nacre/bb-stage2.sh (which must be on the root). Simplifications in
# the shell's favour, stated in the benchmark's report: the partitions are /dev/vda1 and
# /dev/vda2 (no GPT lookup by UUID), the verity table's block count and salt are computed here on
# the host (no superblock parsing), and nothing is measured (no TPM).
#
# Usage: build-busybox-initrd.sh NODEDIR NACRE_INIT [MODULES]  -> NODEDIR/initrd-busybox.cpio
set -euo pipefail
node=$(realpath "$1") init="$2"
rel=$(ls /lib/modules | sort -V | tail -n1); moddir=/lib/modules/$rel
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
rd="$work/rd"
mkdir -p "$rd"/{bin,dev,proc,sys,run,sysroot,etc/nacre}
install -m 0755 /bin/busybox "$rd/bin/busybox"
ln -s busybox "$rd/bin/sh"
install -D -m 0755 /usr/sbin/dmsetup "$rd/usr/sbin/dmsetup"
ldd /usr/sbin/dmsetup | grep -oE '/[^ ]+' | while read -r lib; do
  [[ -f "$lib" ]] && install -D -m 0755 "$lib" "$rd$lib"
done
mknod "$rd/dev/console" c 5 1
for f in modules.dep modules.builtin modules.softdep modules.alias; do
  install -D -m 0644 "$moddir/$f" "$rd/lib/modules/$rel/$f"
done
modules="${3:-virtio_pci virtio_blk dm-verity erofs}"
closure=$("$init" --module-closure "$moddir" $modules)
for m in $closure; do install -D -m 0644 "$moddir/$m" "$rd/lib/modules/$rel/$m"; done
files=$(for m in $closure; do printf '/lib/modules/%s/%s ' "$rel" "$m"; done)
blocks=$(veritysetup dump "$node/verity.img" | awk '/^Data blocks:/ {print $3}')
salt=$(veritysetup dump "$node/verity.img" | awk '/^Salt:/ {print $2}')
cat > "$rd/init" <<INIT
#!/bin/busybox sh
bb=/bin/busybox
\$bb mount -t proc -o nosuid,nodev,noexec proc /proc
\$bb mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
\$bb mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
\$bb mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
for m in $files; do \$bb insmod "\$m" || { echo "bb-init: insmod \$m failed"; exec \$bb poweroff -f; }; done
roothash=\$(\$bb sed -n 's/.*roothash=\([0-9a-f]*\).*/\1/p' /proc/cmdline)
i=0; while [ ! -b /dev/vda2 ]; do i=\$((i+1)); [ \$i -lt 3000 ] || exec \$bb poweroff -f; \$bb usleep 10000; done
/usr/sbin/dmsetup create root --readonly --noudevsync --noudevrules \\
  --table "0 $((blocks * 8)) verity 1 /dev/vda1 /dev/vda2 4096 4096 $blocks 1 sha256 \$roothash $salt 1 panic_on_corruption" \\
  || { echo "bb-init: dmsetup failed"; exec \$bb poweroff -f; }
/usr/sbin/dmsetup mknodes root
\$bb mount -t erofs -o ro /dev/mapper/root /sysroot || { echo "bb-init: mount failed"; exec \$bb poweroff -f; }
for m in /dev /proc /sys /run; do \$bb mount --move \$m /sysroot\$m; done
exec \$bb switch_root /sysroot /etc/nacre/bb-stage2.sh
INIT
chmod 0755 "$rd/init"
find "$rd" -exec touch -h -d @0 {} +
(cd "$rd" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --reproducible -R 0:0 --quiet) > "$node/initrd-busybox.cpio"
echo "build-busybox-initrd: $node/initrd-busybox.cpio"
