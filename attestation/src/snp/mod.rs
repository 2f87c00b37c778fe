//! AMD SEV-SNP attestation reports of every generation (Milan, Genoa, Turin; report versions
//! 2 to 5, [`report`]), their endorsement key (VCEK or VLEK) and AMD's chains
//! ARK → ASK → VCEK and ARK → ASVK → VLEK with AMD's revocation lists ([`certs`]), and the
//! rules nacre enforces on the guest and its platform ([`policy`]). Checked against real
//! reports: Milan (virtee/sev; Project Oak), Genoa and Turin (Project Oak), AWS VLEK-signed
//! Milan reports (Constellation); see `tests/fixtures/snp/README.md`.
//!
//! The entry point for every caller (the SEV-SNP verifier, Azure's HCL report, AWS):
//! [`verify_report`]`(report, vek, roots, policy)` → [`VerifiedReport`]: the report parsed in
//! the layout of the chip that signed it, its signature, the endorsement key's chain (the
//! report's SIGNING_KEY decides which), the key's binding to the report (TCB extensions
//! incl. Turin's fmcSPL, hwID = CHIP_ID for a VCEK) and the platform policy (VMPL, minimum TCB
//! of the product, debug, migration agent, SMT, ID key). The launch measurement and
//! REPORT_DATA are the caller's: [`check_report`] for nacre's own binding.
//!
//! nacre's REPORT_DATA binds the node's TPM attestation key and its TLS key to the verifier's
//! nonce: [`report_data`] = SHA-512(nonce || AK SPKI || TLS SPKI).

pub mod certs;
pub mod policy;
pub mod report;

pub use certs::{AmdRoots, Vek};
pub use policy::{check_platform, check_report, SnpPolicy, POLICY_DEBUG, POLICY_MIGRATE_MA};
pub use report::{Generation, Report, SigningKey, Tcb, REPORT_LEN};

use report::{arr, u32le};
use ring::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnpError {
    #[error("report: {0}")]
    Format(String),
    #[error("product: {0}")]
    Generation(String),
    #[error("certificate chain: {0}")]
    Chain(String),
    #[error("certificate chain kind: {0}")]
    ChainKind(String),
    #[error("revoked: {0}")]
    Revoked(String),
    #[error("AMD revocation list: {0}")]
    Crl(String),
    #[error("no VCEK/VLEK: {0}")]
    NoVek(String),
    #[error("report signature: {0}")]
    Signature(String),
    #[error("VCEK/VLEK does not match the report: {0}")]
    Vek(String),
    #[error("policy: {0}")]
    Policy(String),
    #[error("VMPL: the report is from VMPL {observed}, the policy requires VMPL {required}")]
    Vmpl { observed: u32, required: u32 },
    #[error("TCB: {0}")]
    Tcb(String),
    #[error("launch measurement {observed} is not a golden one")]
    Measurement { observed: String },
    #[error("REPORT_DATA does not bind this nonce, attestation key and TLS key")]
    ReportData,
}

/// REPORT_DATA a node asks for: SHA-512(nonce || AK SPKI || TLS SPKI).
pub fn report_data(nonce: &[u8], ak_spki: &[u8], tls_spki: &[u8]) -> [u8; 64] {
    let mut h = ring::digest::Context::new(&ring::digest::SHA512);
    h.update(nonce);
    h.update(ak_spki);
    h.update(tls_spki);
    arr(h.finish().as_ref(), 0)
}

/// A report whose signature, endorsement key chain and platform policy verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReport {
    /// The report, decoded in its generation's layout (`report.generation` is `Some`).
    pub report: Report,
    pub generation: Generation,
    pub signing_key: SigningKey,
    /// What the VCEK/VLEK certificate says.
    pub vek: Vek,
}

/// Where a verifier finds the VCEK/VLEK of a report that came without one (the key service's
/// certificate store). Every candidate (several VLEKs may share a TCB, one per cloud): the
/// one that verifies wins. `Err` says why none was found.
pub trait VekSource: Send + Sync {
    fn find_vek(&self, report: &Report, kind: SigningKey) -> Result<Vec<Vec<u8>>, String>;
}

/// Verifies an ATTESTATION_REPORT (raw bytes) signed by `vek` (the VCEK or VLEK, DER) against
/// AMD's `roots`, then the platform `policy` ([`check_platform`]). The measurement and
/// REPORT_DATA are left to the caller.
pub fn verify_report(
    report: &[u8],
    vek: &[u8],
    roots: &AmdRoots,
    policy: &SnpPolicy,
) -> Result<VerifiedReport, SnpError> {
    let v = verify_signature(report, vek, roots)?;
    check_platform(&v.report, policy)?;
    Ok(v)
}

/// [`verify_report`] for a report whose VCEK/VLEK may be missing (`vek` empty): it is then
/// looked up in `store`; none there is a refusal saying so.
pub fn verify_report_with_store(
    report: &[u8],
    vek: &[u8],
    store: Option<&dyn VekSource>,
    roots: &AmdRoots,
    policy: &SnpPolicy,
) -> Result<VerifiedReport, SnpError> {
    if !vek.is_empty() {
        return verify_report(report, vek, roots, policy);
    }
    let parsed = Report::parse(report)?;
    let kind = parsed.signing_key()?;
    let Some(store) = store else {
        return Err(SnpError::NoVek(format!(
            "the evidence carries no {kind} and this verifier has no certificate store"
        )));
    };
    let found = store
        .find_vek(&parsed, kind)
        .map_err(|e| SnpError::NoVek(format!("the evidence carries no {kind}, and {e}")))?;
    // The first candidate that verifies. None: the refusal of the first that is the report's
    // key (past product, signature and TCB/chip binding: revoked, policy, ...), else the
    // first candidate's.
    let mut refusal: Option<SnpError> = None;
    for vek in &found {
        match verify_report(report, vek, roots, policy) {
            Ok(v) => return Ok(v),
            Err(e) => {
                let not_its_key = |e: &SnpError| {
                    matches!(
                        e,
                        SnpError::Generation(_) | SnpError::Signature(_) | SnpError::Vek(_)
                    )
                };
                match &refusal {
                    Some(r) if !not_its_key(r) || not_its_key(&e) => {}
                    _ => refusal = Some(e),
                }
            }
        }
    }
    Err(refusal.unwrap_or_else(|| {
        SnpError::NoVek(format!(
            "the evidence carries no {kind}, and the certificate store returned none"
        ))
    }))
}

/// The report's signature and its endorsement key: the key's product decides a version 2
/// report's layout (a version 3+ report's CPUID must name the same product), the report's
/// SIGNING_KEY the chain, and the key must be for the report's TCB and chip
/// ([`check_binding`]). No policy rule.
pub fn verify_signature(
    report: &[u8],
    vek: &[u8],
    roots: &AmdRoots,
) -> Result<VerifiedReport, SnpError> {
    let parsed = Report::parse(report)?;
    let kind = parsed.signing_key()?;
    if vek.is_empty() {
        return Err(SnpError::NoVek(format!(
            "the report is signed by a {kind}, none was given"
        )));
    }
    let from_cert = roots.generation_of(vek)?;
    let parsed = match parsed.generation {
        Some(g) if g != from_cert => {
            return Err(SnpError::Generation(format!(
                "the report's CPUID names a {g} chip, the {kind} is for {from_cert}"
            )))
        }
        Some(_) => parsed,
        None => Report::parse_as(report, from_cert)?,
    };
    let vek = roots.verify_vek(from_cert, kind, vek)?;
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &vek.public_key)
        .verify(parsed.signed_bytes(), &parsed.signature)
        .map_err(|_| SnpError::Signature(format!("does not verify with the {kind}")))?;
    check_binding(&parsed, &vek)?;
    Ok(VerifiedReport {
        report: parsed,
        generation: from_cert,
        signing_key: kind,
        vek,
    })
}

/// The endorsement key was derived for this report's REPORTED_TCB (every SPL extension,
/// Turin's fmcSPL too) and, for a VCEK, this chip (hwID = the significant bytes of CHIP_ID).
pub fn check_binding(report: &Report, vek: &Vek) -> Result<(), SnpError> {
    if vek.tcb != report.reported_tcb {
        return Err(SnpError::Vek(format!(
            "the {} is for TCB {}, the report was signed at {} (REPORTED_TCB read in the {} layout)",
            vek.kind,
            vek.tcb,
            report.reported_tcb,
            report.generation.unwrap_or(Generation::Milan)
        )));
    }
    if let Some(hwid) = &vek.hwid {
        let len = vek.generation.chip_id_len();
        if report.chip_id.iter().all(|b| *b == 0) {
            return Err(SnpError::Vek(
                "the report's CHIP_ID is masked (MaskChipId): it cannot be tied to the VCEK's chip"
                    .into(),
            ));
        }
        if hwid.len() != len || hwid[..] != report.chip_id[..len] {
            return Err(SnpError::Vek(format!(
                "the report's CHIP_ID ({}) is not the VCEK's hwID ({})",
                hex::encode(&report.chip_id[..len]),
                hex::encode(hwid)
            )));
        }
    }
    Ok(())
}

/// The GUIDs of the VCEK (63da758d-e664-4564-adc5-f4b93be8accd) and the VLEK
/// (a8074bc2-a25a-483e-aae6-39c045a0b8a1) in the GHCB certificate table, in the byte order of
/// their text form (how AWS's real table holds the VLEK's: tests/fixtures/snp/aws-cert-table.bin)
/// and in the mixed-endian order of an EFI GUID (accepted as well: the GUIDs are distinct).
const VCEK_GUID: [u8; 16] = [
    0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd,
];
const VLEK_GUID: [u8; 16] = [
    0xa8, 0x07, 0x4b, 0xc2, 0xa2, 0x5a, 0x48, 0x3e, 0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8, 0xa1,
];

/// `g` in the mixed-endian (EFI) byte order.
fn mixed_endian(g: &[u8; 16]) -> [u8; 16] {
    let mut m = *g;
    m[..4].reverse();
    m[4..6].reverse();
    m[6..8].reverse();
    m
}

/// The endorsement key (VCEK or VLEK, DER) from a GHCB certificate table (what the host hands
/// the guest with an extended report: entries of GUID, offset, length, ended by an all-zero
/// entry); `Ok(None)` when the table has neither (the key service then looks the key up in its
/// certificate store).
pub fn vek_from_cert_table(table: &[u8]) -> Result<Option<(SigningKey, Vec<u8>)>, SnpError> {
    let bad = |why: &str| SnpError::Format(format!("certificate table: {why}"));
    let mut at = 0;
    loop {
        let entry = table
            .get(at..at + 24)
            .ok_or_else(|| bad("no terminating entry"))?;
        if entry.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        let off = u32le(entry, 16) as usize;
        let len = u32le(entry, 20) as usize;
        for (guid, kind) in [(VCEK_GUID, SigningKey::Vcek), (VLEK_GUID, SigningKey::Vlek)] {
            if entry[..16] == guid || entry[..16] == mixed_endian(&guid) {
                return table
                    .get(off..off.checked_add(len).ok_or_else(|| bad("entry overflows"))?)
                    .map(|c| Some((kind, c.to_vec())))
                    .ok_or_else(|| bad(&format!("the {kind} entry points outside the table")));
            }
        }
        at += 24;
    }
}

/// Inside an SEV-SNP guest: an attestation report for `data` through the kernel's configfs-tsm
/// interface ([`crate::tsm::configfs_report`], provider `sev_guest`), and the VCEK or VLEK from
/// the host's certificate table (`auxblob`), or an empty key when the host gives none (the key
/// service looks it up in its store). NOT TESTED ON HARDWARE here (no SEV-SNP machine): the
/// configfs protocol is tested against an imitation of the kernel's files, the certificate
/// table with AWS's real one and hand-made ones.
pub fn fetch_report(data: &[u8; 64]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let r = crate::tsm::configfs_report(
        std::path::Path::new(crate::tsm::REPORT_DIR),
        crate::tsm::PROVIDER_SEV_GUEST,
        data,
    )?;
    Ok((r.outblob, vek_of_auxblob(r.auxblob.as_deref())?))
}

/// The VCEK or VLEK in configfs-tsm's `auxblob` (the host's certificate table), or empty
/// when there is no table or it holds neither (the evidence then carries no key); a table
/// that does not parse is an error.
pub fn vek_of_auxblob(auxblob: Option<&[u8]>) -> Result<Vec<u8>, String> {
    match auxblob {
        Some(certs) => Ok(vek_from_cert_table(certs)
            .map_err(|e| e.to_string())?
            .map(|(_, der)| der)
            .unwrap_or_default()),
        None => Ok(Vec::new()),
    }
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
        assert_eq!(
            vek_from_cert_table(&t).unwrap(),
            Some((SigningKey::Vcek, b"VCEK".to_vec()))
        );
        // The EFI (mixed-endian) spelling of the GUID is the same entry.
        let mut efi = t.clone();
        efi[24..40].copy_from_slice(&mixed_endian(&VCEK_GUID));
        assert_eq!(
            vek_from_cert_table(&efi).unwrap(),
            Some((SigningKey::Vcek, b"VCEK".to_vec()))
        );
        assert!(vek_from_cert_table(&t[..30]).is_err());
        let mut no_vcek = t.clone();
        no_vcek[24..40].copy_from_slice(&[0xaa; 16]);
        assert_eq!(vek_from_cert_table(&no_vcek).unwrap(), None);
        let mut outside = t.clone();
        outside[24 + 20..24 + 24].copy_from_slice(&1000u32.to_le_bytes());
        assert!(vek_from_cert_table(&outside).is_err());
    }
}
