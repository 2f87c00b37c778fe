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

/// The TDX guest device (the tdx-guest driver: TDREPORT, quotes through configfs-tsm, and the
/// RTMR extend interface under `/sys/devices/virtual/misc/tdx_guest`).
pub const TDX_GUEST: &str = "/dev/tdx_guest";

/// Whether `/proc/cpuinfo` text lists `flag` among a CPU's flags (`flags : ... tdx_guest ...`:
/// what the kernel sets in a TDX guest, with or without the guest driver).
pub fn cpuinfo_has_flag(cpuinfo: &str, flag: &str) -> bool {
    cpuinfo.lines().any(|l| {
        let mut kv = l.splitn(2, ':');
        kv.next().is_some_and(|k| k.trim() == "flags")
            && kv
                .next()
                .is_some_and(|v| v.split_whitespace().any(|f| f == flag))
    })
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
            // The guest driver, the firmware's sysfs node, or the CPU flag the kernel sets in a
            // TDX guest.
            tdx: exists(TDX_GUEST)
                || exists("/sys/firmware/tdx")
                || std::fs::read_to_string("/proc/cpuinfo")
                    .is_ok_and(|c| cpuinfo_has_flag(&c, "tdx_guest")),
        }
    }

    /// The confidential-computing platform, if any (both at once is refused).
    pub fn tee(&self) -> Result<Option<Tee>, PlatformError> {
        match (self.sev_snp, self.tdx) {
            (true, true) => Err(PlatformError::Ambiguous),
            (true, false) => Ok(Some(Tee::SevSnp)),
            (false, true) => Ok(Some(Tee::Tdx)),
            (false, false) => Ok(None),
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
    let tee = p.tee()?;
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

    #[test]
    fn tdx_guest() {
        let tdx = Probe {
            tdx: true,
            ..Probe::default()
        };
        assert_eq!(decide(tdx, false), Err(PlatformError::NoTpm));
        let tdx_tpm = Probe { tpm: true, ..tdx };
        assert_eq!(
            decide(tdx_tpm, false),
            Ok(Platform {
                tee: Some(Tee::Tdx),
                tpm: true
            })
        );
        // The command line's permission does not change what a TDX guest is.
        assert_eq!(decide(tdx_tpm, true).unwrap().tee, Some(Tee::Tdx));
        assert_eq!(tdx_tpm.tee(), Ok(Some(Tee::Tdx)));
        assert_eq!(
            Probe {
                sev_snp: true,
                ..tdx_tpm
            }
            .tee(),
            Err(PlatformError::Ambiguous)
        );
    }

    #[test]
    fn cpuinfo_flags() {
        let tdx = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme tdx_guest x2apic\nbugs\t\t: spectre_v1\n";
        assert!(cpuinfo_has_flag(tdx, "tdx_guest"));
        assert!(!cpuinfo_has_flag(tdx, "tdx"));
        // A bug or another field naming it is not a flag.
        let other = "flags\t\t: fpu vme\nbugs\t\t: tdx_guest\nmodel name\t: tdx_guest\n";
        assert!(!cpuinfo_has_flag(other, "tdx_guest"));
        assert!(!cpuinfo_has_flag("", "tdx_guest"));
    }
}
