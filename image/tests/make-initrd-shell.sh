#!/usr/bin/env bash
# TEST ORACLE ONLY: the shell implementation scripts/lib/make-initrd.sh had before the logic moved
# to `nacre-image initrd` (image/src/initrd.rs, image/src/elf.rs). image/tests/initrd.rs checks
# that both give the same bytes on the same root (ldd inside a chroot and GNU cpio as oracles).
#
# Build nacre's initrd from a built root tree: nacre-init as /init, the shared libraries it loads
# (ldd run inside the tree, so the tree's own libraries, plus the libraries it dlopens at run time
# and their own closure), and exactly the kernel modules stage 1
# loads (closure and order computed by nacre-init itself, from the tree's modules.dep/softdep),
# with the module index files nacre-init reads. Deterministic: sorted entries, mtime 0, owner
# root, modes from the tree; no device nodes (the kernel's built-in initramfs has /dev/console).
#
# Usage: make-initrd.sh ROOT OUT.cpio [--modules "m1 m2 ..."] [--dlopen "so1 ..."] [--kernel-release REL]
#        make-initrd.sh ROOT --print-libraries [--dlopen "so1 ..."]
#   ROOT        a tree with /usr/lib/nacre/nacre-init and /usr/lib/modules/REL (one release, or
#               --kernel-release)
#   --modules   what stage 1 loads (default "virtio_pci virtio_blk dm-verity erofs"); written to
#               /etc/nacre/modules in the initrd
#   --dlopen    sonames nacre-init loads at run time, found in ROOT's /usr/lib/x86_64-linux-gnu
#               (default "libtss2-tcti-device.so.0": tss-esapi's TCTI loader dlopens it)
#   --print-libraries  only print the library closure (paths inside ROOT, as the loader names
#               them), one a line: the root image keeps the same set (mkosi.finalize)
# Environment: IN_ROOT, the command prefix that runs a program inside ROOT (default: chroot ROOT;
#   mkosi finalize scripts pass mkosi-chroot).
set -euo pipefail
help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "make-initrd: $*" >&2; exit 1; }
root="" out="" rel="" print_libs=0
modules="virtio_pci virtio_blk dm-verity erofs"
dlopen="libtss2-tcti-device.so.0"
while (($#)); do
  case "$1" in
    --modules) modules="$2"; shift 2 ;;
    --dlopen) dlopen="$2"; shift 2 ;;
    --print-libraries) print_libs=1; shift ;;
    --kernel-release) rel="$2"; shift 2 ;;
    -h|--help) help; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) if [[ -z "$root" ]]; then root="$1"; elif [[ -z "$out" ]]; then out="$1"; else die "too many arguments"; fi; shift ;;
  esac
done
[[ -n "$root" && ( -n "$out" || $print_libs -eq 1 ) ]] || { help >&2; exit 2; }
root=$(cd "$root" && pwd)
read -r -a in_root <<<"${IN_ROOT:-chroot $root}"
init=/usr/lib/nacre/nacre-init
[[ -x "$root$init" ]] || die "no $init in $root"

# The libraries nacre-init needs: its DT_NEEDED closure (ldd inside ROOT) and what it dlopens.
libraries() {
  local objs=("$init") so out
  for so in $dlopen; do
    [[ -e "$root/usr/lib/x86_64-linux-gnu/$so" ]] || die "$so (loaded at run time) is not in $root/usr/lib/x86_64-linux-gnu"
    objs+=("/usr/lib/x86_64-linux-gnu/$so")
    echo "/usr/lib/x86_64-linux-gnu/$so"
  done
  for o in "${objs[@]}"; do
    out=$("${in_root[@]}" ldd "$o") || die "ldd $o inside the root failed: $out"
    ! grep -q 'not found' <<<"$out" || die "ldd $o inside the root: $(grep 'not found' <<<"$out" | tr -s ' \t' ' ')"
    grep -oE '(^|[[:space:]])/[^ ]+' <<<"$out" | tr -d ' \t'
  done | LC_ALL=C sort -u
}
if ((print_libs)); then libraries; exit 0; fi
if [[ -z "$rel" ]]; then
  rels=("$root"/usr/lib/modules/*/modules.dep)
  ((${#rels[@]} == 1)) && [[ -f "${rels[0]}" ]] || die "need exactly one kernel in $root/usr/lib/modules (or --kernel-release)"
  rel=$(basename "$(dirname "${rels[0]}")")
fi
moddir=/usr/lib/modules/$rel
[[ -f "$root$moddir/modules.dep" ]] || die "no $moddir/modules.dep in $root"

work=$(mktemp -d "${TMPDIR:-/tmp}/make-initrd.XXXXXX")
trap 'rm -rf "$work"' EXIT
rd=$work/initrd
mkdir -p "$rd"/{dev,proc,sys,run,sysroot,etc/nacre,usr/lib}
# Merged /usr, as in the root: ELF interpreters and ldd's paths say /lib64, /lib.
ln -s usr/lib "$rd/lib"
ln -s usr/lib64 "$rd/lib64"

# Copy PATH (absolute, as seen inside ROOT) and, if it is a symlink, what it points to.
copy_in() {
  local p=$1 real
  real=$(readlink -f "$root$p") || die "cannot resolve $p in $root"
  [[ "$real" == "$root"/* && -f "$real" ]] || die "$p resolves outside $root or to no file"
  real=${real#"$root"}
  mkdir -p "$rd$(dirname "$real")"
  cp -p "$root$real" "$rd$real"
  # The name the loader asks for, below the merged-/usr links (e.g. /lib64/ld-linux-x86-64.so.2
  # is itself a symlink into /usr/lib/x86_64-linux-gnu): keep that name as a link.
  local canon
  canon=$(sed -E 's#^/(lib|lib64|bin|sbin)/#/usr/\1/#' <<<"$p")
  if [[ "$canon" != "$real" && ! -e "$rd$canon" ]]; then
    mkdir -p "$rd$(dirname "$canon")"
    ln -s "$real" "$rd$canon"
  fi
}

install -m 0755 "$root$init" "$rd/init"
libs=$(libraries)
for lib in $libs; do copy_in "$lib"; done

printf '%s\n' $modules >"$rd/etc/nacre/modules"
for f in modules.dep modules.builtin modules.softdep modules.alias; do
  [[ -f "$root$moddir/$f" ]] && install -D -m 0644 "$root$moddir/$f" "$rd$moddir/$f"
done
# shellcheck disable=SC2086 # one word per module
closure=$("${in_root[@]}" "$init" --module-closure "$moddir" $modules) || die "nacre-init --module-closure failed"
for m in $closure; do install -D -m 0644 "$root$moddir/$m" "$rd$moddir/$m"; done

# Fixed modes whatever the umask, then the archive.
find "$rd" -type d -exec chmod 0755 {} +
find "$rd" -exec touch -h -d @0 {} +
mkdir -p "$(dirname "$out")"
(cd "$rd" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --reproducible -R 0:0 --quiet) >"$out.tmp"
mv "$out.tmp" "$out"
echo "make-initrd: $out: $(find "$rd" -mindepth 1 ! -type d | wc -l) files, $(wc -w <<<"$closure") modules for $rel, $(du -k "$out" | cut -f1) KiB" >&2
