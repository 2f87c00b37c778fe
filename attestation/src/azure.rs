//! Azure confidential VMs (SEV-SNP behind Microsoft's paravisor, the HCL): the vTPM runs in the
//! paravisor at VMPL0, inside the TEE, and its AK is bound to the hardware by the HCL report.
//!
//! The vTPM's NV index 0x01400001 holds the HCL report: a 32-byte header ("HCLA"), the SEV-SNP
//! attestation report (1184 bytes), and the IGVM request data: size, version, report type (2:
//! SNP, 4: TDX), the hash type of the runtime data (1: SHA-256, 2: SHA-384, 3: SHA-512), its
//! size, and the runtime data: JSON whose `keys` hold `HCLAkPub` (the RSA 2048 AK persisted at
//! 0x81000003) and `HCLEkPub`, with `vm-configuration` and `user-data`. The SNP report's
//! REPORT_DATA starts with the runtime data's digest.
//!
//! [`check_binding`] verifies the parts the SNP report does not: the report in the HCL report
//! is the one whose chain was verified and comes from VMPL 0 (the paravisor), REPORT_DATA starts
//! with the runtime data's digest, and the quote's AK is `HCLAkPub`. Freshness and the TLS key come from the quote the AK signs
//! (its qualifying data), not from the SNP report, which the paravisor requests at boot.

use crate::x509util::rsa_spki;
use base64::Engine as _;
use ring::digest;

/// The vTPM NV index holding the HCL report.
pub const HCL_REPORT_NV_INDEX: u32 = 0x0140_0001;
/// The persistent handle of the paravisor's AK (`HCLAkPub`).
pub const AK_PERSISTENT_HANDLE: u32 = 0x8100_0003;

const HEADER_LEN: usize = 32;
const HW_REPORT_LEN: usize = 1184;
const IGVM_HEADER_LEN: usize = 20;
/// "HCLA", little-endian.
const HCL_SIGNATURE: u32 = 0x414c_4348;
/// IGVM report type of an SEV-SNP report.
pub const REPORT_TYPE_SNP: u32 = 2;
/// IGVM report type of a TDX report.
pub const REPORT_TYPE_TDX: u32 = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AzureError {
    #[error("HCL report: {0}")]
    Format(String),
    #[error("HCL report: the runtime data's {alg} digest {digest} is not REPORT_DATA's start ({report_data})")]
    RuntimeDataHash {
        alg: &'static str,
        digest: String,
        report_data: String,
    },
    #[error("HCL report: the runtime data: {0}")]
    RuntimeData(String),
    #[error("HCL report: the SEV-SNP report in it is not the evidence's SEV-SNP report")]
    ReportMismatch,
    #[error("HCL report: its SEV-SNP report comes from VMPL {0}, not the paravisor's VMPL 0 (a guest at VMPL {0} chose its REPORT_DATA)")]
    Vmpl(u32),
    #[error("the quote's AK ({ak}) is not the HCL report's HCLAkPub ({hcl}): an AK the paravisor's vTPM does not hold")]
    AkMismatch { ak: String, hcl: String },
}

/// An HCL report, parsed (borrowing the bytes read from NV 0x01400001).
#[derive(Debug, Clone)]
pub struct HclReport<'a> {
    pub version: u32,
    pub report_type: u32,
    pub hash_type: u32,
    /// The hardware report (SEV-SNP: the 1184-byte attestation report).
    pub hw_report: &'a [u8],
    /// The runtime data (JSON) whose digest the hardware report carries.
    pub runtime_data: &'a [u8],
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, AzureError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| AzureError::Format(format!("truncated at byte {off}")))
}

impl<'a> HclReport<'a> {
    /// Parse the NV index's contents (trailing padding after the runtime data is ignored: the
    /// index is larger than the report).
    pub fn parse(b: &'a [u8]) -> Result<HclReport<'a>, AzureError> {
        let sig = u32_at(b, 0)?;
        if sig != HCL_SIGNATURE {
            return Err(AzureError::Format(format!(
                "signature {sig:#010x} is not \"HCLA\""
            )));
        }
        let version = u32_at(b, 4)?;
        let igvm = HEADER_LEN + HW_REPORT_LEN;
        let report_type = u32_at(b, igvm + 8)?;
        let hash_type = u32_at(b, igvm + 12)?;
        let var_len = u32_at(b, igvm + 16)? as usize;
        let start = igvm + IGVM_HEADER_LEN;
        let runtime_data = b.get(start..start.saturating_add(var_len)).ok_or_else(|| {
            AzureError::Format(format!(
                "runtime data of {var_len} bytes does not fit in {} bytes",
                b.len()
            ))
        })?;
        Ok(HclReport {
            version,
            report_type,
            hash_type,
            hw_report: &b[HEADER_LEN..igvm],
            runtime_data,
        })
    }

    /// The runtime data's digest with the report's hash type.
    pub fn runtime_digest(&self) -> Result<(&'static str, Vec<u8>), AzureError> {
        let (name, alg) = match self.hash_type {
            1 => ("SHA-256", &digest::SHA256),
            2 => ("SHA-384", &digest::SHA384),
            3 => ("SHA-512", &digest::SHA512),
            t => {
                return Err(AzureError::Format(format!(
                    "hash type {t} is not SHA-256/384/512 (1/2/3)"
                )))
            }
        };
        Ok((
            name,
            digest::digest(alg, self.runtime_data).as_ref().to_vec(),
        ))
    }

    /// `HCLAkPub` from the runtime data: an RSA JWK, as rsaEncryption SPKI DER.
    pub fn ak_spki(&self) -> Result<Vec<u8>, AzureError> {
        jwk_spki(self.runtime_data, "HCLAkPub")
    }
}

/// The RSA JWK `kid` of the runtime data's `keys`, as SPKI DER.
fn jwk_spki(runtime_data: &[u8], kid: &str) -> Result<Vec<u8>, AzureError> {
    let bad = |s: String| AzureError::RuntimeData(s);
    let v: serde_json::Value =
        serde_json::from_slice(runtime_data).map_err(|e| bad(format!("not JSON: {e}")))?;
    let keys = v
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| bad("no \"keys\" array".into()))?;
    let key = keys
        .iter()
        .find(|k| k.get("kid").and_then(|s| s.as_str()) == Some(kid))
        .ok_or_else(|| bad(format!("no key {kid:?}")))?;
    if key.get("kty").and_then(|s| s.as_str()) != Some("RSA") {
        return Err(bad(format!("{kid} is not an RSA key")));
    }
    let field = |name: &str| -> Result<Vec<u8>, AzureError> {
        let s = key
            .get(name)
            .and_then(|s| s.as_str())
            .ok_or_else(|| bad(format!("{kid} has no {name:?}")))?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|e| bad(format!("{kid}.{name} is not base64url: {e}")))
    };
    Ok(rsa_spki(&field("n")?, &field("e")?))
}

/// The Azure binding: `hcl` (NV 0x01400001) holds `snp_report` (the evidence's SEV-SNP
/// report, whose chain the caller verified), its REPORT_DATA starts with the digest of the
/// runtime data, and the quote's AK (`ak_spki`, SPKI DER) is the runtime data's `HCLAkPub`.
pub fn check_binding(hcl: &[u8], snp_report: &[u8], ak_spki: &[u8]) -> Result<(), AzureError> {
    let h = HclReport::parse(hcl)?;
    if h.report_type != REPORT_TYPE_SNP {
        return Err(AzureError::Format(format!(
            "report type {} is not SEV-SNP ({REPORT_TYPE_SNP})",
            h.report_type
        )));
    }
    if h.hw_report != snp_report {
        return Err(AzureError::ReportMismatch);
    }
    // Only the paravisor (VMPL 0) vouches for the runtime data; the guest OS runs at VMPL 2/3
    // and may request reports with any REPORT_DATA. Required here whatever the SNP policy says.
    let vmpl = u32_at(snp_report, 0x30)?;
    if vmpl != 0 {
        return Err(AzureError::Vmpl(vmpl));
    }
    // REPORT_DATA: offset 0x50 of the SNP report, 64 bytes.
    let report_data = snp_report
        .get(0x50..0x90)
        .ok_or_else(|| AzureError::Format("the SNP report is truncated".into()))?;
    let (alg, d) = h.runtime_digest()?;
    if report_data[..d.len()] != d[..] {
        return Err(AzureError::RuntimeDataHash {
            alg,
            digest: hex::encode(&d),
            report_data: hex::encode(&report_data[..d.len()]),
        });
    }
    let hcl_ak = h.ak_spki()?;
    if !same_key(&hcl_ak, ak_spki) {
        let fp = |b: &[u8]| hex::encode(digest::digest(&digest::SHA256, b));
        return Err(AzureError::AkMismatch {
            ak: fp(ak_spki),
            hcl: fp(&hcl_ak),
        });
    }
    Ok(())
}

/// Two SPKIs of the same key (compared by value: modulus and exponent, curve and point).
pub(crate) fn same_key(a: &[u8], b: &[u8]) -> bool {
    use x509_parser::prelude::FromDer;
    use x509_parser::x509::SubjectPublicKeyInfo;
    let key = |d: &[u8]| {
        SubjectPublicKeyInfo::from_der(d)
            .ok()
            .and_then(|(_, s)| crate::x509util::public_key_of(&s))
    };
    matches!((key(a), key(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_foreign_bytes_are_refused() {
        assert!(matches!(
            HclReport::parse(b"HCL"),
            Err(AzureError::Format(_))
        ));
        let mut b = vec![0u8; 2048];
        b[..4].copy_from_slice(b"XXXX");
        assert!(HclReport::parse(&b)
            .unwrap_err()
            .to_string()
            .contains("HCLA"));
        b[..4].copy_from_slice(b"HCLA");
        // Runtime data length past the end.
        b[HEADER_LEN + HW_REPORT_LEN + 16..HEADER_LEN + HW_REPORT_LEN + 20]
            .copy_from_slice(&4000u32.to_le_bytes());
        assert!(HclReport::parse(&b)
            .unwrap_err()
            .to_string()
            .contains("does not fit"));
    }

    #[test]
    fn jwk_to_spki() {
        let rd = br#"{"keys":[{"kid":"HCLAkPub","kty":"RSA","e":"AQAB","n":"wQ"}]}"#;
        let spki = jwk_spki(rd, "HCLAkPub").unwrap();
        assert_eq!(spki, rsa_spki(&[0xc1], &[1, 0, 1]));
        assert!(jwk_spki(rd, "HCLEkPub").is_err());
        assert!(jwk_spki(br#"{"keys":[{"kid":"HCLAkPub","kty":"EC"}]}"#, "HCLAkPub").is_err());
    }
}
