//! The node side of azure-sev-snp on a swtpm provisioned like Azure's paravisor vTPM (made in
//! this test): an RSA 2048 restricted signing AK persisted at 0x81000003 and an HCL report in
//! NV 0x01400001 whose runtime data carries that AK as `HCLAkPub` and whose (unsigned, test-made)
//! SNP report's REPORT_DATA is the runtime data's SHA-256. `Attester::azure_evidence` quotes with
//! that AK (RSASSA/SHA-256); the verifier's RSA path and the HCL binding accept it, and refuse
//! it for another AK or a changed quote.

use base64::Engine as _;
use nacre_attestation::azure;
use nacre_attestation::binding::{verify_ak_signature, AkBinding};
use nacre_attestation::evidence::{qualifying_data, Platform};
use nacre_attestation::tpm::Attester;
use std::str::FromStr;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::handles::PersistentTpmHandle;
use tss_esapi::interface_types::algorithm::{
    HashingAlgorithm, PublicAlgorithm, RsaSchemeAlgorithm,
};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::structures::{
    Public, PublicBuilder, PublicKeyRsa, PublicRsaParametersBuilder, RsaExponent, RsaScheme,
};

mod support;

/// Provision the swtpm like Azure's vTPM; returns the HCL report written to NV.
fn provision(tcti: &str) -> Vec<u8> {
    provision_with(tcti, |data| {
        let mut report = vec![0u8; 1184];
        report[0] = 2;
        report[0x50..0x90].copy_from_slice(&data);
        report
    })
}

/// The same, the HCL report's SNP report made by `make_report` from its REPORT_DATA.
fn provision_with(tcti: &str, make_report: impl Fn([u8; 64]) -> Vec<u8>) -> Vec<u8> {
    let mut ctx =
        tss_esapi::Context::new(tss_esapi::tcti_ldr::TctiNameConf::from_str(tcti).unwrap())
            .unwrap();
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_sign_encrypt(true)
        .build()
        .unwrap();
    let params = PublicRsaParametersBuilder::new()
        .with_scheme(
            RsaScheme::create(RsaSchemeAlgorithm::RsaSsa, Some(HashingAlgorithm::Sha256)).unwrap(),
        )
        .with_key_bits(RsaKeyBits::Rsa2048)
        .with_exponent(RsaExponent::default())
        .with_is_signing_key(true)
        .with_restricted(true)
        .build()
        .unwrap();
    let template = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Rsa)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_rsa_parameters(params)
        .with_rsa_unique_identifier(PublicKeyRsa::default())
        .build()
        .unwrap();
    let primary = ctx
        .execute_with_nullauth_session(|c| {
            c.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
        })
        .unwrap();
    let Public::Rsa { unique, .. } = &primary.out_public else {
        panic!("not RSA")
    };
    let n = unique.value().to_vec();
    let persistent = PersistentTpmHandle::new(azure::AK_PERSISTENT_HANDLE).unwrap();
    ctx.execute_with_nullauth_session(|c| {
        c.evict_control(
            Provision::Owner,
            primary.key_handle.into(),
            Persistent::Persistent(persistent),
        )
    })
    .unwrap();
    let _ = ctx.flush_context(primary.key_handle.into());

    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let runtime = format!(
        r#"{{"keys":[{{"kid":"HCLAkPub","key_ops":["sign"],"kty":"RSA","e":"AQAB","n":"{}"}}],"vm-configuration":{{"secure-boot":true,"tpm-enabled":true}}}}"#,
        b64(&n)
    )
    .into_bytes();
    let d = ring::digest::digest(&ring::digest::SHA256, &runtime);
    let mut data = [0u8; 64];
    data[..32].copy_from_slice(d.as_ref());
    let report = make_report(data);
    let mut hcl = b"HCLA".to_vec();
    for v in [1u32, 0, 2, 0, 0, 0, 0] {
        hcl.extend_from_slice(&v.to_le_bytes());
    }
    hcl.extend_from_slice(&report);
    for v in [20 + runtime.len() as u32, 1, 2, 1, runtime.len() as u32] {
        hcl.extend_from_slice(&v.to_le_bytes());
    }
    hcl.extend_from_slice(&runtime);

    support::write_nv(&mut ctx, azure::HCL_REPORT_NV_INDEX, &hcl);
    hcl
}

#[test]
fn azure_evidence_from_an_azure_like_vtpm() {
    let tpm = support::swtpm();
    let hcl = provision(&tpm.tcti);
    let attester = Attester::with_tcti(&tpm.tcti);
    assert_eq!(attester.read_nv(azure::HCL_REPORT_NV_INDEX).unwrap(), hcl);
    let ev = attester
        .azure_evidence(b"nonce", b"tls key", &[0, 7, 15], vec![], vec![], vec![])
        .unwrap();
    let Platform::SevSnp { report, .. } = &ev.platform else {
        panic!("not SEV-SNP")
    };
    assert_eq!(report[..], hcl[32..32 + 1184]);
    assert_eq!(
        ev.binding,
        Some(AkBinding::AzureHcl {
            hcl_report: hcl.clone()
        })
    );
    // The RSA AK's quote verifies, answers this nonce and channel, and the HCL report binds
    // exactly this AK.
    verify_ak_signature(&ev.ak_public, &ev.quote.attest, &ev.quote.signature).unwrap();
    let q = nacre_attestation::attest::parse_quote(&ev.quote.attest).unwrap();
    assert_eq!(q.extra_data, qualifying_data(b"nonce", b"tls key"));
    azure::check_binding(&hcl, report, &ev.ak_public).unwrap();
    // A changed quote, and the quote presented with another RSA key.
    let mut bad = ev.quote.attest.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(verify_ak_signature(&ev.ak_public, &bad, &ev.quote.signature).is_err());
    let other = nacre_attestation::x509util::rsa_spki(&[0xc3; 256], &[1, 0, 1]);
    assert!(verify_ak_signature(&other, &ev.quote.attest, &ev.quote.signature).is_err());
    assert!(matches!(
        azure::check_binding(&hcl, report, &other),
        Err(azure::AzureError::AkMismatch { .. })
    ));
}

/// End to end through `SevSnpVerifier` on a booted swtpm node provisioned like Azure's vTPM,
/// the HCL report's SNP report re-signed by helper A's test-made VCEK (tests/fixtures/snp/
/// test-made, NOT AMD's keys) at VMPL 0: accepted for an azure-sev-snp manifest holding its
/// measurement; refused when the measurement is only operator-configured (an azure manifest
/// without it), with nacre's own (software) AK bound by a genuine report, and for another
/// variant.
#[test]
fn azure_node_accepted_end_to_end() {
    use nacre_attestation::snp::{report_data, Generation, Report, SnpPolicy, Tcb};
    use nacre_attestation::verify::{Check, Expectation, JoinKind, SevSnpVerifier, Verifier};
    use nacre_eventlog::{Phase, RuntimeEvent};
    use nacre_measure::sign::{BlobSigner, PemSigner, PublicKey};
    use support::snp_file;
    const AT: u64 = 1_780_272_000;
    let report_for = |data: [u8; 64]| {
        let mut r = snp_file("milan-v3-report.bin");
        r[0x30..0x34].fill(0); // VMPL 0: the paravisor's
        r[0x50..0x90].copy_from_slice(&data);
        support::signed_by_test_vcek(r)
    };
    let roots = support::test_made_roots();

    let node = support::boot("plain", &[RuntimeEvent::Phase(Phase::EnterInitrd)]);
    provision_with(&node.tpm.tcti, report_for);
    let nonce = b"nonce (azure end to end)";
    let tls = b"the node's TLS SPKI (azure end to end)".to_vec();
    let x = Expectation {
        nonce,
        tls_public_key: &tls,
        join: JoinKind::First,
    };
    let signer = PemSigner::generate().unwrap().0;
    let key = PublicKey::from_spki(&signer.public_key_spki()).unwrap();
    let values = support::replayed(&node);
    let parsed = Report::parse(&report_for([0; 64])).unwrap();
    // The measurement is also an operator-configured one (`--snp-measurement`): that must not
    // be enough for HCL-bound evidence (below).
    let mut policy = SnpPolicy::new(0, [(Generation::Milan, Tcb::default())]);
    policy.measurements = vec![parsed.measurement];
    let launch = |measurement: [u8; 48]| nacre_measure::manifest::SnpLaunchValue {
        vcpus: 4,
        vcpu_type: "EPYC-Milan".into(),
        vmm: "azure".into(),
        guest_features: 1,
        ovmf_sha256: "00".repeat(32),
        direct_boot: None,
        measurement: hex::encode(measurement),
    };
    // A manifest of `variant` whose own `snp` values are `own`.
    let verifier_with = |variant: &str, own: Vec<[u8; 48]>| {
        let m = support::manifest_signed_by(
            &values,
            |m| {
                m.image.variant = variant.into();
                m.snp = own.iter().map(|d| launch(*d)).collect();
            },
            &signer,
        );
        SevSnpVerifier::new(roots.clone(), policy.clone(), vec![m], key.clone()).at_time(AT)
    };
    let verifier = |variant: &str| verifier_with(variant, vec![parsed.measurement]);
    let attester = Attester::with_tcti(&node.tpm.tcti);
    let vcek = snp_file("test-made/test-made-vcek.der");
    let ev = attester
        .azure_evidence(
            nonce,
            &tls,
            &support::QUOTED,
            node.firmware_log.clone(),
            node.runtime_log.clone(),
            vcek.clone(),
        )
        .unwrap();
    let ok = verifier("azure-sev-snp").verify(&ev, &x).unwrap();
    assert_eq!(ok.image.variant, "azure-sev-snp");
    assert_eq!(ok.ak_public, ev.ak_public);
    // An azure manifest without `snp` values, the measurement only configured: refused. On
    // GCE/EC2 the guest kernel runs at VMPL 0 and can wrap its own genuine report (naming a
    // software HCLAkPub) in an "HCLA" blob; only a manifest of the azure variant holding the
    // measurement ties it to Azure's paravisor.
    let r = verifier_with("azure-sev-snp", vec![])
        .verify(&ev, &x)
        .unwrap_err();
    assert_eq!(r.check, Check::LaunchValues, "{r}");
    // Nor an azure manifest holding only another measurement.
    let r = verifier_with("azure-sev-snp", vec![[0x5a; 48]])
        .verify(&ev, &x)
        .unwrap_err();
    assert_eq!(r.check, Check::LaunchValues, "{r}");
    // Another variant does not take the HCL binding.
    let r = verifier("gcp-sev-snp").verify(&ev, &x).unwrap_err();
    assert_eq!(r.check, Check::AkTrust, "{r}");
    // The paravisor's AK quote for another nonce: refused by the quote's qualifying data.
    let other = Expectation {
        nonce: b"another nonce",
        ..x
    };
    assert_eq!(
        verifier("azure-sev-snp")
            .verify(&ev, &other)
            .unwrap_err()
            .check,
        Check::Nonce
    );
    // nacre's own AK (software, from Azure's standpoint) bound by a genuine report: refused.
    let mut soft = attester
        .evidence(
            nonce,
            &tls,
            &support::QUOTED,
            node.firmware_log.clone(),
            node.runtime_log.clone(),
        )
        .unwrap();
    soft.platform = Platform::SevSnp {
        report: report_for(report_data(nonce, &soft.ak_public, &tls)),
        vcek,
    };
    let r = verifier("azure-sev-snp").verify(&soft, &x).unwrap_err();
    assert_eq!(r.check, Check::AkTrust, "{r}");
    assert!(r.reason.contains("Azure's HCL report"), "{r}");
}

/// `Attester::cvm_evidence` on azure-sev-snp (the path nacre-init and the in-cluster service
/// take): the VCEK comes from THIM (here a loopback server answering once) and goes into the
/// evidence when it verifies the HCL report's SNP report with AMD's roots (Constellation's real
/// Azure report and VCEK); a VCEK for another chip (the real ACI THIM response), or no answer,
/// leaves it empty (logged) and the evidence is still made.
#[test]
fn cvm_evidence_takes_the_vcek_from_thim() {
    use std::io::{Read, Write};
    let fixture = |p: &str| {
        std::fs::read(format!(
            "{}/tests/fixtures/azure/{p}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let real = azure::HclReport::parse(&fixture("constellation-hcl-report.bin"))
        .unwrap()
        .hw_report
        .to_vec();
    let vcek = fixture("constellation-vcek.der");
    let tpm = support::swtpm();
    let real2 = real.clone();
    provision_with(&tpm.tcti, move |_| real2.clone());
    // One THIM response on loopback.
    let serve = |body: Vec<u8>| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 4096];
            let _ = s.read(&mut b);
            let mut r =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            r.extend_from_slice(&body);
            let _ = s.write_all(&r);
        });
        addr
    };
    let pem = {
        let b = base64::engine::general_purpose::STANDARD.encode(&vcek);
        format!("-----BEGIN CERTIFICATE-----\n{b}\n-----END CERTIFICATE-----\n")
    };
    let body = serde_json::to_vec(&serde_json::json!({"vcekCert": pem, "tcbm": "", "certificateChain": "", "cacheControl": "86400"})).unwrap();
    let make = |addr| {
        Attester::with_tcti(&tpm.tcti)
            .with_thim(addr)
            .with_log(|m| eprintln!("test log: {m}"))
            .cvm_evidence(
                Some(nacre_attestation::tpm::Cvm::SevSnp),
                b"nonce",
                b"tls key",
                &[0, 7, 15],
                vec![],
                vec![],
                &|_| panic!("the Azure path makes its own platform part"),
            )
            .unwrap()
    };
    let ev = make(serve(body));
    assert_eq!(
        ev.platform,
        Platform::SevSnp {
            report: real.clone(),
            vcek: vcek.clone()
        }
    );
    assert!(matches!(ev.binding, Some(AkBinding::AzureHcl { .. })));
    // Another chip's VCEK (genuine, from the real ACI THIM response): not sent.
    let ev = make(serve(fixture("thim-aci.json")));
    assert_eq!(
        ev.platform,
        Platform::SevSnp {
            report: real.clone(),
            vcek: vec![]
        }
    );
    // Nothing listening: not sent, the evidence still made.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let ev = make(addr);
    assert_eq!(
        ev.platform,
        Platform::SevSnp {
            report: real,
            vcek: vec![]
        }
    );
}
