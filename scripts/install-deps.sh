#!/usr/bin/env bash
# Installs everything Nacre's build, main job and tests need on a fresh Debian 12 machine.
# Idempotent: packages already present are left alone, so a second run takes seconds. Ends by
# checking that every command the project runs is on the PATH, naming any that is not.
set -euo pipefail

APT_PACKAGES=(
  # build
  build-essential pkg-config
  # UKI assembly and Secure Boot signing
  binutils systemd-boot-efi sbsigntool pesign openssl faketime
  # guests: firmware, software TPM, kernel and a static busybox for test initrds
  clang libclang-dev libdevmapper-dev
  # state disk: LUKS2 (libcryptsetup-rs), TPM sealing (tss-esapi 7.7), ext4 for the guest's /var
  libcryptsetup-dev libtss2-dev libtss2-tcti-device0 e2fsprogs
  qemu-system-x86 qemu-utils ovmf swtpm swtpm-tools tpm2-tools linux-image-amd64 busybox-static cpio
  # disk images assembled and checked in user space
  fdisk mtools dosfstools erofs-utils cryptsetup-bin
  # the node's services in the init boot tests (kubelet cannot be downloaded here); the cluster
  # e2e's nodes also get Debian's CNI plugins and a pause image made from catatonit
  containerd runc containernetworking-plugins catatonit
  # DHCP server of the network tests (GCE-style /32 leases, option 121, renewal)
  dnsmasq-base
  # network namespaces and taps of the cluster tests
  iproute2 util-linux
  # portmap (CNI) runs iptables: init/src/kube.rs runs the plugins on nacre-init's CNI list
  iptables
  # systemd-measure (oracle for PCR 11) ships with systemd
  systemd
  # helpers used by the scripts
  python3 python3-venv jq
  # the image build (scripts/build-image.sh): trixie's mkosi 25 runs from a dpkg -x with the host's
  # python3 (scripts/lib/fetch-mkosi.sh) and bootstraps its own trixie tools tree with the host's
  # apt/dpkg, checked against Debian's archive keyring
  debian-archive-keyring apt dpkg
)

# Every command the build, the main job and the tests run, with the package that provides it.
# Checked after the install: a package can be present before and gone after (a fresh machine of
# this kind ships qemu-utils 10.x from bookworm-backports; installing Debian 12's
# qemu-system-x86 makes apt remove it in the same transaction).
COMMANDS=(
  cc pkg-config objcopy sbsign sbverify pesign openssl faketime clang
  qemu-system-x86_64 qemu-img swtpm swtpm_setup swtpm_localca tpm2_pcrread tpm2_eventlog busybox cpio
  sfdisk mcopy mkfs.vfat mkfs.erofs veritysetup cryptsetup mkfs.ext4 containerd runc catatonit
  python3 jq dnsmasq ip ss setsid dpkg apt-get iptables
)

missing_packages() { # the packages of APT_PACKAGES not installed, one per line
  local p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || echo "$p"
  done
}
apt_install() { # PACKAGE...: one transaction
  echo "install-deps: installing $*" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
mapfile -t missing < <(missing_packages)
if ((${#missing[@]})); then
  apt-get update -qq
  # Everything missing in one transaction; then again whatever that transaction removed.
  apt_install "${missing[@]}"
  mapfile -t missing < <(missing_packages)
  if ((${#missing[@]})); then
    echo "install-deps: the install removed ${missing[*]}: installing again" >&2
    apt_install "${missing[@]}"
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) || { echo "install-deps: still not installed: ${missing[*]}" >&2; exit 1; }
  fi
fi
absent=()
for c in "${COMMANDS[@]}"; do command -v "$c" >/dev/null || absent+=("$c"); done
# Files that are not commands: the PCR 11 oracle, the UKI stub, the firmware, the CNI plugins.
for f in /usr/lib/systemd/systemd-measure /usr/lib/systemd/boot/efi/linuxx64.efi.stub \
  /usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_CODE_4M.secboot.fd /usr/share/OVMF/OVMF_VARS_4M.fd \
  /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/loopback /usr/lib/cni/portmap; do
  [[ -e "$f" ]] || absent+=("$f")
done
if ((${#absent[@]})); then
  echo "install-deps: after the install these commands (or files) are missing: ${absent[*]}" >&2
  exit 1
fi

# virt-fw-vars (enrolls PK/KEK/db into an OVMF variable store) comes from PyPI's virt-firmware,
# sev-snp-measure (the oracle of nacre-measure's SEV-SNP launch digests) from PyPI too; both
# live in a private venv so the host's Python is untouched.
VENV="${NACRE_VENV:-/opt/nacre-venv}"
if [[ ! -x "$VENV/bin/virt-fw-vars" || ! -x "$VENV/bin/sev-snp-measure" ]]; then
  echo "install-deps: installing virt-firmware and sev-snp-measure into $VENV" >&2
  [[ -x "$VENV/bin/pip" ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'virt-firmware==26.10' 'sev-snp-measure==0.0.13'
fi

command -v cargo >/dev/null || { echo "install-deps: cargo (rustup) is required" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep '^clippy' >/dev/null || rustup component add clippy rustfmt
