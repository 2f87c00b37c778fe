//! The evidence a node presents.

use nacre_eventlog::CelRecord;
use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};

/// The platform-specific part of the evidence.
///
/// Each is verified by its own verifier ([`crate::verify::QemuVtpmVerifier`],
/// [`crate::verify::SevSnpVerifier`], [`crate::verify::TdxVerifier`]; [`crate::verify::ByPlatform`]
/// routes them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Platform {
    /// A TPM emulated by the host (swtpm behind QEMU): nothing beyond the quote; the AK is
    /// trusted through [`crate::verify::AkTrust`].
    QemuVtpm,
    /// An AMD SEV-SNP attestation report whose REPORT_DATA is
    /// [`crate::snp::report_data`](nonce, AK, TLS key), and the key that signed it as the
    /// host's certificate table gave it: a VCEK or a VLEK (DER; the report's SIGNING_KEY says
    /// which), or empty when the host gives none (the verifier then looks it up in its store).
    SevSnp {
        #[serde(with = "hex::serde")]
        report: Vec<u8>,
        #[serde(with = "hex::serde", default)]
        vcek: Vec<u8>,
    },
    /// An Intel TDX DCAP quote (v4 or v5, ECDSA P-256, [`crate::tdx::Quote`]) whose REPORTDATA
    /// is [`crate::snp::report_data`](nonce, AK, TLS key), verified by
    /// [`crate::verify::TdxVerifier`] against the operator's offline collateral and Intel's SGX
    /// Root CA. The quote carries its PCK certificate chain (certification data type 5).
    Tdx {
        #[serde(with = "hex::serde")]
        quote: Vec<u8>,
    },
}

/// A TPM2_Quote result, as the TPM marshalled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// TPMS_ATTEST (the signed bytes).
    #[serde(with = "hex::serde")]
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE over `attest`.
    #[serde(with = "hex::serde")]
    pub signature: Vec<u8>,
}

/// Everything a node sends to be attested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub platform: Platform,
    pub quote: Quote,
    /// The attestation key's public key, SubjectPublicKeyInfo DER: P-256 (nacre's AK, GCE's
    /// ECC AK) or RSA 2048+ (Azure's `HCLAkPub`, GCE's RSA AK).
    #[serde(with = "hex::serde")]
    pub ak_public: Vec<u8>,
    /// The TCG PC Client crypto-agile firmware event log (binary_bios_measurements).
    #[serde(with = "hex::serde")]
    pub firmware_log: Vec<u8>,
    /// nacre-init's runtime Canonical Event Log records, in order.
    pub runtime_log: Vec<CelRecord>,
    /// The AK certified by the TPM's endorsement key, with the EK's certificate: how a QEMU
    /// vTPM's AK is trusted through the operator's EK CA (absent when the TPM has no EK
    /// certificate or no signing EK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek: Option<EkBinding>,
    /// What the cloud platform provides to bind the AK to the hardware (Azure's HCL report,
    /// GCE's AK certificate, AWS's NitroTPM attestation document); which one a variant needs
    /// is [`crate::binding`]'s policy. `None` where the platform provides none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<crate::binding::AkBinding>,
}

/// The EK certificate and the AK's public area (swtpm's ECC P-384 EK at 0x81010016, the TCG
/// default decrypt-only template): the verifier proves the AK is in that TPM by credential
/// activation ([`crate::credential`]). The `certify_*` fields are the old scheme's (a signing
/// EK's TPM2_Certify of the AK): nodes leave them empty and verifiers refuse evidence that has
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EkBinding {
    /// The EK certificate (DER), as the TPM manufacturer (here: the operator's CA) issued it.
    #[serde(with = "hex::serde")]
    pub ek_certificate: Vec<u8>,
    /// The AK's TPMT_PUBLIC (its name is nameAlg || H(this)).
    #[serde(with = "hex::serde")]
    pub ak_public_area: Vec<u8>,
    /// Old scheme: TPMS_ATTEST of type certify (refused when present).
    #[serde(with = "hex::serde", default, skip_serializing_if = "Vec::is_empty")]
    pub certify_attest: Vec<u8>,
    /// Old scheme: TPMT_SIGNATURE by a signing EK (refused when present).
    #[serde(with = "hex::serde", default, skip_serializing_if = "Vec::is_empty")]
    pub certify_signature: Vec<u8>,
}

impl Evidence {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The quote's qualifying data: SHA-256(nonce || TLS public key), so the evidence answers this
/// verifier's challenge and belongs to the channel whose key is `tls_public_key` (SPKI DER).
pub fn qualifying_data(nonce: &[u8], tls_public_key: &[u8]) -> [u8; 32] {
    let mut buf = Vec::with_capacity(nonce.len() + tls_public_key.len());
    buf.extend_from_slice(nonce);
    buf.extend_from_slice(tls_public_key);
    let d = digest(&SHA256, &buf);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// DER prefix of a P-256 SubjectPublicKeyInfo; the 65-byte uncompressed point follows.
pub(crate) const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// SPKI DER of a P-256 point (x, y each 32 bytes big-endian).
pub fn p256_spki(x: &[u8], y: &[u8]) -> Option<Vec<u8>> {
    if x.len() > 32 || y.len() > 32 {
        return None;
    }
    let mut v = P256_SPKI_PREFIX.to_vec();
    v.push(0x04);
    v.extend(std::iter::repeat_n(0, 32 - x.len()));
    v.extend_from_slice(x);
    v.extend(std::iter::repeat_n(0, 32 - y.len()));
    v.extend_from_slice(y);
    Some(v)
}

/// The uncompressed point (65 bytes) of a P-256 SPKI, if it is one.
pub fn p256_point(spki: &[u8]) -> Option<&[u8]> {
    let rest = spki.strip_prefix(&P256_SPKI_PREFIX[..])?;
    (rest.len() == 65 && rest[0] == 0x04).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifying_data_binds_nonce_and_key() {
        let a = qualifying_data(b"nonce", b"key");
        assert_ne!(a, qualifying_data(b"nonce2", b"key"));
        assert_ne!(a, qualifying_data(b"nonce", b"key2"));
        assert_eq!(a.as_ref(), digest(&SHA256, b"noncekey").as_ref());
    }

    #[test]
    fn spki_round_trip() {
        let spki = p256_spki(&[1; 32], &[2; 31]).unwrap();
        let p = p256_point(&spki).unwrap();
        assert_eq!(p[0], 4);
        assert_eq!(&p[1..33], &[1; 32]);
        assert_eq!(p[33], 0);
        assert!(p256_point(&spki[1..]).is_none());
    }

    #[test]
    fn evidence_json_round_trip() {
        let e = Evidence {
            platform: Platform::SevSnp {
                report: vec![1, 2],
                vcek: vec![7],
            },
            quote: Quote {
                attest: vec![3],
                signature: vec![4],
            },
            ak_public: vec![5],
            firmware_log: vec![6],
            runtime_log: vec![],
            ek: None,
            binding: None,
        };
        assert_eq!(Evidence::from_json(&e.to_json()).unwrap(), e);
    }
}
