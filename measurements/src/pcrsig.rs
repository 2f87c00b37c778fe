//! systemd's signed PCR policies (`systemd-measure sign`, the UKI's `.pcrsig`, used by
//! `systemd-cryptenroll --tpm2-public-key`): for each boot phase, the TPM2_PolicyPCR digest of
//! PCR 11's expected value, signed with RSA so a sealed secret survives image updates signed by
//! the same key. Checked byte for byte against systemd-measure (RSA PKCS#1 v1.5 is
//! deterministic).

use crate::sign::{RsaSigner, SignError};
use base64::Engine;
use nacre_eventlog::alg::{AlgError, HashAlg};
use nacre_eventlog::runtime::{Phase, RuntimeEvent};

/// TPM_CC_PolicyPCR.
const TPM_CC_POLICY_PCR: u32 = 0x0000_017f;

/// The policy digest after `TPM2_PolicyPCR` on a fresh SHA-256 policy session selecting `pcrs`
/// of `bank` with the given values: H(0^32 || TPM_CC_PolicyPCR || TPML_PCR_SELECTION ||
/// H(values)).
pub fn policy_pcr_digest(bank: HashAlg, pcrs: &[(u32, &[u8])]) -> Vec<u8> {
    let sha = |d: &[u8]| {
        ring::digest::digest(&ring::digest::SHA256, d)
            .as_ref()
            .to_vec()
    };
    let mut select = [0u8; 3];
    let mut values = Vec::new();
    let mut sorted: Vec<_> = pcrs.to_vec();
    sorted.sort_by_key(|(p, _)| *p);
    for (pcr, v) in &sorted {
        if let Some(b) = select.get_mut((*pcr / 8) as usize) {
            *b |= 1 << (pcr % 8);
        }
        values.extend_from_slice(v);
    }
    let mut msg = vec![0u8; 32];
    msg.extend_from_slice(&TPM_CC_POLICY_PCR.to_be_bytes());
    msg.extend_from_slice(&1u32.to_be_bytes()); // one TPMS_PCR_SELECTION
    msg.extend_from_slice(&bank.id().to_be_bytes());
    msg.push(3);
    msg.extend_from_slice(&select);
    msg.extend_from_slice(&sha(&values));
    sha(&msg)
}

/// The phase paths systemd signs by default, each with the PCR 11 value it implies:
/// "enter-initrd", "enter-initrd:leave-initrd", ... extending `pcr11_stub` (PCR 11 after the
/// stub's measurements) with nacre-init's phase events.
pub fn phase_values(bank: HashAlg, pcr11_stub: &[u8]) -> Result<Vec<(String, Vec<u8>)>, AlgError> {
    let mut out = Vec::new();
    let mut value = pcr11_stub.to_vec();
    let mut path: Vec<&str> = Vec::new();
    for phase in Phase::ALL {
        let ev = RuntimeEvent::Phase(phase);
        value = bank.extend(&value, &ev.digest(bank)?)?;
        path.push(phase.word());
        out.push((path.join(":"), value.clone()));
    }
    Ok(out)
}

/// The policyRef of nacre's TPM-sealed state disk (`nacre_statedisk::tpm::POLICY_REF`): its
/// signatures sign `pol || ref`, so systemd's (empty policyRef) never open the disk.
pub const STATE_DISK_POLICY_REF: &[u8] = b"nacre state disk";

/// The `.pcrsig` JSON: `{"<bank>": [{"pcrs": [11], "pkfp": ..., "pol": ..., "sig": ...}, ...]}`.
pub fn sign_pcr11(
    signer: &RsaSigner,
    bank: HashAlg,
    phases: &[(String, Vec<u8>)],
) -> Result<serde_json::Value, SignError> {
    sign_pcr11_with_ref(signer, bank, phases, b"")
}

/// [`sign_pcr11`] for `PolicyAuthorize` with a policyRef: each `sig` signs `pol || policy_ref`
/// (the TPM's aHash), in the same JSON shape.
pub fn sign_pcr11_with_ref(
    signer: &RsaSigner,
    bank: HashAlg,
    phases: &[(String, Vec<u8>)],
    policy_ref: &[u8],
) -> Result<serde_json::Value, SignError> {
    let pkfp = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        signer.public_pkcs1(),
    ));
    let mut entries = Vec::new();
    for (_phase, value) in phases {
        let pol = policy_pcr_digest(bank, &[(11, value)]);
        let mut message = pol.clone();
        message.extend_from_slice(policy_ref);
        let sig = signer.sign(&message)?;
        entries.push(serde_json::json!({
            "pcrs": [11],
            "pkfp": pkfp,
            "pol": hex::encode(&pol),
            "sig": base64::engine::general_purpose::STANDARD.encode(sig),
        }));
    }
    Ok(serde_json::json!({ bank.name(): entries }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_digest_matches_systemd_measure_252() {
        // systemd-measure 252 `sign --phase=enter-initrd` printed pol=dc98d8fc... for this PCR 11.
        let pcr = hex::decode("3918a47bf4d32b1216d09b0a8819d7275b30439d8ca33dcb687d93bd80250345")
            .unwrap();
        assert_eq!(
            hex::encode(policy_pcr_digest(HashAlg::Sha256, &[(11, &pcr)])),
            "dc98d8fc595b8900d6277ce4c6bca23e0dde8b0cfebe8507d630d6c960c0a394"
        );
    }
}
