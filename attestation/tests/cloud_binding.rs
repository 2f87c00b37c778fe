//! The per-variant AK binding (issue 12 item 1): Azure's HCL report and GCE's AK certificate
//! from real public fixtures (`tests/fixtures/azure`, `tests/fixtures/gce`, origins in their
//! READMEs), chains made here where real data cannot reach an accept path, and the policy that
//! refuses a software AK on every cloud variant.

use nacre_attestation::azure::{self, AzureError, HclReport};
use nacre_attestation::binding::{
    self, rsassa_tpmt_signature, verify_ak_signature, AkBinding, BindingPolicy, Mechanism,
    SignatureError, Verified,
};
use nacre_attestation::evidence::{Evidence, Platform, Quote};
use nacre_attestation::gce::{self, GceError, GceRoots};
use nacre_measure::manifest::{ImageRef, Manifest, SCHEMA};
use x509_parser::prelude::*;

mod support;

fn fixture(path: &str) -> Vec<u8> {
    let p = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// The DER of each certificate in a PEM file.
fn pem_certs(path: &str) -> Vec<Vec<u8>> {
    let text = String::from_utf8(fixture(path)).unwrap();
    let mut out = Vec::new();
    let mut b64 = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("-----BEGIN") {
            inside = true;
            b64.clear();
        } else if line.starts_with("-----END") {
            inside = false;
            use base64::Engine as _;
            out.push(
                base64::engine::general_purpose::STANDARD
                    .decode(&b64)
                    .unwrap(),
            );
        } else if inside {
            b64.push_str(line.trim());
        }
    }
    out
}

/// SPKI DER of a PEM public key / of a certificate.
fn pem_key(path: &str) -> Vec<u8> {
    pem_certs(path).remove(0)
}
fn cert_spki(der: &[u8]) -> Vec<u8> {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    c.public_key().raw.to_vec()
}

/// 2026-12-01: inside every fixture certificate's validity.
const NOW: u64 = 1_796_083_200;

/// The 24 bytes of REPORT_DATA past the SHA-256 of the runtime data are zero, and the HCL
/// report's SNP report sits at offset 32.
fn hcl() -> Vec<u8> {
    fixture("azure/hcl-report-snp.bin")
}
fn hcl_snp_report(h: &[u8]) -> Vec<u8> {
    h[32..32 + 1184].to_vec()
}

#[test]
fn real_azure_hcl_report_binds_its_hclakpub() {
    let h = hcl();
    let parsed = HclReport::parse(&h).unwrap();
    assert_eq!(parsed.report_type, azure::REPORT_TYPE_SNP);
    assert_eq!(parsed.hash_type, 1);
    let ak = parsed.ak_spki().unwrap();
    // The runtime data's SHA-256 is REPORT_DATA's first half (a digest the fixture carries,
    // checked here by the code path and below by tampering).
    azure::check_binding(&h, &hcl_snp_report(&h), &ak).unwrap();
    // The SNP report in it is a real Milan report whose VCEK chains to AMD's Milan ARK/ASK.
    let certs = pem_certs("azure/certs.pem");
    assert_eq!(certs.len(), 3);
    let (_, vcek) = X509Certificate::from_der(&certs[0]).unwrap();
    assert!(vcek.subject().to_string().contains("SEV-VCEK"));
}

#[test]
fn tampered_runtime_data_is_refused() {
    let mut h = hcl();
    let ak = HclReport::parse(&h).unwrap().ak_spki().unwrap();
    // "current-time":1678652405 → ...406: still valid JSON, same HCLAkPub.
    let pos = h
        .windows(10)
        .position(|w| w == b"1678652405")
        .expect("the runtime data's current-time");
    h[pos + 9] = b'6';
    let report = hcl_snp_report(&h);
    let e = azure::check_binding(&h, &report, &ak).unwrap_err();
    assert!(matches!(e, AzureError::RuntimeDataHash { .. }), "{e}");
    assert!(e.to_string().contains("SHA-256"), "{e}");
}

#[test]
fn an_ak_other_than_hclakpub_is_refused() {
    let h = hcl();
    // A real HCLAkPub of another Azure VM (read with tpm2_readpublic -c 0x81000003).
    let other = pem_key("azure/akpub.pem");
    let e = azure::check_binding(&h, &hcl_snp_report(&h), &other).unwrap_err();
    assert!(matches!(e, AzureError::AkMismatch { .. }), "{e}");
    // A software P-256 AK.
    let soft = nacre_attestation::evidence::p256_spki(&[7; 32], &[8; 32]).unwrap();
    let e = azure::check_binding(&h, &hcl_snp_report(&h), &soft).unwrap_err();
    assert!(e.to_string().contains("HCLAkPub"), "{e}");
}

/// A report a guest at VMPL 2 requested (REPORT_DATA of its choosing) is not the paravisor's.
#[test]
fn an_hcl_report_from_a_guest_vmpl_is_refused() {
    let mut h = hcl();
    let ak = HclReport::parse(&h).unwrap().ak_spki().unwrap();
    h[32 + 0x30] = 2;
    let e = azure::check_binding(&h, &hcl_snp_report(&h), &ak).unwrap_err();
    assert_eq!(e, AzureError::Vmpl(2));
}

#[test]
fn an_hcl_report_holding_another_snp_report_is_refused() {
    let h = hcl();
    let ak = HclReport::parse(&h).unwrap().ak_spki().unwrap();
    // A genuine SNP report of another guest (virtee/sev's Milan report).
    let other = fixture("snp/milan-report.bin");
    assert_eq!(
        azure::check_binding(&h, &other, &ak).unwrap_err(),
        AzureError::ReportMismatch
    );
}

/// The real RSA AK quote (azure-cvm-tooling's quote.bin: signature, TPMS_ATTEST, PCRs; bincode)
/// verifies with its AK through the RSASSA path; a changed byte or another RSA key does not.
#[test]
fn real_rsa_ak_quote_verifies() {
    let q = fixture("azure/quote.bin");
    let vec_at = |o: usize| {
        let n = u64::from_le_bytes(q[o..o + 8].try_into().unwrap()) as usize;
        (q[o + 8..o + 8 + n].to_vec(), o + 8 + n)
    };
    let (sig, o) = vec_at(0);
    let (attest, _) = vec_at(o);
    assert_eq!(sig.len(), 256);
    let ak = pem_key("azure/akpub.pem");
    let tpmt = rsassa_tpmt_signature(&sig);
    verify_ak_signature(&ak, &attest, &tpmt).unwrap();
    // It is a TPMS_ATTEST this crate parses: a quote whose extraData is "challenge".
    let parsed = nacre_attestation::attest::parse_quote(&attest).unwrap();
    assert_eq!(parsed.extra_data, b"challenge");
    let mut bad = attest.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(matches!(
        verify_ak_signature(&ak, &bad, &tpmt),
        Err(SignatureError::Invalid(_))
    ));
    // The HCL report's HCLAkPub (another VM's AK) did not sign it.
    let other = HclReport::parse(&hcl()).unwrap().ak_spki().unwrap();
    assert!(matches!(
        verify_ak_signature(&other, &attest, &tpmt),
        Err(SignatureError::Invalid(_))
    ));
    // An ECDSA TPMT_SIGNATURE for an RSA AK is a format refusal.
    let mut ecdsa = tpmt.clone();
    ecdsa[1] = 0x18;
    assert!(matches!(
        verify_ak_signature(&ak, &attest, &ecdsa),
        Err(SignatureError::Format(_))
    ));
}

#[test]
fn real_gce_ak_certificates_verify() {
    for name in [
        "gce/pca_tpm_ecc_sign_cert.pem",
        "gce/pca_tpm_rsa_sign_cert.pem",
    ] {
        let cert = pem_certs(name).remove(0);
        let ak = cert_spki(&cert);
        let info = gce::verify_ak_cert(&cert, &ak, &GceRoots::default(), NOW)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .expect("the instance identity extension");
        assert_eq!(info.zone, "us-central1-a", "{name}");
        assert_eq!(info.project_id, "google.com:wuale-gcp-testing", "{name}");
        // The subject CN is the instance id.
        let (_, c) = X509Certificate::from_der(&cert).unwrap();
        let cn = c
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(info.instance_id.to_string(), cn, "{name}");
        assert!(!info.instance_name.is_empty());
    }
}

#[test]
fn gce_ak_certificate_of_another_key_is_refused() {
    let ecc = pem_certs("gce/pca_tpm_ecc_sign_cert.pem").remove(0);
    let rsa = pem_certs("gce/pca_tpm_rsa_sign_cert.pem").remove(0);
    // The RSA AK's certificate presented for the ECC AK, and a software AK.
    let e = gce::verify_ak_cert(&rsa, &cert_spki(&ecc), &GceRoots::default(), NOW).unwrap_err();
    assert!(matches!(e, GceError::KeyMismatch { .. }), "{e}");
    let soft = nacre_attestation::evidence::p256_spki(&[7; 32], &[8; 32]).unwrap();
    let e = gce::verify_ak_cert(&ecc, &soft, &GceRoots::default(), NOW).unwrap_err();
    assert!(matches!(e, GceError::KeyMismatch { .. }), "{e}");
}

#[test]
fn gce_ak_certificate_under_another_root_is_refused() {
    let ecc = pem_certs("gce/pca_tpm_ecc_sign_cert.pem").remove(0);
    let ak = cert_spki(&ecc);
    // AMD's Milan ARK as the only root.
    let amd = GceRoots {
        roots: pem_certs("azure/certs.pem")[2..].to_vec(),
        intermediates: vec![gce::GCE_EK_AK_CA_INTERMEDIATE.to_vec()],
    };
    let e = gce::verify_ak_cert(&ecc, &ak, &amd, NOW).unwrap_err();
    assert!(
        matches!(&e, GceError::Chain(r) if r.contains("not a pinned root")),
        "{e}"
    );
    // Without the intermediate.
    let no_int = GceRoots {
        roots: vec![gce::GCE_EK_AK_CA_ROOT.to_vec()],
        intermediates: vec![],
    };
    let e = gce::verify_ak_cert(&ecc, &ak, &no_int, NOW).unwrap_err();
    assert!(matches!(e, GceError::Chain(_)), "{e}");
    // After the certificate's notAfter (2052-11-15).
    let e = gce::verify_ak_cert(&ecc, &ak, &GceRoots::default(), 2_700_000_000).unwrap_err();
    assert!(e.to_string().contains("valid from"), "{e}");
}

/// A test-made CA chain in Google's shape: root, intermediate (both CAs), AK certificate with
/// an instance identity extension. Returns (roots, AK certificate DER, AK SPKI).
fn test_made_gce_chain() -> (GceRoots, Vec<u8>, Vec<u8>) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType, IsCa,
        KeyPair, PublicKeyData, PKCS_ECDSA_P256_SHA256,
    };
    let ca = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    };
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let root = CertifiedIssuer::self_signed(ca("test-made EK/AK CA Root"), root_key).unwrap();
    let int_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let int =
        CertifiedIssuer::signed_by(ca("test-made EK/AK CA Intermediate"), int_key, &root).unwrap();
    let ak = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "4242");
    // SEQUENCE { "europe-west4-a", 17, "proj", 4242, "node-1" }.
    let mut info = vec![0x0c, 14];
    info.extend_from_slice(b"europe-west4-a");
    info.extend_from_slice(&[0x02, 1, 17, 0x0c, 4]);
    info.extend_from_slice(b"proj");
    info.extend_from_slice(&[0x02, 2, 0x10, 0x92, 0x0c, 6]);
    info.extend_from_slice(b"node-1");
    let mut seq = vec![0x30, info.len() as u8];
    seq.extend(info);
    p.custom_extensions = vec![CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 4, 1, 11129, 2, 1, 21],
        seq,
    )];
    let cert = p.signed_by(&ak, &int).unwrap();
    (
        GceRoots {
            roots: vec![root.der().to_vec()],
            intermediates: vec![int.der().to_vec()],
        },
        cert.der().to_vec(),
        ak.subject_public_key_info(),
    )
}

#[test]
fn test_made_gce_chain_accepted_only_under_its_own_root() {
    let (roots, cert, ak) = test_made_gce_chain();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let info = gce::verify_ak_cert(&cert, &ak, &roots, now)
        .unwrap()
        .unwrap();
    assert_eq!(
        (info.zone.as_str(), info.project_number, info.instance_id),
        ("europe-west4-a", 17, 4242)
    );
    // The same certificate against Google's pinned roots: a guest's self-made CA.
    let e = gce::verify_ak_cert(&cert, &ak, &GceRoots::default(), now).unwrap_err();
    assert!(matches!(e, GceError::Chain(_)), "{e}");
}

fn manifest(variant: &str) -> Manifest {
    Manifest {
        schema: SCHEMA.into(),
        image: ImageRef {
            reference: "nacre".into(),
            version: "1.0.0".into(),
            variant: variant.into(),
            uki_sha256: "00".repeat(32),
            roothash: None,
        },
        alg: nacre_eventlog::HashAlg::Sha256,
        stub: nacre_measure::uki::StubProfile::V252,
        secure_boot: false,
        phase: None,
        not_after: None,
        measurements: Default::default(),
        events: vec![],
        snp: vec![],
        tdx: None,
    }
}

fn evidence(platform: Platform, ak: Vec<u8>, binding: Option<AkBinding>) -> Evidence {
    Evidence {
        platform,
        quote: Quote {
            attest: vec![],
            signature: vec![],
        },
        ak_public: ak,
        firmware_log: vec![],
        runtime_log: vec![],
        ek: None,
        binding,
    }
}

fn snp(report: Vec<u8>) -> Platform {
    Platform::SevSnp {
        report,
        vcek: vec![],
    }
}

/// Each variant, given a genuine-looking report that binds a software AK (no platform
/// binding, or one the policy cannot verify): refused on every cloud variant and on qemu-snp
/// by default; qemu-snp accepted with the opt-in and a warning.
#[test]
fn software_ak_is_refused_on_every_cloud_variant() {
    let soft = nacre_attestation::evidence::p256_spki(&[7; 32], &[8; 32]).unwrap();
    let policy = BindingPolicy::default();
    let snp_ev = evidence(snp(fixture("snp/milan-report.bin")), soft.clone(), None);
    let tdx_ev = evidence(Platform::Tdx { quote: vec![] }, soft.clone(), None);
    for (variant, ev) in [
        ("azure-sev-snp", &snp_ev),
        ("gcp-sev-snp", &snp_ev),
        ("aws-sev-snp", &snp_ev),
        ("qemu-snp", &snp_ev),
        ("gcp-tdx", &tdx_ev),
    ] {
        let verified = policy.verify_binding(ev, Some(&fixture("snp/milan-report.bin")), NOW);
        let why = policy
            .admit(vec![manifest(variant)], ev, &verified)
            .unwrap_err();
        let mech = binding::mechanism(variant).unwrap();
        assert!(why.contains(variant), "{variant}: {why}");
        if mech == Mechanism::GuestBoundReportData {
            assert!(why.contains("--accept-guest-bound-ak qemu-snp"), "{why}");
        } else {
            assert!(why.contains(&mech.to_string()), "{variant}: {why}");
        }
    }
    // A software AK with a GCE "certificate" of a self-made CA: refused under Google's roots.
    let (_, cert, ak) = test_made_gce_chain();
    let ev = evidence(
        snp(vec![]),
        ak,
        Some(AkBinding::GceAkCert { certificate: cert }),
    );
    let verified = policy.verify_binding(&ev, None, NOW);
    assert!(verified.is_err());
    let why = policy
        .admit(vec![manifest("gcp-sev-snp")], &ev, &verified)
        .unwrap_err();
    assert!(why.contains("does not verify"), "{why}");
    // qemu-tdx: the TD quote's registers carry every decision; accepted without a binding.
    let (kept, warnings) = policy
        .admit(vec![manifest("qemu-tdx")], &tdx_ev, &Ok(None))
        .unwrap();
    assert_eq!((kept.len(), warnings.len()), (1, 0));
    // An unknown variant has no policy.
    let why = policy
        .admit(vec![manifest("my-sev-snp")], &snp_ev, &Ok(None))
        .unwrap_err();
    assert!(why.contains("no AK binding policy"), "{why}");
}

#[test]
fn qemu_snp_only_with_the_operator_opt_in() {
    let soft = nacre_attestation::evidence::p256_spki(&[7; 32], &[8; 32]).unwrap();
    let ev = evidence(snp(vec![]), soft, None);
    let mut policy = BindingPolicy::default();
    assert!(policy
        .admit(vec![manifest("qemu-snp")], &ev, &Ok(None))
        .is_err());
    policy.accept_guest_bound.insert("qemu-snp".into());
    let (kept, warnings) = policy
        .admit(
            vec![manifest("qemu-snp"), manifest("azure-sev-snp")],
            &ev,
            &Ok(None),
        )
        .unwrap();
    // Only qemu-snp: the opt-in does not stretch to the cloud variant.
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].image.variant, "qemu-snp");
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("software AK"), "{warnings:?}");
}

/// End to end through the policy: the real HCL report admits azure-sev-snp manifests for its
/// HCLAkPub and nothing else; a GCE AK certificate (test-made chain, the policy's roots set to
/// it) admits gcp-* and not azure.
#[test]
fn verified_bindings_admit_their_variants_only() {
    let h = hcl();
    let ak = HclReport::parse(&h).unwrap().ak_spki().unwrap();
    let report = hcl_snp_report(&h);
    let ev = evidence(
        snp(report.clone()),
        ak,
        Some(AkBinding::AzureHcl { hcl_report: h }),
    );
    let policy = BindingPolicy::default();
    let verified = policy.verify_binding(&ev, Some(&report), NOW);
    assert_eq!(verified, Ok(Some(Verified::AzureHcl)));
    let (kept, _) = policy
        .admit(
            vec![manifest("azure-sev-snp"), manifest("gcp-sev-snp")],
            &ev,
            &verified,
        )
        .unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].image.variant, "azure-sev-snp");
    let why = policy
        .admit(vec![manifest("gcp-sev-snp")], &ev, &verified)
        .unwrap_err();
    assert!(why.contains("GCE's AK certificate"), "{why}");

    let (roots, cert, ak) = test_made_gce_chain();
    let policy = BindingPolicy {
        gce_roots: roots,
        ..Default::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ev = evidence(
        Platform::Tdx { quote: vec![] },
        ak,
        Some(AkBinding::GceAkCert { certificate: cert }),
    );
    let verified = policy.verify_binding(&ev, None, now);
    assert!(matches!(verified, Ok(Some(Verified::GceAkCert(Some(_))))));
    let (kept, _) = policy
        .admit(
            vec![manifest("gcp-tdx"), manifest("qemu-tdx")],
            &ev,
            &verified,
        )
        .unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].image.variant, "gcp-tdx");
    // An Azure HCL report cannot bind TDX evidence here.
    let ev = evidence(
        Platform::Tdx { quote: vec![] },
        vec![],
        Some(AkBinding::AzureHcl { hcl_report: hcl() }),
    );
    assert!(policy.verify_binding(&ev, None, now).is_err());
}

/// A signed manifest of `variant` (PCR 0 only: the TPM step is never reached with a match).
fn signed_manifest(
    signer: &nacre_measure::sign::PemSigner,
    variant: &str,
) -> nacre_attestation::verify::SignedManifest {
    let mut m = manifest(variant);
    m.measurements.insert(
        0,
        nacre_measure::manifest::Expected {
            expected: vec![0; 32],
            warn_only: false,
        },
    );
    support::signed(&m, signer)
}

/// Through `SevSnpVerifier` with AMD's bundled roots: Constellation's real Azure report (with
/// its VCEK; the HCL header around its parts is assembled here, see the README) passes the SNP
/// chain and the Azure binding for its HCLAkPub and reaches the TPM quote (refused there: no
/// quote by that AK exists in public data); another AK, another variant, and the same report
/// without the HCL binding are refused before it.
#[test]
fn sev_snp_verifier_with_the_real_azure_report() {
    use nacre_attestation::snp::{AmdRoots, Generation, SnpPolicy, Tcb};
    use nacre_attestation::verify::{Check, Expectation, JoinKind, SevSnpVerifier, Verifier};
    let h = fixture("azure/constellation-hcl-report.bin");
    azure::check_binding(
        &h,
        &hcl_snp_report(&h),
        &HclReport::parse(&h).unwrap().ak_spki().unwrap(),
    )
    .unwrap();
    let report = hcl_snp_report(&h);
    let parsed = nacre_attestation::snp::Report::parse(&report).unwrap();
    let vcek = fixture("azure/constellation-vcek.der");
    let (signer, _) = nacre_measure::sign::PemSigner::generate().unwrap();
    let key = nacre_measure::sign::PublicKey::from_spki(
        &nacre_measure::sign::BlobSigner::public_key_spki(&signer),
    )
    .unwrap();
    let mut policy = SnpPolicy::new(0, [(Generation::Milan, Tcb::default())]);
    policy.measurements = vec![parsed.measurement];
    let verifier = |variant: &str| {
        SevSnpVerifier::new(
            AmdRoots::bundled().unwrap(),
            policy.clone(),
            vec![signed_manifest(&signer, variant)],
            key.clone(),
        )
        .at_time(NOW)
    };
    let hcl_ak = HclReport::parse(&h).unwrap().ak_spki().unwrap();
    let ev = |ak: Vec<u8>, binding: Option<AkBinding>| {
        let mut e = evidence(
            Platform::SevSnp {
                report: report.clone(),
                vcek: vcek.clone(),
            },
            ak,
            binding,
        );
        e.quote.attest = vec![0; 8];
        e
    };
    let x = Expectation {
        nonce: b"nonce",
        tls_public_key: b"tls",
        join: JoinKind::First,
    };
    let with_hcl = Some(AkBinding::AzureHcl {
        hcl_report: h.clone(),
    });
    // Genuine report, HCL binding for HCLAkPub: past the platform part and the binding.
    let r = verifier("azure-sev-snp")
        .verify(&ev(hcl_ak.clone(), with_hcl.clone()), &x)
        .unwrap_err();
    assert_eq!(r.check, Check::QuoteFormat, "{r}");
    // Another AK (a real HCLAkPub of another VM): refused by the binding.
    let r = verifier("azure-sev-snp")
        .verify(&ev(pem_key("azure/akpub.pem"), with_hcl.clone()), &x)
        .unwrap_err();
    assert_eq!(r.check, Check::AkTrust, "{r}");
    assert!(r.reason.contains("HCLAkPub"), "{r}");
    // A GCE manifest does not take an Azure binding.
    let r = verifier("gcp-sev-snp")
        .verify(&ev(hcl_ak.clone(), with_hcl), &x)
        .unwrap_err();
    assert_eq!(r.check, Check::AkTrust, "{r}");
    assert!(r.reason.contains("GCE's AK certificate"), "{r}");
    // Without the HCL report, REPORT_DATA must bind nonce, AK and TLS key: it does not.
    let r = verifier("azure-sev-snp")
        .verify(&ev(hcl_ak, None), &x)
        .unwrap_err();
    assert_eq!(r.check, Check::SnpReport, "{r}");
    assert!(r.reason.contains("REPORT_DATA"), "{r}");
}
