#!/usr/bin/env bash
# Fetch Debian trixie's systemd 257 stub (linuxx64.efi.stub) and systemd-measure 257 without
# touching the host's apt configuration, and make systemd-measure runnable on Debian 12.
#
# Usage: fetch-trixie-systemd.sh OUTDIR [--quiet]
#   Prints two lines on stdout: the stub's path, then the path of a systemd-measure wrapper.
#   OUTDIR/apt/      private apt state (sources, lists): only deb.debian.org trixie main, Release
#                    verified with /usr/share/keyrings/debian-archive-keyring.gpg (it has the
#                    trixie keys; no [trusted=yes])
#   OUTDIR/debs/     the pinned .debs (cache: present and matching the pinned sha256 = no network)
#   OUTDIR/root/     the .debs extracted with dpkg -x
#   OUTDIR/bin/systemd-measure   wrapper: trixie's systemd-measure needs glibc >= 2.39 and
#                    OpenSSL >= 3.4 (Debian 12: 2.36, 3.0), so it runs under trixie's own dynamic
#                    loader with trixie's libc6/libssl3t64/libsystemd-shared first on the library
#                    path and the host's /lib/x86_64-linux-gnu for the rest (libacl, libcap, ...).
# Packages (pinned versions and sha256 below; systemd-measure is in `systemd`, not in
# systemd-boot-tools or systemd-ukify): systemd-boot-efi, systemd, libsystemd-shared, libc6,
# libssl3t64. When trixie gets a point release the old versions leave deb.debian.org: update the
# pins (apt-cache show PKG in the private configuration gives Version and SHA256).
# Idempotent; exits 1 on a download or checksum failure, 2 on usage errors.
set -euo pipefail

help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "fetch-trixie-systemd: $*" >&2; exit 1; }

# package version sha256 (of the .deb, as in trixie's Packages index)
PINS=(
  "systemd-boot-efi 257.13-1~deb13u1 390ecdcef9bbb753f51bb6d8f696bdae2f1dbedde7239c49ccb2512f137a8933"
  "systemd 257.13-1~deb13u1 ee81302a1d5b7434762b6e784a572854d4b6cf6235e33e2d104ad4e1cae71ab4"
  "libsystemd-shared 257.13-1~deb13u1 2d349824e57f88507e2a33360610d8afc143a4ad5e80ee4bf8f37b826d6f37f9"
  "libc6 2.41-12+deb13u5 b59b0625cd1a791375d40dab23a4d5d3d0641e3d0a773501becdc3725b7f99cf"
  "libssl3t64 3.5.9-1~deb13u1 ffefb9af363e0e4592251b2533eb06453c8e470f7772e40263c4b2129251a6d5"
)
MIRROR=http://deb.debian.org/debian
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

out="" quiet=0
while (($#)); do
  case "$1" in
    --quiet) quiet=1; shift ;;
    -h|--help) help; exit 0 ;;
    -*) echo "fetch-trixie-systemd: unknown option $1" >&2; help >&2; exit 2 ;;
    *) [[ -z "$out" ]] || { help >&2; exit 2; }; out="$1"; shift ;;
  esac
done
[[ -n "$out" ]] || { help >&2; exit 2; }
log() { ((quiet)) || echo "fetch-trixie-systemd: $*" >&2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
apt=$out/apt debs=$out/debs root=$out/root
mkdir -p "$debs"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fetch-trixie.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

deb_name() { # PKG VERSION -> file name apt-get download uses (epoch ':' becomes %3a)
  local arch=amd64
  [[ "$1" == systemd-ukify ]] && arch=all
  echo "${1}_${2//:/%3a}_$arch.deb"
}
check() { # FILE SHA256
  [[ -f "$1" ]] && [[ "$(sha256sum <"$1" | cut -d' ' -f1)" == "$2" ]]
}

missing=()
for pin in "${PINS[@]}"; do
  read -r pkg ver sum <<<"$pin"
  check "$debs/$(deb_name "$pkg" "$ver")" "$sum" || missing+=("$pkg=$ver")
done

if ((${#missing[@]})); then
  [[ -r "$KEYRING" ]] || die "no $KEYRING (apt-get install debian-archive-keyring)"
  mkdir -p "$apt/sources" "$apt/lists/partial"
  cat >"$apt/sources/trixie.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: trixie
Components: main
Architectures: amd64
Signed-By: $KEYRING
EOF
  aptopts=(-q -oDir::Etc::SourceList=/dev/null -oDir::Etc::SourceParts="$apt/sources"
    -oDir::State::Lists="$apt/lists" -oDir::Cache::pkgcache= -oDir::Cache::srcpkgcache=
    -oAPT::Architecture=amd64 -oAPT::Architectures::=amd64 -oAcquire::Languages=none
    -oAcquire::IndexTargets::deb::DEP-11::DefaultEnabled=false -oAPT::Sandbox::User=root)
  log "downloading ${missing[*]} from $MIRROR trixie"
  apt-get "${aptopts[@]}" update >"$tmp/update.log" 2>&1 \
    || { cat "$tmp/update.log" >&2; die "apt-get update (private trixie configuration) failed"; }
  # apt-get download verifies each .deb against the signed index; we check our pins after.
  (cd "$tmp" && apt-get "${aptopts[@]}" download "${missing[@]}") >"$tmp/download.log" 2>&1 \
    || { cat "$tmp/download.log" >&2; die "apt-get download failed (pinned versions superseded? see the header)"; }
  for pin in "${PINS[@]}"; do
    read -r pkg ver sum <<<"$pin"
    f=$(deb_name "$pkg" "$ver")
    [[ -f "$tmp/$f" ]] || continue
    check "$tmp/$f" "$sum" || die "sha256 mismatch for $f: got $(sha256sum <"$tmp/$f" | cut -d' ' -f1), pinned $sum"
    mv "$tmp/$f" "$debs/$f"
  done
fi

# Extract (again) unless the stamp says this exact set is already there.
stamp=$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -d' ' -f1)
if [[ "$(cat "$root/.stamp" 2>/dev/null)" != "$stamp" ]]; then
  rm -rf "$root" "$out/root.new"
  mkdir -p "$out/root.new"
  for pin in "${PINS[@]}"; do
    read -r pkg ver sum <<<"$pin"
    f=$debs/$(deb_name "$pkg" "$ver")
    check "$f" "$sum" || die "cached $f does not match its pinned sha256"
    dpkg -x "$f" "$out/root.new"
  done
  echo "$stamp" >"$out/root.new/.stamp"
  mv "$out/root.new" "$root"
fi

lib=$root/usr/lib/x86_64-linux-gnu
stub=$root/usr/lib/systemd/boot/efi/linuxx64.efi.stub
measure=$root/usr/lib/systemd/systemd-measure
[[ -f "$stub" && -x "$measure" && -x "$lib/ld-linux-x86-64.so.2" ]] || die "unexpected package contents in $root"
mkdir -p "$out/bin"
cat >"$out/bin/systemd-measure.new" <<EOF
#!/bin/sh
# systemd-measure 257 from Debian trixie, run with trixie's glibc (generated by fetch-trixie-systemd.sh)
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib:$lib/systemd:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu" "$measure" "\$@"
EOF
chmod 0755 "$out/bin/systemd-measure.new"
mv "$out/bin/systemd-measure.new" "$out/bin/systemd-measure"
v=$("$out/bin/systemd-measure" --version 2>&1 | head -n1) || die "systemd-measure does not run: $v"
[[ "$v" == "systemd 257 "* ]] || die "unexpected systemd-measure version: $v"
grep -aq "LoaderInfo: systemd-stub 257" "$stub" || die "$stub is not systemd-stub 257"
log "$v; stub $(grep -ao 'systemd-stub 257[^ ]*' "$stub" | head -n1)"
echo "$stub"
echo "$out/bin/systemd-measure"
