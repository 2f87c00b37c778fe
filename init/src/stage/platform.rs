//! Which platform the node runs on, and whether that is acceptable: nacre runs in a
//! confidential VM (SEV-SNP or TDX) with a TPM, or, only when the measured command line says
//! `nacre.insecure-platform=1`, in a plain VM (QEMU with a vTPM, tests).

use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tee {
    SevSnp,
    Tdx,
}

/// What the kernel shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Probe {
    pub tpm: bool,
    pub sev_snp: bool,
    pub tdx: bool,
}

impl Probe {
    pub fn read() -> Probe {
        let exists = |p: &str| Path::new(p).exists();
        Probe {
            tpm: exists("/dev/tpmrm0") || exists("/dev/tpm0"),
            // The SNP guest driver (sev-guest) or the kernel's SEV status in sysfs.
            sev_snp: exists("/dev/sev-guest")
                || std::fs::read_to_string("/sys/kernel/mm/mem_encrypt/active")
                    .is_ok_and(|s| s.trim() == "1")
                    && exists("/sys/firmware/sev"),
            tdx: exists("/dev/tdx_guest") || exists("/sys/firmware/tdx"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    pub tee: Option<Tee>,
    pub tpm: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    #[error("not running in a confidential VM (no SEV-SNP or TDX guest device) and the measured command line does not allow it (nacre.insecure-platform=1)")]
    NotConfidential,
    #[error("no TPM 2.0 device: the node cannot measure its boot or attest")]
    NoTpm,
    #[error("both SEV-SNP and TDX guest devices are present: refusing an ambiguous platform")]
    Ambiguous,
}

/// Decide from what was probed. Without a TPM a node cannot attest: only an insecure platform
/// may go on without one (direct-kernel test boots).
pub fn decide(p: Probe, insecure_allowed: bool) -> Result<Platform, PlatformError> {
    let tee = match (p.sev_snp, p.tdx) {
        (true, true) => return Err(PlatformError::Ambiguous),
        (true, false) => Some(Tee::SevSnp),
        (false, true) => Some(Tee::Tdx),
        (false, false) => None,
    };
    if tee.is_none() && !insecure_allowed {
        return Err(PlatformError::NotConfidential);
    }
    if !p.tpm && !insecure_allowed {
        return Err(PlatformError::NoTpm);
    }
    Ok(Platform { tee, tpm: p.tpm })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_vm_is_refused_unless_the_cmdline_allows_it() {
        let vm = Probe {
            tpm: true,
            ..Probe::default()
        };
        assert_eq!(decide(vm, false), Err(PlatformError::NotConfidential));
        assert_eq!(
            decide(vm, true),
            Ok(Platform {
                tee: None,
                tpm: true
            })
        );
    }

    #[test]
    fn cvm_needs_a_tpm() {
        let snp = Probe {
            sev_snp: true,
            ..Probe::default()
        };
        assert_eq!(decide(snp, false), Err(PlatformError::NoTpm));
        let snp_tpm = Probe { tpm: true, ..snp };
        assert_eq!(decide(snp_tpm, false).unwrap().tee, Some(Tee::SevSnp));
        let both = Probe {
            tdx: true,
            ..snp_tpm
        };
        assert_eq!(decide(both, true), Err(PlatformError::Ambiguous));
    }
}
