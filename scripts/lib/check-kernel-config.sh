#!/usr/bin/env bash
# Check that the kernel in a built tree has what a variant relies on: its build configuration
# (the options below) and the modules stage 1 loads. Run by mkosi.finalize before the tree is cut
# down (the kernel's config and modules are still there); stops the build naming every option or
# module missing, rather than leaving it to a node that cannot boot or join.
#
# Usage: check-kernel-config.sh ROOT VARIANT
#   ROOT     a tree with one kernel in usr/lib/modules/REL: its config is usr/lib/modules/REL/config
#            (trixie-backports' 7.x packages) or boot/config-REL (trixie's 6.12), its modules
#            usr/lib/modules/REL/modules.dep and modules.builtin (depmod's, as the kernel's
#            postinst writes them)
#   VARIANT  qemu-vtpm, qemu-snp, qemu-tdx, aws-sev-snp, azure-sev-snp, gcp-sev-snp or gcp-tdx;
#            a mkosi profile list such as "qemu-tdx test" ($PROFILES in mkosi.finalize) is taken
#            as the one variant it names
# Environment: NACRE_MODULES, NACRE_NODE_MODULES (comma-separated), the modules stage 1 loads, as
#   mkosi passes them to mkosi.finalize; when unset, read from this source tree's
#   mkosi.conf.d/00-nacre/mkosi.conf and mkosi.conf.d/20-VARIANT.conf (the later one wins, as in
#   mkosi). Each must be in modules.dep or modules.builtin ('-' and '_' alike), the names
#   scripts/lib/make-initrd.sh loads by: names change between kernel versions.
# Options: "=y" must be built in (needed before stage 1 loads modules, or no module list loads
#   it: the root has no modules); the others may be =y or =m (stage 1 loads them from the
#   initrd). Exit 0: all present; 1: something missing (each one named); 2: usage.
set -euo pipefail
help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
me=check-kernel-config
usage() { help >&2; exit 2; }
case "${1:-}" in -h|--help) help; exit 0 ;; esac
(($# == 2)) || usage
root=$1 profiles=$2
src=$(cd "$(dirname "$0")/../.." && pwd)

variants=(qemu-vtpm qemu-snp qemu-tdx aws-sev-snp azure-sev-snp gcp-sev-snp gcp-tdx)
variant=""
for p in ${profiles//,/ }; do
  for v in "${variants[@]}"; do
    if [[ "$p" == "$v" ]]; then
      [[ -z "$variant" || "$variant" == "$v" ]] || { echo "$me: two variants in \"$profiles\"" >&2; exit 2; }
      variant=$v
    fi
  done
done
[[ -n "$variant" ]] || { echo "$me: no variant in \"$profiles\" (one of: ${variants[*]})" >&2; exit 2; }

# The kernel: exactly one release in the tree.
shopt -s nullglob
rels=("$root"/usr/lib/modules/*/)
shopt -u nullglob
((${#rels[@]} == 1)) || { echo "$me: need exactly one kernel in $root/usr/lib/modules, found ${#rels[@]}" >&2; exit 1; }
rel=$(basename "${rels[0]}")
moddir=$root/usr/lib/modules/$rel
config=""
for c in "$moddir/config" "$root/boot/config-$rel"; do
  [[ -f "$c" ]] && { config=$c; break; }
done
[[ -n "$config" ]] || { echo "$me: no kernel config for $rel (usr/lib/modules/$rel/config or boot/config-$rel)" >&2; exit 1; }

# OPTION[=y] | why. Every variant: what nacre-init (init/), its network (network/) and state
# disk (statedisk/) and the services it starts (containerd, runc, kubelet) use.
common=(
  "BLK_DEV_INITRD=y|the UKI's initrd (nacre-init as /init)"
  "EFI_STUB=y|the kernel starts from the UKI's EFI stub"
  "DEVTMPFS=y|init/src/stage/mounts.rs mounts devtmpfs on /dev (dm and TPM device nodes)"
  "PROC_FS=y|init/src/stage/mounts.rs mounts /proc"
  "SYSFS=y|init/src/stage/mounts.rs mounts /sys"
  "TMPFS=y|/run, /tmp, /dev/shm and /var before the state disk (init/src/services/mod.rs)"
  "SECURITYFS=y|/sys/kernel/security: the firmware event log (init/src/keyservice.rs)"
  "MODULES=y|stage 1 loads the variant's modules (init/src/stage/modules.rs, finit_module)"
  "MODULE_DECOMPRESS=y|Debian's modules are .ko.xz, stage 1 lets the kernel decompress them (MODULE_INIT_COMPRESSED_FILE)"
  "TCG_TPM=y|the TPM: PCR extends, quotes, the firmware log (init/src/tpm.rs, statedisk/src/tpm.rs); the root has no modules"
  "TCG_CRB=y|TPM 2.0 CRB interface (QEMU's tpm-crb, the tests' vTPM); in no module list"
  "EFI=y|the firmware's TPM event log reaches securityfs through EFI"
  "BLK_DEV_DM|device-mapper: the verity root and the LUKS2 state disk (dm-mod, from dm-verity's modules.dep)"
  "DM_VERITY|the verified root (init/src/stage/verity.rs)"
  "CRYPTO_SHA256=y|dm-verity's sha256 hash tree; in no module list"
  "EROFS_FS|the root file system (erofs)"
  "DM_CRYPT|the LUKS2 state disk (statedisk/src/luks2.rs, module dm-crypt)"
  "CRYPTO_XTS|aes-xts-plain64, the state disk's cipher (module xts)"
  "CRYPTO_AES|aes for aes-xts-plain64"
  "CRYPTO_USER_API_SKCIPHER|libcryptsetup's kernel crypto backend (module algif_skcipher)"
  "EXT4_FS|the state disk's file system on /var (statedisk/src/ext4.rs)"
  "WIREGUARD|wg0, the cluster overlay (network/src/wg.rs)"
  "INET=y|DHCP on the underlay (network/src/dhcp.rs), WireGuard, the key service"
  "UNIX=y|containerd's and kubelet's sockets"
  "CGROUPS=y|cgroup2 on /sys/fs/cgroup (init/src/services/mod.rs) for containerd and kubelet"
  "MEMCG=y|kubelet's memory controller"
  "CGROUP_PIDS=y|kubelet's pids controller"
  "CGROUP_SCHED=y|kubelet's cpu controller"
  "CPUSETS=y|kubelet's cpuset controller"
  "NAMESPACES=y|runc's containers"
  "PID_NS=y|runc's default spec: pid namespace"
  "NET_NS=y|runc's default spec / CNI: network namespace"
  "IPC_NS=y|runc's default spec: ipc namespace"
  "UTS_NS=y|runc's default spec: uts namespace"
  "SECCOMP=y|runc applies seccomp profiles (containerd's RuntimeDefault)"
  "OVERLAY_FS|containerd's overlayfs snapshotter (module overlay)"
  "BRIDGE|the CNI bridge plugin (module bridge)"
  "BRIDGE_NETFILTER|bridged pod traffic through netfilter (module br_netfilter)"
  "VETH|the CNI bridge plugin's pod interfaces (module veth)"
)
# The cluster configuration from QEMU's fw_cfg (NACRE_CLUSTER_SOURCE=qemu-fw-cfg, cluster/src/lib.rs).
qemu=("FW_CFG_SYSFS|/sys/firmware/qemu_fw_cfg: the cluster configuration (module qemu_fw_cfg)")
# SEV-SNP guests: the guest device and attestation reports through configfs-tsm
# (attestation/src/snp.rs, attestation/src/tsm.rs).
snp=(
  "AMD_MEM_ENCRYPT=y|SEV-SNP guest support"
  "SEV_GUEST|/dev/sev-guest, the SNP guest driver (module sev-guest)"
  "TSM_REPORTS|/sys/kernel/config/tsm/report: attestation reports (attestation/src/tsm.rs)"
  "CONFIGFS_FS|configfs, where configfs-tsm's reports live"
)
# TDX guests: the guest device, quotes through configfs-tsm (attestation/src/tdx.rs), and the
# RTMR extend interface (Linux 6.16+: tsm-mr, selected by TDX_GUEST_DRIVER) through which
# nacre-init extends the cluster id into RTMR[3] (init/src/measure.rs TDX_MEASUREMENTS).
tdx=(
  "INTEL_TDX_GUEST=y|TDX guest support"
  "TDX_GUEST_DRIVER|/dev/tdx_guest, the TDX guest driver (module tdx-guest)"
  "TSM_REPORTS|/sys/kernel/config/tsm/report: TDX quotes (attestation/src/tsm.rs)"
  "CONFIGFS_FS|configfs, where configfs-tsm's reports live"
  "TSM_MEASUREMENTS=y|/sys/devices/virtual/misc/tdx_guest/measurements/rtmr3:sha384, the RTMR extend interface (Linux 6.16+): nacre-init extends RTMR[3] through it"
)
checks=("${common[@]}")
case "$variant" in
  qemu-vtpm) checks+=("${qemu[@]}") ;;
  qemu-snp) checks+=("${qemu[@]}" "${snp[@]}") ;;
  qemu-tdx) checks+=("${qemu[@]}" "${tdx[@]}") ;;
  aws-sev-snp|azure-sev-snp|gcp-sev-snp) checks+=("${snp[@]}") ;;
  gcp-tdx) checks+=("${tdx[@]}") ;;
esac

missing=0 nopts=0
declare -A seen=()
for c in "${checks[@]}"; do
  spec=${c%%|*} why=${c#*|}
  opt=${spec%=y}
  [[ -n "${seen[$opt]:-}" ]] && continue
  seen[$opt]=1
  nopts=$((nopts + 1))
  val=$(sed -n "s/^CONFIG_$opt=//p" "$config" | tail -n1)
  if [[ "$spec" == *=y ]]; then
    [[ "$val" == y ]] && continue
    want="=y"
  else
    [[ "$val" == y || "$val" == m ]] && continue
    want="=y or =m"
  fi
  found=${val:+is =$val}
  grep -q "^# CONFIG_$opt is not set" "$config" && found="is not set"
  echo "$me: $variant: CONFIG_$opt ${found:-is absent} in $rel, needs $want: $why" >&2
  missing=$((missing + 1))
done

# The modules stage 1 loads.
env_of() { # NAME: the last Environment=NAME=... of 00-nacre/mkosi.conf, then 20-VARIANT.conf
  sed -n "s/^Environment=$1=//p" "$src/mkosi.conf.d/00-nacre/mkosi.conf" "$src/mkosi.conf.d/20-$variant.conf" | tail -n1
}
if [[ -z "${NACRE_MODULES+x}" ]]; then NACRE_MODULES=$(env_of NACRE_MODULES); fi
if [[ -z "${NACRE_NODE_MODULES+x}" ]]; then NACRE_NODE_MODULES=$(env_of NACRE_NODE_MODULES); fi
nmods=0
if [[ ! -f "$moddir/modules.dep" ]]; then
  echo "$me: no usr/lib/modules/$rel/modules.dep (depmod) to check the modules against" >&2
  missing=$((missing + 1))
else
  known=$( { cut -d: -f1 "$moddir/modules.dep"; cat "$moddir/modules.builtin" 2>/dev/null || true; } \
    | sed -E 's#.*/##; s#\.ko(\..*)?$##; s#-#_#g' | sort -u)
  for m in ${NACRE_MODULES//,/ } ${NACRE_NODE_MODULES//,/ }; do
    nmods=$((nmods + 1))
    grep -qxF "${m//-/_}" <<<"$known" && continue
    echo "$me: $variant: module $m is neither in modules.dep nor built into $rel (NACRE_MODULES / NACRE_NODE_MODULES)" >&2
    missing=$((missing + 1))
  done
fi

if ((missing)); then
  echo "$me: $variant: kernel $rel lacks $missing of what the variant needs (${config#"$root"})" >&2
  exit 1
fi
echo "$me: $variant: kernel $rel has all $nopts options and $nmods modules the variant needs" >&2
