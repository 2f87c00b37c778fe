//! SEV-SNP report verification against real reports of every generation (tests/fixtures/snp:
//! Milan v2 from virtee/sev, Milan v3, Genoa v5 and Turin v5 from Project Oak, AWS VLEK-signed
//! Milan v2 from Constellation; origins in the README there) and AMD's bundled roots, plus a
//! chain made in the test (tests/fixtures/snp/test-made, NOT AMD's) where a private key is
//! needed: a CRL that revokes the ASK, a report bound to our nonce.

use nacre_attestation::snp::{
    check_binding, check_report, report_data, verify_report, verify_report_with_store,
    verify_signature, AmdRoots, Generation, Report, SigningKey, SnpError, SnpPolicy, Tcb,
    VekSource,
};

fn fixture(name: &str) -> Vec<u8> {
    let p = format!("{}/tests/fixtures/snp/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn roots() -> AmdRoots {
    AmdRoots::bundled().unwrap()
}

/// The real reports: file, endorsement key, product, signing key, version.
const REAL: [(&str, &str, Generation, SigningKey, u32); 6] = [
    (
        "milan-report.bin",
        "milan-vcek.der",
        Generation::Milan,
        SigningKey::Vcek,
        2,
    ),
    (
        "milan-v3-report.bin",
        "milan-v3-vcek.der",
        Generation::Milan,
        SigningKey::Vcek,
        3,
    ),
    (
        "genoa-report.bin",
        "genoa-vcek.der",
        Generation::Genoa,
        SigningKey::Vcek,
        5,
    ),
    (
        "turin-report.bin",
        "turin-vcek.der",
        Generation::Turin,
        SigningKey::Vcek,
        5,
    ),
    (
        "aws-vlek-report.bin",
        "aws-vlek.der",
        Generation::Milan,
        SigningKey::Vlek,
        3,
    ),
    (
        "aws-vlek-report-2.bin",
        "aws-vlek-2.der",
        Generation::Milan,
        SigningKey::Vlek,
        2,
    ),
];

/// A policy every real report meets: VMPL and each product's minimum at the reports' own
/// values or below (Milan v2 3/0/8/115, Milan v3 4/0/24/219, Genoa 10/0/25/84, Turin
/// 0/1/0/2/71, AWS 3/0/10/115).
fn policy_for(vmpl: u32) -> SnpPolicy {
    SnpPolicy::new(
        vmpl,
        [
            (
                Generation::Milan,
                Tcb {
                    bootloader: 3,
                    snp: 8,
                    microcode: 115,
                    ..Tcb::default()
                },
            ),
            (
                Generation::Genoa,
                Tcb {
                    bootloader: 10,
                    snp: 25,
                    microcode: 84,
                    ..Tcb::default()
                },
            ),
            (
                Generation::Turin,
                Tcb {
                    fmc: 0,
                    bootloader: 1,
                    tee: 0,
                    snp: 2,
                    microcode: 71,
                },
            ),
        ],
    )
}

#[test]
fn real_reports_of_every_generation_verify() {
    for (report, vek, generation, kind, version) in REAL {
        let v = verify_signature(&fixture(report), &fixture(vek), &roots())
            .unwrap_or_else(|e| panic!("{report}: {e}"));
        assert_eq!(v.generation, generation, "{report}");
        assert_eq!(v.signing_key, kind, "{report}");
        assert_eq!(v.report.version, version, "{report}");
        assert_eq!(v.report.generation, Some(generation), "{report}");
    }
}

/// Turin's TCB and chip id, as the KDS URL its VCEK was downloaded from says (Project Oak's
/// turin_oc_endorsements.textproto: `/vcek/v1/Turin/3b42092f69c656d3?ucodeSPL=71&snpSPL=2&
/// teeSPL=0&blSPL=1&fmcSPL=0`): an independent statement of what the report holds.
#[test]
fn turin_report_is_read_in_turins_layout() {
    let v = verify_signature(
        &fixture("turin-report.bin"),
        &fixture("turin-vcek.der"),
        &roots(),
    )
    .unwrap();
    assert_eq!(v.report.cpuid, Some([0x1a, 0x02, 0x01]));
    let tcb = Tcb {
        fmc: 0,
        bootloader: 1,
        tee: 0,
        snp: 2,
        microcode: 71,
    };
    assert_eq!(v.report.reported_tcb, tcb);
    assert_eq!(v.vek.tcb, tcb);
    assert_eq!(
        v.report.chip_id().map(hex::encode).as_deref(),
        Some("3b42092f69c656d3")
    );
    assert_eq!(
        v.vek.hwid.as_deref().map(hex::encode).as_deref(),
        Some("3b42092f69c656d3")
    );
    assert!(v.report.chip_id[8..].iter().all(|b| *b == 0));
}

/// The Milan/Genoa layout on a Turin report: refused when asked for (CPUID names Turin), and
/// the misread TCB and chip id do not match the VCEK — the bug the old parser had.
#[test]
fn turin_report_misread_with_the_milan_layout_does_not_verify() {
    let raw = fixture("turin-report.bin");
    let e = Report::parse_as(&raw, Generation::Milan).unwrap_err();
    assert!(
        matches!(e, SnpError::Generation(ref m) if m.contains("Turin")),
        "{e}"
    );
    let good = verify_signature(&raw, &fixture("turin-vcek.der"), &roots()).unwrap();
    let misread = Report::misread_as(&raw, Generation::Milan).unwrap();
    // Milan layout: boot loader = fmc byte, tee = boot loader byte, snp = a reserved byte.
    assert_eq!(
        misread.reported_tcb,
        Tcb {
            fmc: 0,
            bootloader: 0,
            tee: 1,
            snp: 0,
            microcode: 71
        }
    );
    let e = check_binding(&misread, &good.vek).unwrap_err();
    assert!(
        matches!(e, SnpError::Vek(ref m) if m.contains("TCB")),
        "{e}"
    );
    // A Turin VCEK offered for a Milan-layout (version 2) reading: its product is Turin, and
    // the report's CPUID says so too; a Milan chain does not vouch for it either.
    let mut milan_only = AmdRoots::empty();
    milan_only
        .set(
            Generation::Milan,
            &fixture("milan-ark.pem"),
            &fixture("milan-ask.pem"),
            None,
        )
        .unwrap();
    let e = verify_signature(&raw, &fixture("turin-vcek.der"), &milan_only).unwrap_err();
    assert!(
        matches!(e, SnpError::Chain(ref m) if m.contains("Turin")),
        "{e}"
    );
}

/// A version 2 report has no CPUID: its product comes from the key that signed it.
#[test]
fn version_2_reports_take_their_product_from_the_certificate() {
    for (report, vek) in [
        ("milan-report.bin", "milan-vcek.der"),
        ("aws-vlek-report-2.bin", "aws-vlek-2.der"),
    ] {
        let parsed = Report::parse(&fixture(report)).unwrap();
        assert_eq!(parsed.version, 2);
        assert_eq!(parsed.generation, None, "{report}");
        let v = verify_signature(&fixture(report), &fixture(vek), &roots()).unwrap();
        assert_eq!(v.generation, Generation::Milan, "{report}");
    }
    // A version 3+ report whose CPUID disagrees with the certificate's product is refused:
    // the Genoa report with Milan's VCEK.
    let e = verify_signature(
        &fixture("genoa-report.bin"),
        &fixture("milan-v3-vcek.der"),
        &roots(),
    )
    .unwrap_err();
    assert!(
        matches!(e, SnpError::Generation(ref m) if m.contains("Genoa") && m.contains("Milan")),
        "{e}"
    );
}

#[test]
fn aws_vlek_report_verifies_with_the_asvk_chain_and_not_with_a_vcek_chain() {
    let report = fixture("aws-vlek-report.bin");
    let v = verify_signature(&report, &fixture("aws-vlek.der"), &roots()).unwrap();
    assert_eq!(v.signing_key, SigningKey::Vlek);
    assert_eq!(v.vek.hwid, None);
    assert_eq!(
        v.vek.csp_id.as_deref(),
        Some("CN=cc-eu-west-1.amazonaws.com")
    );
    // A VCEK for a VLEK-signed report: the chain kind is refused, naming both.
    let e = verify_signature(&report, &fixture("milan-vcek.der"), &roots()).unwrap_err();
    assert!(
        matches!(e, SnpError::ChainKind(ref m) if m.contains("VLEK") && m.contains("SEV-Milan")),
        "{e}"
    );
    // And a VLEK for a VCEK-signed report.
    let e = verify_signature(
        &fixture("milan-report.bin"),
        &fixture("aws-vlek.der"),
        &roots(),
    )
    .unwrap_err();
    assert!(
        matches!(e, SnpError::ChainKind(ref m) if m.contains("VCEK") && m.contains("SEV-VLEK-Milan")),
        "{e}"
    );
    // The report's SIGNING_KEY flipped to VCEK (bits 4:2 of 0x48): the signed bytes changed.
    let mut flipped = report.clone();
    flipped[0x48] &= !(7 << 2);
    let e = verify_signature(&flipped, &fixture("aws-vlek.der"), &roots()).unwrap_err();
    assert!(
        matches!(e, SnpError::ChainKind(_) | SnpError::Signature(_)),
        "{e}"
    );
    // Without the ASVK configured, VLEK reports cannot be verified.
    let mut no_asvk = AmdRoots::empty();
    no_asvk
        .set(
            Generation::Milan,
            &fixture("milan-ark.pem"),
            &fixture("milan-ask.pem"),
            None,
        )
        .unwrap();
    let e = verify_signature(&report, &fixture("aws-vlek.der"), &no_asvk).unwrap_err();
    assert!(
        matches!(e, SnpError::Chain(ref m) if m.contains("ASVK")),
        "{e}"
    );
}

/// AWS's real certificate table (Constellation's certs_valid.hex): the VLEK is found under
/// its GUID, and it signed the report that came with it.
#[test]
fn aws_certificate_table_yields_the_vlek() {
    let table = fixture("aws-cert-table.bin");
    let (kind, vlek) = nacre_attestation::snp::vek_from_cert_table(&table)
        .unwrap()
        .unwrap();
    assert_eq!(kind, SigningKey::Vlek);
    let v = verify_signature(&fixture("aws-vlek-report-2.bin"), &vlek, &roots()).unwrap();
    assert_eq!(v.signing_key, SigningKey::Vlek);
    // What nacre-init sends: the key from auxblob, or nothing when the host gives no table
    // or a table without one; a table that does not parse is an error.
    use nacre_attestation::snp::vek_of_auxblob;
    assert_eq!(vek_of_auxblob(Some(&table)).unwrap(), vlek);
    assert_eq!(vek_of_auxblob(None).unwrap(), Vec::<u8>::new());
    assert_eq!(vek_of_auxblob(Some(&[0; 24])).unwrap(), Vec::<u8>::new());
    assert!(vek_of_auxblob(Some(&table[..20])).is_err());
    // Evidence without a key (older JSON without the field, too) parses, with an empty key.
    let mut ev = snp_evidence(fixture("aws-vlek-report-2.bin"));
    if let nacre_attestation::evidence::Platform::SevSnp { vcek, .. } = &mut ev.platform {
        vcek.clear();
    }
    let json = String::from_utf8(ev.to_json()).unwrap();
    let without = json.replace(r#","vcek":"""#, "");
    assert_ne!(json, without);
    assert_eq!(
        nacre_attestation::evidence::Evidence::from_json(without.as_bytes()).unwrap(),
        ev
    );
}

#[test]
fn tampered_reports_and_certificates_are_refused() {
    for (report, vek, ..) in REAL {
        let raw = fixture(report);
        // A signed byte (the measurement).
        let mut m = raw.clone();
        m[0x90] ^= 1;
        let e = verify_signature(&m, &fixture(vek), &roots()).unwrap_err();
        assert!(matches!(e, SnpError::Signature(_)), "{report}: {e}");
        // The signature itself.
        let mut s = raw.clone();
        s[0x2A0] ^= 1;
        let e = verify_signature(&s, &fixture(vek), &roots()).unwrap_err();
        assert!(matches!(e, SnpError::Signature(_)), "{report}: {e}");
        // A changed byte in the certificate's signed part: no longer AMD's.
        let mut v = fixture(vek);
        v[300] ^= 0x01;
        assert!(verify_signature(&raw, &v, &roots()).is_err(), "{report}");
    }
    // Truncated, unknown version, other signature algorithm, unknown CPUID.
    let raw = fixture("turin-report.bin");
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
    // CPUID all zero (firmware that fills in none): the product comes from the VCEK, as for
    // version 2; the signature then fails (the bytes were signed with Turin's CPUID).
    let mut zero = raw.clone();
    zero[0x188..0x18B].fill(0);
    assert_eq!(Report::parse(&zero).unwrap().generation, None);
    let e = verify_signature(&zero, &fixture("turin-vcek.der"), &roots()).unwrap_err();
    assert!(matches!(e, SnpError::Signature(_)), "{e}");
    let mut cpu = raw.clone();
    cpu[0x188] = 0x17;
    assert!(matches!(Report::parse(&cpu), Err(SnpError::Format(ref m)) if m.contains("CPUID")));
    // An ASK the ARK did not sign.
    assert!(matches!(
        AmdRoots::empty().set(
            Generation::Milan,
            &fixture("milan-ark.pem"),
            &fixture("genoa-ask.pem"),
            None
        ),
        Err(SnpError::Chain(_))
    ));
}

#[test]
fn vmpl_and_tcb_below_policy_are_refused() {
    let (report, vek) = (fixture("turin-report.bin"), fixture("turin-vcek.der"));
    // Accepted at its own values (VMPL 0).
    verify_report(&report, &vek, &roots(), &policy_for(0)).unwrap();
    for (r, k, ..) in REAL {
        verify_report(&fixture(r), &fixture(k), &roots(), &policy_for(0))
            .unwrap_or_else(|e| panic!("{r}: {e}"));
    }
    // Another VMPL.
    let e = verify_report(&report, &vek, &roots(), &policy_for(2)).unwrap_err();
    assert_eq!(
        e,
        SnpError::Vmpl {
            observed: 0,
            required: 2
        }
    );
    assert!(e.to_string().contains("VMPL 0") && e.to_string().contains("VMPL 2"));
    // Each Turin component one above the report's: refused, naming the TCB.
    for bump in 0..5 {
        let mut p = policy_for(0);
        let t = p.min_tcb.get_mut(&Generation::Turin).unwrap();
        match bump {
            0 => t.fmc += 1,
            1 => t.bootloader += 1,
            2 => t.tee += 1,
            3 => t.snp += 1,
            _ => t.microcode += 1,
        }
        let e = verify_report(&report, &vek, &roots(), &p).unwrap_err();
        assert!(
            matches!(e, SnpError::Tcb(ref m) if m.contains("Turin reported TCB")),
            "{e}"
        );
    }
    // No minimum for the product: refused, not "TCB 0".
    let mut p = policy_for(0);
    p.min_tcb.remove(&Generation::Turin);
    let e = verify_report(&report, &vek, &roots(), &p).unwrap_err();
    assert!(
        matches!(e, SnpError::Tcb(ref m) if m.contains("no minimum TCB") && m.contains("Turin")),
        "{e}"
    );
    // The Milan minimum does not apply to Genoa.
    let mut p = SnpPolicy::new(0, [(Generation::Milan, Tcb::default())]);
    p.vmpl = 0;
    let e = verify_report(
        &fixture("genoa-report.bin"),
        &fixture("genoa-vcek.der"),
        &roots(),
        &p,
    )
    .unwrap_err();
    assert!(
        matches!(e, SnpError::Tcb(ref m) if m.contains("Genoa")),
        "{e}"
    );
}

/// The guest policy, SMT, ID key, measurement and binding rules on the parsed report
/// (check_report: the rule set after the signature).
#[test]
fn policy_measurement_and_binding_rules() {
    let v = verify_signature(
        &fixture("milan-report.bin"),
        &fixture("milan-vcek.der"),
        &roots(),
    )
    .unwrap();
    let report = v.report;
    let mut good = policy_for(0);
    good.measurements = vec![report.measurement];
    assert_eq!(
        check_report(&report, &good, b"nonce", b"ak", b"tls"),
        Err(SnpError::ReportData)
    );
    let mut bound = report.clone();
    bound.report_data = report_data(b"nonce", b"ak", b"tls");
    check_report(&bound, &good, b"nonce", b"ak", b"tls").unwrap();
    assert_eq!(
        check_report(&bound, &good, b"other nonce", b"ak", b"tls"),
        Err(SnpError::ReportData)
    );
    let smt_off = SnpPolicy {
        require_smt_off: true,
        ..good.clone()
    };
    let mut smt = bound.clone();
    smt.platform_info |= 1;
    check_report(&smt, &good, b"nonce", b"ak", b"tls").unwrap();
    assert!(matches!(
        check_report(&smt, &smt_off, b"nonce", b"ak", b"tls"),
        Err(SnpError::Policy(m)) if m.contains("SMT is enabled")
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
        Err(SnpError::Policy(m)) if m.contains("debugging")
    ));
    let id = SnpPolicy {
        id_key_digest: Some([1; 48]),
        ..good.clone()
    };
    assert!(matches!(
        check_report(&bound, &id, b"nonce", b"ak", b"tls"),
        Err(SnpError::Policy(m)) if m.contains("ID key")
    ));
    let same = SnpPolicy {
        id_key_digest: Some(report.id_key_digest),
        ..good.clone()
    };
    check_report(&bound, &same, b"nonce", b"ak", b"tls").unwrap();
}

// ---- A chain made in the test (NOT AMD's keys): CRLs and a report bound to our nonce. ----

fn test_made(name: &str) -> Vec<u8> {
    fixture(&format!("test-made/{name}"))
}

mod support;
use support::{test_made_roots as test_roots, test_signed_report};

#[test]
fn a_revoked_ask_is_refused() {
    let report = test_signed_report([5; 64]);
    let vcek = test_made("test-made-vcek.der");
    // Accepted by the test-made roots, and with a CRL that revokes another serial.
    let mut roots = test_roots();
    verify_report(&report, &vcek, &roots, &policy_for(0)).unwrap();
    let (g, n) = roots
        .add_crl(&test_made("test-made-crl-other.der"))
        .unwrap();
    assert_eq!((g, n), (Generation::Milan, 1));
    verify_report(&report, &vcek, &roots, &policy_for(0)).unwrap();
    // The CRL that revokes the ASK (serial 7e0001).
    roots
        .add_crl(&test_made("test-made-crl-revokes-ask.der"))
        .unwrap();
    let e = verify_report(&report, &vcek, &roots, &policy_for(0)).unwrap_err();
    assert!(
        matches!(e, SnpError::Revoked(ref m) if m.contains("SEV-Milan") && m.contains("7e0001")),
        "{e}"
    );
    // AMD's ARK did not sign the test-made CRL: refused, and a CRL with a changed byte too.
    let e = AmdRoots::bundled()
        .unwrap()
        .add_crl(&test_made("test-made-crl-revokes-ask.der"))
        .unwrap_err();
    assert!(
        matches!(e, SnpError::Crl(ref m) if m.contains("not by a configured AMD ARK")),
        "{e}"
    );
    let mut bad = test_made("test-made-crl-other.der");
    let at = bad.len() - 10;
    bad[at] ^= 1;
    assert!(matches!(test_roots().add_crl(&bad), Err(SnpError::Crl(_))));
}

/// A CRL past its nextUpdate is still honoured (a stale list revokes no less; the key service
/// warns at load): the staleness predicate and its message.
#[test]
fn a_crl_past_its_next_update_is_named_stale() {
    use nacre_attestation::snp::certs::{past_next_update, stale_crl};
    assert!(!past_next_update(None, u64::MAX));
    assert!(!past_next_update(Some(1_000), 999));
    assert!(!past_next_update(Some(1_000), 1_000));
    assert!(past_next_update(Some(1_000), 1_001));
    assert!(past_next_update(Some(-5), 0));
    assert!(past_next_update(Some(1_000), u64::MAX));
    // The test-made CRLs' nextUpdate: Nov 30 17:00:46 2036 GMT.
    const NEXT_UPDATE: u64 = 2_111_677_246;
    let crl = test_made("test-made-crl-revokes-ask.der");
    assert_eq!(stale_crl(&crl, NEXT_UPDATE).unwrap(), None);
    let why = stale_crl(&crl, NEXT_UPDATE + 1).unwrap().unwrap();
    assert!(why.contains("ARK-Milan") && why.contains("2036"), "{why}");
    // Stale or not, its revocations apply.
    let mut roots = test_roots();
    roots.add_crl(&crl).unwrap();
    let e = verify_report(
        &test_signed_report([5; 64]),
        &test_made("test-made-vcek.der"),
        &roots,
        &policy_for(0),
    )
    .unwrap_err();
    assert!(matches!(e, SnpError::Revoked(_)), "{e}");
}

/// End to end through the SEV-SNP verifier: a report (test-made chain) that binds our nonce,
/// AK and TLS key passes every report rule and the refusal moves on to the TPM quote; the
/// same with a VMPL or TCB rule it does not meet is refused by the SEV-SNP report check.
#[test]
fn snp_verifier_accepts_a_bound_report_and_refuses_policy_violations() {
    use nacre_attestation::evidence::{Evidence, Platform, Quote};
    use nacre_attestation::verify::{Check, Expectation, JoinKind, SevSnpVerifier, Verifier};
    let nonce = [7u8; 32];
    let ak = vec![1u8; 91];
    let report = test_signed_report(report_data(&nonce, &ak, b"tls"));
    let measurement: [u8; 48] = report[0x90..0xC0].try_into().unwrap();
    let ev = Evidence {
        platform: Platform::SevSnp {
            report,
            vcek: test_made("test-made-vcek.der"),
        },
        quote: Quote {
            attest: vec![],
            signature: vec![],
        },
        ak_public: ak,
        firmware_log: vec![],
        runtime_log: vec![],
        ek: None,
        binding: None,
    };
    let x = Expectation {
        nonce: &nonce,
        tls_public_key: b"tls",
        join: JoinKind::First,
    };
    let (signer, key) = manifest_key();
    let verifier = |p: SnpPolicy| {
        let mut p = p;
        p.measurements = vec![measurement];
        SevSnpVerifier::new(test_roots(), p, vec![manifest(&signer)], key.clone())
    };
    let r = verifier(policy_for(0)).verify(&ev, &x).unwrap_err();
    assert_ne!(r.check, Check::SnpReport, "{r}");
    let r = verifier(policy_for(1)).verify(&ev, &x).unwrap_err();
    assert_eq!(r.check, Check::SnpReport);
    assert!(r.reason.contains("VMPL"), "{r}");
    let mut high = policy_for(0);
    high.min_tcb.insert(
        Generation::Milan,
        Tcb {
            microcode: 255,
            ..Tcb::default()
        },
    );
    let r = verifier(high).verify(&ev, &x).unwrap_err();
    assert!(
        r.check == Check::SnpReport && r.reason.contains("TCB"),
        "{r}"
    );
    // Without the VCEK and without a store: a clear refusal.
    let mut bare = ev.clone();
    if let Platform::SevSnp { vcek, .. } = &mut bare.platform {
        vcek.clear();
    }
    let r = verifier(policy_for(0)).verify(&bare, &x).unwrap_err();
    assert!(
        r.reason.contains("carries no VCEK") && r.reason.contains("no certificate store"),
        "{r}"
    );
    // With a store that has it, the report rules pass again.
    struct One(Vec<u8>);
    impl VekSource for One {
        fn find_vek(&self, _: &Report, _: SigningKey) -> Result<Vec<Vec<u8>>, String> {
            Ok(vec![self.0.clone()])
        }
    }
    let with = verifier(policy_for(0))
        .with_store(std::sync::Arc::new(One(test_made("test-made-vcek.der"))));
    let r = with.verify(&bare, &x).unwrap_err();
    assert_ne!(r.check, Check::SnpReport, "{r}");
}

#[test]
fn a_report_without_its_key_is_looked_up_or_refused() {
    struct Empty;
    impl VekSource for Empty {
        fn find_vek(&self, _: &Report, kind: SigningKey) -> Result<Vec<Vec<u8>>, String> {
            Err(format!("the store has no {kind} for this chip"))
        }
    }
    let report = fixture("turin-report.bin");
    let e =
        verify_report_with_store(&report, &[], Some(&Empty), &roots(), &policy_for(0)).unwrap_err();
    assert!(
        matches!(e, SnpError::NoVek(ref m) if m.contains("no VCEK for this chip")),
        "{e}"
    );
    struct Turin;
    impl VekSource for Turin {
        fn find_vek(&self, r: &Report, _: SigningKey) -> Result<Vec<Vec<u8>>, String> {
            assert_eq!(
                r.chip_id().map(hex::encode).as_deref(),
                Some("3b42092f69c656d3")
            );
            Ok(vec![fixture("turin-vcek.der")])
        }
    }
    verify_report_with_store(&report, &[], Some(&Turin), &roots(), &policy_for(0)).unwrap();
}

/// A store may hold several candidates (VLEKs of several clouds at one TCB, a stale VCEK):
/// each is tried, the one that verifies wins, whatever its place.
#[test]
fn every_stored_candidate_is_tried() {
    struct Several(Vec<&'static str>);
    impl VekSource for Several {
        fn find_vek(&self, _: &Report, _: SigningKey) -> Result<Vec<Vec<u8>>, String> {
            Ok(self.0.iter().map(|f| fixture(f)).collect())
        }
    }
    let check = |report: &str, found: Vec<&'static str>| {
        verify_report_with_store(
            &fixture(report),
            &[],
            Some(&Several(found)),
            &roots(),
            &policy_for(0),
        )
    };
    // Two VLEKs, the first another TCB's.
    let v = check(
        "aws-vlek-report.bin",
        vec!["aws-vlek-2.der", "aws-vlek.der"],
    )
    .unwrap();
    assert_eq!(v.signing_key, SigningKey::Vlek);
    // VCEKs of other chips first.
    let v = check(
        "turin-report.bin",
        vec!["milan-v3-vcek.der", "genoa-vcek.der", "turin-vcek.der"],
    )
    .unwrap();
    assert_eq!(v.generation, Generation::Turin);
    // None verifies: refused.
    assert!(check("aws-vlek-report.bin", vec!["aws-vlek-2.der"]).is_err());
    assert!(check(
        "turin-report.bin",
        vec!["milan-v3-vcek.der", "genoa-vcek.der"]
    )
    .is_err());
    assert!(matches!(
        check("turin-report.bin", vec![]),
        Err(SnpError::NoVek(_))
    ));
}

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

/// A signed qemu-snp manifest (one PCR, no SNP launch values: the policy's measurement is
/// the configured one).
fn manifest(signer: &nacre_measure::sign::PemSigner) -> nacre_attestation::verify::SignedManifest {
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
        snp: vec![],
        tdx: None,
    };
    support::signed(&m, signer)
}

// ---- The SEV-SNP verifier on the real Milan report (made for another nonce and keys). ----

fn milan() -> AmdRoots {
    roots()
}

fn open_policy() -> SnpPolicy {
    policy_for(0)
}

fn first_join() -> nacre_attestation::verify::Expectation<'static> {
    nacre_attestation::verify::Expectation {
        nonce: &[7; 32],
        tls_public_key: b"tls",
        join: nacre_attestation::verify::JoinKind::First,
    }
}

/// SEV-SNP evidence: this report with the real VCEK, and an empty TPM part.
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
        binding: None,
    }
}

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

/// A signed manifest (one PCR, and these SNP launch values).
fn manifest_with_snp(
    signer: &nacre_measure::sign::PemSigner,
    snp: Vec<nacre_measure::manifest::SnpLaunchValue>,
) -> nacre_attestation::verify::SignedManifest {
    let mut m = nacre_measure::manifest::Manifest::from_json(&manifest(signer).json).unwrap();
    m.snp = snp;
    support::signed(&m, signer)
}

/// The SEV-SNP verifier runs the report rules before any TPM check. A positive end-to-end case
/// needs a report whose REPORT_DATA binds our nonce and keys, i.e. SNP hardware: not here.
#[test]
fn snp_verifier_refuses_what_the_report_does_not_prove() {
    use nacre_attestation::evidence::Platform;
    use nacre_attestation::verify::{Check, SevSnpVerifier, Verifier};
    let report = Report::parse(&fixture("milan-report.bin")).unwrap();
    let (signer, key) = manifest_key();
    let mut policy = policy_for(0);
    policy.measurements = vec![report.measurement];
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
        binding: None,
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
        support::signed(&m, &signer)
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
