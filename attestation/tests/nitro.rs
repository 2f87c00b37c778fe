//! AWS Nitro attestation documents (`nacre_attestation::nitro`).
//!
//! Real documents (tests/fixtures/nitro, origin in its README): a NitroTPM document from an EC2
//! instance and a Nitro Enclaves document, verified at their own timestamps against the pinned
//! AWS root; every alteration is refused. nacre's binding (nonce, user_data, public_key) and the
//! sha384 golden values are tested with documents signed by a chain made here ("test-made"),
//! the accept path beside each refusal.

use nacre_attestation::evidence::{p256_spki, qualifying_data};
use nacre_attestation::nitro::{
    binding_fields, cbor, cbor::Value, check_binding, check_document, check_pcrs,
    manifests_of_bank, nsm_command, nsm_request, nsm_response, verify_document, NitroError,
    PcrSource, AWS_NITRO_ROOT_G1, AWS_NITRO_ROOT_G1_SHA256,
};
use nacre_attestation::snp::report_data;
use nacre_attestation::verify::{Expectation, JoinKind, SignedManifest};
use nacre_eventlog::HashAlg;
use nacre_measure::manifest::Manifest;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use std::collections::BTreeMap;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/nitro/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn expected_json() -> serde_json::Value {
    serde_json::from_slice(&fixture("nitrotpm-vaportpm.expected.json")).unwrap()
}

/// 2026-02-03 10:12:02 UTC: the NitroTPM document's timestamp (1770113522437 ms).
const NITROTPM_TIME: u64 = 1_770_113_522;
/// 2023-09-18 15:03:30 UTC: the enclave document's timestamp.
const ENCLAVE_TIME: u64 = 1_695_049_410;

fn aws() -> Vec<&'static [u8]> {
    vec![AWS_NITRO_ROOT_G1]
}

#[test]
fn pinned_root_is_the_published_one() {
    let d = ring::digest::digest(&ring::digest::SHA256, AWS_NITRO_ROOT_G1);
    assert_eq!(hex::encode(d), AWS_NITRO_ROOT_G1_SHA256);
    // AWS's user guide gives the fingerprint as 64:1A:03:21:…:79:BB:5B.
    assert!(AWS_NITRO_ROOT_G1_SHA256.starts_with("641a0321a3e244ef"));
}

// ---------------------------------------------------------------------------------------------
// Real documents
// ---------------------------------------------------------------------------------------------

#[test]
fn real_nitrotpm_document_verifies_at_its_time() {
    let doc = verify_document(&fixture("nitrotpm-vaportpm.cose"), &aws(), NITROTPM_TIME).unwrap();
    assert_eq!(doc.source, PcrSource::NitroTpm);
    assert_eq!(doc.digest, HashAlg::Sha384);
    assert_eq!(doc.timestamp_ms / 1000, NITROTPM_TIME);
    assert!(doc.module_id.starts_with("i-01cfb383223e42522-tpm"));
    assert_eq!(doc.cabundle[0], AWS_NITRO_ROOT_G1);
    // The fields vaportpm recorded beside the document.
    let want = expected_json();
    assert_eq!(
        hex::encode(doc.nonce.as_ref().unwrap()),
        want["nonce"].as_str().unwrap()
    );
    let pcrs = want["pcrs_sha384"].as_object().unwrap();
    assert_eq!(doc.pcrs.len(), pcrs.len());
    for (i, v) in pcrs {
        let i: u32 = i.parse().unwrap();
        assert_eq!(hex::encode(&doc.pcrs[&i]), v.as_str().unwrap(), "PCR {i}");
    }
    let ak = &want["ak_ecc_p256"];
    let point = format!(
        "04{}{}",
        ak["x"].as_str().unwrap(),
        ak["y"].as_str().unwrap()
    );
    assert_eq!(hex::encode(doc.public_key.as_ref().unwrap()), point);
    assert_eq!(doc.user_data, None);
}

#[test]
fn real_enclave_document_verifies_and_is_no_tpm_binding() {
    let doc = verify_document(&fixture("enclave-evervault.cose"), &aws(), ENCLAVE_TIME).unwrap();
    assert_eq!(doc.source, PcrSource::Enclave);
    assert!(doc.module_id.contains("-enc"));
    assert_eq!(doc.nonce.as_ref().map(Vec::len), Some(256));
    let e = check_binding(&doc, &expect(b"n", b"tls", JoinKind::Rejoin), b"ak").unwrap_err();
    assert!(
        matches!(&e, NitroError::Binding(r) if r.contains("Nitro Enclaves document")),
        "{e}"
    );
}

#[test]
fn real_documents_are_refused_once_their_chain_expired() {
    // Today (the leaf lives three hours); and before the leaf existed.
    for (f, t) in [
        ("nitrotpm-vaportpm.cose", NITROTPM_TIME + 4 * 3600),
        ("nitrotpm-vaportpm.cose", NITROTPM_TIME - 3 * 3600),
        ("enclave-evervault.cose", 1_796_000_000),
    ] {
        let e = verify_document(&fixture(f), &aws(), t).unwrap_err();
        assert!(
            matches!(&e, NitroError::Chain(r) if r.contains("not at")),
            "{f} at {t}: {e}"
        );
    }
}

#[test]
fn real_document_with_a_tampered_signature_is_refused() {
    let mut b = fixture("nitrotpm-vaportpm.cose");
    let n = b.len();
    b[n - 1] ^= 1;
    let e = verify_document(&b, &aws(), NITROTPM_TIME).unwrap_err();
    assert!(matches!(e, NitroError::Signature(_)), "{e}");
}

#[test]
fn real_document_with_a_changed_pcr_is_refused() {
    let orig = fixture("nitrotpm-vaportpm.cose");
    let doc = verify_document(&orig, &aws(), NITROTPM_TIME).unwrap();
    // Flip one byte of PCR 4's value inside the signed payload.
    let pcr4 = &doc.pcrs[&4];
    let at = orig
        .windows(pcr4.len())
        .position(|w| w == pcr4.as_slice())
        .unwrap();
    let mut b = orig.clone();
    b[at + 10] ^= 0x80;
    let e = verify_document(&b, &aws(), NITROTPM_TIME).unwrap_err();
    assert!(matches!(e, NitroError::Signature(_)), "{e}");
}

#[test]
fn real_document_under_another_root_is_refused() {
    let chain = TestChain::new();
    let e = verify_document(
        &fixture("nitrotpm-vaportpm.cose"),
        &[chain.root_der.as_slice()],
        NITROTPM_TIME,
    )
    .unwrap_err();
    assert!(
        matches!(&e, NitroError::Chain(r) if r.contains("is not a configured root")),
        "{e}"
    );
    let e = verify_document(&fixture("nitrotpm-vaportpm.cose"), &[], NITROTPM_TIME).unwrap_err();
    assert!(matches!(e, NitroError::Chain(_)), "{e}");
}

#[test]
fn truncated_or_extended_documents_are_refused() {
    for f in ["nitrotpm-vaportpm.cose", "enclave-evervault.cose"] {
        let b = fixture(f);
        for n in 0..b.len() {
            let e = verify_document(&b[..n], &aws(), NITROTPM_TIME).unwrap_err();
            assert!(matches!(e, NitroError::Cbor(_)), "{f}[..{n}]: {e}");
        }
        let mut longer = b.clone();
        longer.push(0);
        let e = verify_document(&longer, &aws(), NITROTPM_TIME).unwrap_err();
        assert!(
            matches!(&e, NitroError::Cbor(r) if r.contains("trailing")),
            "{e}"
        );
    }
}

/// A golden sha384 manifest of variant aws-sev-snp holding these PCR values.
fn sha384_manifest(
    version: &str,
    pcrs: &BTreeMap<u32, String>,
    not_after: Option<&str>,
) -> Manifest {
    let measurements: serde_json::Map<String, serde_json::Value> = pcrs
        .iter()
        .map(|(i, v)| (i.to_string(), serde_json::json!({ "expected": v })))
        .collect();
    let mut m = serde_json::json!({
        "schema": "nacre.golden-measurements.v1",
        "image": {"ref": "nacre", "version": version, "variant": "aws-sev-snp", "uki_sha256": "00".repeat(32)},
        "alg": "sha384",
        "stub": "systemd-stub-257",
        "secure_boot": true,
        "phase": "sysinit",
        "measurements": measurements,
        "events": []
    });
    if let Some(t) = not_after {
        m["not_after"] = serde_json::json!(t);
    }
    Manifest::from_json(&serde_json::to_vec(&m).unwrap()).unwrap()
}

#[test]
fn real_nitrotpm_pcrs_meet_golden_sha384_values_and_differing_ones_are_refused() {
    let doc = verify_document(&fixture("nitrotpm-vaportpm.cose"), &aws(), NITROTPM_TIME).unwrap();
    let want = expected_json();
    let golden: BTreeMap<u32, String> = [4u32, 7, 9, 15]
        .iter()
        .map(|i| {
            (
                *i,
                want["pcrs_sha384"][i.to_string()]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    let ok = check_pcrs(
        &doc,
        &[sha384_manifest("1.0", &golden, None)],
        JoinKind::First,
        NITROTPM_TIME,
    )
    .unwrap();
    assert_eq!(ok.image.version, "1.0");
    assert_eq!(ok.matched, vec![4, 7, 9, 15]);
    assert_eq!(ok.pcr15, Some(vec![0; 48]));

    // PCR 4 of another boot: refused, naming the PCR and both values.
    let mut other = golden.clone();
    other.insert(4, "ab".repeat(48));
    let e = check_pcrs(
        &doc,
        &[sha384_manifest("1.0", &other, None)],
        JoinKind::First,
        NITROTPM_TIME,
    )
    .unwrap_err();
    assert!(
        matches!(&e, NitroError::Pcrs(r) if r.contains("PCR 4 is 1a1f166e") && r.contains(&"ab".repeat(48))),
        "{e}"
    );

    // Expired manifest: refused though the PCRs match.
    let e = check_pcrs(
        &doc,
        &[sha384_manifest(
            "1.0",
            &golden,
            Some("2026-01-01T00:00:00Z"),
        )],
        JoinKind::First,
        NITROTPM_TIME,
    )
    .unwrap_err();
    assert!(
        matches!(&e, NitroError::Pcrs(r) if r.contains("valid until 2026-01-01")),
        "{e}"
    );

    // sha256 manifests only: refused, saying which bank is needed.
    let mut m256 = sha384_manifest("1.0", &golden, None);
    m256.alg = HashAlg::Sha256;
    let e = check_pcrs(&doc, &[m256], JoinKind::First, NITROTPM_TIME).unwrap_err();
    assert!(
        matches!(&e, NitroError::Manifest(r) if r.contains("--bank sha384")),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Test-made chain and documents (nacre's binding)
// ---------------------------------------------------------------------------------------------

/// A P-384 root → intermediate → signing certificate made here (not AWS's).
struct TestChain {
    root_der: Vec<u8>,
    inter_der: Vec<u8>,
    leaf_der: Vec<u8>,
    leaf_key: EcdsaKeyPair,
}

/// 2026-06-01 00:00:00 UTC, inside the test-made chain's validity.
const TEST_TIME: u64 = 1_780_272_000;

impl TestChain {
    fn new() -> Self {
        Self::with(|_| {})
    }

    /// `tweak` may change the signing certificate's parameters.
    fn with(tweak: impl FnOnce(&mut rcgen::CertificateParams)) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
            PKCS_ECDSA_P384_SHA384,
        };
        let params = |cn: &str, ca: bool| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.not_before = rcgen::date_time_ymd(2026, 1, 1);
            p.not_after = rcgen::date_time_ymd(2027, 1, 1);
            if ca {
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            } else {
                p.is_ca = IsCa::ExplicitNoCa;
                p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            }
            p
        };
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let root_params = params("test-made nitro root", true);
        let root = root_params.self_signed(&root_key).unwrap();
        let inter_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let inter_params = params("test-made nitro intermediate", true);
        let inter = inter_params
            .signed_by(&inter_key, &Issuer::from_params(&root_params, &root_key))
            .unwrap();
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let mut leaf_params = params("i-0123456789abcdef0-tpm0000000000000000", false);
        tweak(&mut leaf_params);
        let leaf = leaf_params
            .signed_by(&leaf_key, &Issuer::from_params(&inter_params, &inter_key))
            .unwrap();
        let ring_key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P384_SHA384_FIXED_SIGNING,
            &leaf_key.serialize_der(),
            &SystemRandom::new(),
        )
        .unwrap();
        TestChain {
            root_der: root.der().to_vec(),
            inter_der: inter.der().to_vec(),
            leaf_der: leaf.der().to_vec(),
            leaf_key: ring_key,
        }
    }

    fn roots(&self) -> Vec<&[u8]> {
        vec![self.root_der.as_slice()]
    }

    /// A payload map as the Nitro hypervisor makes it, with these PCRs and fields.
    fn payload(&self, pcrs: &BTreeMap<u32, Vec<u8>>, fields: &Fields) -> Vec<(Value, Value)> {
        let t = |s: &str| Value::Text(s.into());
        let opt = |v: &Option<Vec<u8>>| v.clone().map_or(Value::Null, Value::Bytes);
        vec![
            (t("module_id"), t("i-0123456789abcdef0-tpm0000000000000000")),
            (t("digest"), t("SHA384")),
            (t("timestamp"), Value::Uint(TEST_TIME * 1000)),
            (
                t(fields.pcr_key),
                Value::Map(
                    pcrs.iter()
                        .map(|(i, v)| (Value::Uint(u64::from(*i)), Value::Bytes(v.clone())))
                        .collect(),
                ),
            ),
            (t("certificate"), Value::Bytes(self.leaf_der.clone())),
            (
                t("cabundle"),
                Value::Array(vec![
                    Value::Bytes(self.root_der.clone()),
                    Value::Bytes(self.inter_der.clone()),
                ]),
            ),
            (t("public_key"), opt(&fields.public_key)),
            (t("user_data"), opt(&fields.user_data)),
            (t("nonce"), opt(&fields.nonce)),
        ]
    }

    /// COSE_Sign1 over `payload` with `protected` headers, signed by the leaf.
    fn sign(&self, protected: &Value, payload: Vec<(Value, Value)>) -> Vec<u8> {
        let protected = cbor::to_vec(protected);
        let payload = cbor::to_vec(&Value::Map(payload));
        let tbs = cbor::to_vec(&Value::Array(vec![
            Value::Text("Signature1".into()),
            Value::Bytes(protected.clone()),
            Value::Bytes(vec![]),
            Value::Bytes(payload.clone()),
        ]));
        let sig = self.leaf_key.sign(&SystemRandom::new(), &tbs).unwrap();
        cbor::to_vec(&Value::Array(vec![
            Value::Bytes(protected),
            Value::Map(vec![]),
            Value::Bytes(payload),
            Value::Bytes(sig.as_ref().to_vec()),
        ]))
    }

    fn document(&self, pcrs: &BTreeMap<u32, Vec<u8>>, fields: &Fields) -> Vec<u8> {
        self.sign(&es384(), self.payload(pcrs, fields))
    }
}

fn es384() -> Value {
    Value::Map(vec![(Value::Uint(1), Value::Nint(34))])
}

struct Fields {
    pcr_key: &'static str,
    public_key: Option<Vec<u8>>,
    user_data: Option<Vec<u8>>,
    nonce: Option<Vec<u8>>,
}

const NONCE: &[u8] = b"a fresh verifier nonce, 32 bytes";
const TLS: &[u8] = b"the node's TLS SPKI";

fn ak() -> Vec<u8> {
    p256_spki(&[7; 32], &[9; 32]).unwrap()
}

/// What nacre-init asks the NitroTPM for.
fn nacre_fields() -> Fields {
    let (user_data, nonce, public_key) = binding_fields(NONCE, &ak(), TLS);
    Fields {
        pcr_key: "nitrotpm_pcrs",
        public_key: Some(public_key),
        user_data: Some(user_data),
        nonce: Some(nonce),
    }
}

fn expect<'a>(nonce: &'a [u8], tls: &'a [u8], join: JoinKind) -> Expectation<'a> {
    Expectation {
        nonce,
        tls_public_key: tls,
        join,
    }
}

/// 24 sha384 PCRs as a NitroTPM has them: 0..16 and 23 from a boot, 17..22 all ones.
fn boot_pcrs() -> BTreeMap<u32, Vec<u8>> {
    (0u32..24)
        .map(|i| {
            let v = match i {
                17..=22 => vec![0xff; 48],
                15 | 11..=14 | 16 | 23 => vec![0; 48],
                _ => ring::digest::digest(&ring::digest::SHA384, &[i as u8])
                    .as_ref()
                    .to_vec(),
            };
            (i, v)
        })
        .collect()
}

fn golden_of(pcrs: &BTreeMap<u32, Vec<u8>>, which: &[u32]) -> BTreeMap<u32, String> {
    which.iter().map(|i| (*i, hex::encode(&pcrs[i]))).collect()
}

#[test]
fn binding_fields_are_the_quote_and_report_bindings() {
    let (user_data, nonce, public_key) = binding_fields(NONCE, &ak(), TLS);
    assert_eq!(nonce, qualifying_data(NONCE, TLS).to_vec());
    assert_eq!(user_data, report_data(NONCE, &ak(), TLS).to_vec());
    assert_eq!(public_key, ak());
}

#[test]
fn test_made_nitrotpm_document_for_nacre_is_accepted_end_to_end() {
    let chain = TestChain::new();
    let pcrs = boot_pcrs();
    let doc = chain.document(&pcrs, &nacre_fields());
    let manifests = [sha384_manifest(
        "2.0",
        &golden_of(&pcrs, &[4, 7, 9, 11, 12]),
        None,
    )];
    let ok = check_document(
        &doc,
        &chain.roots(),
        TEST_TIME,
        &expect(NONCE, TLS, JoinKind::First),
        &ak(),
        &manifests,
    )
    .unwrap();
    assert_eq!(ok.document.source, PcrSource::NitroTpm);
    assert_eq!(ok.pcrs.image.version, "2.0");
    assert_eq!(ok.pcrs.matched, vec![4, 7, 9, 11, 12]);
    // The real AWS root does not admit it.
    let e = check_document(
        &doc,
        &aws(),
        TEST_TIME,
        &expect(NONCE, TLS, JoinKind::First),
        &ak(),
        &manifests,
    )
    .unwrap_err();
    assert!(matches!(e, NitroError::Chain(_)), "{e}");
}

#[test]
fn test_made_document_for_another_nonce_channel_or_ak_is_refused() {
    let chain = TestChain::new();
    let pcrs = boot_pcrs();
    let manifests = [sha384_manifest("2.0", &golden_of(&pcrs, &[4]), None)];
    let doc = chain.document(&pcrs, &nacre_fields());
    let run = |doc: &[u8], nonce: &[u8], tls: &[u8], ak: &[u8]| {
        check_document(
            doc,
            &chain.roots(),
            TEST_TIME,
            &expect(nonce, tls, JoinKind::Rejoin),
            ak,
            &manifests,
        )
    };
    assert!(run(&doc, NONCE, TLS, &ak()).is_ok());

    let e = run(&doc, b"another verifier nonce, 32 bytes", TLS, &ak()).unwrap_err();
    assert!(
        matches!(&e, NitroError::Binding(r) if r.starts_with("nonce ")),
        "{e}"
    );
    let e = run(&doc, NONCE, b"another channel", &ak()).unwrap_err();
    assert!(
        matches!(&e, NitroError::Binding(r) if r.starts_with("nonce ")),
        "{e}"
    );
    let other_ak = p256_spki(&[1; 32], &[2; 32]).unwrap();
    let e = run(&doc, NONCE, TLS, &other_ak).unwrap_err();
    assert!(
        matches!(&e, NitroError::Binding(r) if r.contains("another AK")),
        "{e}"
    );

    // No nonce at all, or no user_data, or no public key: refused.
    let mut f = nacre_fields();
    f.nonce = None;
    let e = run(&chain.document(&pcrs, &f), NONCE, TLS, &ak()).unwrap_err();
    assert!(
        matches!(&e, NitroError::Binding(r) if r.contains("no nonce")),
        "{e}"
    );
    let mut f = nacre_fields();
    f.user_data = None;
    let e = run(&chain.document(&pcrs, &f), NONCE, TLS, &ak()).unwrap_err();
    assert!(
        matches!(&e, NitroError::Binding(r) if r.contains("no user_data")),
        "{e}"
    );
    let mut f = nacre_fields();
    f.public_key = Some(other_ak.clone());
    let e = run(&chain.document(&pcrs, &f), NONCE, TLS, &ak()).unwrap_err();
    assert!(
        matches!(&e, NitroError::Binding(r) if r.contains("public_key")),
        "{e}"
    );

    // An enclave document with the right fields is still no TPM binding.
    let mut f = nacre_fields();
    f.pcr_key = "pcrs";
    let e = run(&chain.document(&pcrs, &f), NONCE, TLS, &ak()).unwrap_err();
    assert!(
        matches!(&e, NitroError::Binding(r) if r.contains("Enclaves")),
        "{e}"
    );
}

#[test]
fn test_made_document_whose_pcrs_differ_from_golden_is_refused() {
    let chain = TestChain::new();
    let pcrs = boot_pcrs();
    let golden = golden_of(&pcrs, &[4, 9, 11]);
    let manifests = [sha384_manifest("2.0", &golden, None)];
    let mut booted = pcrs.clone();
    booted.insert(9, vec![0x42; 48]);
    let doc = chain.document(&booted, &nacre_fields());
    let e = check_document(
        &doc,
        &chain.roots(),
        TEST_TIME,
        &expect(NONCE, TLS, JoinKind::Rejoin),
        &ak(),
        &manifests,
    )
    .unwrap_err();
    assert!(
        matches!(&e, NitroError::Pcrs(r) if r.contains(&format!("PCR 9 is {}", "42".repeat(48)))),
        "{e}"
    );

    // A node already in a cluster (PCR 15 set) is refused for a first join, accepted for
    // either kind with PCR 15 returned to the caller.
    let mut joined = pcrs.clone();
    joined.insert(15, vec![0x15; 48]);
    let doc = chain.document(&joined, &nacre_fields());
    let e = check_document(
        &doc,
        &chain.roots(),
        TEST_TIME,
        &expect(NONCE, TLS, JoinKind::First),
        &ak(),
        &manifests,
    )
    .unwrap_err();
    assert!(
        matches!(&e, NitroError::Pcrs(r) if r.contains("PCR 15")),
        "{e}"
    );
    let ok = check_document(
        &doc,
        &chain.roots(),
        TEST_TIME,
        &expect(NONCE, TLS, JoinKind::Either),
        &ak(),
        &manifests,
    )
    .unwrap();
    assert_eq!(ok.pcrs.pcr15, Some(vec![0x15; 48]));
}

#[test]
fn strict_envelope_and_payload() {
    let chain = TestChain::new();
    let pcrs = boot_pcrs();
    let ok_payload = || chain.payload(&pcrs, &nacre_fields());
    let verify = |b: &[u8]| verify_document(b, &chain.roots(), TEST_TIME);
    assert!(verify(&chain.sign(&es384(), ok_payload())).is_ok());

    // An unknown field.
    let mut p = ok_payload();
    p.push((Value::Text("instance_role".into()), Value::Bytes(vec![1])));
    let e = verify(&chain.sign(&es384(), p)).unwrap_err();
    assert!(
        matches!(&e, NitroError::Document(r) if r.contains("unknown field \"instance_role\"")),
        "{e}"
    );

    // A duplicated field.
    let mut p = ok_payload();
    p.push((Value::Text("nonce".into()), Value::Null));
    let e = verify(&chain.sign(&es384(), p)).unwrap_err();
    assert!(
        matches!(&e, NitroError::Document(r) if r.contains("twice")),
        "{e}"
    );

    // Another digest.
    let mut p = ok_payload();
    p[1].1 = Value::Text("SHA256".into());
    let e = verify(&chain.sign(&es384(), p)).unwrap_err();
    assert!(
        matches!(&e, NitroError::Document(r) if r.contains("not \"SHA384\"")),
        "{e}"
    );

    // A PCR of sha256 length.
    let mut short = pcrs.clone();
    short.insert(4, vec![0; 32]);
    let e = verify(&chain.sign(&es384(), chain.payload(&short, &nacre_fields()))).unwrap_err();
    assert!(
        matches!(&e, NitroError::Document(r) if r.contains("PCR 4 is 32 bytes")),
        "{e}"
    );

    // Missing certificate.
    let p: Vec<_> = ok_payload()
        .into_iter()
        .filter(|(k, _)| *k != Value::Text("certificate".into()))
        .collect();
    let e = verify(&chain.sign(&es384(), p)).unwrap_err();
    assert!(
        matches!(&e, NitroError::Document(r) if r.contains("\"certificate\" is missing")),
        "{e}"
    );

    // A nonce over 1024 bytes.
    let mut f = nacre_fields();
    f.nonce = Some(vec![0; 1025]);
    let e = verify(&chain.document(&pcrs, &f)).unwrap_err();
    assert!(
        matches!(&e, NitroError::Document(r) if r.contains("more than 1024")),
        "{e}"
    );

    // ES256 instead of ES384, and a critical header.
    let es256 = Value::Map(vec![(Value::Uint(1), Value::Nint(6))]);
    let e = verify(&chain.sign(&es256, ok_payload())).unwrap_err();
    assert!(
        matches!(&e, NitroError::Cose(r) if r.contains("not ES384")),
        "{e}"
    );
    let crit = Value::Map(vec![
        (Value::Uint(1), Value::Nint(34)),
        (Value::Uint(2), Value::Array(vec![Value::Uint(99)])),
    ]);
    let e = verify(&chain.sign(&crit, ok_payload())).unwrap_err();
    assert!(
        matches!(&e, NitroError::Cose(r) if r.contains("label Uint(2)")),
        "{e}"
    );

    // The signing certificate as a CA, and one expired at the verification time.
    let ca_leaf = TestChain::with(|p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    });
    let e = verify_document(
        &ca_leaf.document(&pcrs, &nacre_fields()),
        &ca_leaf.roots(),
        TEST_TIME,
    )
    .unwrap_err();
    assert!(
        matches!(&e, NitroError::Chain(r) if r.contains("is a CA certificate")),
        "{e}"
    );
    let old_leaf = TestChain::with(|p| p.not_after = rcgen::date_time_ymd(2026, 3, 1));
    let e = verify_document(
        &old_leaf.document(&pcrs, &nacre_fields()),
        &old_leaf.roots(),
        TEST_TIME,
    )
    .unwrap_err();
    assert!(
        matches!(&e, NitroError::Chain(r) if r.contains("the signing certificate is valid from")),
        "{e}"
    );

    // A signature by another key of the right shape.
    let other = TestChain::new();
    let mut forged = other.sign(&es384(), ok_payload());
    let e = verify(&forged).unwrap_err();
    assert!(matches!(e, NitroError::Signature(_)), "{e}");
    // And not a COSE_Sign1 at all.
    forged = cbor::to_vec(&Value::Array(vec![Value::Null; 3]));
    let e = verify(&forged).unwrap_err();
    assert!(
        matches!(&e, NitroError::Cose(r) if r.contains("3 items")),
        "{e}"
    );
}

#[test]
fn manifests_of_bank_checks_signatures() {
    let (signer, _) = nacre_measure::sign::PemSigner::generate().unwrap();
    let key = nacre_measure::sign::PublicKey::from_spki(
        &nacre_measure::sign::BlobSigner::public_key_spki(&signer),
    )
    .unwrap();
    let pcrs = boot_pcrs();
    let m = sha384_manifest("2.0", &golden_of(&pcrs, &[4]), None);
    let json = serde_json::to_vec(&m).unwrap();
    let sig = nacre_measure::sign::sign_blob(&signer, &json).unwrap();
    let signed = SignedManifest {
        json: json.clone(),
        signature_b64: sig.into_bytes(),
    };
    let got = manifests_of_bank(std::slice::from_ref(&signed), &key, HashAlg::Sha384).unwrap();
    assert_eq!(got, vec![m]);
    assert!(
        manifests_of_bank(std::slice::from_ref(&signed), &key, HashAlg::Sha256)
            .unwrap()
            .is_empty()
    );
    let mut bad = signed.clone();
    bad.json.push(b' ');
    let e = manifests_of_bank(&[bad], &key, HashAlg::Sha384).unwrap_err();
    assert!(matches!(e, NitroError::Manifest(_)), "{e}");
}

// ---------------------------------------------------------------------------------------------
// The NSM request through the NitroTPM (encoding only: no NitroTPM here)
// ---------------------------------------------------------------------------------------------

#[test]
fn nsm_request_is_the_externally_tagged_attestation_request() {
    let r = nsm_request(Some(b"u"), None, Some(b"k"));
    // {"Attestation": {"user_data": h'75', "nonce": null, "public_key": h'6b'}}
    let mut want = vec![0xa1, 0x6b];
    want.extend_from_slice(b"Attestation");
    want.extend_from_slice(&[0xa3, 0x69]);
    want.extend_from_slice(b"user_data");
    want.extend_from_slice(&[0x41, b'u', 0x65]);
    want.extend_from_slice(b"nonce");
    want.extend_from_slice(&[0xf6, 0x6a]);
    want.extend_from_slice(b"public_key");
    want.extend_from_slice(&[0x41, b'k']);
    assert_eq!(r, want);
}

#[test]
fn nsm_response_yields_the_document_or_the_error() {
    let doc = fixture("nitrotpm-vaportpm.cose");
    let mut buf = cbor::to_vec(&Value::Map(vec![(
        Value::Text("Attestation".into()),
        Value::Map(vec![(
            Value::Text("document".into()),
            Value::Bytes(doc.clone()),
        )]),
    )]));
    buf.resize(8192, 0xff); // the rest of the NV buffer
    assert_eq!(nsm_response(&buf).unwrap(), doc);
    let err = cbor::to_vec(&Value::Map(vec![(
        Value::Text("Error".into()),
        Value::Text("InvalidArgument".into()),
    )]));
    let e = nsm_response(&err).unwrap_err();
    assert!(
        matches!(&e, NitroError::Device(r) if r.contains("InvalidArgument")),
        "{e}"
    );
}

#[test]
fn nsm_command_is_a_sessions_command_with_one_password_session() {
    let c = nsm_command(0x0180_4E53);
    assert_eq!(&c[0..2], &[0x80, 0x02]);
    assert_eq!(
        u32::from_be_bytes(c[2..6].try_into().unwrap()) as usize,
        c.len()
    );
    assert_eq!(&c[6..10], &0x2000_0001u32.to_be_bytes());
    assert_eq!(&c[10..14], &0x0180_4E53u32.to_be_bytes());
    assert_eq!(&c[14..18], &0x0180_4E53u32.to_be_bytes());
    assert_eq!(&c[18..22], &9u32.to_be_bytes());
    assert_eq!(&c[22..26], &0x4000_0009u32.to_be_bytes());
}

#[test]
fn cbor_decoder_limits() {
    // Deep nesting, huge claimed lengths, indefinite strings, floats, stray breaks.
    let deep = [vec![0x81u8; 40], vec![0x00]].concat();
    assert!(cbor::decode(&deep).unwrap_err().contains("nesting"));
    assert!(
        cbor::decode(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
            .unwrap_err()
            .contains("exceeds")
    );
    assert!(cbor::decode(&[0x9b, 0, 0, 0, 1, 0, 0, 0, 0])
        .unwrap_err()
        .contains("exceeds"));
    assert!(cbor::decode(&[0x5f, 0x41, 0, 0xff])
        .unwrap_err()
        .contains("indefinite"));
    assert!(cbor::decode(&[0xfb, 0, 0, 0, 0, 0, 0, 0, 0])
        .unwrap_err()
        .contains("float"));
    assert!(cbor::decode(&[0xff]).unwrap_err().contains("break"));
    assert!(cbor::decode(&[0x62, 0xff, 0xfe])
        .unwrap_err()
        .contains("UTF-8"));
    // Indefinite map and array round-trip to their definite form.
    let v = cbor::decode(&[0xbf, 0x61, b'a', 0x9f, 0x01, 0xff, 0xff]).unwrap();
    assert_eq!(
        v,
        Value::Map(vec![(
            Value::Text("a".into()),
            Value::Array(vec![Value::Uint(1)])
        )])
    );
    assert_eq!(cbor::to_vec(&v), vec![0xa1, 0x61, b'a', 0x81, 0x01]);
}

/// The largest single allocation this thread makes while watched (`largest_allocation`).
struct WatchAlloc;

thread_local! {
    static LARGEST: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|c| {
        if let Some(m) = c.get() {
            c.set(Some(m.max(size)));
        }
    });
}

unsafe impl std::alloc::GlobalAlloc for WatchAlloc {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        note(l.size());
        std::alloc::System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: std::alloc::Layout) -> *mut u8 {
        note(l.size());
        std::alloc::System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        std::alloc::System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        note(new);
        std::alloc::System.realloc(p, l, new)
    }
}

#[global_allocator]
static WATCH: WatchAlloc = WatchAlloc;

fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|c| c.set(Some(0)));
    let out = f();
    (out, LARGEST.with(|c| c.replace(None)).unwrap())
}

#[test]
fn cbor_counts_reserve_no_memory_before_their_items_decode() {
    // 1 MiB: arrays nested past MAX_DEPTH, each claiming (nearly) as many items as bytes are
    // left. Reserving the counts would take ~32 MB per level before the nesting refusal.
    let mut doc = Vec::new();
    for _ in 0..20 {
        let left = (1u32 << 20) - doc.len() as u32 - 5;
        doc.push(0x9a);
        doc.extend_from_slice(&left.to_be_bytes());
    }
    doc.resize(1 << 20, 0);
    let (r, largest) = largest_allocation(|| cbor::decode(&doc));
    assert!(r.unwrap_err().contains("nesting"));
    assert!(largest < 64 * 1024, "largest allocation {largest} bytes");
    // Maps likewise.
    doc[..5].copy_from_slice(&[0xba, 0x00, 0x0f, 0xff, 0xfb]);
    let (r, largest) = largest_allocation(|| cbor::decode(&doc));
    assert!(r.is_err());
    assert!(largest < 64 * 1024, "largest allocation {largest} bytes");
}

// ---------------------------------------------------------------------------------------------
// The aws-sev-snp path of the SEV-SNP verifier: a real AWS VLEK-signed report (helper A's
// fixture, tests/fixtures/snp) for the CVM part, the document for the TPM half.
// ---------------------------------------------------------------------------------------------

mod aws_path {
    use super::*;
    use nacre_attestation::binding::AkBinding;
    use nacre_attestation::evidence::{Evidence, Platform, Quote};
    use nacre_attestation::nitro::NitroTrust;
    use nacre_attestation::snp::{AmdRoots, Generation, Report, SnpPolicy, Tcb};
    use nacre_attestation::verify::{Check, SevSnpVerifier, Verifier};

    fn snp_fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/snp/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn signed(m: &Manifest) -> (SignedManifest, nacre_measure::sign::PublicKey) {
        let (signer, _) = nacre_measure::sign::PemSigner::generate().unwrap();
        let key = nacre_measure::sign::PublicKey::from_spki(
            &nacre_measure::sign::BlobSigner::public_key_spki(&signer),
        )
        .unwrap();
        let json = serde_json::to_vec(m).unwrap();
        let sig = nacre_measure::sign::sign_blob(&signer, &json).unwrap();
        (
            SignedManifest {
                json,
                signature_b64: sig.into_bytes(),
            },
            key,
        )
    }

    fn verifier(nitro: Option<NitroTrust>, at: u64) -> SevSnpVerifier {
        let report = Report::parse(&snp_fixture("aws-vlek-report.bin")).unwrap();
        let policy = SnpPolicy::new(
            report.vmpl,
            [(
                Generation::Milan,
                Tcb {
                    bootloader: 3,
                    snp: 8,
                    microcode: 115,
                    ..Tcb::default()
                },
            )],
        );
        // The quote's golden values: a sha256 manifest of the same release.
        let mut m = sha384_manifest("1.0", &golden_of(&boot_pcrs(), &[4]), None);
        m.alg = HashAlg::Sha256;
        for e in m.measurements.values_mut() {
            e.expected.truncate(32);
        }
        let (s, key) = signed(&m);
        let v = SevSnpVerifier::new(AmdRoots::bundled().unwrap(), policy, vec![s], key).at_time(at);
        match nitro {
            Some(n) => v.with_nitro(n),
            None => v,
        }
    }

    fn evidence(document: Vec<u8>) -> Evidence {
        Evidence {
            platform: Platform::SevSnp {
                report: snp_fixture("aws-vlek-report.bin"),
                vcek: snp_fixture("aws-vlek.der"),
            },
            quote: Quote {
                attest: vec![],
                signature: vec![],
            },
            ak_public: ak(),
            firmware_log: vec![],
            runtime_log: vec![],
            ek: None,
            binding: Some(AkBinding::NitroDocument { document }),
        }
    }

    #[test]
    fn a_document_without_nitro_trust_configured_is_refused() {
        let ev = evidence(fixture("nitrotpm-vaportpm.cose"));
        let e = verifier(None, NITROTPM_TIME)
            .verify(&ev, &expect(NONCE, TLS, JoinKind::First))
            .unwrap_err();
        assert_eq!(e.check, Check::NitroDocument, "{e}");
        assert!(e.reason.contains("no Nitro roots"), "{e}");
    }

    #[test]
    fn the_real_nitrotpm_document_is_refused_for_nacre_s_challenge() {
        // Genuine, verified at its time, but made for vaportpm's nonce, not this verifier's.
        let ev = evidence(fixture("nitrotpm-vaportpm.cose"));
        let e = verifier(Some(NitroTrust::aws(vec![])), NITROTPM_TIME)
            .verify(&ev, &expect(NONCE, TLS, JoinKind::First))
            .unwrap_err();
        assert_eq!(e.check, Check::NitroDocument, "{e}");
        assert!(e.reason.contains("binding: nonce"), "{e}");
    }

    #[test]
    fn a_test_made_document_is_refused_under_aws_root_and_checked_under_its_own() {
        let chain = TestChain::new();
        let doc = chain.document(&boot_pcrs(), &nacre_fields());
        let ev = evidence(doc);
        let e = verifier(Some(NitroTrust::aws(vec![])), TEST_TIME)
            .verify(&ev, &expect(NONCE, TLS, JoinKind::First))
            .unwrap_err();
        assert_eq!(e.check, Check::NitroDocument, "{e}");
        assert!(e.reason.contains("is not a configured root"), "{e}");
        // Under its own root the binding holds, and with no sha384 manifest it is refused
        // for want of golden values: the quote's sha256 PCRs never stand in for them.
        let trust = NitroTrust {
            roots: vec![chain.root_der.clone()],
            manifests: vec![],
        };
        let e = verifier(Some(trust), TEST_TIME)
            .verify(&ev, &expect(NONCE, TLS, JoinKind::First))
            .unwrap_err();
        assert_eq!(e.check, Check::NitroDocument, "{e}");
        assert!(e.reason.contains("no sha384 manifest"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// The NV exchange with a real TPM (swtpm): everything but the vendor command, which only a
// NitroTPM implements; a closure stands in for the Nitro hypervisor.
// ---------------------------------------------------------------------------------------------

mod support;

mod on_swtpm {
    use super::*;
    use nacre_attestation::nitro::{
        fetch_document, fetch_document_with, is_nitro_tpm, NSM_NV_INDEX,
    };
    use std::str::FromStr;
    use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle};
    use tss_esapi::interface_types::resource_handles::NvAuth;
    use tss_esapi::structures::MaxNvBuffer;
    use tss_esapi::tcti_ldr::TctiNameConf;
    use tss_esapi::Context;

    fn index(c: &mut Context) -> Option<NvIndexHandle> {
        let h = NvIndexTpmHandle::new(NSM_NV_INDEX).unwrap();
        c.execute_without_session(|c| c.tr_from_tpm_public(h.into()))
            .ok()
            .map(NvIndexHandle::from)
    }

    #[test]
    fn swtpm_is_no_nitro_tpm_and_the_nv_exchange_round_trips() {
        let tpm = support::swtpm();
        assert!(!is_nitro_tpm(&tpm.tcti).unwrap());
        let mut ctx = Context::new(TctiNameConf::from_str(&tpm.tcti).unwrap()).unwrap();
        let (u, n, k) = binding_fields(NONCE, &ak(), TLS);
        // swtpm's largest NV index (TPM_PT_NV_INDEX_MAX) is smaller than a NitroTPM's.
        let size = ctx
            .get_tpm_property(tss_esapi::constants::PropertyTag::NvIndexMax)
            .unwrap()
            .unwrap() as usize;
        let document = vec![0xd2; size - 300];
        let response = cbor::to_vec(&Value::Map(vec![(
            Value::Text("Attestation".into()),
            Value::Map(vec![(
                Value::Text("document".into()),
                Value::Bytes(document.clone()),
            )]),
        )]));
        let mut request = None;
        let got = fetch_document_with(&mut ctx, size, &u, &n, &k, &mut |c| {
            // The hypervisor's part: read the request, write the response in its place.
            let h = index(c).expect("the message buffer exists");
            let mut buf = Vec::new();
            while cbor::decode_prefix(&buf).is_err() {
                let part = c
                    .execute_with_nullauth_session(|c| {
                        c.nv_read(NvAuth::NvIndex(h), h, 256, buf.len() as u16)
                    })
                    .unwrap();
                buf.extend_from_slice(part.value());
            }
            let (req, _) = cbor::decode_prefix(&buf).unwrap();
            request = Some(req);
            for (i, part) in response.chunks(512).enumerate() {
                let data = MaxNvBuffer::try_from(part.to_vec()).unwrap();
                c.execute_with_nullauth_session(|c| {
                    c.nv_write(NvAuth::NvIndex(h), h, data, (i * 512) as u16)
                })
                .unwrap();
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(got, document);
        let field = |name: &str, v: &[u8]| (Value::Text(name.into()), Value::Bytes(v.to_vec()));
        assert_eq!(
            request.unwrap(),
            Value::Map(vec![(
                Value::Text("Attestation".into()),
                Value::Map(vec![
                    field("user_data", &u),
                    field("nonce", &n),
                    field("public_key", &k)
                ]),
            )])
        );
        assert!(index(&mut ctx).is_none(), "the message buffer is undefined");

        // The vendor command refused (as any TPM but a NitroTPM does): the error, no leftover.
        let e = fetch_document_with(&mut ctx, size, &u, &n, &k, &mut |_| {
            Err(NitroError::Device("refused".into()))
        })
        .unwrap_err();
        assert_eq!(e, NitroError::Device("refused".into()));
        assert!(index(&mut ctx).is_none());
        // A response that is no attestation response.
        let e = fetch_document_with(&mut ctx, size, &u, &n, &k, &mut |_| Ok(())).unwrap_err();
        assert!(matches!(e, NitroError::Device(_)), "{e}");
        assert!(index(&mut ctx).is_none());
        drop(ctx);

        // The whole path with a raw device that is not there.
        let e = fetch_document(
            &tpm.tcti,
            std::path::Path::new("/nonexistent/tpmrm0"),
            &u,
            &n,
            &k,
        )
        .unwrap_err();
        assert!(
            matches!(&e, NitroError::Device(r) if r.contains("/nonexistent/tpmrm0")),
            "{e}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// End to end through the SEV-SNP verifier on a swtpm node: a quote and logs (sha256 manifest),
// a SEV-SNP report re-signed by helper A's test-made VCEK (tests/fixtures/snp/test-made, NOT
// AMD's keys) binding nonce/AK/TLS key, and a test-made NitroTPM document (sha384 manifest).
// ---------------------------------------------------------------------------------------------

mod end_to_end {
    use super::*;
    use nacre_attestation::binding::AkBinding;
    use nacre_attestation::evidence::{Evidence, Platform};
    use nacre_attestation::nitro::NitroTrust;
    use nacre_attestation::snp::{Generation, Report, SnpPolicy, Tcb};
    use nacre_attestation::tpm::Attester;
    use nacre_attestation::verify::{Check, SevSnpVerifier, Verifier};
    use nacre_eventlog::{Phase, RuntimeEvent};
    use nacre_measure::sign::{sign_blob, BlobSigner, PemSigner, PublicKey};

    use support::{snp_file, test_made_roots as test_roots, test_signed_report as report_for};

    fn sign(signer: &PemSigner, m: &Manifest) -> SignedManifest {
        let json = m.to_json();
        SignedManifest {
            signature_b64: sign_blob(signer, &json).unwrap().into_bytes(),
            json,
        }
    }

    #[test]
    fn aws_node_accepted_with_its_document_and_refused_without_or_with_a_wrong_one() {
        let node = support::boot("plain", &[RuntimeEvent::Phase(Phase::EnterInitrd)]);
        let tls = b"the node's TLS SPKI (end to end)".to_vec();
        let x = expect(NONCE, &tls, JoinKind::First);
        let signer = PemSigner::generate().unwrap().0;
        let key = PublicKey::from_spki(&signer.public_key_spki()).unwrap();
        // The release: a sha256 manifest for the quote and a sha384 one for the document.
        let sha256 = support::manifest_signed_by(
            &support::replayed(&node),
            |m| {
                m.image.variant = "aws-sev-snp".into();
                m.image.version = "2.0".into();
                m.phase = Some("sysinit".into());
            },
            &signer,
        );
        let doc_pcrs = boot_pcrs();
        let sha384 = |version: &str, pcrs: &BTreeMap<u32, Vec<u8>>| {
            sign(
                &signer,
                &sha384_manifest(version, &golden_of(pcrs, &[4, 7, 9, 11]), None),
            )
        };
        let chain = TestChain::new();
        let raw = report_for([0; 64]);
        let parsed = Report::parse(&raw).unwrap();
        let mut policy = SnpPolicy::new(parsed.vmpl, [(Generation::Milan, Tcb::default())]);
        policy.measurements = vec![parsed.measurement];
        let verifier = |nitro_manifests: Vec<SignedManifest>| {
            SevSnpVerifier::new(
                test_roots(),
                policy.clone(),
                vec![sha256.clone()],
                key.clone(),
            )
            .at_time(TEST_TIME)
            .with_nitro(NitroTrust {
                roots: vec![chain.root_der.clone()],
                manifests: nitro_manifests,
            })
        };

        let mut ev: Evidence = Attester::with_tcti(&node.tpm.tcti)
            .evidence(
                NONCE,
                &tls,
                &[0, 4, 7, 9, 11, 15],
                node.firmware_log.clone(),
                node.runtime_log.clone(),
            )
            .unwrap();
        ev.platform = Platform::SevSnp {
            report: report_for(report_data(NONCE, &ev.ak_public, &tls)),
            vcek: snp_file("test-made/test-made-vcek.der"),
        };
        let (u, n, k) = binding_fields(NONCE, &ev.ak_public, &tls);
        let fields = |pcr_key| Fields {
            pcr_key,
            public_key: Some(k.clone()),
            user_data: Some(u.clone()),
            nonce: Some(n.clone()),
        };
        let with_doc = |pcrs: &BTreeMap<u32, Vec<u8>>| {
            let mut e = ev.clone();
            e.binding = Some(AkBinding::NitroDocument {
                document: chain.document(pcrs, &fields("nitrotpm_pcrs")),
            });
            e
        };

        // Accepted: report, document (binding, sha384 PCRs), quote and logs of one release.
        let ok = verifier(vec![sha384("2.0", &doc_pcrs)])
            .verify(&with_doc(&doc_pcrs), &x)
            .unwrap();
        assert_eq!(ok.image.variant, "aws-sev-snp");
        assert_eq!(ok.image.version, "2.0");

        // The same evidence with nothing but the report binding the AK: refused.
        let r = verifier(vec![sha384("2.0", &doc_pcrs)])
            .verify(&ev, &x)
            .unwrap_err();
        assert_eq!(r.check, Check::AkTrust, "{r}");
        assert!(r.reason.contains("aws-sev-snp"), "{r}");

        // A document whose PCRs are not the golden sha384 values: refused, though the quote's
        // sha256 PCRs (signed by the guest's own AK) match their manifest.
        let mut other = doc_pcrs.clone();
        other.insert(4, vec![0x44; 48]);
        let r = verifier(vec![sha384("2.0", &doc_pcrs)])
            .verify(&with_doc(&other), &x)
            .unwrap_err();
        assert_eq!(r.check, Check::NitroDocument, "{r}");
        assert!(r.reason.contains("PCR 4 is 4444"), "{r}");

        // The document's PCRs are those of another release: refused (one release for both).
        let r = verifier(vec![sha384("2.1", &doc_pcrs)])
            .verify(&with_doc(&doc_pcrs), &x)
            .unwrap_err();
        assert_eq!(r.check, Check::NitroDocument, "{r}");
        assert!(r.reason.contains("one release"), "{r}");

        // A document whose PCR 15 no runtime record explains (a node claiming membership
        // with a log that is not its own): refused where PCR 15 is left to the caller.
        let mut joined = doc_pcrs.clone();
        joined.insert(15, vec![0x15; 48]);
        let r = verifier(vec![sha384("2.0", &doc_pcrs)])
            .verify(&with_doc(&joined), &expect(NONCE, &tls, JoinKind::Either))
            .unwrap_err();
        assert_eq!(r.check, Check::NitroDocument, "{r}");
        assert!(r.reason.contains("PCR 15 records replay"), "{r}");

        // A document made for another channel: refused.
        let mut e = ev.clone();
        let (u2, n2, k2) = binding_fields(NONCE, &ev.ak_public, b"another TLS key");
        e.binding = Some(AkBinding::NitroDocument {
            document: chain.document(
                &doc_pcrs,
                &Fields {
                    pcr_key: "nitrotpm_pcrs",
                    public_key: Some(k2),
                    user_data: Some(u2),
                    nonce: Some(n2),
                },
            ),
        });
        let r = verifier(vec![sha384("2.0", &doc_pcrs)])
            .verify(&e, &x)
            .unwrap_err();
        assert_eq!(r.check, Check::NitroDocument, "{r}");
        assert!(r.reason.contains("binding: nonce"), "{r}");
    }
}

#[test]
fn runtime_pcr15_records_must_replay_to_the_document_s_pcr15() {
    use nacre_attestation::nitro::check_runtime_pcr15;
    use nacre_eventlog::{Phase, RuntimeEvent};
    let chain = TestChain::new();
    let events = [
        RuntimeEvent::Phase(Phase::EnterInitrd),
        RuntimeEvent::ClusterConfig([3; 32]),
        RuntimeEvent::ClusterId([7; 32]),
    ];
    // As nacre-init logs them on a TPM with a sha256 bank only: sha384 comes from the content.
    let log: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, e)| e.to_cel(i as u64, &[HashAlg::Sha256]).unwrap())
        .collect();
    // PCR 15 by hand: SHA-384 extends of the two cluster records' SHA-384 digests.
    let mut want = vec![0u8; 48];
    for e in &events[1..] {
        let d = e.digest(HashAlg::Sha384).unwrap();
        want = ring::digest::digest(&ring::digest::SHA384, &[want, d].concat())
            .as_ref()
            .to_vec();
    }
    let mut pcrs = boot_pcrs();
    pcrs.insert(15, want.clone());
    let doc = verify_document(
        &chain.document(&pcrs, &nacre_fields()),
        &chain.roots(),
        TEST_TIME,
    )
    .unwrap();
    check_runtime_pcr15(&doc, &log).unwrap();
    // Without the cluster id record, or with another cluster's: refused.
    let e = check_runtime_pcr15(&doc, &log[..2]).unwrap_err();
    assert!(
        matches!(&e, NitroError::Pcrs(r) if r.contains("replay")),
        "{e}"
    );
    let other: Vec<_> = [
        RuntimeEvent::ClusterConfig([3; 32]),
        RuntimeEvent::ClusterId([8; 32]),
    ]
    .iter()
    .enumerate()
    .map(|(i, e)| e.to_cel(i as u64, &[HashAlg::Sha256]).unwrap())
    .collect();
    assert!(check_runtime_pcr15(&doc, &other).is_err());
    // A record whose digest does not match its content: refused as such.
    let mut forged = log.clone();
    forged[2].digests[0].digest[0] ^= 1;
    let e = check_runtime_pcr15(&doc, &forged).unwrap_err();
    assert!(
        matches!(&e, NitroError::Pcrs(r) if r.contains("runtime record 2")),
        "{e}"
    );
}

/// The cost of verifying a real document (COSE, CBOR, 5 certificates, ES384), printed
/// (`--nocapture`); a debug build's figure unless run with `--release`.
#[test]
fn verification_cost() {
    let b = fixture("nitrotpm-vaportpm.cose");
    let n = 20;
    let t = std::time::Instant::now();
    for _ in 0..n {
        verify_document(&b, &aws(), NITROTPM_TIME).unwrap();
    }
    let per = t.elapsed() / n;
    eprintln!(
        "verify_document (real NitroTPM document, {} bytes): {per:?} per document",
        b.len()
    );
    assert!(per < std::time::Duration::from_secs(2));
}
