#!/usr/bin/env bash
# Builds the firmware nacre's CVM variants boot, from Debian's edk2 source package at a pinned
# version, reproducibly:
#   AMDSEV.fd    OvmfPkg/AmdSev/AmdSevX64.dsc  (SEV/SEV-ES/SEV-SNP, measured direct boot: the
#                kernel, initrd and cmdline hashes table QEMU fills in, checked by the firmware)
#   INTELTDX.fd  OvmfPkg/IntelTdx/IntelTdxX64.dsc (TDVF: TDX metadata, RTMR measurements)
# Debian's binary packages ship neither (their unified OVMF.fd has SEV and TDX metadata but no
# kernel-hashes table).
#
#   ovmf/build.sh OUT [--only amdsev|inteltdx] [--twice] [--jobs N]
#
# OUT gets the .fd files and SHA256SUMS. --twice builds a second time in a fresh tree and fails
# unless every output is byte-identical; ovmf/SHA256SUMS holds what this script produced here, and
# the build fails if its outputs differ from it (so a changed toolchain or source is noticed).
#
# One change to upstream, recorded in ovmf/patches/: AmdSevX64 normally embeds a GRUB built on the
# build host (OvmfPkg/AmdSev/Grub/grub.sh) for booting a LUKS disk unlocked by an injected SEV
# secret. It needs GRUB modules Debian 12's GRUB does not have (sevsecret), its FAT memdisk is not
# reproducible, and nacre never boots that way: the grub-less firmware boots only the kernel QEMU
# hands it (-kernel/-initrd/-append), verified against the measured hashes table.
#
# The build runs in a fixed directory (/var/tmp/nacre-ovmf) because edk2 records source paths in
# the PE debug directories of the modules. Time: ~7-12 min per firmware per build on 2 cores.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=""; only=""; twice=0; jobs=$(nproc)
while (($#)); do
  case "$1" in
    --only) only=$2; shift 2 ;;
    --twice) twice=1; shift ;;
    --jobs) jobs=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    -*) echo "ovmf/build.sh: unknown option $1" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
[[ -n "$out" ]] || { echo "usage: ovmf/build.sh OUT [--only amdsev|inteltdx] [--twice] [--jobs N]" >&2; exit 2; }

# The pinned source: Debian 13 (trixie)'s edk2 2025.02-8+deb13u1, the release nacre's images are
# built from. Its SEV metadata declares the SNP_KERNEL_HASHES page that QEMU needs for a measured
# direct boot under SEV-SNP (Debian 12's 2022.11 does not: measured direct boot is impossible
# with it). The two tarballs are pinned by the sha256 Debian's signed trixie Sources index lists;
# Debian's quilt series is applied as dpkg-source would.
VERSION=2025.02-8+deb13u1
POOL=http://deb.debian.org/debian/pool/main/e/edk2
ORIG=edk2_2025.02.orig.tar.xz
ORIG_SHA256=b63b6053d6d89c74d9291f9e96fde1584be99e6fb9c169ba9511505129d6b049
DEBIAN=edk2_${VERSION}.debian.tar.xz
DEBIAN_SHA256=e2a7f6fc58640818416a028d6d5e9dfc255697a7cdc60c14566c236df6bd9b08

declare -A DSCS=(
  [amdsev]="OvmfPkg/AmdSev/AmdSevX64.dsc Build/AmdSev/RELEASE_GCC5/FV/OVMF.fd AMDSEV.fd"
  [inteltdx]="OvmfPkg/IntelTdx/IntelTdxX64.dsc Build/IntelTdx/RELEASE_GCC5/FV/OVMF.fd INTELTDX.fd"
)
# Build flags per firmware. TDVF with Secure Boot support: nacre's UKIs are signed for it.
declare -A FLAGS=(
  [amdsev]=""
  [inteltdx]="-D SECURE_BOOT_ENABLE=TRUE"
)
targets=(amdsev inteltdx)
if [[ -n "$only" ]]; then
  [[ -n "${DSCS[$only]:-}" ]] || { echo "ovmf/build.sh: --only amdsev or inteltdx, not $only" >&2; exit 2; }
  targets=("$only")
fi

log() { echo "ovmf: $*" >&2; }
die() { echo "ovmf: FAIL: $*" >&2; exit 1; }

# Build dependencies (Debian 12 names): as in edk2's debian/control, minus the ARM cross compilers.
deps=(build-essential uuid-dev nasm acpica-tools python3 python3-distutils xz-utils curl patch)
missing=()
for p in "${deps[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi

cache=${NACRE_OVMF_CACHE:-/var/tmp/nacre-ovmf-src}
mkdir -p "$cache" "$out"
out=$(cd "$out" && pwd)
fetch() { # name sha256
  local f=$cache/$1
  if [[ ! -f "$f" ]] || ! echo "$2  $f" | sha256sum -c --quiet - 2>/dev/null; then
    log "fetching $1"
    curl -sSf --retry 3 -o "$f.part" "$POOL/${1//+/%2B}" || die "cannot download $POOL/$1"
    mv "$f.part" "$f"
  fi
  echo "$2  $f" | sha256sum -c --quiet - || die "$1: sha256 is not the pinned $2"
}
fetch "$ORIG" "$ORIG_SHA256"
fetch "$DEBIAN" "$DEBIAN_SHA256"

tree=/var/tmp/nacre-ovmf
export SOURCE_DATE_EPOCH=1672531200 TZ=UTC LC_ALL=C.UTF-8

build_once() { # dest
  local dest=$1
  rm -rf "$tree"
  mkdir -p "$tree"
  log "unpacking edk2 $VERSION (Debian patches applied) into $tree/edk2"
  mkdir "$tree/edk2"
  tar xJf "$cache/$ORIG" -C "$tree/edk2" --strip-components=1
  tar xJf "$cache/$DEBIAN" -C "$tree/edk2"
  local q
  while read -r q; do
    [[ -z "$q" || "$q" == \#* ]] && continue
    patch -s -d "$tree/edk2" -p1 < "$tree/edk2/debian/patches/$q" || die "Debian patch $q does not apply"
  done < "$tree/edk2/debian/patches/series"
  for p in "$here"/patches/*.patch; do
    log "applying $(basename "$p")"
    patch -s -d "$tree/edk2" -p1 < "$p"
  done
  local t0=$SECONDS
  log "building BaseTools"
  (cd "$tree/edk2" && set +eu && set -- && . ./edksetup.sh >/dev/null && set -e && make -s -j"$jobs" -C BaseTools >"$tree/basetools.log" 2>&1) \
    || { tail -n 30 "$tree/basetools.log" >&2; die "BaseTools did not build"; }
  mkdir -p "$dest"
  for t in "${targets[@]}"; do
    read -r dsc fd name <<<"${DSCS[$t]}"
    local t1=$SECONDS
    local flags=${FLAGS[$t]}
    log "building $name from $dsc ${flags:+$flags }(RELEASE, GCC5, $jobs jobs)"
    (cd "$tree/edk2" && set +eu && set -- && . ./edksetup.sh >/dev/null && set -e && \
      build -q -a X64 -t GCC5 -b RELEASE -n "$jobs" -p "$dsc" $flags >"$tree/$t.log" 2>&1) \
      || { tail -n 40 "$tree/$t.log" >&2; die "$name did not build (log: $tree/$t.log)"; }
    cp "$tree/edk2/$fd" "$dest/$name"
    log "$name: $(stat -c %s "$dest/$name") bytes, sha256 $(sha256sum "$dest/$name" | cut -d' ' -f1), $((SECONDS - t1)) s"
  done
  log "build done in $((SECONDS - t0)) s"
}

build_once "$out"
(cd "$out" && for t in "${targets[@]}"; do read -r _ _ name <<<"${DSCS[$t]}"; sha256sum "$name"; done > SHA256SUMS)

if ((twice)); then
  second=$(mktemp -d /var/tmp/nacre-ovmf-second.XXXXXX)
  build_once "$second"
  for t in "${targets[@]}"; do
    read -r _ _ name <<<"${DSCS[$t]}"
    cmp -s "$out/$name" "$second/$name" || die "$name differs between two builds ($out/$name, $second/$name)"
    log "$name: two builds are byte-identical"
  done
  rm -rf "$second"
fi
rm -rf "$tree"

# Compare with what was recorded in the repository.
status=0
while read -r sum name; do
  want=$(awk -v n="$name" '$2 == n { print $1 }' "$here/SHA256SUMS" 2>/dev/null || true)
  if [[ -z "$want" ]]; then
    log "$name: no recorded sha256 in ovmf/SHA256SUMS (record: $sum)"
  elif [[ "$want" == "$sum" ]]; then
    log "$name: equals the recorded build ($sum)"
  else
    log "$name: sha256 $sum is NOT the recorded $want"; status=1
  fi
done < "$out/SHA256SUMS"
exit $status
