//! Intel TDX DCAP quotes: parsing (quote v4, and v5 with a TD 1.0 or TD 1.5 report body), the
//! quote's own signatures checked with ring (the attestation key's ECDSA P-256 signature over
//! header and body, the QE report's REPORT_DATA = SHA-256(attestation key || QE auth data), the
//! QE report's signature by the PCK certificate), then the PCK chain to Intel's SGX Root CA
//! (pinned in this crate), the CRLs, the TCB info and QE identity collateral and the TCB level
//! with the `dcap-qvl` crate (ring backend) against collateral the operator supplies offline,
//! and the TD rules nacre enforces ([`TdxPolicy`], [`check_td`]). Checked against real quotes
//! and collateral (tests/fixtures/tdx, from dcap-qvl's samples).
//!
//! The body's REPORTDATA binds the node's TPM attestation key and its TLS key to the
//! verifier's nonce, as on SEV-SNP: [`crate::snp::report_data`] = SHA-512(nonce || AK SPKI ||
//! TLS SPKI).

use ring::digest::{digest, SHA256};
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use x509_parser::prelude::*;

pub use dcap_qvl::QuoteCollateralV3;

/// Intel SGX Root CA (DER), the trust anchor of every PCK, TCB info and QE identity chain.
/// Copied from dcap-qvl 0.7.1 (`src/TrustedRootCA.der`); SHA-256
/// 44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3, the certificate Intel
/// publishes as Intel_SGX_Provisioning_Certification_RootCA.
pub const INTEL_SGX_ROOT_CA: &[u8] = include_bytes!("intel-sgx-root-ca.der");

/// TEE type of a TDX quote.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// Attestation key type 2: ECDSA-256 with P-256.
pub const ATT_KEY_ECDSA_P256: u16 = 2;
/// TD report body sizes: TDX 1.0 (quote v4, v5 type 2) and TDX 1.5 (v5 type 3).
pub const TD_REPORT10_LEN: usize = 584;
pub const TD_REPORT15_LEN: usize = 648;
const QE_REPORT_LEN: usize = 384;
/// Certification data types: PCK certificate chain (PEM), QE report certification data.
const CERT_PCK_CHAIN: u16 = 5;
const CERT_QE_REPORT: u16 = 6;

/// TDATTRIBUTES bits (TDX module ABI, TDATTRIBUTES: TUD 7:0, SEC 31:8, OTHER 63:32).
pub const ATTR_DEBUG: u64 = 1 << 0;
/// TUD bits other than DEBUG (reserved, must be 0).
pub const ATTR_TUD_RESERVED: u64 = 0xfe;
pub const ATTR_SEPT_VE_DISABLE: u64 = 1 << 28;
pub const ATTR_MIGRATABLE: u64 = 1 << 29;
pub const ATTR_PKS: u64 = 1 << 30;
pub const ATTR_KL: u64 = 1 << 31;
pub const ATTR_PERFMON: u64 = 1 << 63;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TdxError {
    #[error("quote truncated: {field} at offset {offset:#x} needs {need} bytes, {have} left")]
    Truncated {
        field: &'static str,
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("quote malformed: {field} at offset {offset:#x}: {why}")]
    Malformed {
        field: &'static str,
        offset: usize,
        why: String,
    },
    #[error("quote signature: {0}")]
    QuoteSignature(String),
    #[error("QE report: {0}")]
    QeReport(String),
    #[error("PCK certificate: {0}")]
    Pck(String),
    /// What dcap-qvl refused: the PCK chain, a CRL, the TCB info or QE identity (signature,
    /// chain, validity at the given time), the QE identity match or the TCB level match.
    #[error("PCK chain or collateral: {0}")]
    Collateral(String),
    #[error("TCB status {status} is not accepted (advisories: {advisories})")]
    TcbStatus { status: String, advisories: String },
    #[error("TD attributes: {0}")]
    Attributes(String),
    #[error("MRTD {observed} is not a golden one")]
    Mrtd { observed: String },
    #[error("RTMR{index} {observed} is not a golden one")]
    Rtmr { index: usize, observed: String },
    #[error("REPORTDATA does not bind this nonce, attestation key and TLS key")]
    ReportData,
}

fn malformed(field: &'static str, offset: usize, why: impl Into<String>) -> TdxError {
    TdxError::Malformed {
        field,
        offset,
        why: why.into(),
    }
}

/// The quote header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub att_key_type: u16,
    pub tee_type: u32,
    pub qe_vendor_id: [u8; 16],
    pub user_data: [u8; 20],
}

/// Which TD report the body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// TDX 1.0 (584 bytes).
    Td10,
    /// TDX 1.5 (648 bytes: TEE_TCB_SVN2 and MRSERVICETD follow).
    Td15,
}

/// The TD report body (TDX module ABI, TDREPORT's TD_INFO and TEE_TCB_INFO as the quote carries
/// them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReport {
    pub kind: BodyKind,
    pub tee_tcb_svn: [u8; 16],
    pub mr_seam: [u8; 48],
    pub mr_signer_seam: [u8; 48],
    pub seam_attributes: u64,
    pub td_attributes: u64,
    pub xfam: u64,
    pub mr_td: [u8; 48],
    pub mr_config_id: [u8; 48],
    pub mr_owner: [u8; 48],
    pub mr_owner_config: [u8; 48],
    pub rtmr: [[u8; 48]; 4],
    pub report_data: [u8; 64],
    /// TDX 1.5 only.
    pub tee_tcb_svn2: Option<[u8; 16]>,
    /// TDX 1.5 only.
    pub mr_service_td: Option<[u8; 48]>,
}

/// A parsed TDX quote (v4 or v5) with ECDSA P-256 attestation key and QE report certification
/// data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub header: Header,
    pub body: TdReport,
    /// r || s, big-endian, over [`Quote::signed_bytes`].
    pub signature: [u8; 64],
    /// The attestation key: x || y.
    pub attestation_key: [u8; 64],
    /// The QE's SGX report (384 bytes).
    pub qe_report: Vec<u8>,
    /// r || s of the PCK's signature over `qe_report`.
    pub qe_report_signature: [u8; 64],
    pub qe_auth_data: Vec<u8>,
    /// The PCK certificate chain (PEM, leaf first), certification data type 5.
    pub pck_chain_pem: Vec<u8>,
    signed_len: usize,
    raw: Vec<u8>,
}

/// Bounds-checked little-endian reader that names the field and offset of a short read.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], TdxError> {
        let have = self.b.len().saturating_sub(self.at);
        if n > have {
            return Err(TdxError::Truncated {
                field,
                offset: self.at,
                need: n,
                have,
            });
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], TdxError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, TdxError> {
        Ok(u16::from_le_bytes(self.arr(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, TdxError> {
        Ok(u32::from_le_bytes(self.arr(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, TdxError> {
        Ok(u64::from_le_bytes(self.arr(field)?))
    }
}

impl TdReport {
    fn read(r: &mut Reader<'_>, kind: BodyKind) -> Result<TdReport, TdxError> {
        let mut body = TdReport {
            kind,
            tee_tcb_svn: r.arr("TEE_TCB_SVN")?,
            mr_seam: r.arr("MRSEAM")?,
            mr_signer_seam: r.arr("MRSIGNERSEAM")?,
            seam_attributes: r.u64("SEAMATTRIBUTES")?,
            td_attributes: r.u64("TDATTRIBUTES")?,
            xfam: r.u64("XFAM")?,
            mr_td: r.arr("MRTD")?,
            mr_config_id: r.arr("MRCONFIGID")?,
            mr_owner: r.arr("MROWNER")?,
            mr_owner_config: r.arr("MROWNERCONFIG")?,
            rtmr: [
                r.arr("RTMR0")?,
                r.arr("RTMR1")?,
                r.arr("RTMR2")?,
                r.arr("RTMR3")?,
            ],
            report_data: r.arr("REPORTDATA")?,
            tee_tcb_svn2: None,
            mr_service_td: None,
        };
        if kind == BodyKind::Td15 {
            body.tee_tcb_svn2 = Some(r.arr("TEE_TCB_SVN2")?);
            body.mr_service_td = Some(r.arr("MRSERVICETD")?);
        }
        Ok(body)
    }
}

impl Quote {
    /// Parses a TDX quote; never panics on any input.
    pub fn parse(b: &[u8]) -> Result<Quote, TdxError> {
        let mut r = Reader { b, at: 0 };
        let version = r.u16("header version")?;
        if version != 4 && version != 5 {
            return Err(malformed(
                "header version",
                0,
                format!("version {version} (only TDX quotes v4 and v5)"),
            ));
        }
        let att_key_type = r.u16("header attestation key type")?;
        if att_key_type != ATT_KEY_ECDSA_P256 {
            return Err(malformed(
                "header attestation key type",
                2,
                format!("type {att_key_type} (only 2, ECDSA-256 with P-256)"),
            ));
        }
        let tee_type = r.u32("header TEE type")?;
        if tee_type != TEE_TYPE_TDX {
            return Err(malformed(
                "header TEE type",
                4,
                format!("{tee_type:#x} is not TDX ({TEE_TYPE_TDX:#x})"),
            ));
        }
        r.take(4, "header reserved")?;
        let header = Header {
            version,
            att_key_type,
            tee_type,
            qe_vendor_id: r.arr("header QE vendor id")?,
            user_data: r.arr("header user data")?,
        };
        let kind = if version == 5 {
            let at = r.at;
            let body_type = r.u16("v5 body type")?;
            let size = r.u32("v5 body size")? as usize;
            let (kind, want) = match body_type {
                2 => (BodyKind::Td10, TD_REPORT10_LEN),
                3 => (BodyKind::Td15, TD_REPORT15_LEN),
                t => {
                    return Err(malformed(
                        "v5 body type",
                        at,
                        format!("type {t} (only 2, TD 1.0, and 3, TD 1.5)"),
                    ))
                }
            };
            if size != want {
                return Err(malformed(
                    "v5 body size",
                    at + 2,
                    format!("{size} bytes, a type {body_type} body has {want}"),
                ));
            }
            kind
        } else {
            BodyKind::Td10
        };
        let body = TdReport::read(&mut r, kind)?;
        let signed_len = r.at;

        let sig_len_at = r.at;
        let sig_len = r.u32("signature data length")? as usize;
        let sig_data = r.take(sig_len, "signature data")?;
        // Real quotes may be padded with zeros after the signature data; anything else is refused.
        if let Some(i) = b[r.at..].iter().position(|x| *x != 0) {
            return Err(malformed(
                "trailing bytes",
                r.at + i,
                "non-zero bytes after the signature data",
            ));
        }
        let base = sig_len_at + 4;
        // A reader over the signature data only, with offsets in the whole quote.
        let end = base + sig_data.len();
        let mut s = Reader {
            b: &b[..end],
            at: base,
        };
        let signature = s.arr("quote signature")?;
        let attestation_key = s.arr("attestation key")?;
        let cd_at = s.at;
        let cd_type = s.u16("certification data type")?;
        if cd_type != CERT_QE_REPORT {
            return Err(malformed(
                "certification data type",
                cd_at,
                format!("type {cd_type} (only 6, QE report certification data)"),
            ));
        }
        let cd_len = s.u32("certification data size")? as usize;
        let cd_end = s.at.saturating_add(cd_len);
        if cd_end != end {
            return Err(malformed(
                "certification data size",
                cd_at + 2,
                format!(
                    "{cd_len} bytes, the signature data leaves {}",
                    end.saturating_sub(s.at)
                ),
            ));
        }
        let qe_report = s.take(QE_REPORT_LEN, "QE report")?.to_vec();
        let qe_report_signature = s.arr("QE report signature")?;
        let auth_len = s.u16("QE auth data size")? as usize;
        let qe_auth_data = s.take(auth_len, "QE auth data")?.to_vec();
        let pck_at = s.at;
        let pck_type = s.u16("QE certification data type")?;
        if pck_type != CERT_PCK_CHAIN {
            return Err(malformed(
                "QE certification data type",
                pck_at,
                format!("type {pck_type} (only 5, the PCK certificate chain)"),
            ));
        }
        let pck_len = s.u32("QE certification data size")? as usize;
        let pck_chain_pem = s.take(pck_len, "PCK certificate chain")?.to_vec();
        if s.at != end {
            return Err(malformed(
                "signature data",
                s.at,
                format!("{} bytes after the PCK certificate chain", end - s.at),
            ));
        }
        Ok(Quote {
            header,
            body,
            signature,
            attestation_key,
            qe_report,
            qe_report_signature,
            qe_auth_data,
            pck_chain_pem,
            signed_len,
            raw: b.to_vec(),
        })
    }

    /// The bytes the attestation key signed: header and body (v5: with its type and size).
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..self.signed_len]
    }

    /// The raw quote.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The PCK certificates (DER, leaf first) of the certification data.
    pub fn pck_chain(&self) -> Result<Vec<Vec<u8>>, TdxError> {
        let pem = self
            .pck_chain_pem
            .split(|b| *b == 0)
            .next()
            .unwrap_or_default();
        let mut out = Vec::new();
        for p in Pem::iter_from_buffer(pem) {
            let p = p.map_err(|e| TdxError::Pck(format!("PEM: {e}")))?;
            out.push(p.contents);
        }
        if out.is_empty() {
            return Err(TdxError::Pck(
                "no certificate in the certification data".into(),
            ));
        }
        Ok(out)
    }

    /// The quote's own signatures, with ring: the QE report signed by the PCK certificate's key,
    /// its REPORT_DATA = SHA-256(attestation key || QE auth data) || 32 zero bytes, and the
    /// quote signed by that attestation key. Does not check the PCK chain or the collateral
    /// ([`verify_quote`] does both).
    pub fn verify_signatures(&self) -> Result<(), TdxError> {
        let chain = self.pck_chain()?;
        let (_, pck) =
            parse_x509_certificate(&chain[0]).map_err(|e| TdxError::Pck(format!("leaf: {e}")))?;
        let pck_point = &pck.public_key().subject_public_key.data;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pck_point)
            .verify(&self.qe_report, &self.qe_report_signature)
            .map_err(|_| {
                TdxError::QeReport("its signature does not verify with the PCK certificate".into())
            })?;
        let mut bound = self.attestation_key.to_vec();
        bound.extend_from_slice(&self.qe_auth_data);
        let h = digest(&SHA256, &bound);
        let rd = self
            .qe_report
            .get(320..384)
            .ok_or_else(|| TdxError::QeReport("shorter than 384 bytes".into()))?;
        if &rd[..32] != h.as_ref() || rd[32..].iter().any(|b| *b != 0) {
            return Err(TdxError::QeReport(
                "REPORT_DATA is not SHA-256(attestation key || QE auth data): the attestation key is not the QE's"
                    .into(),
            ));
        }
        let mut point = [0x04u8; 65];
        point[1..].copy_from_slice(&self.attestation_key);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point[..])
            .verify(self.signed_bytes(), &self.signature)
            .map_err(|_| {
                TdxError::QuoteSignature("does not verify with the attestation key".into())
            })
    }
}

/// The TCB status of the platform (and QE) per Intel's TCB info, as dcap-qvl matched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TcbStatus {
    UpToDate,
    SWHardeningNeeded,
    ConfigurationNeeded,
    ConfigurationAndSWHardeningNeeded,
    OutOfDate,
    OutOfDateConfigurationNeeded,
    TDRelaunchAdvised,
    TDRelaunchAdvisedConfigurationNeeded,
    /// Never accepted (dcap-qvl refuses it before a status is returned).
    Revoked,
}

impl std::str::FromStr for TcbStatus {
    type Err = ();
    /// Intel's spelling (`UpToDate`, `OutOfDate`, ...).
    fn from_str(s: &str) -> Result<TcbStatus, ()> {
        TcbStatus::parse(s).ok_or(())
    }
}

impl TcbStatus {
    fn parse(s: &str) -> Option<TcbStatus> {
        Some(match s {
            "UpToDate" => TcbStatus::UpToDate,
            "SWHardeningNeeded" => TcbStatus::SWHardeningNeeded,
            "ConfigurationNeeded" => TcbStatus::ConfigurationNeeded,
            "ConfigurationAndSWHardeningNeeded" => TcbStatus::ConfigurationAndSWHardeningNeeded,
            "OutOfDate" => TcbStatus::OutOfDate,
            "OutOfDateConfigurationNeeded" => TcbStatus::OutOfDateConfigurationNeeded,
            "TDRelaunchAdvised" => TcbStatus::TDRelaunchAdvised,
            "TDRelaunchAdvisedConfigurationNeeded" => {
                TcbStatus::TDRelaunchAdvisedConfigurationNeeded
            }
            "Revoked" => TcbStatus::Revoked,
            _ => return None,
        })
    }
}

/// What the collateral says of a verified quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcbVerdict {
    pub status: TcbStatus,
    pub advisory_ids: Vec<String>,
}

/// Offline collateral, as the operator supplies it: dcap-qvl's `QuoteCollateralV3` JSON (PCK
/// CRL and its issuer chain, root CA CRL, TCB info and QE identity with their signatures and
/// issuer chains), fetched from Intel PCS or a PCCS for the platform's FMSPC.
pub fn collateral_from_json(bytes: &[u8]) -> Result<QuoteCollateralV3, TdxError> {
    serde_json::from_slice(bytes).map_err(|e| TdxError::Collateral(format!("JSON: {e}")))
}

/// Everything cryptographic about a quote at time `now` (UNIX seconds): the quote's own
/// signatures ([`Quote::verify_signatures`]), then with dcap-qvl (ring backend) and `root_ca`
/// as the only trust anchor: the PCK chain and the CRLs, the TCB info and QE identity
/// signatures and validity, the QE identity, and the platform's TCB level. Returns the TCB
/// status; [`check_td`] judges it.
pub fn verify_quote(
    quote: &Quote,
    collateral: &QuoteCollateralV3,
    root_ca: &[u8],
    now: u64,
) -> Result<TcbVerdict, TdxError> {
    quote.verify_signatures()?;
    // dcap-qvl refuses debug TDs itself; allow them here so the policy ([`check_td`]) is the one
    // place that decides, with its reason.
    let verifier =
        dcap_qvl::verify::QuoteVerifier::<dcap_qvl::configs::RingConfig>::new_with_config(
            root_ca.to_vec(),
        )
        .allow_debug(true);
    let report = verifier
        .verify(quote.raw(), collateral, now)
        .map_err(|e| TdxError::Collateral(format!("{e:#}")))?;
    let status = TcbStatus::parse(&report.status)
        .ok_or_else(|| TdxError::Collateral(format!("unknown TCB status {:?}", report.status)))?;
    Ok(TcbVerdict {
        status,
        advisory_ids: report.advisory_ids,
    })
}

/// What a verifier requires of a TD.
#[derive(Debug, Clone)]
pub struct TdxPolicy {
    /// Golden MRTDs (the TD's initial contents: TDVF and what the VMM loaded).
    pub mrtd: Vec<[u8; 48]>,
    /// Golden values of RTMR0..RTMR2 (firmware configuration, boot loader/kernel, command line
    /// and initrd): `None` = not enforced, reported as a warning.
    pub rtmr: [Option<Vec<[u8; 48]>>; 3],
    /// TCB statuses accepted besides `UpToDate` (`Revoked` never is).
    pub allowed_tcb: Vec<TcbStatus>,
    /// Whether a debuggable TD (TDATTRIBUTES.TUD.DEBUG) is accepted (never in production).
    pub allow_debug: bool,
    /// Whether SEPT_VE_DISABLE must be set (a Linux guest relies on it: without it the host
    /// can inject #VE on private-page accesses).
    pub require_sept_ve_disable: bool,
    /// Whether a migratable TD is accepted.
    pub allow_migratable: bool,
}

impl Default for TdxPolicy {
    /// Strict: no golden values (every MRTD refused), UpToDate only, no debug, SEPT_VE_DISABLE
    /// required, not migratable.
    fn default() -> Self {
        TdxPolicy {
            mrtd: Vec::new(),
            rtmr: [None, None, None],
            allowed_tcb: Vec::new(),
            allow_debug: false,
            require_sept_ve_disable: true,
            allow_migratable: false,
        }
    }
}

/// Every rule on a TD whose quote was verified ([`verify_quote`]), then the binding. Returns
/// warnings (RTMRs without golden values) for the caller to log.
pub fn check_td(
    body: &TdReport,
    tcb: &TcbVerdict,
    policy: &TdxPolicy,
    nonce: &[u8],
    ak_spki: &[u8],
    tls_spki: &[u8],
) -> Result<Vec<String>, TdxError> {
    let a = body.td_attributes;
    if a & ATTR_DEBUG != 0 && !policy.allow_debug {
        return Err(TdxError::Attributes(format!(
            "TDATTRIBUTES {a:#018x} has TUD.DEBUG set (the host can read and change the TD)"
        )));
    }
    if a & ATTR_TUD_RESERVED != 0 {
        return Err(TdxError::Attributes(format!(
            "TDATTRIBUTES {a:#018x} has reserved TUD bits set"
        )));
    }
    if policy.require_sept_ve_disable && a & ATTR_SEPT_VE_DISABLE == 0 {
        return Err(TdxError::Attributes(format!(
            "TDATTRIBUTES {a:#018x} lacks SEPT_VE_DISABLE"
        )));
    }
    if a & ATTR_MIGRATABLE != 0 && !policy.allow_migratable {
        return Err(TdxError::Attributes(format!(
            "TDATTRIBUTES {a:#018x} is MIGRATABLE"
        )));
    }
    if tcb.status != TcbStatus::UpToDate
        && (tcb.status == TcbStatus::Revoked || !policy.allowed_tcb.contains(&tcb.status))
    {
        return Err(TdxError::TcbStatus {
            status: format!("{:?}", tcb.status),
            advisories: if tcb.advisory_ids.is_empty() {
                "none".into()
            } else {
                tcb.advisory_ids.join(", ")
            },
        });
    }
    if !policy.mrtd.contains(&body.mr_td) {
        return Err(TdxError::Mrtd {
            observed: hex::encode(body.mr_td),
        });
    }
    let mut warnings = Vec::new();
    for (i, golden) in policy.rtmr.iter().enumerate() {
        match golden {
            Some(g) if !g.contains(&body.rtmr[i]) => {
                return Err(TdxError::Rtmr {
                    index: i,
                    observed: hex::encode(body.rtmr[i]),
                })
            }
            Some(_) => {}
            None => warnings.push(format!(
                "RTMR{i} {} is not enforced (no golden value)",
                hex::encode(body.rtmr[i])
            )),
        }
    }
    if body.report_data != crate::snp::report_data(nonce, ak_spki, tls_spki) {
        return Err(TdxError::ReportData);
    }
    Ok(warnings)
}

/// Inside a TDX guest: a quote whose REPORTDATA is `report_data` (for nacre:
/// [`crate::snp::report_data`](nonce, AK, TLS key)), through the kernel's configfs-tsm interface
/// ([`crate::tsm::configfs_report`], provider `tdx_guest`; the quote is the entry's `outblob`,
/// made by the host's quoting enclave through the TDX module and the VMM). The quote is parsed
/// before it is returned, so a node never sends something that is not a TDX quote. NOT TESTED ON
/// HARDWARE here (no TDX machine): the configfs protocol is tested against an imitation of the
/// kernel's files, the quote's format with dcap-qvl's sample quotes.
pub fn fetch_quote(report_data: &[u8; 64]) -> Result<Vec<u8>, String> {
    let r = crate::tsm::configfs_report(
        std::path::Path::new(crate::tsm::REPORT_DIR),
        crate::tsm::PROVIDER_TDX_GUEST,
        report_data,
    )?;
    let quote = Quote::parse(&r.outblob).map_err(|e| format!("the kernel's quote: {e}"))?;
    if quote.body.report_data != *report_data {
        return Err("the kernel's quote does not carry the REPORTDATA asked for".into());
    }
    Ok(r.outblob)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_inputs_name_the_field() {
        for n in 0..700 {
            let mut b = vec![0u8; n];
            if n >= 8 {
                b[0] = 4;
                b[2] = 2;
                b[4] = 0x81;
            }
            assert!(Quote::parse(&b).is_err());
        }
        let mut b = vec![0u8; 100];
        b[0] = 4;
        b[2] = 2;
        b[4] = 0x81;
        assert_eq!(
            Quote::parse(&b).unwrap_err(),
            TdxError::Truncated {
                field: "MRSEAM",
                offset: 64,
                need: 48,
                have: 36
            }
        );
    }
}
