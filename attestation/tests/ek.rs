//! AK trust through the EK certificate by credential activation, against real swtpms
//! manufactured with swtpm's local CA (an EK certificate in NV; the TCG default ECC P-384 EK:
//! restricted, decrypt-only). The verifier's TPM2_MakeCredential (software) must be what the
//! TPM's TPM2_ActivateCredential accepts; everything else must fail in the TPM or the verifier.

mod support;

use nacre_attestation::credential::{make_credential, settle, CredentialChallenge, Settled};
use nacre_attestation::ek::EkCertified;
use nacre_attestation::evidence::{p256_spki, EkBinding, Evidence};
use nacre_attestation::tpm::Attester;
use nacre_attestation::verify::{
    AkTrust, Check, Expectation, JoinKind, QemuVtpmVerifier, Verifier,
};
use nacre_eventlog::{Phase, RuntimeEvent};
use support::*;

const BOOT: [RuntimeEvent; 1] = [RuntimeEvent::Phase(Phase::EnterInitrd)];
const NONCE: [u8; 32] = [3; 32];
const TLS: &[u8] = b"tls key";

fn expect() -> Expectation<'static> {
    Expectation {
        nonce: &NONCE,
        tls_public_key: TLS,
        join: JoinKind::First,
    }
}

fn evidence(n: &Node) -> Evidence {
    Attester::with_tcti(&n.tpm.tcti)
        .evidence(
            &NONCE,
            TLS,
            &QUOTED,
            n.firmware_log.clone(),
            n.runtime_log.clone(),
        )
        .unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn activation_proves_the_ak_end_to_end_and_nothing_else_does() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let a = boot_on(swtpm_with_ek(&ca, false), "plain", &BOOT);
    let (m, key) = manifest(&replayed(&a), |_| {});
    let trust = EkCertified::from_pem(&ek_ca_bundle(&ca)).unwrap();
    let v = QemuVtpmVerifier::new(m, key, Box::new(trust.clone()));
    let e = evidence(&a);
    let b = e.ek.clone().expect("the TPM has an EK certificate");
    assert!(
        b.certify_attest.is_empty(),
        "nodes no longer send a certify"
    );
    // Through the wire format.
    let e = Evidence::from_json(&e.to_json()).unwrap();

    // The verifier accepts pending activation; the AK trust alone accepts nothing.
    assert!(trust
        .check(&e.ak_public, &e)
        .unwrap_err()
        .contains("credential activation"));
    let accepted = v.verify(&e, &expect()).unwrap();
    assert!(accepted.ek_activation.is_some());
    let Settled::Pending(pending) = settle(accepted) else {
        panic!("an EK-certified AK must be pending")
    };
    // Evidence → verifier → challenge → activation in the TPM → accepted.
    let t = std::time::Instant::now();
    let credential = Attester::with_tcti(&a.tpm.tcti)
        .activate_credential(pending.challenge())
        .unwrap();
    eprintln!(
        "TPM2_ActivateCredential (swtpm, with AK re-creation): {:?}",
        t.elapsed()
    );
    let ek_key = trust.chain(&b.ek_certificate, now()).unwrap();
    let name = nacre_attestation::credential::object_name(&b.ak_public_area).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..100 {
        make_credential(&ek_key, &name, &[1; 32]).unwrap();
    }
    eprintln!(
        "software TPM2_MakeCredential (P-384 ECDH, KDFs, AES-256-CFB, HMAC): {:?} each",
        t.elapsed() / 100
    );
    let ok = pending.finish(&credential).unwrap();
    assert!(ok.ek_activation.is_none());
    assert_eq!(ok.ak_public, e.ak_public);

    // A wrong credential (another activation's, or made up) is refused.
    let Settled::Pending(p1) = settle(v.verify(&e, &expect()).unwrap()) else {
        panic!()
    };
    let Settled::Pending(p2) = settle(v.verify(&e, &expect()).unwrap()) else {
        panic!()
    };
    let c2 = Attester::with_tcti(&a.tpm.tcti)
        .activate_credential(p2.challenge())
        .unwrap();
    let r = p1.finish(&c2).unwrap_err();
    assert!(r.contains("not the one sent"), "{r}");
    assert!(p2.finish(&[0; 32]).is_err());
}

fn activate(
    n: &Node,
    c: &CredentialChallenge,
) -> Result<Vec<u8>, nacre_attestation::tpm::TpmError> {
    Attester::with_tcti(&n.tpm.tcti).activate_credential(c)
}

#[test]
fn make_credential_matches_the_tpm_and_misdirected_or_tampered_challenges_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let a = boot_on(swtpm_with_ek(&ca, false), "plain", &BOOT);
    let b = boot_on(swtpm_with_ek(&ca, false), "plain", &BOOT);
    let trust = EkCertified::from_pem(&ek_ca_bundle(&ca)).unwrap();
    let ea = evidence(&a);
    let eb = evidence(&b);
    let ba = ea.ek.as_ref().unwrap();
    let ek_a = trust.chain(&ba.ek_certificate, now()).unwrap();
    let ek_b = trust
        .chain(&eb.ek.as_ref().unwrap().ek_certificate, now())
        .unwrap();
    assert_ne!(ek_a, ek_b);
    let name_a = nacre_attestation::credential::object_name(&ba.ak_public_area).unwrap();

    // The software MakeCredential is what swtpm's ActivateCredential decrypts.
    for cred in [[0x5a; 32].to_vec(), b"sixteen byte cre".to_vec()] {
        let c = make_credential(&ek_a, &name_a, &cred).unwrap();
        assert_eq!(activate(&a, &c).unwrap(), cred);
    }
    // For another AK's name: the TPM's integrity check fails.
    let mut other = name_a.clone();
    *other.last_mut().unwrap() ^= 1;
    let c = make_credential(&ek_a, &other, &[7; 32]).unwrap();
    let err = activate(&a, &c).unwrap_err().to_string();
    eprintln!("{err}");
    // For b's EK, presented to a: a cannot recover the seed.
    let c = make_credential(&ek_b, &name_a, &[7; 32]).unwrap();
    assert!(activate(&a, &c).is_err());
    // Tampered blob, tampered secret.
    let good = make_credential(&ek_a, &name_a, &[7; 32]).unwrap();
    for i in [3, good.id_object.len() - 1] {
        let mut t = good.clone();
        t.id_object[i] ^= 0x80;
        assert!(activate(&a, &t).is_err(), "id_object byte {i}");
    }
    let mut t = good.clone();
    t.encrypted_secret[10] ^= 1;
    assert!(activate(&a, &t).is_err());
    assert_eq!(activate(&a, &good).unwrap(), vec![7; 32]);
}

/// The attack of issue 12: with the old scheme's signing EK (`swtpm_setup --allow-signing`),
/// anyone with access to the TPM has the EK sign (TPM2_Sign) a TPMS_ATTEST of their own making
/// that "certifies" a software AK. The forgery verifies under the EK's key, and is refused.
#[test]
fn a_forged_certify_by_a_signing_ek_is_refused() {
    use std::str::FromStr;
    use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
    use tss_esapi::handles::{PersistentTpmHandle, TpmHandle};
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use tss_esapi::interface_types::session_handles::AuthSession;
    use tss_esapi::structures::{Digest, HashScheme, HashcheckTicket, SignatureScheme};
    use tss_esapi::traits::Marshall;

    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let c = boot_on(swtpm_with_ek(&ca, true), "plain", &BOOT);
    let (m, key) = manifest(&replayed(&c), |_| {});
    let trust = EkCertified::from_pem(&ek_ca_bundle(&ca)).unwrap();
    let v = QemuVtpmVerifier::new(m, key, Box::new(trust.clone()));
    let genuine = evidence(&c);

    // A software "AK": its public area claims a restricted fixed-TPM key.
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    let soft = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .unwrap();
    use ring::signature::KeyPair;
    let point = soft.public_key().as_ref();
    let mut area = genuine.ek.as_ref().unwrap().ak_public_area.clone();
    let n = area.len();
    area[n - 66..n - 34].copy_from_slice(&point[1..33]);
    area[n - 32..].copy_from_slice(&point[33..65]);
    let name = nacre_attestation::credential::object_name(&area).unwrap();

    // TPMS_ATTEST (certify) naming it, over the quote's qualifying data.
    let tpm2b = |b: &[u8]| [&(b.len() as u16).to_be_bytes()[..], b].concat();
    let quote = nacre_attestation::attest::parse_quote(&genuine.quote.attest).unwrap();
    let mut attest = Vec::new();
    attest.extend(0xff54_4347u32.to_be_bytes());
    attest.extend(0x8017u16.to_be_bytes());
    attest.extend(tpm2b(&[]));
    attest.extend(tpm2b(&quote.extra_data));
    attest.extend([0u8; 17]); // clockInfo
    attest.extend([0u8; 8]); // firmwareVersion
    attest.extend(tpm2b(&name));
    attest.extend(tpm2b(&name));

    // TPM2_Sign by the EK (unrestricted: no ticket needed).
    let mut ctx =
        tss_esapi::Context::new(tss_esapi::tcti_ldr::TctiNameConf::from_str(&c.tpm.tcti).unwrap())
            .unwrap();
    let ek = ctx
        .tr_from_tpm_public(TpmHandle::Persistent(
            PersistentTpmHandle::new(nacre_attestation::tpm::EK_HANDLE).unwrap(),
        ))
        .unwrap();
    let digest =
        Digest::try_from(ring::digest::digest(&ring::digest::SHA384, &attest).as_ref()).unwrap();
    let ticket = HashcheckTicket::try_from(tss_esapi::tss2_esys::TPMT_TK_HASHCHECK {
        tag: TPM2_ST_HASHCHECK,
        hierarchy: TPM2_RH_NULL,
        digest: Default::default(),
    })
    .unwrap();
    let sig = ctx
        .execute_with_session(Some(AuthSession::Password), |x| {
            x.sign(
                ek.into(),
                digest,
                SignatureScheme::EcDsa {
                    hash_scheme: HashScheme::new(HashingAlgorithm::Sha384),
                },
                ticket,
            )
        })
        .unwrap()
        .marshall()
        .unwrap();
    drop(ctx);

    // The forgery is valid under the EK certificate's key: the old scheme would have trusted it.
    let ek_key = trust
        .chain(&genuine.ek.as_ref().unwrap().ek_certificate, now())
        .unwrap();
    let rs = nacre_attestation::attest::parse_ecdsa(&sig, 0x000c, 48).unwrap();
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P384_SHA384_FIXED,
        &ek_key.point,
    )
    .verify(&attest, &rs)
    .expect("the EK signed the forged certify");

    let mut forged = genuine.clone();
    forged.ak_public = p256_spki(&point[1..33], &point[33..65]).unwrap();
    forged.ek = Some(EkBinding {
        ek_certificate: genuine.ek.as_ref().unwrap().ek_certificate.clone(),
        ak_public_area: area,
        certify_attest: attest,
        certify_signature: sig,
    });
    let r = v.verify(&forged, &expect()).unwrap_err();
    assert_eq!(r.check, Check::AkTrust, "{r}");
    assert!(r.reason.contains("signing EK is not trusted"), "{r}");
    // Evidence with only a certify binding (no activation possible) is refused the same way
    // through the plain AK trust check as well.
    assert!(trust.check(&forged.ak_public, &forged).is_err());
}

#[test]
fn ek_certificates_of_other_cas_and_rsa_eks_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let a = boot_on(swtpm_with_ek(&ca, false), "plain", &BOOT);
    let (m, key) = manifest(&replayed(&a), |_| {});
    let e = evidence(&a);
    // Another operator's CA vouches for nothing here.
    let ca2 = tmp.path().join("ca2");
    let _c = swtpm_with_ek(&ca2, false);
    let v2 = QemuVtpmVerifier::new(
        m,
        key,
        Box::new(EkCertified::from_pem(&ek_ca_bundle(&ca2)).unwrap()),
    );
    let r = v2.verify(&e, &expect()).unwrap_err();
    assert_eq!(r.check, Check::AkTrust);
    assert!(r.reason.contains("nothing configured signed"), "{r}");

    // swtpm's RSA 2048 EK certificate (NV 0x01c00002), real, same CA: refused with the reason.
    use std::str::FromStr;
    use tss_esapi::abstraction::nv;
    use tss_esapi::handles::NvIndexTpmHandle;
    use tss_esapi::interface_types::resource_handles::NvAuth;
    let mut ctx =
        tss_esapi::Context::new(tss_esapi::tcti_ldr::TctiNameConf::from_str(&a.tpm.tcti).unwrap())
            .unwrap();
    let rsa_cert = ctx
        .execute_with_nullauth_session(|c| {
            nv::read_full(
                c,
                NvAuth::Owner,
                NvIndexTpmHandle::new(0x01c0_0002).unwrap(),
            )
        })
        .unwrap();
    drop(ctx);
    let trust = EkCertified::from_pem(&ek_ca_bundle(&ca)).unwrap();
    let r = trust.chain(&rsa_cert, now()).unwrap_err();
    assert!(r.contains("RSA-OAEP"), "{r}");
}

/// EK certificates made in the test (a test-made CA, P-384 EK key) with and without the TCG
/// EK profile's EKU and subjectAltName.
mod profile {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, ExtendedKeyUsagePurpose, IsCa,
        Issuer, KeyPair, PKCS_ECDSA_P384_SHA384,
    };

    fn der_len(n: usize) -> Vec<u8> {
        if n < 0x80 {
            vec![n as u8]
        } else if n < 0x100 {
            vec![0x81, n as u8]
        } else {
            vec![0x82, (n >> 8) as u8, n as u8]
        }
    }
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        [&[tag][..], &der_len(body.len()), body].concat()
    }
    fn oid(arcs: &[u8]) -> Vec<u8> {
        tlv(0x06, arcs)
    }

    /// subjectAltName: directoryName { tpmManufacturer, tpmModel, tpmVersion } (the layout
    /// swtpm and the TCG EK profile use: one SET per attribute, UTF8String values).
    fn san(with_version: bool) -> Vec<u8> {
        // 2.23.133.2.{1,2,3} = 67 81 05 02 0{1,2,3}
        let attr = |last: u8, v: &str| {
            tlv(
                0x31,
                &tlv(
                    0x30,
                    &[
                        oid(&[0x67, 0x81, 0x05, 0x02, last]),
                        tlv(0x0c, v.as_bytes()),
                    ]
                    .concat(),
                ),
            )
        };
        let mut rdns = [attr(1, "id:00001014"), attr(2, "swtpm")].concat();
        if with_version {
            rdns.extend(attr(3, "id:20191023"));
        }
        let name = tlv(0x30, &rdns);
        tlv(0x30, &tlv(0xa4, &name))
    }

    fn ek_cert(eku: bool, san_ext: Option<Vec<u8>>) -> (Vec<u8>, Vec<u8>) {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "test-made EK CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let ek_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let mut ek = CertificateParams::new(Vec::<String>::new()).unwrap();
        if eku {
            ek.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 1])];
        }
        if let Some(s) = san_ext {
            let mut ext = CustomExtension::from_oid_content(&[2, 5, 29, 17], s);
            ext.set_criticality(true);
            ek.custom_extensions.push(ext);
        }
        let cert = ek.signed_by(&ek_key, &issuer).unwrap();
        (cert.der().to_vec(), ca_cert.der().to_vec())
    }

    fn fixture(name: &str) -> Vec<u8> {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let path = format!("{}/tests/fixtures/ek/{name}", env!("CARGO_MANIFEST_DIR"));
        CertificateDer::from_pem_file(&path)
            .unwrap()
            .as_ref()
            .to_vec()
    }

    /// Real EK certificates (google/go-tpm-tools test data, tests/fixtures/ek/README.md).
    #[test]
    fn real_ek_certificates() {
        let gce = fixture("uca_tpm_ecc_enc_cert.pem");
        let (_, x) = x509_parser::parse_x509_certificate(&gce).unwrap();
        let id = nacre_attestation::ek::check_ek_profile(&x).unwrap();
        assert_eq!(
            (
                id.manufacturer.as_str(),
                id.model.as_str(),
                id.version.as_str()
            ),
            ("id:474F4F47", "vTPM", "id:20160511")
        );
        let private_ca = fixture("pca_tpm_ecc_enc_cert.pem");
        let (_, x) = x509_parser::parse_x509_certificate(&private_ca).unwrap();
        let r = nacre_attestation::ek::check_ek_profile(&x).unwrap_err();
        assert!(r.contains("tcg-kp-EKCertificate"), "{r}");
    }

    #[test]
    fn eku_and_san_are_required() {
        let (good, ca) = ek_cert(true, Some(san(true)));
        let t = EkCertified::from_der(vec![ca.clone()]).unwrap();
        let ek = t.chain(&good, now()).unwrap();
        assert_eq!(ek.point.len(), 97);
        let (_, x) = x509_parser::parse_x509_certificate(&good).unwrap();
        let id = nacre_attestation::ek::check_ek_profile(&x).unwrap();
        assert_eq!(
            (id.manufacturer.as_str(), id.model.as_str()),
            ("id:00001014", "swtpm")
        );

        let (no_eku, ca) = ek_cert(false, Some(san(true)));
        let r = EkCertified::from_der(vec![ca.clone()])
            .unwrap()
            .chain(&no_eku, now())
            .unwrap_err();
        assert!(r.contains("2.23.133.8.1"), "{r}");
        let (no_san, ca) = ek_cert(true, None);
        let r = EkCertified::from_der(vec![ca.clone()])
            .unwrap()
            .chain(&no_san, now())
            .unwrap_err();
        assert!(r.contains("subjectAltName"), "{r}");
        let (no_version, ca) = ek_cert(true, Some(san(false)));
        let r = EkCertified::from_der(vec![ca.clone()])
            .unwrap()
            .chain(&no_version, now())
            .unwrap_err();
        assert!(r.contains("subjectAltName"), "{r}");
    }
}

/// Someone with TPM access loads only the public area of a software "AK" (TPM2_LoadExternal,
/// claiming restricted/fixedTPM) and tries to activate the credential made for its name: the
/// object has no authValue and (as the verifier requires) no authPolicy, so the ADMIN role
/// that TPM2_ActivateCredential needs for it cannot be satisfied.
#[test]
fn a_public_only_copy_of_a_software_ak_cannot_activate() {
    use std::str::FromStr;
    use tss_esapi::handles::{PersistentTpmHandle, TpmHandle};
    use tss_esapi::interface_types::resource_handles::Hierarchy;
    use tss_esapi::structures::Public;
    use tss_esapi::traits::UnMarshall;

    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let a = boot_on(swtpm_with_ek(&ca, false), "plain", &BOOT);
    let trust = EkCertified::from_pem(&ek_ca_bundle(&ca)).unwrap();
    let genuine = evidence(&a);
    let b = genuine.ek.as_ref().unwrap();
    let ek_key = trust.chain(&b.ek_certificate, now()).unwrap();

    // The software key's public area: the genuine AK's template with another point.
    let rng = ring::rand::SystemRandom::new();
    let k =
        ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng).unwrap();
    let point = k.compute_public_key().unwrap().as_ref().to_vec();
    let mut area = b.ak_public_area.clone();
    let n = area.len();
    area[n - 66..n - 34].copy_from_slice(&point[1..33]);
    area[n - 32..].copy_from_slice(&point[33..65]);
    let name = nacre_attestation::credential::object_name(&area).unwrap();
    let challenge = make_credential(&ek_key, &name, &[9; 32]).unwrap();

    let mut ctx =
        tss_esapi::Context::new(tss_esapi::tcti_ldr::TctiNameConf::from_str(&a.tpm.tcti).unwrap())
            .unwrap();
    let public = Public::unmarshall(&area).unwrap();
    let loaded = ctx.load_external_public(public, Hierarchy::Null);
    let Ok(soft) = loaded else {
        eprintln!("LoadExternal refused the public area: {loaded:?}");
        return;
    };
    let ek = ctx
        .tr_from_tpm_public(TpmHandle::Persistent(
            PersistentTpmHandle::new(nacre_attestation::tpm::EK_HANDLE).unwrap(),
        ))
        .unwrap();
    let r = nacre_attestation::tpm::activate(&mut ctx, soft, ek.into(), &challenge);
    let err = r.expect_err("a public-only object must not activate a credential");
    eprintln!("ActivateCredential with a public-only AK: {err}");
}
