#!/usr/bin/env bash
# Build nacre's initrd from a built root tree: nacre-init as /init, the shared libraries it loads
# (its ELF DT_NEEDED closure resolved inside the tree, plus the libraries it dlopens at run time
# and their own closure), and exactly the kernel modules stage 1 loads (closure and order from
# the tree's modules.dep/softdep, nacre-kmod as in nacre-init), with the module index files
# nacre-init reads. Deterministic: sorted entries, mtime 0, owner root, modes from the tree; no
# device nodes (the kernel's built-in initramfs has /dev/console). The logic is in Rust:
# `nacre-image initrd` (image/src/initrd.rs, image/src/elf.rs); this script only calls it.
#
# Usage: make-initrd.sh ROOT OUT.cpio [--modules "m1 m2 ..."] [--dlopen "so1 ..."] [--kernel-release REL]
#        make-initrd.sh ROOT --print-libraries [--dlopen "so1 ..."]
#   ROOT        a tree with /usr/lib/nacre/nacre-init and /usr/lib/modules/REL (one release, or
#               --kernel-release)
#   --modules   what stage 1 loads (default "virtio_pci virtio_blk dm-verity erofs"; words separated
#               by spaces or commas); written to /etc/nacre/modules in the initrd
#   --dlopen    sonames nacre-init loads at run time, found in ROOT's /usr/lib/x86_64-linux-gnu
#               (default "libtss2-tcti-device.so.0": tss-esapi's TCTI loader dlopens it)
#   --print-libraries  only print the library closure (paths inside ROOT, as the loader names
#               them), sorted, one a line: the root image keeps the same set (mkosi.finalize)
# Environment: NACRE_IMAGE, the nacre-image binary (default: target/release/nacre-image of this
#   source tree, which scripts/build-image.sh builds; mkosi's finalize step sees it below $SRCDIR).
set -euo pipefail
help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
case "${1:-}" in -h|--help) help; exit 0 ;; "") help >&2; exit 2 ;; esac
bin=${NACRE_IMAGE:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/nacre-image}
[[ -x "$bin" ]] || { echo "make-initrd: no nacre-image at $bin (cargo build --release -p nacre-image, or set NACRE_IMAGE)" >&2; exit 1; }
exec "$bin" initrd "$@"
