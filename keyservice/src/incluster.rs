//! In-cluster mode, the service's side: on a confidential VM the service proves itself with
//! the platform's evidence too (`serve --attest-with TCTI --attest-platform tdx|sev-snp`), the
//! same evidence a node sends, made by the same function
//! (`nacre_attestation::tpm::Attester::cvm_evidence`): its TPM quote and logs, and the TDX
//! quote / SEV-SNP report whose REPORTDATA binds the nonce, the AK and the TLS key
//! (SHA-512(nonce || AK || TLS key)); on Azure the HCL report instead, on GCE with its AK
//! certificate, behind a NitroTPM with AWS's document. Nodes check it with
//! `nacre_attestation::incluster::ServiceVerifier` (platform, phase, cluster; `[key_service]
//! server_accept_guest_bound_ak = ["qemu-snp"]` for a qemu-snp service, whose AK nothing but
//! its own REPORT_DATA binds).

use nacre_attestation::atls::Attest;
use nacre_attestation::evidence::{Evidence, Platform};

/// The platform this service attests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttestPlatform {
    /// A TPM quote alone (no CVM).
    QemuVtpm,
    /// The TPM quote and an SEV-SNP report binding it.
    SevSnp,
    /// The TPM quote and a TDX quote binding it.
    Tdx,
}

/// Where a platform report comes from: the kernel's configfs-tsm ([`kernel_report`]) or a
/// test's stand-in.
pub type Fetch = fn(AttestPlatform, &[u8; 64]) -> Result<Platform, String>;

/// The kernel's report for `data` (configfs-tsm, Linux 6.7+).
pub fn kernel_report(p: AttestPlatform, data: &[u8; 64]) -> Result<Platform, String> {
    match p {
        AttestPlatform::QemuVtpm => Ok(Platform::QemuVtpm),
        AttestPlatform::SevSnp => {
            let (report, vcek) = nacre_attestation::snp::fetch_report(data)
                .map_err(|e| format!("SEV-SNP report: {e}"))?;
            Ok(Platform::SevSnp { report, vcek })
        }
        AttestPlatform::Tdx => Ok(Platform::Tdx {
            quote: nacre_attestation::tdx::fetch_quote(data)
                .map_err(|e| format!("TDX quote: {e}"))?,
        }),
    }
}

impl AttestPlatform {
    /// The confidential VM of [`nacre_attestation::tpm::Attester::cvm_evidence`].
    pub fn cvm(self) -> Option<nacre_attestation::tpm::Cvm> {
        match self {
            AttestPlatform::QemuVtpm => None,
            AttestPlatform::SevSnp => Some(nacre_attestation::tpm::Cvm::SevSnp),
            AttestPlatform::Tdx => Some(nacre_attestation::tpm::Cvm::Tdx),
        }
    }
}

/// The service's evidence, made the way a node makes its own
/// ([`nacre_attestation::tpm::Attester::cvm_evidence`]: Azure's HCL report, GCE's AK
/// certificate or AWS's NitroTPM document where the vTPM has one) with the logs as they are.
pub struct PlatformAttest {
    pub tpm: nacre_attestation::atls::LiveTpmAttest,
    pub platform: AttestPlatform,
    pub fetch: Fetch,
}

impl PlatformAttest {
    /// The platform part for this AK: the report / quote binding SHA-512(nonce || AK || TLS).
    fn platform_of(&self, nonce: &[u8], ak: &[u8], tls_spki: &[u8]) -> Result<Platform, String> {
        let data = nacre_attestation::snp::report_data(nonce, ak, tls_spki);
        (self.fetch)(self.platform, &data)
    }
}

impl Attest for PlatformAttest {
    fn evidence(&self, nonce: &[u8], tls_spki: &[u8]) -> Result<Evidence, String> {
        let t = &self.tpm;
        let fw = std::fs::read(&t.firmware_log)
            .map_err(|e| format!("{}: {e}", t.firmware_log.display()))?;
        let rt = nacre_eventlog::cel::read(&t.runtime_log)
            .map_err(|e| format!("{}: {e}", t.runtime_log.display()))?;
        t.attester.cvm_evidence(
            self.platform.cvm(),
            nonce,
            tls_spki,
            &t.pcrs,
            fw,
            rt,
            &|ak| self.platform_of(nonce, ak, tls_spki),
        )
    }

    fn activate_credential(
        &self,
        challenge: &nacre_attestation::credential::CredentialChallenge,
    ) -> Result<Vec<u8>, String> {
        self.tpm.activate_credential(challenge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(p: AttestPlatform, d: &[u8; 64]) -> Result<Platform, String> {
        Ok(match p {
            AttestPlatform::Tdx => Platform::Tdx { quote: d.to_vec() },
            AttestPlatform::SevSnp => Platform::SevSnp {
                report: d.to_vec(),
                vcek: vec![],
            },
            AttestPlatform::QemuVtpm => Platform::QemuVtpm,
        })
    }

    fn attest(platform: AttestPlatform, fetch: Fetch) -> PlatformAttest {
        PlatformAttest {
            tpm: nacre_attestation::atls::LiveTpmAttest {
                attester: nacre_attestation::tpm::Attester::with_tcti("swtpm:port=1"),
                pcrs: vec![],
                firmware_log: "/nonexistent".into(),
                runtime_log: "/nonexistent".into(),
            },
            platform,
            fetch,
        }
    }

    #[test]
    fn the_platform_report_binds_nonce_ak_and_tls_key() {
        let want = nacre_attestation::snp::report_data(b"n", b"ak", b"tls").to_vec();
        for (p, expect) in [
            (
                AttestPlatform::Tdx,
                Platform::Tdx {
                    quote: want.clone(),
                },
            ),
            (
                AttestPlatform::SevSnp,
                Platform::SevSnp {
                    report: want.clone(),
                    vcek: vec![],
                },
            ),
            (AttestPlatform::QemuVtpm, Platform::QemuVtpm),
        ] {
            let a = attest(p, echo);
            assert_eq!(a.platform_of(b"n", b"ak", b"tls").unwrap(), expect);
        }
        assert_eq!(AttestPlatform::QemuVtpm.cvm(), None);
        assert_eq!(
            AttestPlatform::SevSnp.cvm(),
            Some(nacre_attestation::tpm::Cvm::SevSnp)
        );
        // No report: no evidence (the service does not fall back to a TPM quote alone).
        let a = attest(AttestPlatform::Tdx, |_, _| {
            Err("TDX quote: /sys/kernel/config/tsm/report is missing".into())
        });
        assert!(a
            .platform_of(b"n", b"ak", b"tls")
            .unwrap_err()
            .contains("TDX quote"));
    }
}
