#!/usr/bin/env bash
# Make an own Secure Boot key set: PK, KEK and db, each an RSA 2048 key with a self-signed X.509
# certificate (sha256, 10 years), plus a fixed owner GUID.
#
# Usage: make-sb-keys.sh DIR [--force]
#   Writes DIR/{PK,KEK,db}.{key,crt} (PEM), DIR/{PK,KEK,db}.der and DIR/owner.guid.
#   An existing complete key set is kept (so signatures and PCR 7 stay stable across builds)
#   unless --force is given. Test keys only: the private keys are not protected.
set -euo pipefail

die() { echo "make-sb-keys: $*" >&2; exit 1; }
help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

dir="" force=0
while (($#)); do
  case "$1" in
    --force) force=1; shift ;;
    -h|--help) help; exit 0 ;;
    -*) die "unknown argument: $1" ;;
    *) [[ -z "$dir" ]] || die "one directory only"; dir="$1"; shift ;;
  esac
done
[[ -n "$dir" ]] || { help >&2; exit 2; }

OWNER_GUID=4e414352-0000-4000-8000-00000000000b
names=(PK KEK db)
complete=1
for n in "${names[@]}"; do
  [[ -s "$dir/$n.key" && -s "$dir/$n.crt" && -s "$dir/$n.der" ]] || complete=0
done
if ((complete && !force)); then
  echo "make-sb-keys: keeping the existing keys in $dir" >&2
  exit 0
fi

mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.make-sb-keys.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for n in "${names[@]}"; do
  openssl req -new -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -subj "/CN=Nacre test $n" -keyout "$tmp/$n.key" -out "$tmp/$n.crt" 2>/dev/null
  openssl x509 -in "$tmp/$n.crt" -outform DER -out "$tmp/$n.der"
done
echo "$OWNER_GUID" >"$tmp/owner.guid"
chmod 0600 "$tmp"/*.key
mv -f "$tmp"/* "$dir"/
