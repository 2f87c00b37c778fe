//! SEV-SNP report verification against real Milan data (tests/fixtures/snp, from virtee/sev):
//! the chain ARK → ASK → VCEK → report verifies, and every altered input is refused with the
//! rule that caught it.

use nacre_attestation::snp::{
    check_report, report_data, AmdChain, Report, SnpError, SnpPolicy, Tcb,
};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/snp/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn milan() -> AmdChain {
    AmdChain::new(&fixture("milan-ark.pem"), &fixture("milan-ask.pem")).unwrap()
}

/// A throw-away signing key for golden manifests, and its public key.
fn manifest_key() -> (
    nacre_measure::sign::PemSigner,
    nacre_measure::sign::PublicKey,
) {
    let (signer, _) = nacre_measure::sign::PemSigner::generate().unwrap();
    let key = nacre_measure::sign::PublicKey::from_spki(
        &nacre_measure::sign::BlobSigner::public_key_spki(&signer),
    )
    .unwrap();
    (signer, key)
}

/// A launch value holding the real report's measurement (4 x EPYC-Milan under QEMU).
fn milan_launch_value(report: &Report) -> nacre_measure::manifest::SnpLaunchValue {
    nacre_measure::manifest::SnpLaunchValue {
        vcpus: 4,
        vcpu_type: "EPYC-Milan".into(),
        vmm: "qemu".into(),
        guest_features: 1,
        ovmf_sha256: "00".repeat(32),
        direct_boot: None,
        measurement: hex::encode(report.measurement),
    }
}

/// SEV-SNP evidence: this report with the real VCEK, and an empty TPM part (the SNP checks
/// come first).
fn snp_evidence(report: Vec<u8>) -> nacre_attestation::evidence::Evidence {
    use nacre_attestation::evidence::{Evidence, Platform, Quote};
    Evidence {
        platform: Platform::SevSnp {
            report,
            vcek: fixture("milan-vcek.der"),
        },
        quote: Quote {
            attest: vec![],
            signature: vec![],
        },
        ak_public: vec![1; 91],
        firmware_log: vec![],
        runtime_log: vec![],
        ek: None,
    }
}

/// A policy with no launch measurement, TCB, VMPL or ID key rule of its own.
fn open_policy() -> SnpPolicy {
    SnpPolicy {
        measurements: vec![],
        min_tcb: Tcb::default(),
        allow_debug: false,
        allow_migration_agent: false,
        vmpl: None,
        id_key_digest: None,
        require_smt_off: false,
    }
}

/// A first join for nonce [7; 32] and TLS key "tls" (the real report binds neither).
fn first_join() -> nacre_attestation::verify::Expectation<'static> {
    nacre_attestation::verify::Expectation {
        nonce: &[7; 32],
        tls_public_key: b"tls",
        join: nacre_attestation::verify::JoinKind::First,
    }
}

#[test]
fn real_milan_report_verifies() {
    let report = Report::parse(&fixture("milan-report.bin")).unwrap();
    assert_eq!(report.version, 2);
    assert_eq!(report.policy & nacre_attestation::snp::POLICY_DEBUG, 0);
    assert_eq!(
        report.reported_tcb,
        Tcb {
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115
        }
    );
    milan()
        .verify_report(&fixture("milan-vcek.der"), &report)
        .unwrap();
}

#[test]
fn altered_reports_and_chains_are_refused() {
    let raw = fixture("milan-report.bin");
    let vcek = fixture("milan-vcek.der");
    // Any signed byte (here the measurement) changed: the signature fails.
    let mut m = raw.clone();
    m[0x90] ^= 1;
    let e = milan()
        .verify_report(&vcek, &Report::parse(&m).unwrap())
        .unwrap_err();
    assert!(matches!(e, SnpError::Signature(_)), "{e}");
    // A changed signature.
    let mut s = raw.clone();
    s[0x2A0] ^= 1;
    assert!(matches!(
        milan().verify_report(&vcek, &Report::parse(&s).unwrap()),
        Err(SnpError::Signature(_))
    ));
    // A VCEK with a changed byte no longer chains to the ASK.
    let mut v = vcek.clone();
    v[40] ^= 0xff;
    let report = Report::parse(&raw).unwrap();
    assert!(matches!(
        milan().verify_report(&v, &report),
        Err(SnpError::Chain(_))
    ));
    // The Genoa chain does not vouch for a Milan VCEK.
    let genoa = AmdChain::new(&fixture("genoa-ark.pem"), &fixture("genoa-ask.pem")).unwrap();
    let e = genoa.verify_report(&vcek, &report).unwrap_err();
    assert!(matches!(e, SnpError::Chain(_)), "{e}");
    // An ASK that the ARK did not sign is refused when the chain is configured.
    assert!(matches!(
        AmdChain::new(&fixture("milan-ark.pem"), &fixture("genoa-ask.pem")),
        Err(SnpError::Chain(_))
    ));
    // Truncated, wrong version, wrong algorithm.
    assert!(matches!(
        Report::parse(&raw[..0x49f]),
        Err(SnpError::Format(_))
    ));
    let mut ver = raw.clone();
    ver[0] = 9;
    assert!(matches!(Report::parse(&ver), Err(SnpError::Format(_))));
    let mut alg = raw.clone();
    alg[0x34] = 2;
    assert!(matches!(Report::parse(&alg), Err(SnpError::Format(_))));
}

#[test]
fn policy_tcb_measurement_and_binding_rules() {
    let report = Report::parse(&fixture("milan-report.bin")).unwrap();
    let good = SnpPolicy {
        measurements: vec![report.measurement],
        min_tcb: Tcb {
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
        },
        allow_debug: false,
        allow_migration_agent: false,
        vmpl: Some(0),
        id_key_digest: None,
        require_smt_off: false,
    };
    // The binding: this report's REPORT_DATA was not made for our nonce and keys.
    assert_eq!(
        check_report(&report, &good, b"nonce", b"ak", b"tls"),
        Err(SnpError::ReportData)
    );
    // With a report whose REPORT_DATA does bind them (the parsed copy edited after its
    // signature was checked above: check_report is the post-signature rule set).
    let mut bound = report.clone();
    bound.report_data = report_data(b"nonce", b"ak", b"tls");
    check_report(&bound, &good, b"nonce", b"ak", b"tls").unwrap();
    // SMT: the host's PLATFORM_INFO.SMT_EN, refused only when the policy requires SMT off.
    let smt_off = SnpPolicy {
        require_smt_off: true,
        ..good.clone()
    };
    let mut smt = bound.clone();
    smt.platform_info = report.platform_info | 1;
    check_report(&smt, &good, b"nonce", b"ak", b"tls").unwrap();
    assert!(matches!(
        check_report(&smt, &smt_off, b"nonce", b"ak", b"tls"),
        Err(SnpError::Policy(m)) if m.contains("SMT is enabled")
    ));
    smt.platform_info = report.platform_info & !1;
    check_report(&smt, &smt_off, b"nonce", b"ak", b"tls").unwrap();
    assert_eq!(
        check_report(&bound, &good, b"other nonce", b"ak", b"tls"),
        Err(SnpError::ReportData)
    );
    let higher = SnpPolicy {
        min_tcb: Tcb {
            snp: 9,
            ..good.min_tcb
        },
        ..good.clone()
    };
    assert!(matches!(
        check_report(&bound, &higher, b"nonce", b"ak", b"tls"),
        Err(SnpError::Tcb(_))
    ));
    let other = SnpPolicy {
        measurements: vec![[0u8; 48]],
        ..good.clone()
    };
    assert!(matches!(
        check_report(&bound, &other, b"nonce", b"ak", b"tls"),
        Err(SnpError::Measurement { .. })
    ));
    let mut debug = bound.clone();
    debug.policy |= nacre_attestation::snp::POLICY_DEBUG;
    assert!(matches!(
        check_report(&debug, &good, b"nonce", b"ak", b"tls"),
        Err(SnpError::Policy(_))
    ));
    // The release's ID key: the report's ID_KEY_DIGEST must be it.
    let id = SnpPolicy {
        id_key_digest: Some([1; 48]),
        ..good.clone()
    };
    let r = check_report(&bound, &id, b"nonce", b"ak", b"tls").unwrap_err();
    assert!(
        matches!(r, SnpError::Policy(ref m) if m.contains("ID key")),
        "{r}"
    );
    let same = SnpPolicy {
        id_key_digest: Some(report.id_key_digest),
        ..good.clone()
    };
    check_report(&bound, &same, b"nonce", b"ak", b"tls").unwrap();
    let mut vmpl = bound.clone();
    vmpl.vmpl = 2;
    assert!(matches!(
        check_report(&vmpl, &good, b"nonce", b"ak", b"tls"),
        Err(SnpError::Policy(_))
    ));
}

/// The SEV-SNP verifier runs the report rules before any TPM check. A positive end-to-end case
/// needs a report whose REPORT_DATA binds our nonce and keys, i.e. SNP hardware: not here.
#[test]
fn snp_verifier_refuses_what_the_report_does_not_prove() {
    use nacre_attestation::evidence::Platform;
    use nacre_attestation::verify::{Check, SevSnpVerifier, Verifier};
    let report = Report::parse(&fixture("milan-report.bin")).unwrap();
    let (signer, key) = manifest_key();
    let policy = SnpPolicy {
        measurements: vec![report.measurement],
        min_tcb: Tcb::default(),
        allow_debug: false,
        allow_migration_agent: false,
        vmpl: Some(0),
        id_key_digest: None,
        require_smt_off: false,
    };
    let v = SevSnpVerifier::new(
        milan(),
        policy,
        vec![manifest_with_snp(&signer, vec![])],
        key,
    );
    let ev = snp_evidence;
    let x = first_join();
    // Genuine report, but made for another nonce and keys: not bound.
    let r = v.verify(&ev(fixture("milan-report.bin")), &x).unwrap_err();
    assert_eq!(r.check, Check::SnpReport);
    assert!(r.reason.contains("REPORT_DATA"), "{r}");
    // A forged report: the signature.
    let mut forged = fixture("milan-report.bin");
    forged[0x50] ^= 1;
    let r = v.verify(&ev(forged), &x).unwrap_err();
    assert!(r.reason.contains("signature"), "{r}");
    // QEMU vTPM evidence is not SEV-SNP evidence.
    let mut plain = ev(fixture("milan-report.bin"));
    plain.platform = Platform::QemuVtpm;
    assert_eq!(v.verify(&plain, &x).unwrap_err().check, Check::Platform);
}

#[test]
fn evidence_goes_to_its_platform_verifier() {
    use nacre_attestation::evidence::{Evidence, Platform, Quote};
    use nacre_attestation::verify::{ByPlatform, Check, Expectation, JoinKind, Verifier};
    let none = ByPlatform::default();
    let ev = Evidence {
        platform: Platform::SevSnp {
            report: fixture("milan-report.bin"),
            vcek: fixture("milan-vcek.der"),
        },
        quote: Quote {
            attest: vec![],
            signature: vec![],
        },
        ak_public: vec![],
        firmware_log: vec![],
        runtime_log: vec![],
        ek: None,
    };
    let x = Expectation {
        nonce: &[0; 32],
        tls_public_key: b"k",
        join: JoinKind::First,
    };
    let r = none.verify(&ev, &x).unwrap_err();
    assert_eq!(r.check, Check::Platform);
    assert!(
        r.reason.contains("no verifier is configured for SEV-SNP"),
        "{r}"
    );
    let tdx = Evidence {
        platform: Platform::Tdx { quote: vec![1] },
        ..ev
    };
    assert!(none.verify(&tdx, &x).unwrap_err().reason.contains("TDX"));
}

/// Golden launch measurements come from the signed manifests too (`nacre-measure golden
/// --snp-ovmf`): with the report's measurement in a manifest the measurement rule passes (the
/// refusal moves on to REPORT_DATA); without it, the measurement rule refuses.
#[test]
fn launch_measurements_from_signed_manifests() {
    use nacre_attestation::verify::{SevSnpVerifier, Verifier};
    use nacre_measure::manifest::SnpLaunchValue;
    let report = Report::parse(&fixture("milan-report.bin")).unwrap();
    let (signer, key) = manifest_key();
    let signed = |snp: Vec<SnpLaunchValue>| manifest_with_snp(&signer, snp);
    let value = milan_launch_value(&report);
    let policy = open_policy();
    let ev = snp_evidence(fixture("milan-report.bin"));
    let x = first_join();
    let with = SevSnpVerifier::new(
        milan(),
        policy.clone(),
        vec![signed(vec![value])],
        key.clone(),
    );
    let r = with.verify(&ev, &x).unwrap_err();
    assert!(r.reason.contains("REPORT_DATA"), "{r}");
    let without = SevSnpVerifier::new(milan(), policy, vec![signed(vec![])], key);
    let r = without.verify(&ev, &x).unwrap_err();
    assert!(r.reason.contains("launch measurement"), "{r}");
}

/// A signed manifest (one PCR, and these SNP launch values).
fn manifest_with_snp(
    signer: &nacre_measure::sign::PemSigner,
    snp: Vec<nacre_measure::manifest::SnpLaunchValue>,
) -> nacre_attestation::verify::SignedManifest {
    use nacre_measure::manifest::{Expected, ImageRef, Manifest, SCHEMA};
    let m = Manifest {
        schema: SCHEMA.into(),
        image: ImageRef {
            reference: "r".into(),
            version: "v".into(),
            variant: "qemu-snp".into(),
            uki_sha256: "00".repeat(32),
            roothash: None,
        },
        alg: nacre_eventlog::HashAlg::Sha256,
        stub: nacre_measure::uki::StubProfile::V252,
        secure_boot: false,
        phase: Some("sysinit".into()),
        not_after: None,
        measurements: [(
            4u32,
            Expected {
                expected: vec![4; 32],
                warn_only: false,
            },
        )]
        .into_iter()
        .collect(),
        events: vec![],
        snp,
        tdx: None,
    };
    let json = m.to_json();
    let sig = nacre_measure::sign::sign_blob(signer, &json).unwrap();
    nacre_attestation::verify::SignedManifest {
        json,
        signature_b64: sig.into_bytes(),
    }
}

/// A manifest admits only evidence of its variant's platform: with the real Milan report (its
/// chain and signature verify), a `qemu-vtpm` or TDX manifest, even one holding the report's
/// launch measurement, is refused naming both; the `aws-sev-snp` one moves on to the report's
/// binding.
#[test]
fn manifest_of_another_variant_is_refused_for_snp_evidence() {
    use nacre_attestation::verify::{Check, SevSnpVerifier, Verifier};
    use nacre_measure::manifest::Manifest;
    let report = Report::parse(&fixture("milan-report.bin")).unwrap();
    let (signer, key) = manifest_key();
    let value = milan_launch_value(&report);
    let with_variant = |variant: &str| {
        let signed = manifest_with_snp(&signer, vec![value.clone()]);
        let mut m = Manifest::from_json(&signed.json).unwrap();
        m.image.variant = variant.into();
        let json = m.to_json();
        let sig = nacre_measure::sign::sign_blob(&signer, &json).unwrap();
        nacre_attestation::verify::SignedManifest {
            json,
            signature_b64: sig.into_bytes(),
        }
    };
    let ev = snp_evidence(fixture("milan-report.bin"));
    let x = first_join();
    let policy = open_policy();
    let verify = |variant: &str| {
        SevSnpVerifier::new(
            milan(),
            policy.clone(),
            vec![with_variant(variant)],
            key.clone(),
        )
        .verify(&ev, &x)
        .unwrap_err()
    };
    for variant in ["qemu-vtpm", "gcp-tdx"] {
        let r = verify(variant);
        assert_eq!(r.check, Check::Platform, "{r}");
        assert!(
            r.reason.contains("SEV-SNP evidence") && r.reason.contains(variant),
            "{r}"
        );
    }
    let r = verify("aws-sev-snp");
    assert!(r.reason.contains("REPORT_DATA"), "{r}");
}
