#!/usr/bin/env bash
# Variants: qemu-vtpm and a CVM variant (default gcp-tdx) build with scripts/build-image.sh
# --variant; the CVM variant's cmdline has its console and no nacre.insecure-platform, its initrd
# lists the variant's stage 1 modules, its golden measurements (written next to the image) name
# the variant and differ from qemu-vtpm's (PCRs 4 and 11: the UKI and its .cmdline), PCR 7 is
# warn-only for a cloud variant, and its cloud format is written. qemu-vtpm itself is unchanged by the variant
# machinery (same disk as tests/image/reproducible.sh's build when both exist). Cloud formats
# (qcow2, VHD, GCP tar.gz) converted twice are byte-identical.
#
# With --ovmf DIR (ovmf/build.sh's output) and a qemu-snp/qemu-tdx variant, the manifest must also
# carry the launch values of that firmware (SNP measured direct boot / MRTD), equal to what
# nacre-measure snp-digest / tdx-digest print for it.
#
# Usage: tests/image/variants.sh [OUTDIR] [--variant gcp-tdx] [--cache DIR] [--ovmf DIR]
#   OUTDIR default target/tmp/variants; --cache default target/image-cache (warm: ~30 s a variant)
set -euo pipefail
die() { echo "variants: FAIL: $*" >&2; exit 1; }
root=$(cd "$(dirname "$0")/../.." && pwd)
out="" variant=gcp-tdx cache=$root/target/image-cache ovmf=()
while (($#)); do
  case "$1" in
    --variant) variant="${2:?}"; shift 2 ;;
    --cache) cache="${2:?}"; shift 2 ;;
    --ovmf) ovmf=(--ovmf "${2:?}"); shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "variants: unknown option $1" >&2; exit 2 ;;
    *) out="$1"; shift ;;
  esac
done
out=${out:-$root/target/tmp/variants}
mkdir -p "$out"; out=$(cd "$out" && pwd)
t0=$(date +%s)
cargo build -q --manifest-path "$root/Cargo.toml" -p nacre-image
ni=$root/target/debug/nacre-image
for v in qemu-vtpm "$variant"; do
  echo "== build $v" >&2
  "$root/scripts/build-image.sh" "$out/$v" --variant "$v" --cache "$cache" "${ovmf[@]}" 2>"$out/$v.log" \
    || { tail -n 30 "$out/$v.log" >&2; die "build $v"; }
done
j() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {'d': d}))" "$@"; }
a=$out/qemu-vtpm b=$out/$variant
ca=$(j <("$ni" inspect --json "$a/disk.img") 'd["uki"]["cmdline"]')
cb=$(j <("$ni" inspect --json "$b/disk.img") 'd["uki"]["cmdline"]')
echo "   qemu-vtpm: $ca" >&2; echo "   $variant: $cb" >&2
[[ " $ca " == *" nacre.insecure-platform=1 "* ]] || die "qemu-vtpm lacks nacre.insecure-platform=1"
[[ " $cb " != *"insecure-platform"* ]] || die "$variant has nacre.insecure-platform"
[[ " $cb " == *" console=ttyS0"* ]] || die "$variant has no serial console"
# The node's modules: 00-nacre's list, or the variant's own where it sets one (the TDX variants'
# 7.x kernel names crc32c differently).
node_modules=$(sed -n 's/^Environment=NACRE_NODE_MODULES=//p' "$root/mkosi.conf.d/20-$variant.conf")
[[ -n "$node_modules" ]] || node_modules=$(sed -n 's/^Environment=NACRE_NODE_MODULES=//p' "$root/mkosi.conf.d/00-nacre/mkosi.conf")
want=$(sed -n 's/^Environment=NACRE_MODULES=//p' "$root/mkosi.conf.d/20-$variant.conf" | tr , '\n'
       tr , '\n' <<<"$node_modules")
got=$(cd "$(mktemp -d)" && cpio -i --quiet --to-stdout etc/nacre/modules <"$b/initrd.cpio")
[[ "$got" == "$want" ]] || die "initrd modules: $got; want $want"
[[ $(j "$b/measurements-sysinit.json" 'd["image"]["variant"]') == "$variant" ]] || die "manifest variant"
# The build checked the kernel for what the variant relies on (scripts/lib/check-kernel-config.sh);
# a TDX variant's kernel must have the RTMR extend interface (Linux 6.16+, CONFIG_TSM_MEASUREMENTS).
kcheck=$(grep -h "^check-kernel-config: $variant: kernel .* has all" "$b/mkosi.log") \
  || die "no kernel check in $b/mkosi.log"
echo "   $kcheck" >&2
if [[ "$variant" == *-tdx ]]; then
  krel=$(sed -E 's/.*: kernel ([0-9]+\.[0-9]+)\..*/\1/' <<<"$kcheck")
  [[ $(printf '%s\n6.16\n' "$krel" | sort -V | head -n1) == 6.16 ]] || die "$variant: kernel $krel has no RTMR extend interface (needs 6.16+)"
fi
for pcr in 4 11; do
  [[ $(j "$a/measurements-sysinit.json" "d['measurements']['$pcr']['expected']") != \
     $(j "$b/measurements-sysinit.json" "d['measurements']['$pcr']['expected']") ]] || die "PCR $pcr equal"
done
# PCR 7: a cloud's own Secure Boot db is unknown to the build (warn-only); QEMU variants boot OVMF
# with the keys the operator enrolls (enforced).
case "$variant" in qemu-*) want7=False ;; *) want7=True ;; esac
[[ $(j "$b/measurements-sysinit.json" "d['measurements']['7']['warn_only']") == "$want7" ]] || die "PCR 7 warn_only is not $want7 for $variant"
if ((${#ovmf[@]})); then
  nm=$root/target/release/nacre-measure
  case "$variant" in
    qemu-tdx)
      want=$("$nm" tdx-digest --ovmf "${ovmf[1]}/INTELTDX.fd" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["mrtd"])')
      [[ $(j "$b/measurements-sysinit.json" 'd["tdx"]["mrtd"]') == "$want" ]] || die "manifest MRTD is not tdx-digest's $want"
      [[ $(j "$b/measurements-sysinit.json" 'len(d["tdx"].get("rtmr2") or "")') == 96 ]] || die "no RTMR[2] in the manifest"
      echo "   $variant: MRTD $want" >&2 ;;
    qemu-snp)
      want=$("$nm" snp-digest --ovmf "${ovmf[1]}/AMDSEV.fd" --vcpus 2 --vcpu-type EPYC-Milan --kernel "$b/uki.efi" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["measurement"])')
      got=$(j "$b/measurements-sysinit.json" '[v["measurement"] for v in d["snp"] if v["vcpus"] == 2 and v["vcpu_type"] == "EPYC-Milan"][0]')
      [[ "$got" == "$want" ]] || die "manifest SNP measurement $got is not snp-digest's $want"
      echo "   $variant: SNP launch measurement (2 x EPYC-Milan, direct boot) $want" >&2 ;;
  esac
fi
case "$variant" in azure-*) f=disk.vhd ;; gcp-*) f=disk.tar.gz ;; qemu-*) f=disk.qcow2 ;; *) f=disk.img ;; esac
[[ -s "$b/$f" && -s "$a/disk.qcow2" ]] || die "no $b/$f or $a/disk.qcow2"
# Cloud formats are deterministic: a second conversion gives the same bytes.
rm -rf "$out/formats"
"$root/scripts/lib/cloud-formats.sh" "$b/disk.img" "$out/formats" qcow2 vhd gcp 2>/dev/null
"$root/scripts/lib/cloud-formats.sh" "$b/disk.img" "$out/formats/again" qcow2 vhd gcp 2>/dev/null
for f in disk.qcow2 disk.vhd disk.tar.gz; do cmp "$out/formats/$f" "$out/formats/again/$f" || die "$f not deterministic"; done
[[ $(tar -tvf "$out/formats/disk.tar.gz") == "-rw-r--r-- 0/0 "*" 1970-01-01 00:00 disk.raw" ]] || die "tar entry: $(tar -tvf "$out/formats/disk.tar.gz")"
set +e; "$ni" diff "$a/disk.img" "$b/disk.img" >"$out/diff.txt"; rc=$?; set -e
((rc == 1)) || die "nacre-image diff: exit $rc"
grep -q '^esp:/EFI/BOOT/BOOTX64.EFI section .cmdline:' "$out/diff.txt" || die "diff does not name .cmdline"
grep -q '^esp:/EFI/BOOT/BOOTX64.EFI section .initrd:' "$out/diff.txt" || die "diff does not name .initrd"
if [[ -f "$root/target/tmp/reproducible/a/disk.img" && $cache == "$root/target/tmp/reproducible/cache-a" ]]; then
  "$ni" diff "$root/target/tmp/reproducible/a/disk.img" "$a/disk.img" >/dev/null || die "qemu-vtpm changed"
fi
echo "variants: OK (qemu-vtpm, $variant; $(( $(date +%s) - t0 )) s)" >&2
