//! Attestation for nacre: the evidence a node presents (a TPM 2.0 quote bound to a verifier's
//! nonce and the node's TLS key, the firmware event log, nacre-init's runtime log, and a typed
//! platform part) and its verification against signed golden measurements.
//!
//! * [`evidence`]: the evidence format and the qualifying data that binds it to a channel.
//! * [`tpm`]: producing evidence with a TPM (tss-esapi; `/dev/tpmrm0` on a node, swtpm in tests).
//! * [`attest`]: parsing TPMS_ATTEST / TPMT_SIGNATURE as the TPM marshals them.
//! * [`verify`]: the [`verify::Verifier`] trait, the QEMU vTPM verifier, and how the attestation
//!   key is trusted ([`verify::AkTrust`]).
//! * [`snp`], [`tdx`]: the SEV-SNP report and the Intel TDX quote that bind the TPM's AK and the
//!   TLS key on confidential VMs; [`tsm`]: the kernel's configfs-tsm interface both come from.
//! * [`ek`], [`credential`]: AKs trusted through an EK certificate, proven by credential
//!   activation (TPM2_MakeCredential in software, ActivateCredential on the node).
//! * [`binding`]: what each variant's platform must provide to bind the AK (per-variant
//!   policy); [`azure`] (the HCL report), [`gce`] (Google's AK certificate); [`x509util`].
//! * [`atls`]: attested TLS (rustls + ring): evidence in an X.509 extension of a short-lived
//!   self-signed certificate, bound to the certificate key and the peer's nonce; mutual.

pub mod atls;
pub mod attest;
pub mod azure;
pub mod binding;
pub mod credential;
pub mod ek;
pub mod evidence;
pub mod gce;
pub mod incluster;
pub mod join;
pub mod nitro;
pub mod snp;
pub mod tdx;
pub mod thim;
pub mod tpm;
pub mod tsm;
pub mod verify;
pub mod x509util;

pub use evidence::{qualifying_data, Evidence, Platform, Quote};
pub use verify::{
    Accepted, AkTrust, ByPlatform, Check, EnrolledAks, Expectation, JoinKind, QemuVtpmVerifier,
    Refusal, SevSnpVerifier, SignedManifest, TdxVerifier, Verifier,
};
