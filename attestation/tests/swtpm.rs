//! Evidence made by a real swtpm and verified: the swtpm's PCRs are first extended with the
//! events of a real OVMF boot's firmware log (eventlog/tests/fixtures) and nacre-init's runtime
//! events, the way a real boot would, so quote and logs agree.

use nacre_attestation::evidence::{Evidence, Platform};
use nacre_attestation::tpm::Attester;
use nacre_attestation::verify::{
    Check, EnrolledAks, Expectation, JoinKind, QemuVtpmVerifier, Verifier,
};
use nacre_eventlog::{EventLog, EventType, Phase, RuntimeEvent};
use nacre_measure::manifest::Manifest;
use nacre_measure::sign::{BlobSigner, PemSigner};
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};

mod support;
use support::*;

fn tls_key() -> Vec<u8> {
    PemSigner::generate().unwrap().0.public_key_spki()
}

struct Setup {
    node: Node,
    verifier: QemuVtpmVerifier,
    tls: Vec<u8>,
}

fn setup(log_name: &str, runtime: &[RuntimeEvent]) -> Setup {
    let node = boot(log_name, runtime);
    let (m, key) = manifest(&replayed(&node), |_| {});
    let ak = Attester::with_tcti(&node.tpm.tcti).ak_public().unwrap();
    let verifier = QemuVtpmVerifier::new(m, key, Box::new(EnrolledAks::new([ak])));
    Setup {
        node,
        verifier,
        tls: tls_key(),
    }
}

impl Setup {
    fn evidence(&self, nonce: &[u8], pcrs: &[u32]) -> Evidence {
        Attester::with_tcti(&self.node.tpm.tcti)
            .evidence(
                nonce,
                &self.tls,
                pcrs,
                self.node.firmware_log.clone(),
                self.node.runtime_log.clone(),
            )
            .unwrap()
    }
    fn expect<'a>(&'a self, nonce: &'a [u8], join: JoinKind) -> Expectation<'a> {
        Expectation {
            nonce,
            tls_public_key: &self.tls,
            join,
        }
    }
}

fn refused_by(v: &dyn Verifier, e: &Evidence, x: &Expectation<'_>) -> (Check, String) {
    let r = v.verify(e, x).expect_err("must be refused");
    eprintln!("{r}");
    (r.check, r.reason)
}

const STAGE1: [RuntimeEvent; 1] = [RuntimeEvent::Phase(Phase::EnterInitrd)];

#[test]
fn good_quote_verifies_for_real_boot_logs() {
    for log in ["plain", "sb-custom", "extra"] {
        let s = setup(log, &STAGE1);
        // The swtpm's PCRs really are the fixture's firmware PCRs (PCR 11 plus enter-initrd).
        let json: BTreeMap<String, String> = serde_json::from_slice(
            &std::fs::read(format!(
                "{}/../eventlog/tests/fixtures/{log}.pcrs.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(hex::encode(replayed(&s.node).get(4).unwrap()), json["4"]);
        let e = s.evidence(b"nonce-1", &QUOTED);
        // Evidence survives the wire format.
        let e = Evidence::from_json(&e.to_json()).unwrap();
        let ok = s
            .verifier
            .verify(&e, &s.expect(b"nonce-1", JoinKind::First))
            .unwrap();
        assert_eq!(ok.matched, vec![0, 4, 7, 9, 11], "{log}");
        assert!(ok.warnings.is_empty());
        assert_eq!(ok.pcrs[&15], vec![0; 32]);
    }
}

#[test]
fn warn_only_mismatch_is_reported_not_refused_and_enforced_mismatch_refuses() {
    let s = setup("plain", &STAGE1);
    let values = replayed(&s.node);
    let ak = Attester::with_tcti(&s.node.tpm.tcti).ak_public().unwrap();
    let e = s.evidence(b"n", &QUOTED);
    let (m, key) = manifest(&values, |m| {
        m.measurements.get_mut(&0).unwrap().expected = vec![0xaa; 32]
    });
    let v = QemuVtpmVerifier::new(m, key, Box::new(EnrolledAks::new([ak.clone()])));
    let ok = v.verify(&e, &s.expect(b"n", JoinKind::First)).unwrap();
    assert_eq!(ok.warnings.len(), 1);
    assert_eq!(ok.warnings[0].pcr, 0);

    let (m, key) = manifest(&values, |m| {
        m.measurements.get_mut(&4).unwrap().expected = vec![0xaa; 32]
    });
    let v = QemuVtpmVerifier::new(m, key, Box::new(EnrolledAks::new([ak])));
    let (check, reason) = refused_by(&v, &e, &s.expect(b"n", JoinKind::First));
    assert_eq!(check, Check::Measurements);
    assert!(reason.contains("PCR 4"), "{reason}");
}

#[test]
fn replayed_quote_with_old_nonce_is_refused() {
    let s = setup("plain", &STAGE1);
    let old = s.evidence(b"old-nonce", &QUOTED);
    let (check, _) = refused_by(&s.verifier, &old, &s.expect(b"new-nonce", JoinKind::First));
    assert_eq!(check, Check::Nonce);
    // The same quote presented over another TLS channel (another key) is refused too.
    let other = tls_key();
    let x = Expectation {
        nonce: b"old-nonce",
        tls_public_key: &other,
        join: JoinKind::First,
    };
    assert_eq!(refused_by(&s.verifier, &old, &x).0, Check::Nonce);
}

#[test]
fn quote_over_other_pcrs_is_refused() {
    let s = setup("plain", &STAGE1);
    let e = s.evidence(b"n", &[0, 1, 2, 3, 15]);
    let (check, reason) = refused_by(&s.verifier, &e, &s.expect(b"n", JoinKind::First));
    assert_eq!(check, Check::PcrSelection);
    assert!(reason.contains("[4, 7, 9, 11]"), "{reason}");
    // A first join needs PCR 15 in the quote.
    let e = s.evidence(b"n", &[0, 4, 7, 9, 11]);
    assert_eq!(
        refused_by(&s.verifier, &e, &s.expect(b"n", JoinKind::First)).0,
        Check::PcrSelection
    );
    assert!(s
        .verifier
        .verify(&e, &s.expect(b"n", JoinKind::Rejoin))
        .is_ok());
}

#[test]
fn forged_or_incomplete_event_log_is_refused() {
    let s = setup("plain", &STAGE1);
    let good = s.evidence(b"n", &QUOTED);
    let log = EventLog::parse(&good.firmware_log).unwrap();

    // One digest changed: the first EV_EFI_BOOT_SERVICES_APPLICATION on PCR 4 (the UKI).
    let mut forged = log.clone();
    let ev = forged
        .events
        .iter_mut()
        .find(|e| {
            e.pcr == 4
                && e.event_type != EventType::NoAction
                && e.event_type != EventType::Separator
                && e.event_type != EventType::EfiAction
        })
        .unwrap();
    ev.digests[0].value[0] ^= 1;
    let mut e = good.clone();
    e.firmware_log = forged.to_bytes().unwrap();
    let (check, _) = refused_by(&s.verifier, &e, &s.expect(b"n", JoinKind::First));
    assert_eq!(check, Check::PcrDigest);

    // The last event on a quoted PCR left out (events on unquoted PCRs, e.g. PCR 5's
    // ExitBootServices, do not matter to this quote).
    let mut short = log.clone();
    let i = short
        .events
        .iter()
        .rposition(|e| QUOTED.contains(&e.pcr) && e.event_type != EventType::NoAction)
        .unwrap();
    short.events.remove(i);
    let mut e = good.clone();
    e.firmware_log = short.to_bytes().unwrap();
    assert_eq!(
        refused_by(&s.verifier, &e, &s.expect(b"n", JoinKind::First)).0,
        Check::PcrDigest
    );

    // The runtime log left out.
    let mut e = good.clone();
    e.runtime_log.clear();
    assert_eq!(
        refused_by(&s.verifier, &e, &s.expect(b"n", JoinKind::First)).0,
        Check::PcrDigest
    );

    // A runtime record whose content does not match its digest.
    let mut e = good.clone();
    e.runtime_log[0].content.string = "ready".into();
    assert_eq!(
        refused_by(&s.verifier, &e, &s.expect(b"n", JoinKind::First)).0,
        Check::EventLog
    );

    // Garbage instead of a log.
    let mut e = good;
    e.firmware_log.truncate(10);
    assert_eq!(
        refused_by(&s.verifier, &e, &s.expect(b"n", JoinKind::First)).0,
        Check::EventLog
    );
}

#[test]
fn manifest_with_bad_signature_is_refused() {
    let s = setup("plain", &STAGE1);
    let e = s.evidence(b"n", &QUOTED);
    let ak = Attester::with_tcti(&s.node.tpm.tcti).ak_public().unwrap();
    let values = replayed(&s.node);
    // Signed, then changed.
    let (mut m, key) = manifest(&values, |_| {});
    let text = String::from_utf8(m.json.clone())
        .unwrap()
        .replace("nacre-test", "nacre-evil");
    m.json = text.into_bytes();
    let v = QemuVtpmVerifier::new(m, key, Box::new(EnrolledAks::new([ak.clone()])));
    assert_eq!(
        refused_by(&v, &e, &s.expect(b"n", JoinKind::First)).0,
        Check::ManifestSignature
    );
    // Signed by another key.
    let (m, _) = manifest(&values, |_| {});
    let (_, other) = manifest(&values, |_| {});
    let v = QemuVtpmVerifier::new(m, other, Box::new(EnrolledAks::new([ak])));
    assert_eq!(
        refused_by(&v, &e, &s.expect(b"n", JoinKind::First)).0,
        Check::ManifestSignature
    );
}

#[test]
fn first_join_with_pcr15_set_is_refused_rejoin_is_not() {
    let s = setup(
        "plain",
        &[
            RuntimeEvent::Phase(Phase::EnterInitrd),
            RuntimeEvent::ClusterId([7; 32]),
        ],
    );
    let e = s.evidence(b"n", &QUOTED);
    let (check, reason) = refused_by(&s.verifier, &e, &s.expect(b"n", JoinKind::First));
    assert_eq!(check, Check::FirstJoinPcr15);
    assert!(reason.contains("PCR 15"), "{reason}");
    let ok = s
        .verifier
        .verify(&e, &s.expect(b"n", JoinKind::Rejoin))
        .unwrap();
    assert_ne!(ok.pcrs[&15], vec![0; 32]);
}

#[test]
fn unenrolled_ak_forged_signature_and_unimplemented_platforms_are_refused() {
    let s = setup("plain", &STAGE1);
    let e = s.evidence(b"n", &QUOTED);
    let x = s.expect(b"n", JoinKind::First);

    let (m, key) = manifest(&replayed(&s.node), |_| {});
    let v = QemuVtpmVerifier::new(m, key, Box::new(EnrolledAks::new([tls_key()])));
    assert_eq!(refused_by(&v, &e, &x).0, Check::AkTrust);

    // TPMS_ATTEST changed after signing (its pcrDigest's last byte).
    let mut bad = e.clone();
    *bad.quote.attest.last_mut().unwrap() ^= 1;
    assert_eq!(refused_by(&s.verifier, &bad, &x).0, Check::QuoteSignature);

    let mut bad = e.clone();
    bad.quote.attest[0] = 0;
    assert_eq!(refused_by(&s.verifier, &bad, &x).0, Check::QuoteFormat);

    for p in [
        Platform::SevSnp {
            report: vec![0; 1184],
            vcek: vec![],
        },
        Platform::Tdx { quote: vec![0; 64] },
    ] {
        let mut bad = e.clone();
        bad.platform = p;
        let (check, reason) = refused_by(&s.verifier, &bad, &x);
        assert_eq!(check, Check::Platform);
        assert!(
            reason.contains("not implemented") || reason.contains("the QEMU vTPM verifier"),
            "{reason}"
        );
    }
}

// ---- Attested TLS on loopback ----

mod atls {
    use super::*;
    use nacre_attestation::atls::{
        attested_cert, client_config, server_config, Attest, AttestedCertResolver,
        AttestedClientVerifier, TpmAttest,
    };
    use rustls::client::ResolvesClientCert;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::sign::CertifiedKey;
    use std::io::{Read, Write};
    use std::sync::Arc;

    type Verdict = Option<Result<nacre_attestation::Accepted, nacre_attestation::Refusal>>;

    fn tpm_attest(s: &Setup) -> TpmAttest {
        TpmAttest {
            attester: Attester::with_tcti(&s.node.tpm.tcti),
            pcrs: QUOTED.to_vec(),
            firmware_log: s.node.firmware_log.clone(),
            runtime_log: s.node.runtime_log.clone(),
        }
    }

    /// Runs one handshake; returns the server's verdict and whether application data went through.
    fn handshake(
        verifier: Arc<dyn Verifier>,
        resolver: Arc<dyn ResolvesClientCert>,
    ) -> (Verdict, bool) {
        let server_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&server_key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(server_cert.der().clone()).unwrap();
        let acv = Arc::new(AttestedClientVerifier::new(verifier, JoinKind::First).unwrap());
        let scfg = server_config(
            acv.clone(),
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(scfg)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).is_ok() && &buf == b"hello"
        });
        let ccfg = client_config(roots, resolver).unwrap();
        let conn = rustls::ClientConnection::new(
            Arc::new(ccfg),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let tcp = TcpStream::connect(addr).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let _ = tls.write_all(b"hello").and_then(|_| tls.flush());
        // TLS 1.3: the client learns of a refused certificate only from the server's alert.
        let mut b = [0u8; 1];
        let _ = tls.read(&mut b);
        let delivered = server.join().unwrap();
        (acv.verdict(), delivered)
    }

    #[test]
    fn attested_node_is_accepted_over_tls() {
        let s = setup("plain", &STAGE1);
        let resolver = Arc::new(AttestedCertResolver::new(Box::new(tpm_attest(&s))));
        let (verdict, delivered) = handshake(Arc::new(s.verifier), resolver);
        let ok = verdict.expect("the server verified evidence").unwrap();
        assert_eq!(ok.matched, vec![0, 4, 7, 9, 11]);
        assert!(delivered);
    }

    /// Sends a certificate made earlier for another nonce: a replayed attested certificate.
    #[derive(Debug)]
    struct Replay(CertificateDer<'static>, PrivateKeyDer<'static>);
    impl ResolvesClientCert for Replay {
        fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
            let key = rustls::crypto::ring::sign::any_ecdsa_type(&self.1).ok()?;
            Some(Arc::new(CertifiedKey::new(vec![self.0.clone()], key)))
        }
        fn has_certs(&self) -> bool {
            true
        }
    }

    #[test]
    fn replayed_attested_certificate_is_refused() {
        let s = setup("plain", &STAGE1);
        let (cert, key) = attested_cert(&tpm_attest(&s), &[1; 32]).unwrap();
        let (verdict, delivered) = handshake(Arc::new(s.verifier), Arc::new(Replay(cert, key)));
        assert_eq!(verdict.unwrap().unwrap_err().check, Check::Nonce);
        assert!(!delivered);
    }

    #[test]
    fn node_with_other_measurements_is_refused_over_tls() {
        let s = setup("plain", &STAGE1);
        let (m, key) = manifest(&replayed(&s.node), |m| {
            m.measurements.get_mut(&9).unwrap().expected = vec![0x99; 32]
        });
        let ak = Attester::with_tcti(&s.node.tpm.tcti).ak_public().unwrap();
        let v = QemuVtpmVerifier::new(m, key, Box::new(EnrolledAks::new([ak])));
        let resolver = Arc::new(AttestedCertResolver::new(Box::new(tpm_attest(&s))));
        let (verdict, delivered) = handshake(Arc::new(v), resolver);
        assert_eq!(verdict.unwrap().unwrap_err().check, Check::Measurements);
        assert!(!delivered);
    }

    /// Both sides in "CVMs": a node (client) and a control-plane node running the key service
    /// (server, already initialized: PCR 15 set), each with its own swtpm and boot log. The
    /// server quotes only after it verified the client, and sends its evidence as the first
    /// line; the client verifies it before it sends anything. Returns the server's verdict on
    /// the node, the node's verdict on the server, whether the server quoted, and whether the
    /// node's request reached the server.
    fn mutual(server_manifest_tweak: impl Fn(&mut Manifest)) -> (Verdict, Verdict, bool, bool) {
        use nacre_attestation::atls::{
            mutual_client_config, mutual_server_config, AttestedServerResolver,
            AttestedServerVerifier,
        };
        use nacre_attestation::join::{read_line, ServerEvidenceLine};
        use std::io::BufReader;
        let node = setup("plain", &STAGE1);
        let cp = setup(
            "sb-custom",
            &[
                RuntimeEvent::Phase(Phase::EnterInitrd),
                RuntimeEvent::ClusterId([3; 32]),
            ],
        );
        let (m, key) = manifest(&replayed(&cp.node), server_manifest_tweak);
        let cp_ak = Attester::with_tcti(&cp.node.tpm.tcti).ak_public().unwrap();
        let cp_verifier = QemuVtpmVerifier::new(m, key, Box::new(EnrolledAks::new([cp_ak])));

        let node_attest = tpm_attest(&node);
        let acv = Arc::new(
            AttestedClientVerifier::new(Arc::new(node.verifier), JoinKind::First).unwrap(),
        );
        let resolver = Arc::new(AttestedServerResolver::new(Box::new(tpm_attest(&cp))));
        let scfg = mutual_server_config(acv.clone(), resolver.clone()).unwrap();
        let asv =
            Arc::new(AttestedServerVerifier::new(Arc::new(cp_verifier), JoinKind::Rejoin).unwrap());
        let ccfg = mutual_client_config(
            asv.clone(),
            Arc::new(AttestedCertResolver::new(Box::new(node_attest))),
        )
        .unwrap();
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let server_acv = acv.clone();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(scfg)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            while tls.conn.is_handshaking() {
                if tls.conn.complete_io(&mut tls.sock).is_err() {
                    return (false, false);
                }
            }
            if !matches!(server_acv.verdict(), Some(Ok(_))) {
                return (false, false);
            }
            let evidence = resolver.evidence().unwrap();
            let mut line = serde_json::to_vec(&ServerEvidenceLine { evidence }).unwrap();
            line.push(b'\n');
            tls.write_all(&line).unwrap();
            tls.flush().unwrap();
            let mut buf = [0u8; 5];
            (true, tls.read_exact(&mut buf).is_ok() && &buf == b"hello")
        });
        let conn = rustls::ClientConnection::new(Arc::new(ccfg), asv.server_name()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
        let mut first = Vec::new();
        if read_line(&mut BufReader::new(&mut tls), &mut first).is_ok() && !first.is_empty() {
            let line: ServerEvidenceLine = serde_json::from_slice(&first).unwrap();
            if asv.verify_evidence(&line.evidence).is_ok() {
                let _ = tls.write_all(b"hello").and_then(|_| tls.flush());
            }
        }
        drop(tls);
        let (quoted, delivered) = server.join().unwrap();
        (acv.verdict(), asv.verdict(), quoted, delivered)
    }

    #[test]
    fn mutual_attested_tls_both_sides_verified() {
        let (node, server, quoted, delivered) = mutual(|_| {});
        assert!(node.unwrap().is_ok());
        let server = server.unwrap().unwrap();
        assert_ne!(server.pcrs[&15], vec![0; 32]);
        assert!(quoted && delivered);
    }

    #[test]
    fn mutual_attested_tls_refuses_a_server_with_other_measurements() {
        let (node, server, quoted, delivered) =
            mutual(|m| m.measurements.get_mut(&7).unwrap().expected = vec![0x77; 32]);
        // The server verified the node and quoted; the node refuses the server's evidence and
        // sends it nothing.
        assert!(node.unwrap().is_ok());
        assert!(quoted);
        assert_eq!(server.unwrap().unwrap_err().check, Check::Measurements);
        assert!(!delivered);
    }

    /// The server quotes only for a client it verified: a node whose evidence the server
    /// refuses gets no quote (the TPM is not used for it) and no evidence.
    #[test]
    fn mutual_attested_tls_no_quote_for_a_refused_client() {
        use nacre_attestation::atls::{
            mutual_client_config, mutual_server_config, AttestedServerResolver,
            AttestedServerVerifier,
        };
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Counting(TpmAttest, Arc<AtomicUsize>);
        impl Attest for Counting {
            fn evidence(
                &self,
                nonce: &[u8],
                spki: &[u8],
            ) -> Result<nacre_attestation::Evidence, String> {
                self.1.fetch_add(1, Ordering::SeqCst);
                self.0.evidence(nonce, spki)
            }
        }
        let node = setup("plain", &STAGE1);
        let cp = setup("sb-custom", &[RuntimeEvent::Phase(Phase::EnterInitrd)]);
        // The server expects other measurements of the node: it refuses it.
        let (m, key) = manifest(&replayed(&node.node), |m| {
            m.measurements.get_mut(&9).unwrap().expected = vec![0x99; 32]
        });
        let node_ak = Attester::with_tcti(&node.node.tpm.tcti)
            .ak_public()
            .unwrap();
        let acv = Arc::new(
            AttestedClientVerifier::new(
                Arc::new(QemuVtpmVerifier::new(
                    m,
                    key,
                    Box::new(EnrolledAks::new([node_ak])),
                )),
                JoinKind::First,
            )
            .unwrap(),
        );
        let quotes = Arc::new(AtomicUsize::new(0));
        let resolver = Arc::new(AttestedServerResolver::new(Box::new(Counting(
            tpm_attest(&cp),
            quotes.clone(),
        ))));
        let scfg = mutual_server_config(acv.clone(), resolver).unwrap();
        let asv =
            Arc::new(AttestedServerVerifier::new(Arc::new(cp.verifier), JoinKind::Rejoin).unwrap());
        let ccfg = mutual_client_config(
            asv.clone(),
            Arc::new(AttestedCertResolver::new(Box::new(tpm_attest(&node)))),
        )
        .unwrap();
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(scfg)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            while tls.conn.is_handshaking() {
                if tls.conn.complete_io(&mut tls.sock).is_err() {
                    break;
                }
            }
        });
        let conn = rustls::ClientConnection::new(Arc::new(ccfg), asv.server_name()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
        let mut b = [0u8; 1];
        let _ = tls.read(&mut b);
        drop(tls);
        server.join().unwrap();
        assert_eq!(
            acv.verdict().unwrap().unwrap_err().check,
            Check::Measurements
        );
        assert_eq!(
            quotes.load(Ordering::SeqCst),
            0,
            "the server quoted for a refused client"
        );
        assert!(asv.verdict().is_none(), "no evidence reached the node");
    }

    #[allow(dead_code)]
    fn _attest_is_object_safe(_: &dyn Attest) {}
}

/// Not a benchmark gate: prints how long one verification takes (a debug build: the
/// workspace crates are unoptimized), so regressions are visible in the test output.
#[test]
fn verification_cost_is_printed() {
    let s = setup("plain", &STAGE1);
    let e = s.evidence(b"n", &QUOTED);
    let x = s.expect(b"n", JoinKind::First);
    let n = 200;
    let t = std::time::Instant::now();
    for _ in 0..n {
        s.verifier.verify(&e, &x).unwrap();
    }
    let per = t.elapsed() / n;
    eprintln!(
        "verify: {per:?} per evidence, {:.0}/s on one core",
        1.0 / per.as_secs_f64()
    );
}

/// A refusal names the first event that differs when the manifest carries predicted events:
/// here the manifest predicts one made-up PCR 11 event where the real log starts with
/// systemd-stub's `.linux` section measurement.
#[test]
fn measurement_refusal_names_the_differing_event() {
    use nacre_measure::predict::{Event as Predicted, Origin};
    let s = setup("plain", &STAGE1);
    let values = replayed(&s.node);
    let ak = Attester::with_tcti(&s.node.tpm.tcti).ak_public().unwrap();
    let e = s.evidence(b"n", &QUOTED);
    let (m, key) = manifest(&values, |m| {
        m.measurements.get_mut(&11).unwrap().expected = vec![0xbb; 32];
        m.events = vec![Predicted {
            pcr: 11,
            event_type: nacre_eventlog::EventType::Ipl,
            digest: vec![0xcc; 32],
            description: "nacre-init phase leave-initrd".into(),
            origin: Origin::NacreInit,
        }];
    });
    let v = QemuVtpmVerifier::new(m, key, Box::new(EnrolledAks::new([ak])));
    let (check, reason) = refused_by(&v, &e, &s.expect(b"n", JoinKind::First));
    assert_eq!(check, Check::Measurements);
    assert!(
        reason.contains("PCR 11 first differs at its event #0: predicted \"nacre-init phase leave-initrd\", observed \"\\\".linux\\\" (UTF-16)\""),
        "{reason}"
    );
}
