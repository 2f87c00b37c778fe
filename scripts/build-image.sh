#!/usr/bin/env bash
# Build the nacre node image: nacre-init and nacre-image (release), then mkosi 25 (trixie's,
# fetched and pinned by scripts/lib/fetch-mkosi.sh) with mkosi.conf.d/, which bootstraps a trixie
# tools tree, installs the packages, builds nacre's initrd from the tree (scripts/lib/make-initrd.sh,
# i.e. nacre-image initrd), cuts the root down to its allowlist and writes the disk and the UKI.
#
# Usage: scripts/build-image.sh OUTDIR [--variant qemu-vtpm] [--cache DIR] [--clean] [--init BIN]
#                               [--formats "qcow2 vhd gcp raw" | --no-finish] [--ovmf DIR]
#                               [--kubelet FILE --kubelet-sha256 HEX] [--lock FILE | --write-lock FILE]
#                               [--test]
#   Writes OUTDIR/disk.img (GPT: ESP with \EFI\BOOT\BOOTX64.EFI, erofs root, dm-verity hash),
#   OUTDIR/uki.efi (the same UKI), OUTDIR/roothash (from the UKI's .cmdline), OUTDIR/initrd.cpio,
#   OUTDIR/manifest.json (packages mkosi installed, with versions), OUTDIR/timings, and
#   (scripts/lib/finish-image.sh) OUTDIR/measurements-{sysinit,ready}.json, the variant's golden measurements of
#   this unsigned image with Secure Boot off (sign-image.sh, then finish-image.sh --vars, for a
#   signed one), and the variant's cloud format (qcow2 / disk.vhd / disk.tar.gz).
#   --variant   mkosi profile (mkosi.conf.d/20-<variant>.conf); default qemu-vtpm. Variants:
#               qemu-vtpm, qemu-snp, qemu-tdx, aws-sev-snp, azure-sev-snp, gcp-sev-snp, gcp-tdx
#   --formats   cloud formats to write instead of the variant's default (finish-image.sh)
#   --no-finish no golden measurements, no cloud format
#   --test      the TEST image (mkosi profile `test`, mkosi.conf.d/10-test-payload): busybox as
#               /usr/bin/sh, ctr, /usr/lib/nacre/nacre-cri-probe (a CRI client, cri-probe/) and a
#               payload in kubelet's place that prints the PCRs and powers
#               the node off (scripts/check-image.sh --boot). Without it: the release node, whose
#               init.toml joins the cluster its configuration names (docs/cluster-config.md)
#   --ovmf      ovmf/build.sh's output: qemu-snp/qemu-tdx record their launch values with it
#   --kubelet   the kubelet binary for the root (/usr/bin/kubelet), e.g. the official
#               dl.k8s.io/release/vX.Y.Z/bin/linux/amd64/kubelet fetched by the caller; it must
#               have the sha256 given with --kubelet-sha256 (the pin), or the build stops. Without
#               it the root has no kubelet (this project cannot download one: test images run the
#               test payload in its place)
#   --lock      mkosi.conf.d/packages.lock or another lock: the build stops unless every Debian
#               package of the tree has the locked version (nacre-image lock check); without
#               --lock the drift from mkosi.conf.d/packages.lock is only reported
#   --write-lock  write the build's package versions to FILE (to pin a release)
#   OUTDIR/root-report.json  the cut-down root's size, executables and libraries
#   --cache     where mkosi, its tools tree (~1.6 GB), the incremental image cache and the package
#               cache live (default: target/image-cache); a fresh directory = a clean build
#   --clean     rebuild the cached package tree (mkosi -ff); the tools tree is kept
#   --init      use this nacre-init instead of building it (cargo build --release -p nacre-init)
# Environment: MKOSI_ARGS (more arguments for mkosi, e.g. "--debug").
set -euo pipefail
help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "build-image: $*" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)
out="" variant=qemu-vtpm cache="$root/target/image-cache" clean=0 init="" finish=1 formats=() ovmf=()
kubelet="" kubelet_sha256="" lock="" write_lock="" profiles=""
while (($#)); do
  case "$1" in
    --variant) variant="${2:?}"; shift 2 ;;
    --cache) cache="${2:?}"; shift 2 ;;
    --clean) clean=1; shift ;;
    --init) init="${2:?}"; shift 2 ;;
    --formats) formats=(--formats "${2?}"); shift 2 ;;
    --no-finish) finish=0; shift ;;
    --ovmf) ovmf=(--ovmf "$(cd "${2:?}" && pwd)"); shift 2 ;;
    --kubelet) kubelet="${2:?}"; shift 2 ;;
    --kubelet-sha256) kubelet_sha256="${2:?}"; shift 2 ;;
    --lock) lock="${2:?}"; shift 2 ;;
    --write-lock) write_lock="${2:?}"; shift 2 ;;
    --test) profiles=",test"; shift ;;
    -h|--help) help; exit 0 ;;
    -*) echo "build-image: unknown option $1" >&2; help >&2; exit 2 ;;
    *) [[ -z "$out" ]] || { help >&2; exit 2; }; out="$1"; shift ;;
  esac
done
[[ -n "$out" ]] || { help >&2; exit 2; }
if [[ -n "$kubelet" ]]; then
  [[ -f "$kubelet" ]] || die "--kubelet $kubelet: no such file"
  [[ "$kubelet_sha256" =~ ^[0-9a-f]{64}$ ]] || die "--kubelet needs its pinned --kubelet-sha256 (64 hex digits)"
  got=$(sha256sum "$kubelet" | cut -d' ' -f1)
  [[ "$got" == "$kubelet_sha256" ]] || die "--kubelet $kubelet: sha256 $got is not the pinned $kubelet_sha256"
elif [[ -n "$kubelet_sha256" ]]; then
  die "--kubelet-sha256 without --kubelet"
fi
[[ -z "$lock" || -f "$lock" ]] || die "--lock $lock: no such file"
[[ -z "$lock" ]] || lock=$(cd "$(dirname "$lock")" && pwd)/$(basename "$lock")
[[ -f "$root/mkosi.conf.d/20-$variant.conf" ]] || die "no variant $variant (mkosi.conf.d/20-$variant.conf)"
((EUID == 0)) || die "run as root (mkosi builds the tree as root in its own sandbox; no loop devices or device-mapper are used)"
mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd) cache=$(cd "$cache" && pwd)
timings=$out/timings; : >"$timings"
t0=$(date +%s.%N) tstep=$t0
lap() { # NAME: print and record the time since the previous lap
  local now; now=$(date +%s.%N)
  printf '%-28s %6.1f s\n' "$1" "$(awk -v a="$tstep" -v b="$now" 'BEGIN { print b - a }')" | tee -a "$timings" >&2
  tstep=$now
}

if [[ -z "$init" ]]; then
  echo "build-image: building nacre-init (release)" >&2
  cargo build --release -q --manifest-path "$root/Cargo.toml" -p nacre-init
  init=$root/target/release/nacre-init
  lap "nacre-init (cargo)"
fi
[[ -x "$init" ]] || die "no nacre-init at $init"
# The finalize step builds the initrd with nacre-image (scripts/lib/make-initrd.sh runs
# target/release/nacre-image, visible in mkosi's sandbox below $SRCDIR).
cargo build --release -q --manifest-path "$root/Cargo.toml" -p nacre-image
lap "nacre-image (cargo)"

mkosi=$("$root/scripts/lib/fetch-mkosi.sh" "$cache/mkosi-pkg" --quiet)
lap "mkosi (fetch)"

# nacre-init goes in as an extra tree; the finalize script builds the initrd from the tree.
extra=$cache/extra
rm -rf "$extra"; mkdir -p "$extra/usr/lib/nacre"
install -m 0755 "$init" "$extra/usr/lib/nacre/nacre-init"
# kubelet, checked against its pin above; the finalize script keeps it and its libraries.
if [[ -n "$kubelet" ]]; then
  install -D -m 0755 "$kubelet" "$extra/usr/bin/kubelet"
fi
# The TEST image's CRI client (cri-probe/: the payload runs pods through containerd as kubelet
# would); only --test puts it in the extra tree, so a release root never has it.
if [[ "$profiles" == *test* ]]; then
  cargo build --release -q --manifest-path "$root/Cargo.toml" -p nacre-cri-probe
  install -m 0755 "$root/target/release/nacre-cri-probe" "$extra/usr/lib/nacre/nacre-cri-probe"
  lap "nacre-cri-probe (cargo)"
fi

force=(-f); ((clean)) && force=(-ff)
mkout=$cache/out
mkdir -p "$mkout" "$cache/mkosi" "$cache/packages"
# mkosi's scratch space, per build: it must not be inside the source tree (the default cache is),
# so it lives in /var/tmp as mkosi's own default does.
workspace=$(mktemp -d /var/tmp/nacre-mkosi-ws.XXXXXX)
trap 'rm -rf "$workspace"' EXIT
# shellcheck disable=SC2086 # MKOSI_ARGS is a list of words
(cd "$root" && "$mkosi" --directory "$root" --profile "$variant$profiles" \
  --output-directory "$mkout" --cache-directory "$cache/mkosi" \
  --package-cache-directory "$cache/packages" --workspace-directory "$workspace" \
  --extra-tree "$extra:/" "${force[@]}" ${MKOSI_ARGS:-} build) >"$out/mkosi.log" 2>&1 \
  || { tail -n 40 "$out/mkosi.log" >&2; die "mkosi failed (whole log: $out/mkosi.log)"; }
lap "mkosi build"

cp "$mkout/nacre.raw" "$out/disk.img.tmp" && mv "$out/disk.img.tmp" "$out/disk.img"
cp "$mkout/nacre.efi" "$out/uki.efi"
cp "$mkout/nacre-initrd.cpio" "$out/initrd.cpio"
cp "$mkout/nacre.manifest" "$out/manifest.json"
cp "$mkout/nacre-root-report.json" "$out/root-report.json"
objcopy -O binary --only-section=.cmdline "$out/uki.efi" "$out/cmdline.tmp"
cmdline=$(tr -d '\0' <"$out/cmdline.tmp"); rm -f "$out/cmdline.tmp"
roothash=$(grep -oE '(^| )roothash=[0-9a-f]{64}' <<<"$cmdline" | cut -d= -f2)
[[ ${#roothash} -eq 64 ]] || die "no roothash= in the UKI's .cmdline: $cmdline"
echo "$roothash" >"$out/roothash"
lap "outputs"
# The package lock: enforced with --lock, reported against mkosi.conf.d/packages.lock otherwise.
ni=$root/target/release/nacre-image
if [[ -n "$lock" ]]; then
  "$ni" lock check "$out/manifest.json" "$lock" >"$out/lock-drift.txt" \
    || { cat "$out/lock-drift.txt" >&2; die "the build's packages are not the locked ones ($lock)"; }
  echo "build-image: packages as locked in $lock" >&2
else
  # The TDX variants take their kernel from trixie-backports: a lock of their own.
  deflock=packages.lock; [[ "$variant" != *-tdx ]] || deflock=packages-tdx.lock
  if ! "$ni" lock check "$out/manifest.json" "$root/mkosi.conf.d/$deflock" >"$out/lock-drift.txt"; then
    echo "build-image: note: packages differ from mkosi.conf.d/$deflock ($(wc -l <"$out/lock-drift.txt") changes, $out/lock-drift.txt); a release build passes --lock" >&2
  fi
fi
[[ -z "$write_lock" ]] || "$ni" lock write "$out/manifest.json" "$write_lock"
python3 - "$out/root-report.json" <<'PY' >&2
import json, sys
r = json.load(open(sys.argv[1]))
print(f"build-image: root {r['bytes'] / 1048576:.1f} MiB, {r['files']} files, {len(r['executables'])} executables: "
      + " ".join(e.rsplit('/', 1)[1] for e in r['executables']))
PY
if ((finish)); then
  "$root/scripts/lib/finish-image.sh" "$out" --variant "$variant" "${formats[@]}" "${ovmf[@]}" >&2
  lap "golden measurements, format"
fi
printf '%-28s %6.1f s\n' total "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" | tee -a "$timings" >&2
echo "build-image: $out/disk.img ($(du -h --apparent-size "$out/disk.img" | cut -f1)), uki.efi, roothash $roothash" >&2
echo "build-image: cmdline: $cmdline" >&2
