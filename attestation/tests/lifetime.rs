//! Manifests with a lifetime and bound to their platform and their own launch values (issue 12
//! item 5), with evidence made by a real swtpm (see `support`): an expired manifest admits
//! nothing, a manifest admits only evidence of its variant's platform, and on SEV-SNP and TDX
//! the PCRs and the launch values must come from one manifest.

use nacre_attestation::evidence::{Evidence, Platform};
use nacre_attestation::tpm::Attester;
use nacre_attestation::verify::{
    Check, EnrolledAks, Expectation, JoinKind, LaunchValues, QemuVtpmVerifier, SignedManifest,
    Verifier,
};
use nacre_eventlog::{Phase, RuntimeEvent};
use nacre_measure::manifest::{format_rfc3339_utc, Manifest, SnpLaunchValue, TdxLaunchValue};
use nacre_measure::sign::{BlobSigner, PemSigner, PublicKey};

mod support;
use support::*;

const STAGE1: [RuntimeEvent; 1] = [RuntimeEvent::Phase(Phase::EnterInitrd)];
/// 2026-01-01T00:00:00Z: the time the verifiers below judge lifetimes at.
const NOW: u64 = 1_767_225_600;

struct Setup {
    node: Node,
    ak: Vec<u8>,
    tls: Vec<u8>,
    signer: PemSigner,
    key: PublicKey,
}

fn setup() -> Setup {
    let node = boot("plain", &STAGE1);
    let ak = Attester::with_tcti(&node.tpm.tcti).ak_public().unwrap();
    let (signer, _) = PemSigner::generate().unwrap();
    let key = PublicKey::from_spki(&signer.public_key_spki()).unwrap();
    Setup {
        node,
        ak,
        tls: PemSigner::generate().unwrap().0.public_key_spki(),
        signer,
        key,
    }
}

impl Setup {
    fn evidence(&self, nonce: &[u8]) -> Evidence {
        Attester::with_tcti(&self.node.tpm.tcti)
            .evidence(
                nonce,
                &self.tls,
                &QUOTED,
                self.node.firmware_log.clone(),
                self.node.runtime_log.clone(),
            )
            .unwrap()
    }

    fn expect<'a>(&'a self, nonce: &'a [u8]) -> Expectation<'a> {
        Expectation {
            nonce,
            tls_public_key: &self.tls,
            join: JoinKind::First,
        }
    }

    /// A manifest over this node's PCRs, changed by `tweak`, signed with the release key.
    fn manifest(&self, tweak: impl Fn(&mut Manifest)) -> SignedManifest {
        manifest_signed_by(&replayed(&self.node), tweak, &self.signer)
    }

    fn verifier(&self, manifests: Vec<SignedManifest>) -> QemuVtpmVerifier {
        QemuVtpmVerifier::with_manifests(
            manifests,
            self.key.clone(),
            Box::new(EnrolledAks::new([self.ak.clone()])),
        )
        .at_time(NOW)
    }
}

fn refused(r: Result<nacre_attestation::Accepted, nacre_attestation::Refusal>) -> (Check, String) {
    let r = r.expect_err("must be refused");
    eprintln!("{r}");
    (r.check, r.reason)
}

#[test]
fn expired_manifest_is_refused_a_valid_one_accepted() {
    let s = setup();
    let e = s.evidence(b"n");
    let x = s.expect(b"n");
    // Valid until one second from now: accepted; a manifest without not_after too.
    let valid = s.manifest(|m| m.not_after = Some(format_rfc3339_utc(NOW + 1)));
    let ok = s.verifier(vec![valid.clone()]).verify(&e, &x).unwrap();
    assert_eq!(ok.matched, vec![0, 4, 7, 9, 11]);
    s.verifier(vec![s.manifest(|_| {})]).verify(&e, &x).unwrap();
    // Expired one second ago.
    let old = s.manifest(|m| {
        m.image.version = "1.0.0".into();
        m.not_after = Some(format_rfc3339_utc(NOW - 1));
    });
    let (check, reason) = refused(s.verifier(vec![old.clone()]).verify(&e, &x));
    assert_eq!(check, Check::ManifestExpired);
    assert_eq!(check.to_string(), "manifest expired");
    assert!(
        reason.contains("manifest 1.0.0") && reason.contains("2025-12-31T23:59:59Z"),
        "{reason}"
    );
    // Next to a valid manifest of the same PCRs the expired one does not matter.
    s.verifier(vec![old.clone(), valid]).verify(&e, &x).unwrap();
    // The same verifier a year earlier accepts the node.
    QemuVtpmVerifier::with_manifests(
        vec![old],
        s.key.clone(),
        Box::new(EnrolledAks::new([s.ak.clone()])),
    )
    .at_time(NOW - 365 * 86400)
    .verify(&e, &x)
    .unwrap();
}

#[test]
fn manifest_of_another_platform_is_refused_naming_both() {
    let s = setup();
    let e = s.evidence(b"n");
    let x = s.expect(b"n");
    for variant in ["qemu-tdx", "aws-sev-snp", "qemu"] {
        let m = s.manifest(|m| m.image.variant = variant.into());
        let (check, reason) = refused(s.verifier(vec![m]).verify(&e, &x));
        assert_eq!(check, Check::Platform);
        assert!(
            reason.contains("QEMU vTPM evidence") && reason.contains(variant),
            "{reason}"
        );
    }
    // A qemu-vtpm manifest next to a TDX one: the QEMU vTPM evidence matches its own.
    let tdx = s.manifest(|m| m.image.variant = "qemu-tdx".into());
    let ok = s
        .verifier(vec![tdx, s.manifest(|_| {})])
        .verify(&e, &x)
        .unwrap();
    assert_eq!(ok.image.variant, "qemu-vtpm");
}

fn snp_value(measurement: [u8; 48]) -> SnpLaunchValue {
    SnpLaunchValue {
        vcpus: 2,
        vcpu_type: "EPYC-Milan".into(),
        vmm: "qemu".into(),
        guest_features: 1,
        ovmf_sha256: "00".repeat(32),
        direct_boot: None,
        measurement: hex::encode(measurement),
    }
}

/// SEV-SNP: the manifest whose PCRs match must hold the report's launch measurement. Release A
/// has this node's PCRs and measurement X; release B other PCRs and the node's measurement M.
/// Each value is golden in some manifest, but no manifest holds both: refused. (The platform
/// part, which the real Milan report passes up to its REPORT_DATA binding, is in `snp.rs`;
/// this is the step after it, `SevSnpVerifier`'s own last step.)
#[test]
fn snp_launch_measurement_must_come_from_the_matching_manifest() {
    let s = setup();
    let mut e = s.evidence(b"n");
    e.platform = Platform::SevSnp {
        report: vec![],
        vcek: vec![],
    };
    let x = s.expect(b"n");
    let (m_node, m_other) = ([0x4d; 48], [0x58; 48]);
    let a = s.manifest(|m| {
        m.image.version = "1.0.0".into();
        m.image.variant = "qemu-snp".into();
        m.snp = vec![snp_value(m_other)];
    });
    let b = s.manifest(|m| {
        m.image.version = "2.0.0".into();
        m.image.variant = "aws-sev-snp".into();
        m.measurements.get_mut(&4).unwrap().expected = vec![0xbb; 32];
        m.snp = vec![snp_value(m_node)];
    });
    let launch = LaunchValues::SevSnp {
        measurement: m_node,
        configured: false,
    };
    let v = s.verifier(vec![a, b]);
    let (check, reason) = refused(v.verify_with_launch(&e, &x, &launch));
    assert_eq!(check, Check::LaunchValues);
    assert!(
        reason.contains("manifest 1.0.0")
            && reason.contains(&hex::encode(m_node))
            && reason.contains("one manifest"),
        "{reason}"
    );
    // Release A with the node's measurement: accepted.
    let a = s.manifest(|m| {
        m.image.variant = "qemu-snp".into();
        m.snp = vec![snp_value(m_other), snp_value(m_node)];
    });
    let ok = s
        .verifier(vec![a])
        .verify_with_launch(&e, &x, &launch)
        .unwrap();
    assert_eq!(ok.image.variant, "qemu-snp");
    // A manifest without SNP values pairs only with the operator's configured measurements.
    let plain = s.manifest(|m| m.image.variant = "qemu-snp".into());
    let (check, _) = refused(
        s.verifier(vec![plain.clone()])
            .verify_with_launch(&e, &x, &launch),
    );
    assert_eq!(check, Check::LaunchValues);
    s.verifier(vec![plain])
        .verify_with_launch(
            &e,
            &x,
            &LaunchValues::SevSnp {
                measurement: m_node,
                configured: true,
            },
        )
        .unwrap();
    // QEMU vTPM manifests never admit SEV-SNP evidence.
    let (check, reason) = refused(
        s.verifier(vec![s.manifest(|_| {})])
            .verify_with_launch(&e, &x, &launch),
    );
    assert_eq!(check, Check::Platform);
    assert!(
        reason.contains("SEV-SNP evidence") && reason.contains("qemu-vtpm"),
        "{reason}"
    );
}

fn tdx_value(mrtd: [u8; 48], rtmr2: Option<[u8; 48]>) -> TdxLaunchValue {
    TdxLaunchValue {
        mrtd: hex::encode(mrtd),
        page_add_order: "per-page".into(),
        // RTMR[1]/[2] are required on TDX (a manifest without them admits nothing): RTMR[1]
        // is the launch values' below.
        rtmr1: Some(hex::encode([0u8; 48])),
        rtmr2: rtmr2.map(hex::encode),
        ovmf_sha256: "00".repeat(32),
    }
}

/// TDX: MRTD and RTMR[1]/[2] must come from the manifest whose PCRs match.
#[test]
fn tdx_launch_values_must_come_from_the_matching_manifest() {
    let s = setup();
    let mut e = s.evidence(b"n");
    e.platform = Platform::Tdx { quote: vec![] };
    let x = s.expect(b"n");
    let (mrtd, rtmr2) = ([0x11; 48], [0x22; 48]);
    let launch = LaunchValues::Tdx {
        mrtd,
        rtmr1: [0; 48],
        rtmr2,
        configured: false,
    };
    // Release A: this node's PCRs, another MRTD; release B: the node's MRTD, other PCRs.
    let a = s.manifest(|m| {
        m.image.version = "1.0.0".into();
        m.image.variant = "qemu-tdx".into();
        m.tdx = Some(tdx_value([0x33; 48], Some(rtmr2)));
    });
    let b = s.manifest(|m| {
        m.image.version = "2.0.0".into();
        m.image.variant = "gcp-tdx".into();
        m.measurements.get_mut(&11).unwrap().expected = vec![0xbb; 32];
        m.tdx = Some(tdx_value(mrtd, Some(rtmr2)));
    });
    let (check, reason) = refused(s.verifier(vec![a, b]).verify_with_launch(&e, &x, &launch));
    assert_eq!(check, Check::LaunchValues);
    assert!(
        reason.contains("manifest 1.0.0") && reason.contains("MRTD"),
        "{reason}"
    );
    // The node's MRTD with another release's RTMR[2].
    let a = s.manifest(|m| {
        m.image.variant = "qemu-tdx".into();
        m.tdx = Some(tdx_value(mrtd, Some([0x44; 48])));
    });
    let (check, reason) = refused(s.verifier(vec![a]).verify_with_launch(&e, &x, &launch));
    assert_eq!(check, Check::LaunchValues);
    assert!(reason.contains("RTMR2"), "{reason}");
    // All of them from the one manifest: accepted.
    let a = s.manifest(|m| {
        m.image.variant = "qemu-tdx".into();
        m.tdx = Some(tdx_value(mrtd, Some(rtmr2)));
    });
    s.verifier(vec![a])
        .verify_with_launch(&e, &x, &launch)
        .unwrap();
    // An SEV-SNP manifest does not admit TDX evidence.
    let snp = s.manifest(|m| m.image.variant = "gcp-sev-snp".into());
    let (check, reason) = refused(s.verifier(vec![snp]).verify_with_launch(&e, &x, &launch));
    assert_eq!(check, Check::Platform);
    assert!(
        reason.contains("TDX evidence") && reason.contains("gcp-sev-snp"),
        "{reason}"
    );
}
