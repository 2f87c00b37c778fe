//! AMD SEV-SNP attestation reports: parsing (ATTESTATION_REPORT, SEV-SNP ABI spec 56860, table
//! "ATTESTATION_REPORT structure"), the signature chain ARK → ASK → VCEK → report (RSA-PSS
//! SHA-384 for the certificates, ECDSA P-384 SHA-384 for the report) with ring and x509-parser,
//! the VCEK's binding to the chip and TCB (its X.509 extensions), and the guest policy and TCB
//! rules nacre enforces. Checked against real Milan data (tests/fixtures/snp, from virtee/sev).
//!
//! The report's REPORT_DATA binds the node's TPM attestation key and its TLS key to the verifier's
//! nonce: [`report_data`] = SHA-512(nonce || AK SPKI || TLS SPKI).

use ring::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED, RSA_PSS_2048_8192_SHA384};
use x509_parser::prelude::*;

/// Size of an ATTESTATION_REPORT.
pub const REPORT_LEN: usize = 0x4A0;
/// The signed part: bytes 0..0x2A0.
const SIGNED_LEN: usize = 0x2A0;
const RSA_PSS_OID: &str = "1.2.840.113549.1.1.10";
/// AMD's VCEK extensions (under 1.3.6.1.4.1.3704.1).
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";
const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";

/// Policy bit 19: debugging the guest is allowed.
pub const POLICY_DEBUG: u64 = 1 << 19;
/// Policy bit 18: migration agent allowed.
pub const POLICY_MIGRATE_MA: u64 = 1 << 18;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnpError {
    #[error("report: {0}")]
    Format(String),
    #[error("certificate chain: {0}")]
    Chain(String),
    #[error("report signature: {0}")]
    Signature(String),
    #[error("VCEK does not match the report: {0}")]
    Vcek(String),
    #[error("policy: {0}")]
    Policy(String),
    #[error("TCB: {0}")]
    Tcb(String),
    #[error("launch measurement {observed} is not a golden one")]
    Measurement { observed: String },
    #[error("REPORT_DATA does not bind this nonce, attestation key and TLS key")]
    ReportData,
}

/// A TCB version (Milan/Genoa layout: boot loader, TEE, reserved x4, SNP, microcode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Tcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl Tcb {
    fn from_bytes(b: &[u8]) -> Tcb {
        Tcb {
            bootloader: b[0],
            tee: b[1],
            snp: b[6],
            microcode: b[7],
        }
    }

    /// Every component at least `min`'s.
    pub fn at_least(&self, min: &Tcb) -> bool {
        self.bootloader >= min.bootloader
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.microcode >= min.microcode
    }
}

impl std::fmt::Display for Tcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bootloader {} tee {} snp {} microcode {}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// The fields nacre checks, parsed from a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub version: u32,
    pub guest_svn: u32,
    pub policy: u64,
    pub vmpl: u32,
    pub signature_algo: u32,
    pub current_tcb: Tcb,
    /// PLATFORM_INFO: bit 0 SMT enabled on the host, bit 1 TSME enabled.
    pub platform_info: u64,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub id_key_digest: [u8; 48],
    pub reported_tcb: Tcb,
    pub chip_id: [u8; 64],
    pub committed_tcb: Tcb,
    pub launch_tcb: Tcb,
    /// r || s, big-endian, 48 bytes each.
    pub signature: [u8; 96],
    raw: Vec<u8>,
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(arr(b, at))
}

impl Report {
    pub fn parse(b: &[u8]) -> Result<Report, SnpError> {
        if b.len() != REPORT_LEN {
            return Err(SnpError::Format(format!(
                "{} bytes, an ATTESTATION_REPORT has {REPORT_LEN}",
                b.len()
            )));
        }
        let version = u32le(b, 0);
        if !(2..=5).contains(&version) {
            return Err(SnpError::Format(format!(
                "version {version} is not supported"
            )));
        }
        let signature_algo = u32le(b, 0x34);
        if signature_algo != 1 {
            return Err(SnpError::Format(format!(
                "signature algorithm {signature_algo} (only 1, ECDSA P-384 with SHA-384)"
            )));
        }
        // The signature: r and s, 72 bytes each, little-endian; P-384 uses the low 48.
        let mut signature = [0u8; 96];
        for (i, off) in [0x2A0usize, 0x2A0 + 72].into_iter().enumerate() {
            let c = &b[off..off + 72];
            if c[48..].iter().any(|x| *x != 0) {
                return Err(SnpError::Format(
                    "signature component wider than 48 bytes".into(),
                ));
            }
            for (j, byte) in c[..48].iter().rev().enumerate() {
                signature[i * 48 + j] = *byte;
            }
        }
        Ok(Report {
            version,
            guest_svn: u32le(b, 4),
            policy: u64::from_le_bytes(arr(b, 8)),
            vmpl: u32le(b, 0x30),
            signature_algo,
            current_tcb: Tcb::from_bytes(&b[0x38..0x40]),
            platform_info: u64::from_le_bytes(arr(b, 0x40)),
            report_data: arr(b, 0x50),
            measurement: arr(b, 0x90),
            host_data: arr(b, 0xC0),
            id_key_digest: arr(b, 0xE0),
            reported_tcb: Tcb::from_bytes(&b[0x180..0x188]),
            chip_id: arr(b, 0x1A0),
            committed_tcb: Tcb::from_bytes(&b[0x1E0..0x1E8]),
            launch_tcb: Tcb::from_bytes(&b[0x1F0..0x1F8]),
            signature,
            raw: b.to_vec(),
        })
    }

    /// The bytes the VCEK signed.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }
}

/// REPORT_DATA a node asks for: SHA-512(nonce || AK SPKI || TLS SPKI).
pub fn report_data(nonce: &[u8], ak_spki: &[u8], tls_spki: &[u8]) -> [u8; 64] {
    let mut h = ring::digest::Context::new(&ring::digest::SHA512);
    h.update(nonce);
    h.update(ak_spki);
    h.update(tls_spki);
    arr(h.finish().as_ref(), 0)
}

fn der_of_pem_or_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.starts_with(b"-----BEGIN") {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        CertificateDer::from_pem_slice(bytes)
            .map(|c| c.as_ref().to_vec())
            .map_err(|e| format!("PEM: {e}"))
    } else {
        Ok(bytes.to_vec())
    }
}

/// `child` is signed by `issuer`'s RSA key with RSA-PSS SHA-384 (AMD's ARK and ASK).
fn check_rsa_pss(
    child: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    what: &str,
) -> Result<(), SnpError> {
    if child.signature_algorithm.algorithm.to_id_string() != RSA_PSS_OID {
        return Err(SnpError::Chain(format!(
            "{what} is not signed with RSA-PSS ({})",
            child.signature_algorithm.algorithm.to_id_string()
        )));
    }
    if child.issuer() != issuer.subject() {
        return Err(SnpError::Chain(format!(
            "{what}'s issuer {} is not {}",
            child.issuer(),
            issuer.subject()
        )));
    }
    let key = &issuer.public_key().subject_public_key.data;
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA384, key)
        .verify(child.tbs_certificate.as_ref(), &child.signature_value.data)
        .map_err(|_| SnpError::Chain(format!("{what}'s signature does not verify")))
}

fn ext_u8(cert: &X509Certificate<'_>, oid: &str) -> Option<u8> {
    let e = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == oid)?;
    // An INTEGER (02 01 xx, or 02 02 00 xx for values >= 0x80).
    match e.value {
        [0x02, 1, v] => Some(*v),
        [0x02, 2, 0, v] => Some(*v),
        _ => None,
    }
}

/// AMD's CA for one product line (ARK self-signed, ASK signed by the ARK), configured by the
/// operator (from AMD's KDS) and checked when loaded.
#[derive(Debug, Clone)]
pub struct AmdChain {
    ark: Vec<u8>,
    ask: Vec<u8>,
}

impl AmdChain {
    /// ARK and ASK, PEM or DER.
    pub fn new(ark: &[u8], ask: &[u8]) -> Result<AmdChain, SnpError> {
        let chain = AmdChain {
            ark: der_of_pem_or_der(ark).map_err(|e| SnpError::Chain(format!("ARK: {e}")))?,
            ask: der_of_pem_or_der(ask).map_err(|e| SnpError::Chain(format!("ASK: {e}")))?,
        };
        let (_, ark) =
            parse_x509_certificate(&chain.ark).map_err(|e| SnpError::Chain(format!("ARK: {e}")))?;
        let (_, ask) =
            parse_x509_certificate(&chain.ask).map_err(|e| SnpError::Chain(format!("ASK: {e}")))?;
        check_rsa_pss(&ark, &ark, "the ARK")?;
        check_rsa_pss(&ask, &ark, "the ASK")?;
        Ok(chain)
    }

    /// The VCEK (DER) is signed by this chain's ASK, and it signed `report`; it belongs to the
    /// report's chip and reported TCB.
    pub fn verify_report(&self, vcek: &[u8], report: &Report) -> Result<(), SnpError> {
        let (_, ask) =
            parse_x509_certificate(&self.ask).map_err(|e| SnpError::Chain(format!("ASK: {e}")))?;
        let (rest, vcek) =
            parse_x509_certificate(vcek).map_err(|e| SnpError::Chain(format!("VCEK: {e}")))?;
        if !rest.is_empty() {
            return Err(SnpError::Chain("VCEK: trailing bytes".into()));
        }
        check_rsa_pss(&vcek, &ask, "the VCEK")?;
        let point = &vcek.public_key().subject_public_key.data;
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, point)
            .verify(report.signed_bytes(), &report.signature)
            .map_err(|_| SnpError::Signature("does not verify with the VCEK".into()))?;
        if let Some(hwid) = vcek
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == OID_HWID)
        {
            // An OCTET STRING of 64 bytes (some KDS certificates carry it raw).
            let id = match hwid.value {
                [0x04, 0x40, id @ ..] if id.len() == 64 => id,
                id if id.len() == 64 => id,
                _ => return Err(SnpError::Vcek("malformed hwID extension".into())),
            };
            if id != report.chip_id {
                return Err(SnpError::Vcek(
                    "the report's CHIP_ID is not the VCEK's hwID".into(),
                ));
            }
        }
        let cert_tcb = Tcb {
            bootloader: ext_u8(&vcek, OID_BL_SPL).unwrap_or(0),
            tee: ext_u8(&vcek, OID_TEE_SPL).unwrap_or(0),
            snp: ext_u8(&vcek, OID_SNP_SPL).unwrap_or(0),
            microcode: ext_u8(&vcek, OID_UCODE_SPL).unwrap_or(0),
        };
        if cert_tcb != report.reported_tcb {
            return Err(SnpError::Vcek(format!(
                "the VCEK is for TCB {cert_tcb}, the report was signed at {}",
                report.reported_tcb
            )));
        }
        Ok(())
    }
}

/// What a verifier requires of an SNP guest.
#[derive(Debug, Clone)]
pub struct SnpPolicy {
    /// Golden launch measurements (48 bytes each): the image's SNP launch digests.
    pub measurements: Vec<[u8; 48]>,
    /// Minimum reported TCB.
    pub min_tcb: Tcb,
    /// Whether a guest that may be debugged is accepted (never in production).
    pub allow_debug: bool,
    /// Whether a guest with a migration agent is accepted.
    pub allow_migration_agent: bool,
    /// The VMPL the report must come from (0: the guest kernel itself; a paravisor runs the
    /// guest at VMPL 2 or 3 and may report for it).
    pub vmpl: Option<u32>,
    /// The release's ID key (SHA-384 of its SNP public key, `nacre-measure snp-id-block`): the
    /// guest must have been launched with an ID block signed by it.
    pub id_key_digest: Option<[u8; 48]>,
    /// Refuse a guest whose host runs with SMT enabled (PLATFORM_INFO.SMT_EN): sibling
    /// hyperthreads share caches with the host's other tenants.
    pub require_smt_off: bool,
}

/// PLATFORM_INFO bit 0: SMT is enabled on the platform.
const PLATFORM_INFO_SMT_EN: u64 = 1;

/// Every rule on a report whose signature chain was verified, then the binding.
pub fn check_report(
    report: &Report,
    policy: &SnpPolicy,
    nonce: &[u8],
    ak_spki: &[u8],
    tls_spki: &[u8],
) -> Result<(), SnpError> {
    if report.policy & POLICY_DEBUG != 0 && !policy.allow_debug {
        return Err(SnpError::Policy(format!(
            "guest policy {:#x} allows debugging (its memory is readable by the host)",
            report.policy
        )));
    }
    if report.policy & POLICY_MIGRATE_MA != 0 && !policy.allow_migration_agent {
        return Err(SnpError::Policy(format!(
            "guest policy {:#x} allows a migration agent",
            report.policy
        )));
    }
    if policy.require_smt_off && report.platform_info & PLATFORM_INFO_SMT_EN != 0 {
        return Err(SnpError::Policy(format!(
            "SMT is enabled on the host (PLATFORM_INFO {:#x}) and this policy requires it off",
            report.platform_info
        )));
    }
    if let Some(v) = policy.vmpl {
        if report.vmpl != v {
            return Err(SnpError::Policy(format!(
                "report from VMPL {}, expected {v}",
                report.vmpl
            )));
        }
    }
    for (name, tcb) in [
        ("reported", report.reported_tcb),
        ("committed", report.committed_tcb),
        ("launch", report.launch_tcb),
    ] {
        if !tcb.at_least(&policy.min_tcb) {
            return Err(SnpError::Tcb(format!(
                "{name} TCB ({tcb}) is below the minimum ({})",
                policy.min_tcb
            )));
        }
    }
    if let Some(d) = &policy.id_key_digest {
        if report.id_key_digest != *d {
            return Err(SnpError::Policy(format!(
                "launched with ID key {}, not the release's {}",
                hex::encode(report.id_key_digest),
                hex::encode(d)
            )));
        }
    }
    if !policy.measurements.contains(&report.measurement) {
        return Err(SnpError::Measurement {
            observed: hex::encode(report.measurement),
        });
    }
    if report.report_data != report_data(nonce, ak_spki, tls_spki) {
        return Err(SnpError::ReportData);
    }
    Ok(())
}

/// The GUID of the VCEK in the GHCB certificate table (63da758d-e664-4564-adc5-f4b93be8accd),
/// as its bytes appear in the table.
const VCEK_GUID: [u8; 16] = [
    0x8d, 0x75, 0xda, 0x63, 0x64, 0xe6, 0x64, 0x45, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd,
];

/// The VCEK (DER) from a GHCB certificate table (what the host hands the guest with an
/// extended report: entries of GUID, offset, length, ended by an all-zero entry).
pub fn vcek_from_cert_table(table: &[u8]) -> Result<Vec<u8>, SnpError> {
    let bad = |why: &str| SnpError::Format(format!("certificate table: {why}"));
    let mut at = 0;
    loop {
        let entry = table
            .get(at..at + 24)
            .ok_or_else(|| bad("no terminating entry"))?;
        if entry.iter().all(|b| *b == 0) {
            return Err(bad(
                "no VCEK entry (the host provides no certificates: configure its cert table)",
            ));
        }
        let off = u32le(entry, 16) as usize;
        let len = u32le(entry, 20) as usize;
        if entry[..16] == VCEK_GUID {
            return table
                .get(off..off.checked_add(len).ok_or_else(|| bad("entry overflows"))?)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| bad("VCEK entry points outside the table"));
        }
        at += 24;
    }
}

/// Inside an SEV-SNP guest: an attestation report for `data` through the kernel's configfs-tsm
/// interface ([`crate::tsm::configfs_report`], provider `sev_guest`), and the VCEK from the
/// host's certificate table (`auxblob`). NOT TESTED ON HARDWARE here (no SEV-SNP machine): the
/// configfs protocol is tested against an imitation of the kernel's files, the certificate
/// table's format with hand-made tables.
pub fn fetch_report(data: &[u8; 64]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let r = crate::tsm::configfs_report(
        std::path::Path::new(crate::tsm::REPORT_DIR),
        crate::tsm::PROVIDER_SEV_GUEST,
        data,
    )?;
    let certs = r.auxblob.ok_or(
        "no auxblob: the host provides no certificate table, and the VCEK must come from it (configure the host's certificates)",
    )?;
    let vcek = vcek_from_cert_table(&certs).map_err(|e| e.to_string())?;
    Ok((r.outblob, vcek))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_table() {
        let mut t = Vec::new();
        // ARK entry, VCEK entry, terminator, then the blobs.
        let ark_guid = [0xc0u8; 16];
        let data_at = 3 * 24;
        for (g, off, len) in [(ark_guid, data_at, 3), (VCEK_GUID, data_at + 3, 4)] {
            t.extend_from_slice(&g);
            t.extend_from_slice(&(off as u32).to_le_bytes());
            t.extend_from_slice(&(len as u32).to_le_bytes());
        }
        t.extend_from_slice(&[0; 24]);
        t.extend_from_slice(b"arkVCEK");
        assert_eq!(vcek_from_cert_table(&t).unwrap(), b"VCEK");
        assert!(vcek_from_cert_table(&t[..30]).is_err());
        let mut no_vcek = t.clone();
        no_vcek[24..40].copy_from_slice(&[0xaa; 16]);
        assert!(vcek_from_cert_table(&no_vcek).is_err());
        let mut outside = t.clone();
        outside[24 + 20..24 + 24].copy_from_slice(&1000u32.to_le_bytes());
        assert!(vcek_from_cert_table(&outside).is_err());
    }
}
