#!/usr/bin/env bash
# Manufacture a software TPM the way a real one comes from its vendor: swtpm state with an EK
# and an EK certificate issued by a local CA (swtpm_localca, state in CA_DIR, made on first use).
# The key service trusts TPMs through that CA (nacre-keyservice serve --ek-ca CA_DIR/ek-ca.pem)
# and proves each node's AK is in the TPM by credential activation with the EK. The EK is the TCG
# default one (restricted, decrypt-only: no --allow-signing): a signing EK could be made to sign
# a forged TPM2_Certify, and an unrestricted one to compute the ECDH secret of any credential.
#
# Usage: make-tpm.sh TPM_DIR CA_DIR
#   TPM_DIR  the TPM's state (created; an existing TPM there is kept as it is)
#   CA_DIR   the operator's EK CA; CA_DIR/ek-ca.pem is its root + issuer certificate bundle
set -euo pipefail
tpm=${1:?usage: make-tpm.sh TPM_DIR CA_DIR} ca=${2:?usage: make-tpm.sh TPM_DIR CA_DIR}
mkdir -p "$tpm" "$ca"
tpm=$(cd "$tpm" && pwd) ca=$(cd "$ca" && pwd)
printf 'statedir = %s\nsigningkey = %s/signkey.pem\nissuercert = %s/issuercert.pem\ncertserial = %s/certserial\n' \
  "$ca" "$ca" "$ca" "$ca" >"$ca/localca.conf"
printf 'create_certs_tool= /usr/bin/swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha256\n' \
  "$ca/localca.conf" >"$ca/swtpm_setup.conf"
# A TPM made by an earlier version of this script has a signing EK, which the key service no
# longer trusts: it is manufactured anew (a new EK and AK: the node is a new node to the service).
if [[ -f "$tpm/tpm2-00.permall" && ! -f "$tpm/ek-tcg-default" ]]; then
  echo "make-tpm.sh: $tpm held a TPM with a signing EK (--allow-signing); making a new one" >&2
  rm -f "$tpm"/tpm2-00.* "$tpm"/.lock
fi
if [[ ! -f "$tpm/tpm2-00.permall" ]]; then
  swtpm_setup --tpm2 --tpmstate "$tpm" --pcr-banks sha256 --create-ek-cert \
    --config "$ca/swtpm_setup.conf" >/dev/null
  touch "$tpm/ek-tcg-default"
fi
cat "$ca/swtpm-localca-rootca-cert.pem" "$ca/issuercert.pem" >"$ca/ek-ca.pem"
