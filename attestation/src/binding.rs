//! How each variant's platform binds the TPM's attestation key (AK) to the hardware, and the
//! evidence it provides for that: the per-variant policy ([`mechanism`], [`BindingPolicy`]).
//!
//! A TPM quote proves PCRs only as far as its AK is the TPM's. On a confidential VM the SNP
//! report's or TD quote's REPORT_DATA names the AK, but the guest chooses what it names: any
//! guest, with root, can bind a software AK and sign a quote of invented PCRs. So on every
//! cloud variant the AK must be bound by what the platform provides (Azure: the HCL report;
//! GCE: Google's AK certificate; AWS: the NitroTPM attestation document); `qemu-tdx` keeps
//! the REPORTDATA binding because its verdict rests on MRTD/RTMRs; `qemu-snp` (the host's
//! swtpm, no SVSM vTPM) is refused unless the operator opts in per variant. See `docs/cvm.md`.

/// The platform's evidence that binds the AK (sent in [`crate::Evidence::binding`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AkBinding {
    /// Azure's paravisor (HCL): the vTPM NV index 0x01400001 as read (HCL header, the SEV-SNP
    /// report, the IGVM request data with the runtime data JSON that carries `HCLAkPub`).
    AzureHcl {
        #[serde(with = "hex::serde")]
        hcl_report: Vec<u8>,
    },
    /// GCE: the AK certificate Google's EK/AK CA issued for the vTPM's AK (NV 0x01c10002 for
    /// the ECC AK, 0x01c10000 for the RSA AK), DER.
    GceAkCert {
        #[serde(with = "hex::serde")]
        certificate: Vec<u8>,
    },
    /// AWS NitroTPM: an attestation document (CBOR/COSE_Sign1) that names the AK
    /// ([`crate::nitro`], helper C2).
    NitroDocument {
        #[serde(with = "hex::serde")]
        document: Vec<u8>,
    },
}

use crate::evidence::{p256_point, Evidence, Platform};
use crate::gce::{GceRoots, InstanceInfo};
use nacre_measure::manifest::Manifest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// What binds the AK of a variant's TPM to its hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// QEMU's swtpm: the EK certificate of the operator's CA, with credential activation
    /// ([`crate::verify::QemuVtpmVerifier`]'s [`crate::verify::AkTrust`]; no hardware).
    EkCredential,
    /// Azure: the HCL report (SNP report whose REPORT_DATA carries the digest of the runtime
    /// data holding `HCLAkPub`), [`crate::azure`].
    AzureHcl,
    /// GCE: the AK certificate of Google's EK/AK CA, [`crate::gce`].
    GceAkCert,
    /// AWS: the NitroTPM attestation document, signed by the Nitro hypervisor's PKI.
    NitroDocument,
    /// TDX where every decision rests on MRTD and the RTMRs (image in RTMR[1]/[2], phase and
    /// cluster id in RTMR[3]): the TPM adds nothing the TD quote does not already prove, so the
    /// AK is only named in REPORTDATA. A software AK gains an attacker nothing there.
    TdxRegisters,
    /// Only the guest's own REPORT_DATA (qemu-snp with the host's swtpm: no SVSM vTPM): a
    /// guest chooses its AK, so this is refused unless the operator opts in per variant.
    GuestBoundReportData,
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mechanism::EkCredential => "the EK certificate with credential activation",
            Mechanism::AzureHcl => "Azure's HCL report (HCLAkPub in the SNP report's runtime data)",
            Mechanism::GceAkCert => "GCE's AK certificate (Google EK/AK CA)",
            Mechanism::NitroDocument => "the NitroTPM attestation document",
            Mechanism::TdxRegisters => "the TD quote's REPORTDATA, every decision on MRTD/RTMRs",
            Mechanism::GuestBoundReportData => "nothing but the guest's own REPORT_DATA",
        })
    }
}

/// The mechanism each manifest variant (`mkosi.conf.d/20-*.conf`) must bind its AK with;
/// `None` for a variant this policy does not know (refused).
pub fn mechanism(variant: &str) -> Option<Mechanism> {
    Some(match variant {
        "qemu-vtpm" => Mechanism::EkCredential,
        "qemu-snp" => Mechanism::GuestBoundReportData,
        "qemu-tdx" => Mechanism::TdxRegisters,
        "aws-sev-snp" => Mechanism::NitroDocument,
        "azure-sev-snp" => Mechanism::AzureHcl,
        "gcp-sev-snp" | "gcp-tdx" => Mechanism::GceAkCert,
        _ => return None,
    })
}

/// The key service's AK binding policy for confidential VMs.
#[derive(Debug, Clone, Default)]
pub struct BindingPolicy {
    /// Variants whose AK only the guest's REPORT_DATA binds, accepted anyway (`nacre-keyservice
    /// serve --accept-guest-bound-ak VARIANT`); each acceptance carries a warning.
    pub accept_guest_bound: BTreeSet<String>,
    /// Google's CA certificates GCE AK certificates must chain to.
    pub gce_roots: GceRoots,
}

/// The platform's binding of the AK, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    AzureHcl,
    GceAkCert(Option<InstanceInfo>),
    NitroDocument,
}

impl BindingPolicy {
    /// Verify the evidence's [`AkBinding`] (Azure: the HCL report must hold `snp_report`, the
    /// evidence's raw SEV-SNP report, whose chain the caller verified).
    pub fn verify_binding(
        &self,
        ev: &Evidence,
        snp_report: Option<&[u8]>,
        now: u64,
    ) -> Result<Option<Verified>, String> {
        match &ev.binding {
            None => Ok(None),
            Some(AkBinding::AzureHcl { hcl_report }) => {
                let Some(report) = snp_report else {
                    return Err("an Azure HCL report binds SEV-SNP evidence only".into());
                };
                crate::azure::check_binding(hcl_report, report, &ev.ak_public)
                    .map_err(|e| e.to_string())?;
                Ok(Some(Verified::AzureHcl))
            }
            Some(AkBinding::GceAkCert { certificate }) => {
                crate::gce::verify_ak_cert(certificate, &ev.ak_public, &self.gce_roots, now)
                    .map(|i| Some(Verified::GceAkCert(i)))
                    .map_err(|e| e.to_string())
            }
            Some(AkBinding::NitroDocument { .. }) => Err(
                "a NitroTPM attestation document is verified with the SEV-SNP verifier's Nitro roots and sha384 manifests (crate::nitro, SevSnpVerifier::with_nitro), which this verifier does not have"
                    .into(),
            ),
        }
    }

    /// The manifests (already of the evidence's platform) whose variant's [`Mechanism`] this
    /// evidence satisfies, and the warnings the caller logs for each acceptance that rests on
    /// an opt-in. `verified`: what [`BindingPolicy::verify_binding`] returned. None left: the
    /// refusal names, per variant, what it needs and what the evidence has.
    pub fn admit(
        &self,
        manifests: Vec<Manifest>,
        ev: &Evidence,
        verified: &Result<Option<Verified>, String>,
    ) -> Result<(Vec<Manifest>, Vec<String>), String> {
        let tdx = matches!(ev.platform, Platform::Tdx { .. });
        let has = match verified {
            Ok(None) => "no platform binding".to_string(),
            Ok(Some(Verified::AzureHcl)) => "a verified Azure HCL report".into(),
            Ok(Some(Verified::GceAkCert(_))) => "a verified GCE AK certificate".into(),
            Ok(Some(Verified::NitroDocument)) => "a verified NitroTPM document".into(),
            Err(e) => format!("a binding that does not verify: {e}"),
        };
        let mut kept = Vec::new();
        let mut why = Vec::new();
        let mut warnings = Vec::new();
        for m in manifests {
            let variant = m.image.variant.clone();
            let Some(mech) = mechanism(&variant) else {
                why.push(format!("variant {variant}: no AK binding policy for it"));
                continue;
            };
            let ok = match (mech, verified) {
                (Mechanism::AzureHcl, Ok(Some(Verified::AzureHcl))) => true,
                (Mechanism::GceAkCert, Ok(Some(Verified::GceAkCert(_)))) => true,
                (Mechanism::NitroDocument, Ok(Some(Verified::NitroDocument))) => true,
                (Mechanism::TdxRegisters, Ok(None)) => tdx,
                (Mechanism::GuestBoundReportData, Ok(None)) => {
                    if self.accept_guest_bound.contains(&variant) {
                        warnings.push(format!(
                            "variant {variant}: the AK is bound only by the guest's own REPORT_DATA (a guest may bind a software AK); accepted by --accept-guest-bound-ak {variant}"
                        ));
                        true
                    } else {
                        why.push(format!(
                            "variant {variant}: its AK is bound by nothing but the guest's own REPORT_DATA (no SVSM vTPM: a guest can bind a software AK); refused unless the operator accepts it with --accept-guest-bound-ak {variant}"
                        ));
                        continue;
                    }
                }
                _ => false,
            };
            if ok {
                if let Ok(Some(Verified::GceAkCert(Some(info)))) = verified {
                    if kept.is_empty() {
                        warnings.push(format!("AK certified by Google's EK/AK CA for {info}"));
                    }
                }
                kept.push(m);
            } else {
                why.push(format!(
                    "variant {variant} needs {mech}, the evidence has {has}"
                ));
            }
        }
        if kept.is_empty() {
            return Err(why.join("; "));
        }
        Ok((kept, warnings))
    }
}

/// What was wrong with the quote's signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The AK or the TPMT_SIGNATURE cannot be read ([`crate::verify::Check::QuoteFormat`]).
    #[error("{0}")]
    Format(String),
    /// It does not verify ([`crate::verify::Check::QuoteSignature`]).
    #[error("{0}")]
    Invalid(String),
}

/// TPM_ALG_RSASSA.
const ALG_RSASSA: u16 = 0x0014;

/// Verify the AK's TPMT_SIGNATURE over `attest`: ECDSA P-256/SHA-256 for a P-256 AK (the
/// AKs nacre creates, GCE's ECC AK), RSASSA-PKCS1-v1.5/SHA-256 for an RSA AK of 2048 bits or
/// more (Azure's `HCLAkPub`, GCE's RSA AK). ring does both.
pub fn verify_ak_signature(
    ak_spki: &[u8],
    attest: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    use ring::signature as sig;
    let invalid =
        || SignatureError::Invalid("the AK's signature over TPMS_ATTEST does not verify".into());
    if let Some(point) = p256_point(ak_spki) {
        let rs = crate::attest::parse_ecdsa_signature(signature)
            .map_err(|e| SignatureError::Format(format!("TPMT_SIGNATURE: {e}")))?;
        return sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
            .verify(attest, &rs)
            .map_err(|_| invalid());
    }
    let rsa_key = rsa_public_key(ak_spki).ok_or_else(|| {
        SignatureError::Format("AK public key is neither a P-256 nor an RSA SPKI".into())
    })?;
    let s = parse_rsassa_signature(signature).map_err(SignatureError::Format)?;
    sig::UnparsedPublicKey::new(&sig::RSA_PKCS1_2048_8192_SHA256, rsa_key)
        .verify(attest, s)
        .map_err(|_| invalid())
}

/// The RSAPublicKey DER inside an rsaEncryption SPKI.
fn rsa_public_key(spki: &[u8]) -> Option<&[u8]> {
    use crate::x509util::der_tlv;
    let (outer, rest) = der_tlv(spki)?;
    if outer.tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let (alg, rest) = der_tlv(outer.value)?;
    let (oid, _) = der_tlv(alg.value)?;
    const RSA_ENCRYPTION: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    if alg.tag != 0x30 || oid.tag != 0x06 || oid.value != RSA_ENCRYPTION {
        return None;
    }
    let (bits, _) = der_tlv(rest)?;
    if bits.tag != 0x03 || bits.value.first() != Some(&0) {
        return None;
    }
    Some(&bits.value[1..])
}

/// TPMT_SIGNATURE { sigAlg = RSASSA, hash = SHA-256, TPM2B_PUBLIC_KEY_RSA } → the signature.
fn parse_rsassa_signature(b: &[u8]) -> Result<&[u8], String> {
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|s| u16::from_be_bytes([s[0], s[1]]))
            .ok_or_else(|| format!("TPMT_SIGNATURE: truncated at byte {o}"))
    };
    let alg = u16_at(0)?;
    if alg != ALG_RSASSA {
        return Err(format!(
            "TPMT_SIGNATURE: signature algorithm {alg:#06x} is not RSASSA (0x0014) for an RSA AK"
        ));
    }
    let hash = u16_at(2)?;
    if hash != crate::attest::ALG_SHA256 {
        return Err(format!(
            "TPMT_SIGNATURE: hash {hash:#06x} is not SHA-256 (0x000b)"
        ));
    }
    let n = usize::from(u16_at(4)?);
    let s = b
        .get(6..6 + n)
        .ok_or_else(|| "TPMT_SIGNATURE: truncated RSA signature".to_string())?;
    if b.len() != 6 + n {
        return Err(format!(
            "TPMT_SIGNATURE: {} trailing bytes",
            b.len() - 6 - n
        ));
    }
    Ok(s)
}

/// Marshal an RSASSA/SHA-256 TPMT_SIGNATURE (tests, and tools that hold a raw signature).
pub fn rsassa_tpmt_signature(signature: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(6 + signature.len());
    v.extend_from_slice(&ALG_RSASSA.to_be_bytes());
    v.extend_from_slice(&crate::attest::ALG_SHA256.to_be_bytes());
    v.extend_from_slice(&(signature.len() as u16).to_be_bytes());
    v.extend_from_slice(signature);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_manifest_variant_has_a_mechanism() {
        // The variants mkosi builds (mkosi.conf.d/20-*.conf).
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../mkosi.conf.d");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if let Some(v) = name
                .strip_prefix("20-")
                .and_then(|s| s.strip_suffix(".conf"))
            {
                assert!(
                    mechanism(v).is_some(),
                    "variant {v} has no AK binding policy"
                );
                n += 1;
            }
        }
        assert!(n >= 7, "{n} variants");
        assert_eq!(mechanism("azure-sev-snp"), Some(Mechanism::AzureHcl));
        assert_eq!(mechanism("gcp-tdx"), Some(Mechanism::GceAkCert));
        assert_eq!(mechanism("my-sev-snp"), None);
    }

    #[test]
    fn rsassa_signature_round_trip_and_refusals() {
        let t = rsassa_tpmt_signature(&[9; 256]);
        assert_eq!(parse_rsassa_signature(&t).unwrap(), &[9; 256][..]);
        let mut bad = t.clone();
        bad[1] = 0x18;
        assert!(parse_rsassa_signature(&bad).unwrap_err().contains("RSASSA"));
        let mut bad = t.clone();
        bad[3] = 0x0c;
        assert!(parse_rsassa_signature(&bad)
            .unwrap_err()
            .contains("SHA-256"));
        assert!(parse_rsassa_signature(&t[..100]).is_err());
        let mut long = t;
        long.push(0);
        assert!(parse_rsassa_signature(&long)
            .unwrap_err()
            .contains("trailing"));
    }

    #[test]
    fn rsa_public_key_of_spki() {
        let spki = crate::x509util::rsa_spki(&[0xc1; 256], &[1, 0, 1]);
        assert!(rsa_public_key(&spki).is_some());
        let p256 = crate::evidence::p256_spki(&[1; 32], &[2; 32]).unwrap();
        assert!(rsa_public_key(&p256).is_none());
        assert!(matches!(
            verify_ak_signature(&[1, 2, 3], b"x", b"y"),
            Err(SignatureError::Format(_))
        ));
    }
}
