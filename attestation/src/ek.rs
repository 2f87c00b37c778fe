//! Trusting a TPM's attestation key through its endorsement key certificate (QEMU vTPM: swtpm's
//! EK certificate, issued by a CA the operator runs, e.g. swtpm's local CA).
//!
//! The node sends, with its quote, the EK certificate and a TPM2_Certify of the AK signed by the
//! EK over the quote's qualifying data ([`crate::evidence::EkBinding`]). [`EkCertified`] checks:
//! the EK certificate chains to a configured root (signatures and validity, CA flags), the
//! certify structure is TPM-generated, names this AK (nameAlg || H(TPMT_PUBLIC), whose point is
//! the evidence's AK and whose attributes make it a restricted, fixed-TPM signing key) and
//! carries the quote's qualifying data, and the EK's signature over it verifies. The TPM only
//! certifies objects it holds, so the AK lives in the TPM the operator's CA vouched for.
//!
//! swtpm's EK is a decrypt-only key unless `swtpm_setup --allow-signing`: then it can sign the
//! certify directly, which spares the credential-activation round trip (TPM2_MakeCredential
//! needs RSA-OAEP or AES-CFB, which ring does not provide).

use crate::attest::{
    parse_certify, parse_ecc_public, parse_ecdsa, parse_quote, ALG_SHA256, ALG_SHA384,
    ATTR_FIXED_PARENT, ATTR_FIXED_TPM, ATTR_RESTRICTED, ATTR_SENSITIVE_DATA_ORIGIN, ATTR_SIGN,
};
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
        let mut certs = Vec::new();
        for c in CertificateDer::pem_slice_iter(pem) {
            let c = c.map_err(|e| format!("EK CA: {e}"))?;
            let (_, x) = parse_x509_certificate(c.as_ref()).map_err(|e| format!("EK CA: {e}"))?;
            if !x.is_ca() {
                return Err(format!("EK CA: {} is not a CA certificate", x.subject()));
            }
            certs.push(c.as_ref().to_vec());
        }
        if certs.is_empty() {
            return Err("EK CA: no certificate".into());
        }
        Ok(EkCertified { certs })
    }

    /// The EK certificate chains to a self-signed configured certificate; returns the EK's
    /// public key (SPKI subjectPublicKey bytes) and its subject for messages.
    fn chain(&self, ek_cert: &[u8], now: i64) -> Result<Vec<u8>, String> {
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
        let valid = |x: &X509Certificate<'_>| {
            now >= x.validity().not_before.timestamp() && now <= x.validity().not_after.timestamp()
        };
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
                return Ok(ek.public_key().subject_public_key.data.to_vec());
            }
            current = issuer.clone();
        }
        Err("EK certificate chain longer than 4".into())
    }
}

impl AkTrust for EkCertified {
    fn name(&self) -> &'static str {
        "EK certificate"
    }

    fn check(&self, ak_spki: &[u8], ev: &Evidence) -> Result<(), String> {
        let b = ev.ek.as_ref().ok_or(
            "the evidence has no EK binding (TPM without an EK certificate or signing EK)",
        )?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let ek_point = self.chain(&b.ek_certificate, now)?;
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
            return Err("the certified public area is not this AK".into());
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
        if area.name_alg != ALG_SHA256 {
            return Err(format!("AK nameAlg {:#06x} is not SHA-256", area.name_alg));
        }
        let mut name = ALG_SHA256.to_be_bytes().to_vec();
        name.extend_from_slice(
            ring::digest::digest(&ring::digest::SHA256, &b.ak_public_area).as_ref(),
        );
        // The certify: TPM-generated, about this AK, for this quote's qualifying data.
        let certify =
            parse_certify(&b.certify_attest).map_err(|e| format!("certify structure: {e}"))?;
        if certify.name != name {
            return Err("the EK certified another object, not this AK".into());
        }
        let quote = parse_quote(&ev.quote.attest).map_err(|e| format!("quote: {e}"))?;
        if certify.extra_data != quote.extra_data {
            return Err("the certify is not for this quote's qualifying data".into());
        }
        let sig = parse_ecdsa(&b.certify_signature, ALG_SHA384, 48)
            .map_err(|e| format!("certify signature: {e}"))?;
        UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, &ek_point)
            .verify(&b.certify_attest, &sig)
            .map_err(|_| "the EK's signature over the certify does not verify".to_string())
    }
}
