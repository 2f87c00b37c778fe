//! AK trust through the EK certificate: swtpms manufactured with swtpm's local CA (an EK
//! certificate in NV, an ECC EK that may sign), the AK certified by the EK, the chain checked
//! against the operator's CA bundle.

mod support;

use nacre_attestation::ek::EkCertified;
use nacre_attestation::tpm::Attester;
use nacre_attestation::verify::{Check, Expectation, JoinKind, QemuVtpmVerifier, Verifier};
use nacre_eventlog::{Phase, RuntimeEvent};
use support::*;

const BOOT: [RuntimeEvent; 1] = [RuntimeEvent::Phase(Phase::EnterInitrd)];

#[test]
fn ek_certified_aks_are_trusted_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let a = boot_on(swtpm_with_ek(&ca, true), "plain", &BOOT);
    let b = boot_on(swtpm_with_ek(&ca, true), "plain", &BOOT);
    let (m, key) = manifest(&replayed(&a), |_| {});
    let trust = EkCertified::from_pem(&ek_ca_bundle(&ca)).unwrap();
    let v = QemuVtpmVerifier::new(m.clone(), key.clone(), Box::new(trust));
    let tls = b"tls key".to_vec();
    let nonce = [3u8; 32];
    let x = Expectation {
        nonce: &nonce,
        tls_public_key: &tls,
        join: JoinKind::First,
    };
    let evidence = |n: &Node| {
        Attester::with_tcti(&n.tpm.tcti)
            .evidence(
                &nonce,
                &tls,
                &QUOTED,
                n.firmware_log.clone(),
                n.runtime_log.clone(),
            )
            .unwrap()
    };
    let ea = evidence(&a);
    assert!(ea.ek.is_some(), "the TPM certified its AK");
    v.verify(&ea, &x).unwrap();
    v.verify(&evidence(&b), &x).unwrap();

    let refused = |e: &nacre_attestation::Evidence, v: &dyn Verifier| {
        let r = v.verify(e, &x).unwrap_err();
        assert_eq!(r.check, Check::AkTrust, "{r}");
        r.reason
    };
    // No binding.
    let mut none = ea.clone();
    none.ek = None;
    assert!(refused(&none, &v).contains("no EK binding"));
    // b's certify (b's AK) presented with a's quote and AK.
    let mut swapped = ea.clone();
    swapped.ek = evidence(&b).ek;
    let r = refused(&swapped, &v);
    assert!(r.contains("not this AK"), "{r}");
    // a's certify, but a's certificate replaced by b's EK certificate: the EK signature fails.
    let mut other_cert = ea.clone();
    other_cert.ek.as_mut().unwrap().ek_certificate = evidence(&b).ek.unwrap().ek_certificate;
    let r = refused(&other_cert, &v);
    assert!(r.contains("signature over the certify"), "{r}");
    // A certify made for another quote (old qualifying data).
    let old = Attester::with_tcti(&a.tpm.tcti)
        .evidence(
            &[9u8; 32],
            &tls,
            &QUOTED,
            a.firmware_log.clone(),
            a.runtime_log.clone(),
        )
        .unwrap();
    let mut stale = ea.clone();
    stale.ek = old.ek;
    let r = refused(&stale, &v);
    assert!(r.contains("qualifying data"), "{r}");

    // Another operator's CA vouches for nothing here.
    let ca2 = tmp.path().join("ca2");
    let _c = swtpm_with_ek(&ca2, true);
    let v2 = QemuVtpmVerifier::new(
        m,
        key,
        Box::new(EkCertified::from_pem(&ek_ca_bundle(&ca2)).unwrap()),
    );
    let r = refused(&ea, &v2);
    assert!(r.contains("nothing configured signed"), "{r}");
}

#[test]
fn a_tpm_whose_ek_cannot_sign_gives_no_binding() {
    let tmp = tempfile::tempdir().unwrap();
    let n = boot_on(swtpm_with_ek(&tmp.path().join("ca"), false), "plain", &BOOT);
    let e = Attester::with_tcti(&n.tpm.tcti)
        .evidence(
            &[1; 32],
            b"k",
            &QUOTED,
            n.firmware_log.clone(),
            n.runtime_log.clone(),
        )
        .unwrap();
    assert!(e.ek.is_none());
}
