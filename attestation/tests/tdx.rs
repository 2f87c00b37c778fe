//! Intel TDX quote verification against real quotes and collateral (tests/fixtures/tdx, from
//! dcap-qvl 0.7.1's samples; see its README): the genuine quote verifies with its collateral at
//! a time inside the collateral's validity, every altered input is refused with the error that
//! caught it, and the TD policy rules refuse what they must.
//!
//! The policy rules that need a quote with other values (debug attribute, other TCB statuses,
//! RTMR values, a REPORTDATA that binds our nonce and keys) are tested on the parsed body with
//! changed fields: nothing is re-signed, and [`check_td`] judges only the parsed body and the
//! TCB verdict of a verified quote.

use nacre_attestation::snp::report_data;
use nacre_attestation::tdx::{
    check_td, collateral_from_json, verify_quote, BodyKind, Quote, QuoteCollateralV3, TcbStatus,
    TcbVerdict, TdxError, TdxPolicy, ATTR_DEBUG, ATTR_MIGRATABLE, ATTR_SEPT_VE_DISABLE,
    INTEL_SGX_ROOT_CA,
};

mod support;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/tdx/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn collateral(name: &str) -> QuoteCollateralV3 {
    collateral_from_json(&fixture(name)).unwrap()
}

/// 2025-07-01T00:00:00Z: inside `tdx_quote_collateral.json`'s validity (TCB info and QE
/// identity 2025-06-19..2025-07-19, PCK CRL 2025-06-19..2025-07-19).
const V4_TIME: u64 = 1_751_328_000;
/// 2026-03-01T00:00:00Z: inside `tdx_quote_outdated_collateral.json`'s validity (2026-02-18 ..
/// 2026-03-20).
const V5_TIME: u64 = 1_772_323_200;
/// 2025-08-01T00:00:00Z: after the v4 collateral's next update.
const V4_EXPIRED: u64 = 1_754_006_400;

/// Offsets in the v4 quote.
const MRTD_AT: usize = 48 + 136;
const SIGNATURE_AT: usize = 48 + 584 + 4;
const AK_AT: usize = SIGNATURE_AT + 64;
const QE_REPORT_AT: usize = AK_AT + 64 + 6;
const QE_AUTH_AT: usize = QE_REPORT_AT + 384 + 64 + 2;

fn v4() -> Vec<u8> {
    fixture("tdx_quote")
}

fn verify_v4(raw: &[u8]) -> Result<TcbVerdict, TdxError> {
    let q = Quote::parse(raw)?;
    verify_quote(
        &q,
        &collateral("tdx_quote_collateral.json"),
        INTEL_SGX_ROOT_CA,
        V4_TIME,
    )
}

fn up_to_date() -> TcbVerdict {
    TcbVerdict {
        status: TcbStatus::UpToDate,
        advisory_ids: vec![],
    }
}

#[test]
fn real_v4_quote_verifies_with_its_collateral() {
    let q = Quote::parse(&v4()).unwrap();
    assert_eq!(q.header.version, 4);
    assert_eq!(q.header.att_key_type, 2);
    assert_eq!(q.header.tee_type, 0x81);
    assert_eq!(
        hex::encode(q.header.qe_vendor_id),
        "939a7233f79c4ca9940a0db3957f0607"
    );
    assert_eq!(q.body.kind, BodyKind::Td10);
    assert_eq!(q.body.td_attributes, ATTR_SEPT_VE_DISABLE);
    assert_eq!(q.body.td_attributes & ATTR_DEBUG, 0);
    assert_eq!(q.body.mr_td.to_vec(), v4()[MRTD_AT..MRTD_AT + 48].to_vec());
    assert_eq!(q.body.tee_tcb_svn2, None);
    assert_eq!(q.pck_chain().unwrap().len(), 3);
    let verdict = verify_v4(&v4()).unwrap();
    assert_eq!(verdict, up_to_date());
}

/// The v5 sample (TD 1.5 body) from an out-of-date platform: its own signatures verify, but its
/// platform TCB is below every level of its real TCB info, so the collateral check refuses it
/// (dcap-qvl verifies this sample only with its dangerous TCB override).
#[test]
fn real_v5_td15_quote_parses_and_its_out_of_date_platform_is_refused() {
    let raw = fixture("tdx_quote_outdated");
    let q = Quote::parse(&raw).unwrap();
    assert_eq!(q.header.version, 5);
    assert_eq!(q.body.kind, BodyKind::Td15);
    assert!(q.body.tee_tcb_svn2.is_some() && q.body.mr_service_td.is_some());
    assert_eq!(q.signed_bytes().len(), 48 + 6 + 648);
    q.verify_signatures().unwrap();
    let mut m = raw.clone();
    m[48 + 6 + 136] ^= 1;
    assert!(matches!(
        Quote::parse(&m).unwrap().verify_signatures(),
        Err(TdxError::QuoteSignature(_))
    ));
    let e = verify_quote(
        &q,
        &collateral("tdx_quote_outdated_collateral.json"),
        INTEL_SGX_ROOT_CA,
        V5_TIME,
    )
    .unwrap_err();
    assert!(
        matches!(&e, TdxError::Collateral(why) if why.contains("TCB level")),
        "{e}"
    );
    // An OutOfDate verdict on this body is refused by the default policy and accepted only
    // when the policy allows OutOfDate (the verdict is constructed, the REPORTDATA changed in
    // the parsed body to bind our inputs).
    let verdict = TcbVerdict {
        status: TcbStatus::OutOfDate,
        advisory_ids: vec!["INTEL-SA-01036".into()],
    };
    let mut body = q.body.clone();
    body.report_data = report_data(b"n", b"ak", b"tls");
    let mut policy = TdxPolicy {
        mrtd: vec![body.mr_td],
        ..TdxPolicy::default()
    };
    let e = check_td(&body, &verdict, &policy, b"n", b"ak", b"tls").unwrap_err();
    assert!(
        matches!(&e, TdxError::TcbStatus { status, .. } if status == "OutOfDate"),
        "{e}"
    );
    policy.allowed_tcb = vec![TcbStatus::OutOfDate];
    check_td(&body, &verdict, &policy, b"n", b"ak", b"tls").unwrap();
}

#[test]
fn collateral_outside_its_validity_is_refused() {
    let q = Quote::parse(&v4()).unwrap();
    let c = collateral("tdx_quote_collateral.json");
    for t in [V4_EXPIRED, 1_700_000_000] {
        let e = verify_quote(&q, &c, INTEL_SGX_ROOT_CA, t).unwrap_err();
        let why = if t == V4_EXPIRED {
            "expired"
        } else {
            "in the future"
        };
        assert!(
            matches!(&e, TdxError::Collateral(m) if m.contains(why)),
            "{e}"
        );
    }
    // The v4 quote with the other platform's collateral: FMSPC and validity differ.
    let other = collateral("tdx_quote_outdated_collateral.json");
    let e = verify_quote(&q, &other, INTEL_SGX_ROOT_CA, V5_TIME).unwrap_err();
    assert!(
        matches!(&e, TdxError::Collateral(m) if m.contains("Fmspc mismatch")),
        "{e}"
    );
}

#[test]
fn tampered_quotes_are_refused() {
    // One byte of MRTD: the attestation key's signature no longer verifies.
    let mut m = v4();
    m[MRTD_AT] ^= 1;
    let e = verify_v4(&m).unwrap_err();
    assert!(matches!(e, TdxError::QuoteSignature(_)), "{e}");
    // One byte of the signature.
    let mut s = v4();
    s[SIGNATURE_AT + 10] ^= 1;
    let e = verify_v4(&s).unwrap_err();
    assert!(matches!(e, TdxError::QuoteSignature(_)), "{e}");
    // One byte of the QE report: the PCK's signature over it fails.
    let mut r = v4();
    r[QE_REPORT_AT + 100] ^= 1;
    let e = verify_v4(&r).unwrap_err();
    assert!(
        matches!(&e, TdxError::QeReport(why) if why.contains("PCK")),
        "{e}"
    );
    // Another attestation key, or other QE auth data: the QE report no longer vouches for it.
    for at in [AK_AT + 5, QE_AUTH_AT] {
        let mut k = v4();
        k[at] ^= 1;
        let e = verify_v4(&k).unwrap_err();
        assert!(
            matches!(&e, TdxError::QeReport(why) if why.contains("REPORT_DATA")),
            "{e}"
        );
    }
    // A PCK certificate with a changed byte (inside its base64 body).
    let raw = v4();
    let pem_at = raw
        .windows(27)
        .position(|w| w == b"-----BEGIN CERTIFICATE-----")
        .unwrap();
    let mut p = raw.clone();
    let at = pem_at + 27 + 200;
    p[at] = if p[at] == b'A' { b'B' } else { b'A' };
    let e = verify_v4(&p).unwrap_err();
    assert!(
        matches!(&e, TdxError::Collateral(why) if why.contains("certificate chain")),
        "{e}"
    );
}

#[test]
fn malformed_quotes_name_the_field_and_offset() {
    let raw = v4();
    // Truncated anywhere: a typed error, never a panic.
    // (4936: the end of the signature data; zero padding follows in this sample.)
    for n in (0..4936).step_by(7) {
        assert!(Quote::parse(&raw[..n]).is_err(), "{n} bytes parsed");
    }
    assert_eq!(
        Quote::parse(&raw[..100]).unwrap_err(),
        TdxError::Truncated {
            field: "MRSEAM",
            offset: 64,
            need: 48,
            have: 36
        }
    );
    assert!(matches!(
        Quote::parse(&raw[..MRTD_AT + 10]).unwrap_err(),
        TdxError::Truncated {
            field: "MRTD",
            offset: MRTD_AT,
            ..
        }
    ));
    let e = Quote::parse(&raw[..4000]).unwrap_err();
    assert!(
        matches!(
            e,
            TdxError::Truncated {
                field: "signature data",
                offset: 636,
                ..
            }
        ),
        "{e}"
    );
    // Wrong TEE type (SGX), version, key type.
    let mut t = raw.clone();
    t[4] = 0;
    let e = Quote::parse(&t).unwrap_err();
    assert!(
        matches!(
            &e,
            TdxError::Malformed {
                field: "header TEE type",
                offset: 4,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("not TDX"), "{e}");
    let mut v = raw.clone();
    v[0] = 3;
    assert!(matches!(
        Quote::parse(&v).unwrap_err(),
        TdxError::Malformed {
            field: "header version",
            ..
        }
    ));
    let mut k = raw.clone();
    k[2] = 3;
    assert!(matches!(
        Quote::parse(&k).unwrap_err(),
        TdxError::Malformed {
            field: "header attestation key type",
            ..
        }
    ));
    // A signature data length past the end, and non-zero bytes after the signature data.
    let mut l = raw.clone();
    l[632..636].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Quote::parse(&l).unwrap_err(),
        TdxError::Truncated {
            field: "signature data",
            ..
        }
    ));
    let mut tail = raw.clone();
    *tail.last_mut().unwrap() = 1;
    assert!(matches!(
        Quote::parse(&tail).unwrap_err(),
        TdxError::Malformed {
            field: "trailing bytes",
            ..
        }
    ));
    // Certification data of another type.
    let mut c = raw.clone();
    c[AK_AT + 64] = 5;
    assert!(matches!(
        Quote::parse(&c).unwrap_err(),
        TdxError::Malformed {
            field: "certification data type",
            ..
        }
    ));
    // A QE auth data size that overruns the certification data.
    let mut a = raw.clone();
    a[QE_AUTH_AT - 2..QE_AUTH_AT].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(Quote::parse(&a).is_err());
}

#[test]
fn tampered_collateral_is_refused() {
    let q = Quote::parse(&v4()).unwrap();
    let good = collateral("tdx_quote_collateral.json");
    // One byte of the TCB info (inside the signed JSON text).
    let mut c = good.clone();
    let at = c.tcb_info.find("\"tcbEvaluationDataNumber\":").unwrap() + 26;
    let digit = c.tcb_info.as_bytes()[at];
    let new = if digit == b'1' { "2" } else { "1" };
    c.tcb_info.replace_range(at..at + 1, new);
    let e = verify_quote(&q, &c, INTEL_SGX_ROOT_CA, V4_TIME).unwrap_err();
    assert!(
        matches!(&e, TdxError::Collateral(m) if m.contains("Signature is invalid for tcb_info")),
        "{e}"
    );
    // One byte of the QE identity.
    let mut c = good.clone();
    let at = c.qe_identity.find("\"isvprodid\":").unwrap() + 12;
    let digit = c.qe_identity.as_bytes()[at];
    let new = if digit == b'2' { "3" } else { "2" };
    c.qe_identity.replace_range(at..at + 1, new);
    let e = verify_quote(&q, &c, INTEL_SGX_ROOT_CA, V4_TIME).unwrap_err();
    assert!(
        matches!(&e, TdxError::Collateral(m) if m.contains("Signature is invalid for qe_identity")),
        "{e}"
    );
    // One byte of the TCB info signature.
    let mut c = good.clone();
    c.tcb_info_signature[5] ^= 1;
    let e = verify_quote(&q, &c, INTEL_SGX_ROOT_CA, V4_TIME).unwrap_err();
    assert!(
        matches!(&e, TdxError::Collateral(m) if m.contains("Signature is invalid for tcb_info")),
        "{e}"
    );
    // One byte of the PCK CRL.
    let mut c = good.clone();
    let n = c.pck_crl.len();
    c.pck_crl[n - 10] ^= 1;
    let e = verify_quote(&q, &c, INTEL_SGX_ROOT_CA, V4_TIME).unwrap_err();
    assert!(
        matches!(&e, TdxError::Collateral(m) if m.contains("InvalidCrlSignature")),
        "{e}"
    );
    // A collateral JSON file with a changed byte in its signature field is still JSON, and
    // refused in the same way.
    let json = String::from_utf8(fixture("tdx_quote_collateral.json")).unwrap();
    let sig = hex::encode(&good.qe_identity_signature);
    let mut flipped = sig.clone();
    let first = if flipped.starts_with('0') { "1" } else { "0" };
    flipped.replace_range(0..1, first);
    let changed = collateral_from_json(json.replace(&sig, &flipped).as_bytes()).unwrap();
    let e = verify_quote(&q, &changed, INTEL_SGX_ROOT_CA, V4_TIME).unwrap_err();
    assert!(
        matches!(&e, TdxError::Collateral(m) if m.contains("Signature is invalid for qe_identity")),
        "{e}"
    );
    // Not collateral at all.
    assert!(matches!(
        collateral_from_json(b"{}"),
        Err(TdxError::Collateral(_))
    ));
    // Another trust anchor (the quote's own PCK platform CA instead of Intel's root): refused.
    let chain = q.pck_chain().unwrap();
    let e = verify_quote(&q, &good, &chain[1], V4_TIME).unwrap_err();
    assert!(
        matches!(&e, TdxError::Collateral(m) if m.contains("root CA CRL")),
        "{e}"
    );
    // The genuine collateral still verifies.
    verify_quote(&q, &good, INTEL_SGX_ROOT_CA, V4_TIME).unwrap();
}

/// The TD rules on the real quote's parsed body, with fields changed where a rule needs other
/// values (not re-signed: [`check_td`] judges a body whose quote was already verified).
#[test]
fn td_policy_rules() {
    let q = Quote::parse(&v4()).unwrap();
    let (nonce, ak, tls) = (b"nonce".as_slice(), b"ak".as_slice(), b"tls".as_slice());
    let mut body = q.body.clone();
    body.report_data = report_data(nonce, ak, tls);
    let golden = TdxPolicy {
        mrtd: vec![body.mr_td],
        rtmr: [
            Some(vec![body.rtmr[0]]),
            Some(vec![[0; 48], body.rtmr[1]]),
            Some(vec![body.rtmr[2]]),
        ],
        ..TdxPolicy::default()
    };
    let ok = up_to_date();
    assert_eq!(
        check_td(&body, &ok, &golden, nonce, ak, tls).unwrap(),
        Vec::<String>::new()
    );

    // RTMRs without golden values: accepted with a warning each.
    let loose = TdxPolicy {
        rtmr: [None, Some(vec![body.rtmr[1]]), None],
        ..golden.clone()
    };
    let w = check_td(&body, &ok, &loose, nonce, ak, tls).unwrap();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].starts_with("RTMR0") && w[1].starts_with("RTMR2"),
        "{w:?}"
    );

    // The real quote's REPORTDATA binds someone else's nonce and keys.
    let e = check_td(&q.body, &ok, &golden, nonce, ak, tls).unwrap_err();
    assert_eq!(e, TdxError::ReportData);
    // Same body, other nonce / AK / TLS key.
    for (n, a, t) in [
        (b"other".as_slice(), ak, tls),
        (nonce, b"ak2", tls),
        (nonce, ak, b"tls2"),
    ] {
        assert_eq!(
            check_td(&body, &ok, &golden, n, a, t).unwrap_err(),
            TdxError::ReportData
        );
    }

    // Debug TD: refused unless the policy allows it.
    let mut debug = body.clone();
    debug.td_attributes |= ATTR_DEBUG;
    let e = check_td(&debug, &ok, &golden, nonce, ak, tls).unwrap_err();
    assert!(
        matches!(&e, TdxError::Attributes(why) if why.contains("DEBUG")),
        "{e}"
    );
    let allow_debug = TdxPolicy {
        allow_debug: true,
        ..golden.clone()
    };
    check_td(&debug, &ok, &allow_debug, nonce, ak, tls).unwrap();
    // Reserved TUD bits, SEPT_VE_DISABLE missing, MIGRATABLE.
    let mut tud = body.clone();
    tud.td_attributes |= 1 << 3;
    assert!(matches!(
        check_td(&tud, &ok, &allow_debug, nonce, ak, tls),
        Err(TdxError::Attributes(_))
    ));
    let mut sept = body.clone();
    sept.td_attributes &= !ATTR_SEPT_VE_DISABLE;
    let e = check_td(&sept, &ok, &golden, nonce, ak, tls).unwrap_err();
    assert!(
        matches!(&e, TdxError::Attributes(why) if why.contains("SEPT_VE_DISABLE")),
        "{e}"
    );
    let no_sept = TdxPolicy {
        require_sept_ve_disable: false,
        ..golden.clone()
    };
    check_td(&sept, &ok, &no_sept, nonce, ak, tls).unwrap();
    let mut mig = body.clone();
    mig.td_attributes |= ATTR_MIGRATABLE;
    assert!(matches!(
        check_td(&mig, &ok, &golden, nonce, ak, tls),
        Err(TdxError::Attributes(_))
    ));

    // TCB statuses: only UpToDate by default; others when allowed; Revoked never.
    for status in [
        TcbStatus::OutOfDate,
        TcbStatus::ConfigurationNeeded,
        TcbStatus::SWHardeningNeeded,
        TcbStatus::ConfigurationAndSWHardeningNeeded,
        TcbStatus::OutOfDateConfigurationNeeded,
        TcbStatus::TDRelaunchAdvised,
    ] {
        let v = TcbVerdict {
            status,
            advisory_ids: vec!["INTEL-SA-00837".into()],
        };
        let e = check_td(&body, &v, &golden, nonce, ak, tls).unwrap_err();
        assert!(
            matches!(&e, TdxError::TcbStatus { advisories, .. } if advisories == "INTEL-SA-00837"),
            "{e}"
        );
        let allowing = TdxPolicy {
            allowed_tcb: vec![status],
            ..golden.clone()
        };
        check_td(&body, &v, &allowing, nonce, ak, tls).unwrap();
    }
    let revoked = TcbVerdict {
        status: TcbStatus::Revoked,
        advisory_ids: vec![],
    };
    let all = TdxPolicy {
        allowed_tcb: vec![TcbStatus::Revoked],
        ..golden.clone()
    };
    assert!(matches!(
        check_td(&body, &revoked, &all, nonce, ak, tls),
        Err(TdxError::TcbStatus { .. })
    ));

    // MRTD not golden (and no golden MRTD at all).
    let mut other = body.clone();
    other.mr_td[0] ^= 1;
    let e = check_td(&other, &ok, &golden, nonce, ak, tls).unwrap_err();
    assert_eq!(
        e,
        TdxError::Mrtd {
            observed: hex::encode(other.mr_td)
        }
    );
    assert!(matches!(
        check_td(&body, &ok, &TdxPolicy::default(), nonce, ak, tls),
        Err(TdxError::Mrtd { .. })
    ));
    // Each enforced RTMR.
    for i in 0..3 {
        let mut r = body.clone();
        r.rtmr[i][47] ^= 1;
        let e = check_td(&r, &ok, &golden, nonce, ak, tls).unwrap_err();
        assert!(
            matches!(e, TdxError::Rtmr { index, .. } if index == i),
            "{e}"
        );
    }
    // RTMR3 (runtime) is not checked.
    let mut r3 = body.clone();
    r3.rtmr[3] = [9; 48];
    check_td(&r3, &ok, &golden, nonce, ak, tls).unwrap();
}

/// The TDX verifier runs the quote's rules before any TPM check. A positive end-to-end case
/// needs a quote whose REPORTDATA binds our nonce and keys, i.e. TDX hardware: not here.
#[test]
fn tdx_verifier_refuses_what_the_quote_does_not_prove() {
    use nacre_attestation::evidence::{Evidence, Platform, Quote as TpmQuote};
    use nacre_attestation::verify::{
        ByPlatform, Check, Expectation, JoinKind, TdxVerifier, Verifier,
    };
    let q = Quote::parse(&v4()).unwrap();
    let (signer, _) = nacre_measure::sign::PemSigner::generate().unwrap();
    let key = nacre_measure::sign::PublicKey::from_spki(
        &nacre_measure::sign::BlobSigner::public_key_spki(&signer),
    )
    .unwrap();
    let policy = TdxPolicy {
        mrtd: vec![q.body.mr_td],
        rtmr: [None, Some(vec![q.body.rtmr[1]]), Some(vec![q.body.rtmr[2]])],
        ..TdxPolicy::default()
    };
    let verifier = || {
        TdxVerifier::new(
            collateral("tdx_quote_collateral.json"),
            policy.clone(),
            vec![manifest(&signer)],
            key.clone(),
        )
        .at_time(V4_TIME)
    };
    let ev = |raw: Vec<u8>| Evidence {
        platform: Platform::Tdx { quote: raw },
        quote: TpmQuote {
            attest: vec![],
            signature: vec![],
        },
        ak_public: vec![1; 91],
        firmware_log: vec![],
        runtime_log: vec![],
        ek: None,
        binding: None,
    };
    let x = Expectation {
        nonce: &[7; 32],
        tls_public_key: b"tls",
        join: JoinKind::First,
    };
    let v = verifier();
    // Genuine quote, golden MRTD, but made for another nonce and keys: not bound.
    let r = v.verify(&ev(v4()), &x).unwrap_err();
    assert_eq!(r.check, Check::TdxQuote);
    assert!(r.reason.contains("REPORTDATA"), "{r}");
    // A forged MRTD: the signature.
    let mut forged = v4();
    forged[MRTD_AT] ^= 1;
    let r = v.verify(&ev(forged), &x).unwrap_err();
    assert_eq!(r.check, Check::TdxQuote);
    assert!(r.reason.contains("quote signature"), "{r}");
    // Not a quote.
    let r = v.verify(&ev(vec![4, 0, 2]), &x).unwrap_err();
    assert!(r.reason.contains("truncated"), "{r}");
    // After the collateral expired (the verifier's clock).
    let r = verifier()
        .at_time(V4_EXPIRED)
        .verify(&ev(v4()), &x)
        .unwrap_err();
    assert!(r.reason.contains("collateral"), "{r}");
    // A TD whose MRTD is not golden.
    let strict = TdxVerifier::new(
        collateral("tdx_quote_collateral.json"),
        TdxPolicy {
            mrtd: vec![],
            ..policy.clone()
        },
        vec![manifest(&signer)],
        key.clone(),
    )
    .at_time(V4_TIME);
    let r = strict.verify(&ev(v4()), &x).unwrap_err();
    assert!(r.reason.contains("MRTD"), "{r}");
    // QEMU vTPM evidence is not TDX evidence.
    let mut plain = ev(v4());
    plain.platform = Platform::QemuVtpm;
    assert_eq!(v.verify(&plain, &x).unwrap_err().check, Check::Platform);

    // ByPlatform routes TDX evidence to the TDX verifier.
    let routed = ByPlatform {
        tdx: Some(Box::new(verifier())),
        ..ByPlatform::default()
    };
    assert_eq!(routed.name(), "tdx");
    let r = routed.verify(&ev(v4()), &x).unwrap_err();
    assert_eq!(r.check, Check::TdxQuote);
    assert!(r.reason.contains("REPORTDATA"), "{r}");
    let r = routed.verify(&plain, &x).unwrap_err();
    assert!(
        r.reason.contains("no verifier is configured for QEMU vTPM"),
        "{r}"
    );
}

/// Golden MRTD and RTMRs come from the signed manifests too (`tdx` entry): with the quote's
/// MRTD in a manifest the MRTD rule passes (the refusal moves on to REPORTDATA); with another
/// RTMR2 there, the RTMR rule refuses; without a `tdx` entry, the MRTD rule refuses.
#[test]
fn golden_values_from_signed_manifests() {
    use nacre_attestation::evidence::{Evidence, Platform, Quote as TpmQuote};
    use nacre_attestation::verify::{Expectation, JoinKind, TdxVerifier, Verifier};
    let q = Quote::parse(&v4()).unwrap();
    let (signer, _) = nacre_measure::sign::PemSigner::generate().unwrap();
    let key = nacre_measure::sign::PublicKey::from_spki(
        &nacre_measure::sign::BlobSigner::public_key_spki(&signer),
    )
    .unwrap();
    let ev = Evidence {
        platform: Platform::Tdx { quote: v4() },
        quote: TpmQuote {
            attest: vec![],
            signature: vec![],
        },
        ak_public: vec![1; 91],
        firmware_log: vec![],
        runtime_log: vec![],
        ek: None,
        binding: None,
    };
    let x = Expectation {
        nonce: &[7; 32],
        tls_public_key: b"tls",
        join: JoinKind::First,
    };
    let verify = |tdx: Option<serde_json::Value>| {
        TdxVerifier::new(
            collateral("tdx_quote_collateral.json"),
            TdxPolicy::default(),
            vec![manifest_with(&signer, tdx)],
            key.clone(),
        )
        .at_time(V4_TIME)
        .verify(&ev, &x)
        .unwrap_err()
    };
    let entry = |rtmr2: &[u8; 48]| {
        serde_json::json!({
            "mrtd": hex::encode(q.body.mr_td),
            "page_add_order": "per-page",
            "rtmr1": hex::encode(q.body.rtmr[1]),
            "rtmr2": hex::encode(rtmr2),
            "ovmf_sha256": "00".repeat(32),
        })
    };
    let r = verify(Some(entry(&q.body.rtmr[2])));
    assert!(r.reason.contains("REPORTDATA"), "{r}");
    let r = verify(Some(entry(&[0; 48])));
    assert!(r.reason.contains("RTMR2"), "{r}");
    // Without a `tdx` entry (and none configured) there is no golden RTMR[1]/[2]: refused,
    // not warned.
    let r = verify(None);
    assert_eq!(r.check, nacre_attestation::verify::Check::TdxQuote);
    assert!(
        r.reason.contains("no golden RTMR1 value (required on TDX"),
        "{r}"
    );
    // A `tdx` entry without RTMR[2] (or RTMR[1]): the same.
    let mut e = entry(&q.body.rtmr[2]);
    e.as_object_mut().unwrap().remove("rtmr2");
    let r = verify(Some(e));
    assert!(
        r.reason.contains("no golden RTMR2 value (required on TDX"),
        "{r}"
    );
    let mut e = entry(&q.body.rtmr[2]);
    e.as_object_mut().unwrap().remove("rtmr1");
    let r = verify(Some(e));
    assert!(
        r.reason.contains("no golden RTMR1 value (required on TDX"),
        "{r}"
    );
}

fn manifest(signer: &nacre_measure::sign::PemSigner) -> nacre_attestation::verify::SignedManifest {
    manifest_with(signer, None)
}

/// A signed manifest with one PCR and an optional `tdx` entry, built from its JSON form (so
/// fields added to the manifest later, which are optional, do not change this test).
fn manifest_with(
    signer: &nacre_measure::sign::PemSigner,
    tdx: Option<serde_json::Value>,
) -> nacre_attestation::verify::SignedManifest {
    use nacre_measure::manifest::{Manifest, SCHEMA};
    let mut text = serde_json::json!({
        "schema": SCHEMA,
        "image": {
            "ref": "r",
            "version": "v",
            "variant": "qemu-tdx",
            "uki_sha256": "00".repeat(32),
        },
        "alg": "sha256",
        "stub": "systemd-stub-252",
        "secure_boot": false,
        "phase": "sysinit",
        "measurements": { "4": { "expected": "04".repeat(32), "warn_only": false } },
        "events": [],
    });
    if let Some(t) = tdx {
        text["tdx"] = t;
    }
    let m = Manifest::from_json(&serde_json::to_vec(&text).unwrap()).unwrap();
    support::signed(&m, signer)
}

/// RTMR[3] (stage 2's phases and the cluster events nacre-init extends), on the real v4 body
/// with RTMR[3] changed: always what the runtime log's RTMR[3] records replay to, in
/// nacre-init's phase order; no cluster id for a first join.
#[test]
fn rtmr3_phase_and_cluster_id_rules() {
    use nacre_attestation::verify::{check_first_join_rtmr3, check_rtmr3_replay, Check, JoinKind};
    use nacre_eventlog::runtime::{cluster_rtmr3_after, member_rtmr3, rtmr3_after, Phase};
    use nacre_eventlog::{HashAlg, RuntimeEvent};
    let q = Quote::parse(&v4()).unwrap();
    // The sample TD never extended RTMR[3].
    assert_eq!(q.body.rtmr[3], [0; 48]);
    let id = [0x42; 32];
    let p = RuntimeEvent::Phase;
    let log = |events: &[RuntimeEvent]| {
        events
            .iter()
            .enumerate()
            .map(|(i, e)| e.to_cel(i as u64, &[HashAlg::Sha256]).unwrap())
            .collect::<Vec<_>>()
    };
    let stage1 = [p(Phase::EnterInitrd), p(Phase::LeaveInitrd)];
    let sysinit = [stage1.as_slice(), &[p(Phase::Sysinit)]].concat();
    let joined = [sysinit.as_slice(), &[RuntimeEvent::ClusterId(id)]].concat();
    let ready = [joined.as_slice(), &[p(Phase::Ready)]].concat();
    let rtmr3 = |events: &[RuntimeEvent]| rtmr3_after(events);

    // Stage 1 only: RTMR[3] zero, no phase.
    let s = check_rtmr3_replay(&q.body.rtmr[3], &log(&stage1)).unwrap();
    assert_eq!(s.phase, None);
    // At sysinit: RTMR[3] = extend(0, SHA-384("sysinit")), not a member yet.
    let s = check_rtmr3_replay(&rtmr3(&sysinit), &log(&sysinit)).unwrap();
    assert_eq!(s.phase, Some(Phase::Sysinit));
    assert_ne!(rtmr3(&sysinit), [0; 48]);
    for join in [JoinKind::First, JoinKind::Either, JoinKind::Rejoin] {
        check_first_join_rtmr3(&s, join).unwrap();
    }
    // A member: the cluster part is member_rtmr3, RTMR[3] itself also holds sysinit.
    let s = check_rtmr3_replay(&rtmr3(&joined), &log(&joined)).unwrap();
    assert_eq!(cluster_rtmr3_after(&s.cluster), member_rtmr3(&id));
    assert_ne!(rtmr3(&joined), member_rtmr3(&id));
    let r = check_first_join_rtmr3(&s, JoinKind::First).unwrap_err();
    assert_eq!(r.check, Check::TdxRtmr3);
    assert!(
        r.reason
            .contains("RTMR[3] holds a cluster id (already joined in this boot)"),
        "{r}"
    );
    check_first_join_rtmr3(&s, JoinKind::Either).unwrap();
    // At ready.
    let s = check_rtmr3_replay(&rtmr3(&ready), &log(&ready)).unwrap();
    assert_eq!(s.phase, Some(Phase::Ready));

    // RTMR[3] shows `ready`, the log (and a vTPM the host runs) stops at sysinit: refused.
    let r = check_rtmr3_replay(&rtmr3(&ready), &log(&joined)).unwrap_err();
    assert_eq!(r.check, Check::TdxRtmr3);
    assert!(r.reason.contains("replay to"), "{r}");
    // RTMR[3] shows a join the log does not (a vTPM reset by the host after the join).
    let r = check_rtmr3_replay(&rtmr3(&joined), &log(&sysinit)).unwrap_err();
    assert_eq!(r.check, Check::TdxRtmr3);
    // Another cluster's id in RTMR[3], this one's in the log.
    let other = [sysinit.as_slice(), &[RuntimeEvent::ClusterId([0x43; 32])]].concat();
    let r = check_rtmr3_replay(&rtmr3(&other), &log(&joined)).unwrap_err();
    assert!(r.reason.contains(&hex::encode(rtmr3(&joined))), "{r}");
    // The log has events, RTMR[3] is zero: the extensions never happened.
    let r = check_rtmr3_replay(&[0; 48], &log(&sysinit)).unwrap_err();
    assert_eq!(r.check, Check::TdxRtmr3);
    // Root at `ready` extends `sysinit` again, in RTMR[3] and in the log alike: the replay
    // holds, the phase order does not.
    let rooted = [ready.as_slice(), &[p(Phase::Sysinit)]].concat();
    let r = check_rtmr3_replay(&rtmr3(&rooted), &log(&rooted)).unwrap_err();
    assert_eq!(r.check, Check::TdxRtmr3);
    assert!(r.reason.contains("sysinit extended after ready"), "{r}");
    // A record that is not nacre's.
    let mut bad = log(&sysinit);
    bad[2].content.string = "sysinit2".into();
    assert_eq!(
        check_rtmr3_replay(&rtmr3(&sysinit), &bad)
            .unwrap_err()
            .check,
        Check::EventLog
    );
}

/// A manifest admits only evidence of its variant's platform: with the real v4 quote (its
/// signatures and collateral verify), an SEV-SNP or QEMU vTPM manifest holding the quote's MRTD
/// is refused naming both; the `gcp-tdx` one moves on to the quote's binding.
#[test]
fn manifest_of_another_variant_is_refused_for_tdx_evidence() {
    use nacre_attestation::evidence::{Evidence, Platform, Quote as TpmQuote};
    use nacre_attestation::verify::{Check, Expectation, JoinKind, TdxVerifier, Verifier};
    use nacre_measure::manifest::Manifest;
    let q = Quote::parse(&v4()).unwrap();
    let (signer, _) = nacre_measure::sign::PemSigner::generate().unwrap();
    let key = nacre_measure::sign::PublicKey::from_spki(
        &nacre_measure::sign::BlobSigner::public_key_spki(&signer),
    )
    .unwrap();
    let ev = Evidence {
        platform: Platform::Tdx { quote: v4() },
        quote: TpmQuote {
            attest: vec![],
            signature: vec![],
        },
        ak_public: vec![1; 91],
        firmware_log: vec![],
        runtime_log: vec![],
        ek: None,
        binding: None,
    };
    let x = Expectation {
        nonce: &[7; 32],
        tls_public_key: b"tls",
        join: JoinKind::First,
    };
    let verify = |variant: &str| {
        let signed = manifest_with(
            &signer,
            Some(serde_json::json!({
                "mrtd": hex::encode(q.body.mr_td),
                "page_add_order": "per-page",
                "rtmr1": hex::encode(q.body.rtmr[1]),
                "rtmr2": hex::encode(q.body.rtmr[2]),
                "ovmf_sha256": "00".repeat(32),
            })),
        );
        let mut m = Manifest::from_json(&signed.json).unwrap();
        m.image.variant = variant.into();
        let signed = support::signed(&m, &signer);
        TdxVerifier::new(
            collateral("tdx_quote_collateral.json"),
            TdxPolicy::default(),
            vec![signed],
            key.clone(),
        )
        .at_time(V4_TIME)
        .verify(&ev, &x)
        .unwrap_err()
    };
    for variant in ["qemu-vtpm", "azure-sev-snp"] {
        let r = verify(variant);
        assert_eq!(r.check, Check::Platform, "{r}");
        assert!(
            r.reason.contains("TDX evidence") && r.reason.contains(variant),
            "{r}"
        );
    }
    // A TDX manifest moves on to the quote's binding (qemu-tdx: REPORTDATA binds the AK;
    // gcp-tdx needs GCE's AK certificate first, crate::binding).
    let r = verify("qemu-tdx");
    assert!(r.reason.contains("REPORTDATA"), "{r}");
    let r = verify("gcp-tdx");
    assert_eq!(r.check, Check::AkTrust, "{r}");
}
