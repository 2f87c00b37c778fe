//! What a verifier requires of an SEV-SNP guest and its platform.
//!
//! There is no permissive default: the VMPL is a required value, and a report from a product
//! (Milan, Genoa, Turin) for which the policy has no minimum TCB is refused. nacre's key
//! service takes both from its command line (`--snp-vmpl`, default 0: nacre's guests run
//! their kernel at VMPL0 — no SVSM or paravisor below them on qemu-snp, GCE and AWS, and on
//! Azure the paravisor asks for the report at VMPL0; `--snp-min-tcb PRODUCT=...`, no default:
//! AMD's bulletins change, and the operator pins the minimum they accept per product).

use super::report::{Generation, Report, Tcb};
use super::report_data;
use super::SnpError;
use std::collections::BTreeMap;

/// Policy bit 19: debugging the guest is allowed.
pub const POLICY_DEBUG: u64 = 1 << 19;
/// Policy bit 18: migration agent allowed.
pub const POLICY_MIGRATE_MA: u64 = 1 << 18;
/// PLATFORM_INFO bit 0: SMT is enabled on the platform.
const PLATFORM_INFO_SMT_EN: u64 = 1;

/// What a verifier requires of an SNP guest.
#[derive(Debug, Clone)]
pub struct SnpPolicy {
    /// Golden launch measurements (48 bytes each): the image's SNP launch digests (checked by
    /// [`check_report`], not by [`super::verify_report`]).
    pub measurements: Vec<[u8; 48]>,
    /// Minimum TCB per product: reported, committed and launch TCB must each be at least it.
    /// A product without an entry is refused.
    pub min_tcb: BTreeMap<Generation, Tcb>,
    /// Whether a guest that may be debugged is accepted (never in production).
    pub allow_debug: bool,
    /// Whether a guest with a migration agent is accepted.
    pub allow_migration_agent: bool,
    /// The VMPL the report must come from.
    pub vmpl: u32,
    /// The release's ID key (SHA-384 of its SNP public key, `nacre-measure snp-id-block`): the
    /// guest must have been launched with an ID block signed by it.
    pub id_key_digest: Option<[u8; 48]>,
    /// Refuse a guest whose host runs with SMT enabled (PLATFORM_INFO.SMT_EN): sibling
    /// hyperthreads share caches with the host's other tenants.
    pub require_smt_off: bool,
}

impl SnpPolicy {
    /// A policy for guests at `vmpl` with these minimum TCBs, no debugging, no migration
    /// agent, no launch measurement, ID key or SMT rule.
    pub fn new(vmpl: u32, min_tcb: impl IntoIterator<Item = (Generation, Tcb)>) -> SnpPolicy {
        SnpPolicy {
            measurements: vec![],
            min_tcb: min_tcb.into_iter().collect(),
            allow_debug: false,
            allow_migration_agent: false,
            vmpl,
            id_key_digest: None,
            require_smt_off: false,
        }
    }
}

/// The platform rules on a report whose signature and endorsement key verified: guest policy
/// (debug, migration agent), SMT, VMPL, minimum TCB of the report's product, ID key.
pub fn check_platform(report: &Report, policy: &SnpPolicy) -> Result<(), SnpError> {
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
    if report.vmpl != policy.vmpl {
        return Err(SnpError::Vmpl {
            observed: report.vmpl,
            required: policy.vmpl,
        });
    }
    let Some(generation) = report.generation else {
        return Err(SnpError::Generation(
            "the report's product is not known (a version 2 report is verified with its VCEK/VLEK first)".into(),
        ));
    };
    let Some(min) = policy.min_tcb.get(&generation) else {
        return Err(SnpError::Tcb(format!(
            "no minimum TCB is configured for {generation}: its nodes are refused"
        )));
    };
    for (name, tcb) in [
        ("reported", report.reported_tcb),
        ("committed", report.committed_tcb),
        ("launch", report.launch_tcb),
    ] {
        if !tcb.at_least(min) {
            return Err(SnpError::Tcb(format!(
                "{generation} {name} TCB ({tcb}) is below the minimum ({min})"
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
    Ok(())
}

/// Every rule on a report whose signature chain was verified ([`super::verify_report`]): the
/// platform rules, a golden launch measurement, then the binding REPORT_DATA =
/// [`report_data`](nonce, AK, TLS key).
pub fn check_report(
    report: &Report,
    policy: &SnpPolicy,
    nonce: &[u8],
    ak_spki: &[u8],
    tls_spki: &[u8],
) -> Result<(), SnpError> {
    check_platform(report, policy)?;
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
