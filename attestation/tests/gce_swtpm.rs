//! The node side of gcp-sev-snp / gcp-tdx on a swtpm provisioned like GCE's vTPM (made in this
//! test): an ECC AK template in NV 0x01c10003 and, in NV 0x01c10002, a certificate for the key
//! that template yields, issued by a test-made CA in Google's shape (root → intermediate → AK).
//! `Attester::gce_evidence` re-creates the AK from the template, quotes with it and sends the
//! certificate; the verifier accepts it under the test-made roots and refuses it under Google's.

use nacre_attestation::binding::{verify_ak_signature, AkBinding, BindingPolicy, Verified};
use nacre_attestation::evidence::{p256_point, Evidence};
use nacre_attestation::gce::{self, GceRoots};
use nacre_attestation::tpm::{ak_template, Attester};
use std::str::FromStr;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::structures::Public;
use tss_esapi::traits::Marshall;

mod support;

use support::write_nv;

/// A P-256 public key rcgen can issue a certificate for (the TPM holds the private key).
struct TpmKey(Vec<u8>);

impl rcgen::PublicKeyData for TpmKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// Template and certificate into NV; returns the test-made roots and the certificate.
fn provision(tcti: &str) -> (GceRoots, Vec<u8>) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        PKCS_ECDSA_P256_SHA256,
    };
    let mut ctx =
        tss_esapi::Context::new(tss_esapi::tcti_ldr::TctiNameConf::from_str(tcti).unwrap())
            .unwrap();
    let template = ak_template().unwrap();
    write_nv(
        &mut ctx,
        gce::AK_TEMPLATE_ECC_NV_INDEX,
        &template.marshall().unwrap(),
    );
    // The key that template yields (a primary: the same key every time).
    let primary = ctx
        .execute_with_nullauth_session(|c| {
            c.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
        })
        .unwrap();
    let _ = ctx.flush_context(primary.key_handle.into());
    let Public::Ecc { unique, .. } = &primary.out_public else {
        panic!("not ECC")
    };
    let mut point = vec![4u8];
    point.extend_from_slice(unique.x().value());
    point.extend_from_slice(unique.y().value());

    let ca = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    };
    let root = CertifiedIssuer::self_signed(
        ca("test-made EK/AK CA Root"),
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
    )
    .unwrap();
    let int = CertifiedIssuer::signed_by(
        ca("test-made EK/AK CA Intermediate"),
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
        &root,
    )
    .unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "4242");
    let cert = leaf.signed_by(&TpmKey(point), &int).unwrap().der().to_vec();
    write_nv(&mut ctx, gce::AK_CERT_ECC_NV_INDEX, &cert);
    (
        GceRoots {
            roots: vec![root.der().to_vec()],
            intermediates: vec![int.der().to_vec()],
        },
        cert,
    )
}

#[test]
fn gce_evidence_from_a_gce_like_vtpm() {
    let tpm = support::swtpm();
    let (roots, cert) = provision(&tpm.tcti);
    let ev: Evidence = Attester::with_tcti(&tpm.tcti)
        .gce_evidence(b"nonce", b"tls key", &[0, 7, 15], vec![], vec![])
        .unwrap();
    assert_eq!(
        ev.binding,
        Some(AkBinding::GceAkCert {
            certificate: cert.clone()
        })
    );
    assert!(p256_point(&ev.ak_public).is_some());
    verify_ak_signature(&ev.ak_public, &ev.quote.attest, &ev.quote.signature).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // The certificate is for the AK the template yields, under the test-made roots.
    gce::verify_ak_cert(&cert, &ev.ak_public, &roots, now).unwrap();
    let policy = BindingPolicy {
        gce_roots: roots,
        ..Default::default()
    };
    assert!(matches!(
        policy.verify_binding(&ev, None, now),
        Ok(Some(Verified::GceAkCert(None)))
    ));
    // Under Google's pinned roots the same certificate is a guest's own CA: refused.
    let e = BindingPolicy::default()
        .verify_binding(&ev, None, now)
        .unwrap_err();
    assert!(e.contains("chain"), "{e}");
    // Another key's certificate (GCE's real RSA AK certificate) for this AK: refused.
    let other = support_cert("gce/pca_tpm_rsa_sign_cert.pem");
    let mut wrong = ev.clone();
    wrong.binding = Some(AkBinding::GceAkCert { certificate: other });
    assert!(BindingPolicy::default()
        .verify_binding(&wrong, None, now)
        .unwrap_err()
        .contains("is for key"));
}

fn support_cert(path: &str) -> Vec<u8> {
    use base64::Engine as _;
    let p = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(p).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// End to end through the SEV-SNP verifier: a booted swtpm node provisioned like GCE's vTPM,
// its quote by GCE's AK with Google's (here: test-made) certificate, and a SEV-SNP report
// re-signed by helper A's test-made VCEK (tests/fixtures/snp/test-made, NOT AMD's keys) whose
// REPORT_DATA binds nonce, AK and TLS key.
// ---------------------------------------------------------------------------------------------

mod end_to_end {
    use super::*;
    use nacre_attestation::evidence::Platform;
    use nacre_attestation::snp::{report_data, Generation, Report, SnpPolicy, Tcb};
    use nacre_attestation::verify::{Check, Expectation, JoinKind, SevSnpVerifier, Verifier};
    use nacre_eventlog::{Phase, RuntimeEvent};
    use nacre_measure::sign::{BlobSigner, PemSigner, PublicKey};

    /// 2026-06-01: inside the test-made VCEK chain's validity.
    const AT: u64 = 1_780_272_000;

    use support::{snp_file, test_made_roots as test_roots, test_signed_report as report_for};

    #[test]
    fn gcp_sev_snp_node_accepted_with_gce_s_certificate_and_refused_with_a_software_ak() {
        let node = support::boot("plain", &[RuntimeEvent::Phase(Phase::EnterInitrd)]);
        let (gce_roots, _) = provision(&node.tpm.tcti);
        let nonce = b"nonce (gce end to end)";
        let tls = b"the node's TLS SPKI (gce end to end)".to_vec();
        let x = Expectation {
            nonce,
            tls_public_key: &tls,
            join: JoinKind::First,
        };
        let signer = PemSigner::generate().unwrap().0;
        let key = PublicKey::from_spki(&signer.public_key_spki()).unwrap();
        let values = support::replayed(&node);
        let parsed = Report::parse(&report_for([0; 64])).unwrap();
        let mut policy = SnpPolicy::new(parsed.vmpl, [(Generation::Milan, Tcb::default())]);
        policy.measurements = vec![parsed.measurement];
        let verifier = |variant: &str, binding: BindingPolicy| {
            let m =
                support::manifest_signed_by(&values, |m| m.image.variant = variant.into(), &signer);
            SevSnpVerifier::new(test_roots(), policy.clone(), vec![m], key.clone())
                .at_time(AT)
                .with_binding_policy(binding)
        };
        let with_platform = |mut ev: Evidence| {
            ev.platform = Platform::SevSnp {
                report: report_for(report_data(nonce, &ev.ak_public, &tls)),
                vcek: snp_file("test-made/test-made-vcek.der"),
            };
            ev
        };
        let attester = Attester::with_tcti(&node.tpm.tcti);
        let gce_ev = with_platform(
            attester
                .gce_evidence(
                    nonce,
                    &tls,
                    &support::QUOTED,
                    node.firmware_log.clone(),
                    node.runtime_log.clone(),
                )
                .unwrap(),
        );
        let gce_policy = BindingPolicy {
            gce_roots,
            ..Default::default()
        };

        // Accepted: report, GCE's certificate for the quoting AK, quote and logs.
        let ok = verifier("gcp-sev-snp", gce_policy.clone())
            .verify(&gce_ev, &x)
            .unwrap();
        assert_eq!(ok.image.variant, "gcp-sev-snp");
        assert_eq!(ok.ak_public, gce_ev.ak_public);

        // The same evidence under Google's pinned roots: the certificate is a self-made CA's.
        let r = verifier("gcp-sev-snp", BindingPolicy::default())
            .verify(&gce_ev, &x)
            .unwrap_err();
        assert_eq!(r.check, Check::AkTrust, "{r}");
        assert!(r.reason.contains("gcp-sev-snp"), "{r}");

        // A software AK (nacre's own, no certificate) bound by a genuine report: refused for
        // every cloud variant, and for qemu-snp unless the operator opted in.
        let soft = with_platform(
            attester
                .evidence(
                    nonce,
                    &tls,
                    &support::QUOTED,
                    node.firmware_log.clone(),
                    node.runtime_log.clone(),
                )
                .unwrap(),
        );
        for variant in ["gcp-sev-snp", "azure-sev-snp", "aws-sev-snp", "qemu-snp"] {
            let r = verifier(variant, gce_policy.clone())
                .verify(&soft, &x)
                .unwrap_err();
            assert_eq!(r.check, Check::AkTrust, "{variant}: {r}");
            assert!(r.reason.contains(variant), "{r}");
        }
        let mut opt_in = gce_policy.clone();
        opt_in.accept_guest_bound.insert("qemu-snp".into());
        let ok = verifier("qemu-snp", opt_in).verify(&soft, &x).unwrap();
        assert_eq!(ok.image.variant, "qemu-snp");
        assert!(
            ok.platform_warnings
                .iter()
                .any(|w| w.contains("--accept-guest-bound-ak qemu-snp")),
            "{:?}",
            ok.platform_warnings
        );
    }
}
