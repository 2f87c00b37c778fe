//! Trusting a TPM's attestation key through its endorsement key certificate (QEMU vTPM: swtpm's
//! EK certificate, issued by a CA the operator runs, e.g. swtpm's local CA), by credential
//! activation.
//!
//! The node sends, with its quote, the EK certificate and the AK's public area
//! ([`crate::evidence::EkBinding`]). [`EkCertified`] checks that the EK certificate chains to a
//! configured root (signatures and validity, CA flags), is an EK certificate (EKU
//! tcg-kp-EKCertificate 2.23.133.8.1; a subjectAltName directoryName with the TPM manufacturer,
//! model and version, 2.23.133.2.1/.2/.3) for an ECC P-256/P-384 key, and that the AK's public
//! area is this AK, a restricted fixed-TPM signing key with SHA-256 names whose ADMIN role
//! cannot be authorized by policy. That does not yet prove the AK is in that TPM: the acceptance
//! is *pending* ([`crate::credential::Pending`]) until the node returns the credential the
//! verifier encrypted to the EK for the AK's name (TPM2_MakeCredential here,
//! TPM2_ActivateCredential on the node, [`crate::credential`]).
//!
//! The EK must be the TCG default (restricted, decrypt-only) one: an EK made with
//! `swtpm_setup --allow-signing` is unrestricted, so anyone with TPM access can sign with it or
//! compute its ECDH secrets (TPM2_ECDH_ZGen) and forge either binding. The operator's CA must only
//! have certified default-template EKs (scripts/lib/make-tpm.sh); the old TPM2_Certify binding
//! is refused.
//!
//! RSA EKs are refused (ring cannot do the RSA-OAEP encryption their credentials need).

use crate::attest::{
    parse_ecc_public, ALG_SHA256, ATTR_FIXED_PARENT, ATTR_FIXED_TPM, ATTR_RESTRICTED,
    ATTR_SENSITIVE_DATA_ORIGIN, ATTR_SIGN,
};
use crate::credential::{EkPublic, Pending};
use crate::evidence::{p256_point, Evidence};
use crate::verify::AkTrust;
use ring::signature::{self, UnparsedPublicKey};
use x509_parser::prelude::*;

/// The operator's EK CA: roots (self-signed) and intermediates, DER.
#[derive(Debug, Clone)]
pub struct EkCertified {
    certs: Vec<Vec<u8>>,
}

fn algorithm(oid: &str) -> Option<&'static dyn signature::VerificationAlgorithm> {
    Some(match oid {
        "1.2.840.113549.1.1.11" => &signature::RSA_PKCS1_2048_8192_SHA256,
        "1.2.840.113549.1.1.12" => &signature::RSA_PKCS1_2048_8192_SHA384,
        "1.2.840.113549.1.1.13" => &signature::RSA_PKCS1_2048_8192_SHA512,
        "1.2.840.10045.4.3.2" => &signature::ECDSA_P256_SHA256_ASN1,
        "1.2.840.10045.4.3.3" => &signature::ECDSA_P384_SHA384_ASN1,
        _ => return None,
    })
}

fn signed_by(child: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    let Some(alg) = algorithm(&child.signature_algorithm.algorithm.to_id_string()) else {
        return false;
    };
    child.issuer() == issuer.subject()
        && UnparsedPublicKey::new(alg, &issuer.public_key().subject_public_key.data)
            .verify(child.tbs_certificate.as_ref(), &child.signature_value.data)
            .is_ok()
}

impl EkCertified {
    /// CA certificates, PEM (any number, roots and intermediates).
    pub fn from_pem(pem: &[u8]) -> Result<EkCertified, String> {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut der = Vec::new();
        for c in CertificateDer::pem_slice_iter(pem) {
            der.push(c.map_err(|e| format!("EK CA: {e}"))?.as_ref().to_vec());
        }
        EkCertified::from_der(der)
    }

    /// CA certificates, DER.
    pub fn from_der(der: Vec<Vec<u8>>) -> Result<EkCertified, String> {
        let mut certs = Vec::new();
        for c in der {
            let (_, x) = parse_x509_certificate(&c).map_err(|e| format!("EK CA: {e}"))?;
            if !x.is_ca() {
                return Err(format!("EK CA: {} is not a CA certificate", x.subject()));
            }
            certs.push(c);
        }
        if certs.is_empty() {
            return Err("EK CA: no certificate".into());
        }
        Ok(EkCertified { certs })
    }

    /// The EK certificate chains to a self-signed configured certificate and is an EK
    /// certificate ([`check_ek_profile`]); returns the EK's public key.
    pub fn chain(&self, ek_cert: &[u8], now: i64) -> Result<EkPublic, String> {
        let (rest, ek) = parse_x509_certificate(ek_cert)
            .map_err(|e| format!("EK certificate does not parse: {e}"))?;
        if !rest.is_empty() {
            return Err("EK certificate: trailing bytes".into());
        }
        let cas: Vec<X509Certificate<'_>> = self
            .certs
            .iter()
            .filter_map(|c| parse_x509_certificate(c).ok().map(|(_, x)| x))
            .collect();
        let valid = |x: &X509Certificate<'_>| crate::x509util::valid_at(x, now);
        if !valid(&ek) {
            return Err("EK certificate is not valid now".into());
        }
        let mut current = ek.clone();
        for _ in 0..4 {
            let Some(issuer) = cas.iter().find(|ca| signed_by(&current, ca)) else {
                return Err(format!(
                    "EK certificate chain: nothing configured signed {} (issuer {})",
                    current.subject(),
                    current.issuer()
                ));
            };
            if !valid(issuer) {
                return Err(format!("EK CA {} is not valid now", issuer.subject()));
            }
            if issuer.subject() == issuer.issuer() && signed_by(issuer, issuer) {
                check_ek_profile(&ek)?;
                return ek_public(&ek);
            }
            current = issuer.clone();
        }
        Err("EK certificate chain longer than 4".into())
    }
}

/// tcg-kp-EKCertificate.
pub const OID_TCG_KP_EK_CERTIFICATE: &str = "2.23.133.8.1";
/// tcg-at-tpmManufacturer, tcg-at-tpmModel, tcg-at-tpmVersion.
pub const OID_TPM_MANUFACTURER: &str = "2.23.133.2.1";
pub const OID_TPM_MODEL: &str = "2.23.133.2.2";
pub const OID_TPM_VERSION: &str = "2.23.133.2.3";

/// What the TPM's EK certificate says about the TPM (its subjectAltName directoryName).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmIdentity {
    pub manufacturer: String,
    pub model: String,
    pub version: String,
}

/// The TCG EK Credential Profile's marks of an EK certificate: the extended key usage
/// tcg-kp-EKCertificate and a subjectAltName directoryName naming the TPM's manufacturer, model
/// and version. Returns that identity.
pub fn check_ek_profile(ek: &X509Certificate<'_>) -> Result<TpmIdentity, String> {
    let mut eku_ok = false;
    let mut identity = None;
    for ext in ek.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::ExtendedKeyUsage(eku) => {
                eku_ok = eku
                    .other
                    .iter()
                    .any(|o| o.to_id_string() == OID_TCG_KP_EK_CERTIFICATE);
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if let GeneralName::DirectoryName(dn) = name {
                        let get = |oid: &str| {
                            dn.iter_attributes()
                                .find(|a| a.attr_type().to_id_string() == oid)
                                .and_then(|a| a.as_str().ok().map(str::to_owned))
                        };
                        if let (Some(manufacturer), Some(model), Some(version)) = (
                            get(OID_TPM_MANUFACTURER),
                            get(OID_TPM_MODEL),
                            get(OID_TPM_VERSION),
                        ) {
                            identity = Some(TpmIdentity {
                                manufacturer,
                                model,
                                version,
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if !eku_ok {
        return Err(format!(
            "EK certificate {} lacks the extended key usage tcg-kp-EKCertificate ({OID_TCG_KP_EK_CERTIFICATE})",
            ek.subject()
        ));
    }
    identity.ok_or_else(|| {
        format!(
            "EK certificate {} has no subjectAltName directoryName with the TPM manufacturer, model and version ({OID_TPM_MANUFACTURER}/.2/.3)",
            ek.subject()
        )
    })
}

fn ek_public(ek: &X509Certificate<'_>) -> Result<EkPublic, String> {
    let spki = ek.public_key();
    let curve = crate::x509util::spki_curve(spki);
    EkPublic::from_spki(
        &spki.algorithm.algorithm.to_id_string(),
        curve.as_deref(),
        &spki.subject_public_key.data,
    )
    .map_err(|e| format!("EK certificate {}: {e}", ek.subject()))
}

/// TPMA_OBJECT adminWithPolicy.
const ATTR_ADMIN_WITH_POLICY: u32 = 1 << 7;

impl EkCertified {
    /// Everything but the activation: the EK certificate, the AK's public area. Returns the
    /// challenge to send and what must come back ([`Pending`]).
    pub fn challenge(&self, ak_spki: &[u8], ev: &Evidence) -> Result<Pending, String> {
        let b = ev
            .ek
            .as_ref()
            .ok_or("the evidence has no EK binding (the TPM has no ECC EK at 0x81010016 with a certificate; RSA-only EKs are not supported: their credentials need RSA-OAEP, which ring lacks)")?;
        if !b.certify_attest.is_empty() || !b.certify_signature.is_empty() {
            return Err("the evidence binds the AK by an EK-signed TPM2_Certify: a signing EK is not trusted (anyone with access to the TPM can make it sign a forged certify); the AK must be proven by credential activation with a decrypt-only EK".into());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let ek = self.chain(&b.ek_certificate, now)?;
        // The AK's public area: this AK, a restricted fixed-TPM signing key.
        let area =
            parse_ecc_public(&b.ak_public_area).map_err(|e| format!("AK public area: {e}"))?;
        let point = p256_point(ak_spki).ok_or("AK is not a P-256 key")?;
        let mut want = vec![0x04];
        for c in [&area.x, &area.y] {
            want.extend(std::iter::repeat_n(0, 32usize.saturating_sub(c.len())));
            want.extend_from_slice(c);
        }
        if want != point {
            return Err("the AK public area is not this AK".into());
        }
        let need = ATTR_FIXED_TPM
            | ATTR_FIXED_PARENT
            | ATTR_SENSITIVE_DATA_ORIGIN
            | ATTR_RESTRICTED
            | ATTR_SIGN;
        if area.attributes & need != need {
            return Err(format!(
                "AK attributes {:#010x} lack fixedTPM/fixedParent/sensitiveDataOrigin/restricted/sign",
                area.attributes
            ));
        }
        // A public area loaded alone (TPM2_LoadExternal) has no authValue; with an authPolicy
        // it could still be authorized in the ADMIN role by a policy and activate a credential
        // for a key that is not in the TPM. Our AK has neither.
        if area.attributes & ATTR_ADMIN_WITH_POLICY != 0
            || b.ak_public_area.get(8..10) != Some(&[0, 0][..])
        {
            return Err("the AK has an authorization policy (adminWithPolicy or a non-empty authPolicy): its ADMIN role could be satisfied for a public-only copy".into());
        }
        if area.name_alg != ALG_SHA256 {
            return Err(format!("AK nameAlg {:#06x} is not SHA-256", area.name_alg));
        }
        let name = crate::credential::object_name(&b.ak_public_area).map_err(|e| e.to_string())?;
        Pending::new(&ek, &name, ak_spki).map_err(|e| e.to_string())
    }
}

impl AkTrust for EkCertified {
    fn name(&self) -> &'static str {
        "EK certificate"
    }

    /// Never accepts on its own: an EK certificate proves nothing about the AK until the node
    /// activates a credential ([`AkTrust::check_pending`]); a caller that cannot run the
    /// activation refuses.
    fn check(&self, ak_spki: &[u8], ev: &Evidence) -> Result<(), String> {
        self.challenge(ak_spki, ev)?;
        Err("the AK is trusted through the EK only after credential activation, which this caller does not run".into())
    }

    fn check_pending(&self, ak_spki: &[u8], ev: &Evidence) -> Result<Option<Pending>, String> {
        self.challenge(ak_spki, ev).map(Some)
    }
}
