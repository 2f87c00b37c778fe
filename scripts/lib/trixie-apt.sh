# Sourced by the fetch-*.sh scripts: download pinned Debian trixie packages with a private apt
# configuration (sources, lists and cache of its own; the host's apt setup is untouched). The
# Release file is verified with the host's debian-archive-keyring, which has the trixie keys.
#
# trixie_download APTDIR DESTDIR PKG=VERSION...
#   Downloads the .debs into DESTDIR (apt checks them against the signed index); the caller
#   checks its own sha256 pins. Needs die() and log() from the caller.
TRIXIE_MIRROR=${TRIXIE_MIRROR:-http://deb.debian.org/debian}
TRIXIE_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

trixie_download() {
  local apt=$1 dest=$2; shift 2
  [[ -r "$TRIXIE_KEYRING" ]] || die "no $TRIXIE_KEYRING (apt-get install debian-archive-keyring)"
  mkdir -p "$apt/sources" "$apt/lists/partial" "$dest"
  cat >"$apt/sources/trixie.sources" <<SRC
Types: deb
URIs: $TRIXIE_MIRROR
Suites: trixie
Components: main
Architectures: amd64
Signed-By: $TRIXIE_KEYRING
SRC
  local aptopts=(-q -oDir::Etc::SourceList=/dev/null -oDir::Etc::SourceParts="$apt/sources"
    -oDir::State::Lists="$apt/lists" -oDir::Cache::pkgcache= -oDir::Cache::srcpkgcache=
    -oAPT::Architecture=amd64 -oAPT::Architectures::=amd64 -oAcquire::Languages=none
    -oAcquire::IndexTargets::deb::DEP-11::DefaultEnabled=false -oAPT::Sandbox::User=root)
  log "downloading $* from $TRIXIE_MIRROR trixie"
  apt-get "${aptopts[@]}" update >"$dest/update.log" 2>&1 \
    || { cat "$dest/update.log" >&2; die "apt-get update (private trixie configuration) failed"; }
  (cd "$dest" && apt-get "${aptopts[@]}" download "$@") >"$dest/download.log" 2>&1 \
    || { cat "$dest/download.log" >&2; die "apt-get download failed (pinned versions superseded? see the header)"; }
}
