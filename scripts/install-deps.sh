#!/usr/bin/env bash
# Installs everything Nacre's build, main job and tests need on a fresh Debian 12 machine.
# Idempotent: packages already present are left alone, so a second run takes seconds.
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
  # the node's services in the init boot tests (kubelet cannot be downloaded here)
  containerd runc
  # systemd-measure (oracle for PCR 11) ships with systemd
  systemd
  # helpers used by the scripts
  python3 python3-venv jq
  # the image build (scripts/build-image.sh): trixie's mkosi 25 runs from a dpkg -x with the host's
  # python3 (scripts/lib/fetch-mkosi.sh) and bootstraps its own trixie tools tree with the host's
  # apt/dpkg, checked against Debian's archive keyring
  debian-archive-keyring apt dpkg
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
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
