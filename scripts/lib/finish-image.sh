#!/usr/bin/env bash
# After a build (and again after Secure Boot signing): the variant's golden measurements, computed
# by nacre-measure from the finished disk.img and optionally signed, and the variant's cloud upload
# format. Called by scripts/build-image.sh (unsigned image, firmware Secure Boot state as given)
# and by ci/github/build-images.yml after scripts/lib/sign-image.sh.
#
# Usage: finish-image.sh OUTDIR --variant NAME [--vars FD | --sb-keys DIR] [--version V]
#                        [--key KEY.pem | --signer-command CMD --public-key PUB.pem]
#                        [--formats "qcow2 vhd gcp raw" | --no-formats] [--measure BIN]
#                        [--ovmf DIR] [--cloud-firmware FILE] [--snp-measurement HEX ...]
#   OUTDIR/measurements-PHASE.json  nacre-measure golden --variant NAME --phase PHASE (+ .sig when
#              signed), one per phase a verifier checks: `sysinit` (a node joins and gets its
#              disk key there: the key service hands out nothing at any other phase) and `ready`
#              (its services run; the peer refresh attests there). --phases changes the list.
#   OUTDIR/disk.qcow2 | disk.vhd | disk.tar.gz   scripts/lib/cloud-formats.sh; by default
#              qemu-* -> qcow2, azure-* -> vhd, gcp-* -> gcp (disk.raw in disk.tar.gz), aws-* -> none
#              (disk.img is the raw image EC2's import-snapshot takes)
#   --vars/--sb-keys  the Secure Boot variables of the boot (PCR 7); without them, Secure Boot off.
#              Cloud variants boot the cloud's firmware with its own Secure Boot db, which a build
#              cannot know: their manifests mark PCR 7 warn-only.
#   --ovmf DIR  ovmf/build.sh's output: qemu-snp records the SEV-SNP launch measurements of a
#              measured direct boot of the UKI with DIR/AMDSEV.fd, qemu-tdx the MRTD of
#              DIR/INTELTDX.fd and the RTMR[1]/RTMR[2] of the boot (docs/cvm.md)
#   --cloud-firmware FILE  the cloud's own firmware binary, when the operator has it: aws-sev-snp
#              (EC2's OVMF, VMM type ec2) and gcp-sev-snp (GCE's, VMM type gce) record its SNP
#              launch measurements, gcp-tdx its MRTD; azure-* have none to record (the launch
#              measurement is Azure's paravisor's, docs/cvm.md)
#   --snp-measurement HEX  azure-* (azure-sev-snp): pin an observed launch measurement of
#              Azure's paravisor (the SNP report's MEASUREMENT, 96 hex digits) in the manifests
#              (nacre-measure golden --snp-measurement); repeatable. azure-sev-snp nodes pair
#              only with a manifest holding their measurement. Default: none.
set -euo pipefail
help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "finish-image: $*" >&2; exit 1; }
root=$(cd "$(dirname "$0")/../.." && pwd)
out="" variant="" sb=() version=${NACRE_VERSION:-dev} key="" signer="" pub="" formats=default measure=""
ovmf="" cloud_fw="" phases="sysinit ready" snp_pinned=()
while (($#)); do
  case "$1" in
    --variant) variant="${2:?}"; shift 2 ;;
    --vars) sb=(--vars "${2:?}"); shift 2 ;;
    --sb-keys) sb=(--sb-keys "${2:?}"); shift 2 ;;
    --version) version="${2:?}"; shift 2 ;;
    --key) key="${2:?}"; shift 2 ;;
    --signer-command) signer="${2:?}"; shift 2 ;;
    --public-key) pub="${2:?}"; shift 2 ;;
    --formats) formats="${2?}"; shift 2 ;;
    --no-formats) formats=""; shift ;;
    --measure) measure="${2:?}"; shift 2 ;;
    --ovmf) ovmf="${2:?}"; shift 2 ;;
    --cloud-firmware) cloud_fw="${2:?}"; shift 2 ;;
    --snp-measurement) snp_pinned+=(--snp-measurement "${2:?}"); shift 2 ;;
    --phases) phases="${2:?}"; shift 2 ;;
    -h|--help) help; exit 0 ;;
    -*) echo "finish-image: unknown option $1" >&2; help >&2; exit 2 ;;
    *) [[ -z "$out" ]] || { help >&2; exit 2; }; out="$1"; shift ;;
  esac
done
[[ -n "$out" && -n "$variant" ]] || { help >&2; exit 2; }
[[ -f "$out/disk.img" ]] || die "no $out/disk.img"
if [[ -z "$measure" ]]; then
  cargo build --release -q --manifest-path "$root/Cargo.toml" -p nacre-measure
  measure=$root/target/release/nacre-measure
fi
warn=()
case "$variant" in qemu-*) ;; *) warn=(--warn-only 7) ;; esac
# CVM launch values (docs/cvm.md): which firmware, which VMM, which boot.
cvm=()
need() { [[ -f "$1" ]] || die "$variant: $1 is missing (${2})"; }
case "$variant" in
  qemu-snp)
    if [[ -n "$ovmf" ]]; then
      need "$ovmf/AMDSEV.fd" "build it: ovmf/build.sh $ovmf"
      cvm=(--snp-ovmf "$ovmf/AMDSEV.fd" --snp-direct-boot uki)
    fi ;;
  qemu-tdx)
    if [[ -n "$ovmf" ]]; then
      need "$ovmf/INTELTDX.fd" "build it: ovmf/build.sh $ovmf"
      cvm=(--tdx-ovmf "$ovmf/INTELTDX.fd")
    fi ;;
  aws-sev-snp) [[ -z "$cloud_fw" ]] || { need "$cloud_fw" "EC2's firmware"; cvm=(--snp-ovmf "$cloud_fw" --snp-vmm ec2); } ;;
  gcp-sev-snp) [[ -z "$cloud_fw" ]] || { need "$cloud_fw" "GCE's firmware"; cvm=(--snp-ovmf "$cloud_fw" --snp-vmm gce); } ;;
  gcp-tdx) [[ -z "$cloud_fw" ]] || { need "$cloud_fw" "GCE's TDVF"; cvm=(--tdx-ovmf "$cloud_fw"); } ;;
  *) [[ -z "$cloud_fw" ]] || die "$variant: no launch values to compute from a firmware (docs/cvm.md)" ;;
esac
# Observed launch measurements (Azure's paravisor's: no firmware file predicts them).
if ((${#snp_pinned[@]})); then
  case "$variant" in
    azure-*) cvm+=("${snp_pinned[@]}") ;;
    *) die "$variant: --snp-measurement is for azure-* variants (others compute theirs from a firmware)" ;;
  esac
fi
rm -f "$out"/measurements*.json "$out"/measurements*.json.sig
sign() {
  if [[ -n "$key" ]]; then
    "$measure" sign "$1" --key "$key"
  elif [[ -n "$signer" ]]; then
    "$measure" sign "$1" --signer-command "$signer" ${pub:+--public-key "$pub"}
  fi
}
for phase in $phases; do
  m=$out/measurements-$phase.json
  "$measure" golden "$out/disk.img" "${sb[@]}" --phase "$phase" --version "$version" \
    --variant "$variant" "${warn[@]}" "${cvm[@]}" --out "$m"
  sign "$m"
  echo "finish-image: $m (variant $variant, version $version, phase $phase$([[ -f $m.sig ]] && echo ', signed'))" >&2
  # AWS: the NitroTPM attestation document carries the sha384 bank; its golden values are a
  # second manifest of the same release (nacre_attestation::nitro), passed to serve with it.
  case "$variant" in aws-*)
    m384=$out/measurements-$phase-sha384.json
    "$measure" golden "$out/disk.img" "${sb[@]}" --phase "$phase" --version "$version" \
      --variant "$variant" --bank sha384 "${warn[@]}" "${cvm[@]}" --out "$m384"
    sign "$m384"
    echo "finish-image: $m384 (the NitroTPM document's sha384 bank$([[ -f $m384.sig ]] && echo ', signed'))" >&2
    ;;
  esac
done
if [[ $formats == default ]]; then
  case "$variant" in
    qemu-*) formats=qcow2 ;; azure-*) formats=vhd ;; gcp-*) formats=gcp ;; *) formats="" ;;
  esac
fi
# shellcheck disable=SC2086 # a list of words
[[ -z "$formats" ]] || "$root/scripts/lib/cloud-formats.sh" "$out/disk.img" "$out" $formats
