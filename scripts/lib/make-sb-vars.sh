#!/usr/bin/env bash
# Enroll an own Secure Boot key set (from make-sb-keys.sh) into a copy of OVMF's variable store
# with Secure Boot enabled, and/or sign an EFI binary with the db key.
#
# Usage: make-sb-vars.sh --keys DIR [--vars-out VARS.fd] [--vars-in OVMF_VARS_4M.fd]
#                        [--sign IN.efi --signed-out OUT.efi [--sign-time EPOCH]]
#   --vars-in defaults to /usr/share/OVMF/OVMF_VARS_4M.fd (pair it with OVMF_CODE_4M.secboot.fd).
#   The store gets PK, KEK and db = the certificates in DIR (owner GUID from DIR/owner.guid),
#   no Microsoft keys, no dbx entries, SecureBoot enabled.
#   Signing uses sbsign with DIR/db.{key,crt}; sbsign embeds the signing time, so the signed
#   file's bytes change from run to run (its Authenticode hash, which PCR 4 measures, does not),
#   unless --sign-time fixes it: sbsign then runs under faketime (TZ=UTC, clock frozen at EPOCH
#   seconds) and, RSA PKCS#1 v1.5 being deterministic, the same key gives the same bytes.
set -euo pipefail

die() { echo "make-sb-vars: $*" >&2; exit 1; }
help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

VIRT_FW_VARS=${VIRT_FW_VARS:-$(command -v virt-fw-vars || echo /opt/nacre-venv/bin/virt-fw-vars)}
keys="" vars_in=/usr/share/OVMF/OVMF_VARS_4M.fd vars_out="" sign_in="" sign_out="" sign_time=""
while (($#)); do
  case "$1" in
    --keys) keys="$2"; shift 2 ;;
    --vars-in) vars_in="$2"; shift 2 ;;
    --vars-out) vars_out="$2"; shift 2 ;;
    --sign) sign_in="$2"; shift 2 ;;
    --signed-out) sign_out="$2"; shift 2 ;;
    --sign-time) sign_time="$2"; shift 2 ;;
    -h|--help) help; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done
[[ -n "$keys" ]] || die "need --keys DIR (see --help)"
[[ -n "$vars_out" || -n "$sign_in" ]] || die "nothing to do: give --vars-out and/or --sign"
[[ -z "$sign_in" || -n "$sign_out" ]] || die "--sign needs --signed-out"
[[ -z "$sign_time" || "$sign_time" =~ ^[0-9]+$ ]] || die "--sign-time wants seconds since the epoch"
for n in PK KEK db; do
  [[ -s "$keys/$n.crt" ]] || die "no $keys/$n.crt (run make-sb-keys.sh first)"
done
owner=$(cat "$keys/owner.guid" 2>/dev/null || echo 4e414352-0000-4000-8000-00000000000b)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/make-sb-vars.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if [[ -n "$vars_out" ]]; then
  [[ -x "$VIRT_FW_VARS" ]] || die "virt-fw-vars not found (scripts/install-deps.sh installs it)"
  [[ -f "$vars_in" ]] || die "no such file: $vars_in"
  "$VIRT_FW_VARS" --loglevel warning --input "$vars_in" --output "$tmp/vars.fd" \
    --set-pk "$owner" "$keys/PK.crt" --add-kek "$owner" "$keys/KEK.crt" \
    --add-db "$owner" "$keys/db.crt" --no-microsoft --secure-boot >/dev/null
  # Check what landed in the store.
  "$VIRT_FW_VARS" --input "$tmp/vars.fd" --print >"$tmp/print" 2>&1
  for v in PK KEK db SecureBootEnable; do
    grep -qw "$v" "$tmp/print" || die "variable $v missing from the generated store"
  done
  mkdir -p "$(dirname "$vars_out")"
  mv "$tmp/vars.fd" "$vars_out"
fi

if [[ -n "$sign_in" ]]; then
  [[ -f "$sign_in" ]] || die "no such file: $sign_in"
  [[ -s "$keys/db.key" ]] || die "no $keys/db.key"
  # sbsign warns about gaps between UKI sections ("gap in section table"): harmless.
  clock=()
  if [[ -n "$sign_time" ]]; then
    command -v faketime >/dev/null || die "--sign-time needs faketime (apt-get install faketime)"
    clock=(env TZ=UTC faketime "$(date -u -d "@$sign_time" '+%Y-%m-%d %H:%M:%S')")
  fi
  "${clock[@]}" sbsign --key "$keys/db.key" --cert "$keys/db.crt" --output "$tmp/signed.efi" "$sign_in" 2>"$tmp/sbsign.err" \
    || { cat "$tmp/sbsign.err" >&2; die "sbsign failed"; }
  sbverify --cert "$keys/db.crt" "$tmp/signed.efi" >/dev/null 2>&1 || die "sbverify rejects the signed image"
  mkdir -p "$(dirname "$sign_out")"
  mv "$tmp/signed.efi" "$sign_out"
fi
