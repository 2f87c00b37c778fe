//! The key service on loopback with nodes whose evidence comes from real swtpms (PCRs extended
//! with a real OVMF boot's firmware log and nacre-init's runtime events): joins, disk keys,
//! peers, the PCR 15 rules, disk ownership, refusals by attestation, and state that survives a
//! restart of the service.

#[path = "../../attestation/tests/support/mod.rs"]
mod support;

mod common;

use base64::Engine;
use nacre_attestation::atls::TpmAttest;
use nacre_attestation::join::{CallError, Client, Request, Response, WgAnnounce};
use nacre_attestation::tpm::Attester;
use nacre_attestation::{EnrolledAks, QemuVtpmVerifier, Verifier};
use nacre_eventlog::{HashAlg, Phase, RuntimeEvent};
use nacre_keyservice::server::{load_identity, Server};
use nacre_keyservice::store::{Cluster, Decision, Store, DB_FILE};
use nacre_keyservice::{disk_key, tls, Service};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

const BOOT: [RuntimeEvent; 3] = [
    RuntimeEvent::Phase(Phase::EnterInitrd),
    RuntimeEvent::Phase(Phase::LeaveInitrd),
    RuntimeEvent::Phase(Phase::Sysinit),
];

struct Running {
    addr: String,
    decisions: Arc<Mutex<Vec<Decision>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stop accepting and wait until the server (and its database) is gone.
    fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn cluster_state(dir: &Path) -> Cluster {
    common::cluster_state(dir, Some("https://10.0.2.2:6443"))
}

fn serve(dir: &Path, verifier: Arc<dyn Verifier>) -> Running {
    let decisions = Arc::new(Mutex::new(Vec::new()));
    let d = decisions.clone();
    let store = Store::open(&dir.join(DB_FILE)).unwrap();
    let service = Arc::new(
        Service::new(
            store,
            Box::new(move |x: &Decision| d.lock().unwrap().push(x.clone())),
        )
        .unwrap(),
    );
    let (chain, key) = load_identity(dir).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Arc::new(Server::new(service, verifier, chain, key));
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let thread = std::thread::spawn(move || server.run(listener, st));
    Running {
        addr,
        decisions,
        stop,
        thread: Some(thread),
    }
}

/// `node`'s own evidence: its TPM's quote of [`QUOTED`] and its logs.
fn tpm_attest(node: &Node) -> TpmAttest {
    TpmAttest {
        attester: Attester::with_tcti(&node.tpm.tcti),
        pcrs: QUOTED.to_vec(),
        firmware_log: node.firmware_log.clone(),
        runtime_log: node.runtime_log.clone(),
    }
}

fn client(addr: &str, dir: &Path, node: &Node) -> Client {
    let ca = std::fs::read(dir.join(tls::CA_CERT)).unwrap();
    Client::new(
        addr,
        &ca,
        Arc::new(tpm_attest(node)),
        Duration::from_secs(20),
    )
    .unwrap()
}

/// The service (state in `dir`) on `control_plane`, proving itself with that node's evidence
/// over mutual attested TLS and accepting `node` (its golden values, its AK enrolled); returns
/// the address it listens on.
fn attested_service(dir: &Path, control_plane: &Node, node: &Node) -> String {
    attested_service_counting(dir, control_plane, node, Arc::new(AtomicUsize::new(0))).0
}

/// The service's attester, counting the evidence it makes (each is a TPM quote).
struct Counting(TpmAttest, Arc<AtomicUsize>);

impl nacre_attestation::atls::Attest for Counting {
    fn evidence(&self, nonce: &[u8], spki: &[u8]) -> Result<nacre_attestation::Evidence, String> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.evidence(nonce, spki)
    }
}

/// [`attested_service`], counting the service's quotes in `quotes`.
fn attested_service_counting(
    dir: &Path,
    control_plane: &Node,
    node: &Node,
    quotes: Arc<AtomicUsize>,
) -> (String, Arc<Service>) {
    let (node_manifest, node_key) = manifest(&replayed(node), sysinit);
    let node_ak = Attester::with_tcti(&node.tpm.tcti).ak_public().unwrap();
    let nodes: Arc<dyn Verifier> = Arc::new(QemuVtpmVerifier::new(
        node_manifest,
        node_key,
        Box::new(EnrolledAks::new([node_ak])),
    ));
    let store = Store::open(&dir.join(DB_FILE)).unwrap();
    let service = Arc::new(Service::new(store, Box::new(|_: &Decision| {})).unwrap());
    let own = Counting(tpm_attest(control_plane), quotes);
    let server = Arc::new(Server::attested(service.clone(), nodes, Arc::new(own)));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || server.run(listener, Arc::new(AtomicBool::new(false))));
    (addr, service)
}

fn announce(key: u8, underlay: &str) -> Request {
    Request::Join {
        wireguard: WgAnnounce {
            public_key: base64::engine::general_purpose::STANDARD.encode([key; 32]),
            underlay: underlay.parse().unwrap(),
            listen_port: 51820,
        },
    }
}

fn refusal(r: Result<Response, CallError>) -> String {
    match r {
        Err(e @ CallError::Refused { .. }) => e.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Extend PCR 15 with the cluster id, as nacre-init does after joining, and log it.
fn joined(node: &mut Node, id: [u8; 32]) {
    let ev = RuntimeEvent::ClusterId(id);
    let rec = ev
        .to_cel(node.runtime_log.len() as u64, &[HashAlg::Sha256])
        .unwrap();
    extend(&node.tpm.tcti, &[(15, rec.digests[0].digest.clone())]);
    node.runtime_log.push(rec);
}

/// The decisions once there are `n` (the server records a handshake refusal just after the
/// alert has left, so the client may see the refusal first).
fn decisions(svc: &Running, n: usize) -> Vec<Decision> {
    for _ in 0..200 {
        let d = svc.decisions.lock().unwrap().clone();
        if d.len() >= n {
            return d;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    svc.decisions.lock().unwrap().clone()
}

/// An AK's fingerprint as the service names nodes (hex SHA-256 of the SPKI).
fn fingerprint(ak: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, ak))
}

fn sysinit(m: &mut nacre_measure::manifest::Manifest) {
    m.phase = Some("sysinit".into());
}

const UUID_A: &str = "6a0c3f7e-54b2-4c8e-9a41-0d2f7b3e9c01";

#[test]
fn nodes_join_get_keys_and_peers_and_the_rules_hold() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_state(dir.path());
    let mut a = boot("plain", &BOOT);
    let b = boot("plain", &BOOT);
    let stranger = boot("plain", &BOOT);
    let mut other = boot("plain", &BOOT);
    // Like `nacre-measure golden` without --cluster-id: PCR 15 expected zero. The service
    // applies its own PCR 15 rule instead (members have the cluster id there).
    let (m, key) = manifest(&replayed(&a), |m| {
        m.phase = Some("sysinit".into());
        m.measurements.insert(
            15,
            nacre_measure::manifest::Expected {
                expected: vec![0; 32],
                warn_only: false,
            },
        );
    });
    let aks: Vec<Vec<u8>> = [&a, &b, &other]
        .iter()
        .map(|n| Attester::with_tcti(&n.tpm.tcti).ak_public().unwrap())
        .collect();
    let verifier: Arc<dyn Verifier> = Arc::new(QemuVtpmVerifier::new(
        m,
        key,
        Box::new(EnrolledAks::new(aks.clone())),
    ));
    let svc = serve(dir.path(), verifier);

    // Node a joins: first host of the overlay, no peers yet, kubelet's data.
    let ca = client(&svc.addr, dir.path(), &a);
    let Response::Joined(j) = ca.call(&announce(1, "10.0.2.15")).unwrap() else {
        panic!("not joined")
    };
    assert_eq!(j.node, "node-1");
    assert_eq!(j.overlay, "10.244.0.1/32");
    assert!(j.peers.is_empty());
    assert!(!j.rejoin);
    assert_eq!(j.cluster_id, hex::encode(cluster.cluster_id));
    assert_eq!(j.kubelet.bootstrap_token, "abcdef.0123456789abcdef");

    // Its disk key is HKDF(master, UUID, its AK fingerprint).
    let Response::DiskKey { key: k } = ca
        .call(&Request::DiskKey {
            disk_uuid: UUID_A.into(),
        })
        .unwrap()
    else {
        panic!("no disk key")
    };
    let k = base64::engine::general_purpose::STANDARD
        .decode(k.expose())
        .unwrap();
    assert_eq!(
        k,
        disk_key(&cluster.master_secret, UUID_A, &fingerprint(&aks[0])).to_vec()
    );
    assert_eq!(k.len(), 64);

    // Peers are for members only (PCR 15 = this cluster's id).
    let e = refusal(ca.call(&Request::Peers {}));
    assert!(e.contains("PCR 15 does not show"), "{e}");

    // Node b joins and sees a; asking for a's disk is refused.
    let cb = client(&svc.addr, dir.path(), &b);
    let Response::Joined(jb) = cb.call(&announce(2, "10.0.2.16")).unwrap() else {
        panic!("b not joined")
    };
    assert_eq!(jb.overlay, "10.244.0.2/32");
    assert_eq!(jb.peers.len(), 1);
    assert_eq!(jb.peers[0].endpoint.to_string(), "10.0.2.15:51820");
    assert_eq!(jb.peers[0].allowed_ips, vec!["10.244.0.1/32".to_string()]);
    let e = refusal(cb.call(&Request::DiskKey {
        disk_uuid: UUID_A.into(),
    }));
    assert!(e.contains("belongs to another node"), "{e}");

    // a extends PCR 15 with the cluster id: now a member; it sees b; it cannot join again.
    joined(&mut a, cluster.cluster_id);
    let ca = client(&svc.addr, dir.path(), &a);
    let Response::Peers { peers } = ca.call(&Request::Peers {}).unwrap() else {
        panic!("no peers")
    };
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].name, "node-2");
    let e = refusal(ca.call(&announce(1, "10.0.2.15")));
    assert!(e.contains("already joined"), "{e}");
    let e = refusal(ca.call(&Request::DiskKey {
        disk_uuid: UUID_A.into(),
    }));
    assert!(e.contains("PCR 15 is not zero"), "{e}");

    // Another cluster's id in PCR 15 is refused whatever the request.
    joined(&mut other, [0x99; 32]);
    let e = refusal(client(&svc.addr, dir.path(), &other).call(&Request::Peers {}));
    assert!(e.contains("joined another cluster"), "{e}");

    // A TPM whose AK is not enrolled is refused in the handshake; the log says why.
    let e = refusal(client(&svc.addr, dir.path(), &stranger).call(&announce(3, "10.0.2.17")));
    assert!(e.contains("TLS alert"), "{e}");
    let log = decisions(&svc, 10);
    let last = log.last().unwrap();
    assert_eq!(last.outcome, "refused");
    assert_eq!(last.check.as_deref(), Some("attestation key trust"));
    assert!(last.detail.contains("is not enrolled"), "{last:?}");
    // Every request left exactly one decision (warnings aside: PCR 0 is warn-only and equal).
    let ops: Vec<(&str, &str)> = log
        .iter()
        .map(|d| (d.op.as_str(), d.outcome.as_str()))
        .collect();
    assert_eq!(
        ops,
        [
            ("join", "granted"),
            ("disk-key", "granted"),
            ("peers", "refused"),
            ("join", "granted"),
            ("disk-key", "refused"),
            ("peers", "granted"),
            ("join", "refused"),
            ("disk-key", "refused"),
            ("peers", "refused"),
            ("attest", "refused"),
        ]
    );
}

#[test]
fn a_node_with_other_measurements_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    cluster_state(dir.path());
    let good = boot("plain", &BOOT);
    // The same firmware, but nacre-init's phases stop early: PCR 11 differs.
    let bad = boot("plain", &BOOT[..2]);
    let (m, key) = manifest(&replayed(&good), sysinit);
    let aks = [&good, &bad]
        .iter()
        .map(|n| Attester::with_tcti(&n.tpm.tcti).ak_public().unwrap())
        .collect::<Vec<_>>();
    let verifier: Arc<dyn Verifier> = Arc::new(QemuVtpmVerifier::new(
        m,
        key,
        Box::new(EnrolledAks::new(aks)),
    ));
    let svc = serve(dir.path(), verifier);
    let e = refusal(client(&svc.addr, dir.path(), &bad).call(&announce(9, "10.0.2.20")));
    assert!(e.contains("TLS alert"), "{e}");
    let log = decisions(&svc, 1);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].check.as_deref(), Some("measurements"));
    assert!(log[0].detail.contains("PCR 11"), "{:?}", log[0]);
    svc.stop();
    let store = Store::open(&dir.path().join(DB_FILE)).unwrap();
    assert!(
        store.nodes().unwrap().is_empty(),
        "the refused node left no record"
    );
    assert_eq!(
        store.decisions().unwrap().len(),
        1,
        "the refusal is in the database"
    );
}

#[test]
fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_state(dir.path());
    let node = boot("plain", &BOOT);
    let (m, key) = manifest(&replayed(&node), sysinit);
    let ak = Attester::with_tcti(&node.tpm.tcti).ak_public().unwrap();
    let make = || -> Arc<dyn Verifier> {
        Arc::new(QemuVtpmVerifier::new(
            m.clone(),
            key.clone(),
            Box::new(EnrolledAks::new([ak.clone()])),
        ))
    };
    {
        let svc = serve(dir.path(), make());
        let c = client(&svc.addr, dir.path(), &node);
        let Response::Joined(j) = c.call(&announce(1, "10.0.2.15")).unwrap() else {
            panic!()
        };
        assert!(!j.rejoin);
        svc.stop();
    }
    // A new service on the same state directory.
    let svc = serve(dir.path(), make());
    let c = client(&svc.addr, dir.path(), &node);
    let Response::Joined(j) = c.call(&announce(5, "10.0.2.15")).unwrap() else {
        panic!()
    };
    assert!(j.rejoin, "the node is known after the restart");
    assert_eq!(j.node, "node-1");
    assert_eq!(j.overlay, "10.244.0.1/32");
    let Response::DiskKey { key: k } = c
        .call(&Request::DiskKey {
            disk_uuid: UUID_A.into(),
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(k.expose())
            .unwrap(),
        disk_key(&cluster.master_secret, UUID_A, &fingerprint(&ak)).to_vec()
    );
}

#[test]
fn a_node_whose_services_run_gets_no_keys() {
    let dir = tempfile::tempdir().unwrap();
    cluster_state(dir.path());
    let mut events = BOOT.to_vec();
    events.push(RuntimeEvent::Phase(Phase::Ready));
    let running = boot("plain", &events);
    let fresh = boot("plain", &BOOT);
    // The release publishes the image at both phases, signed with one key.
    let (signer, _) = nacre_measure::sign::PemSigner::generate().unwrap();
    let key = nacre_measure::sign::PublicKey::from_spki(
        &nacre_measure::sign::BlobSigner::public_key_spki(&signer),
    )
    .unwrap();
    let at_sysinit = manifest_signed_by(&replayed(&fresh), sysinit, &signer);
    let at_ready = manifest_signed_by(
        &replayed(&running),
        |m| m.phase = Some("ready".into()),
        &signer,
    );
    let aks = [&running, &fresh]
        .iter()
        .map(|n| Attester::with_tcti(&n.tpm.tcti).ak_public().unwrap())
        .collect::<Vec<_>>();
    let verifier: Arc<dyn Verifier> = Arc::new(QemuVtpmVerifier::with_manifests(
        vec![at_sysinit, at_ready],
        key,
        Box::new(EnrolledAks::new(aks)),
    ));
    let svc = serve(dir.path(), verifier);
    // PCR 11 says `ready`: attested fine, but no join and no disk key.
    let c = client(&svc.addr, dir.path(), &running);
    let e = refusal(c.call(&announce(4, "10.0.2.30")));
    assert!(e.contains("phase ready; allowed: sysinit"), "{e}");
    let e = refusal(c.call(&Request::DiskKey {
        disk_uuid: UUID_A.into(),
    }));
    assert!(e.contains("phase ready; allowed: sysinit"), "{e}");
    // The same image before its services start joins.
    let c = client(&svc.addr, dir.path(), &fresh);
    assert!(matches!(
        c.call(&announce(5, "10.0.2.31")).unwrap(),
        Response::Joined(_)
    ));
}

/// The service on an attested control-plane node: it proves itself with its own TPM evidence
/// (mutual attested TLS) instead of a CA certificate; a node whose expectation of the service's
/// measurements is not met refuses to talk to it.
#[test]
fn the_service_in_the_cluster_attests_itself_to_nodes() {
    let dir = tempfile::tempdir().unwrap();
    cluster_state(dir.path());
    let control_plane = boot("plain", &BOOT);
    let node = boot("plain", &BOOT);
    let quotes = Arc::new(AtomicUsize::new(0));
    let (addr, service) =
        attested_service_counting(dir.path(), &control_plane, &node, quotes.clone());
    let quoted = || quotes.load(std::sync::atomic::Ordering::SeqCst);

    // A node the service does not admit (not its golden values) costs it no quote: the real
    // server quotes only after it verified the client.
    let stranger = boot("plain", &BOOT[..2]);
    let e = Client::attested(
        &addr,
        Arc::new(QemuVtpmVerifier::new(
            manifest(&replayed(&control_plane), |_| {}).0,
            manifest(&replayed(&control_plane), |_| {}).1,
            Box::new(EnrolledAks::new([Attester::with_tcti(
                &control_plane.tpm.tcti,
            )
            .ak_public()
            .unwrap()])),
        )),
        Arc::new(tpm_attest(&stranger)),
        Duration::from_secs(20),
    )
    .call(&announce(7, "10.0.2.41"))
    .unwrap_err();
    assert!(e.retryable(), "{e}");
    assert_eq!(quoted(), 0, "the service quoted for a client it refused");

    // What nodes expect of the service: the control plane's golden values and its AK.
    let cp_ak = Attester::with_tcti(&control_plane.tpm.tcti)
        .ak_public()
        .unwrap();
    let expect = |tweak: &dyn Fn(&mut nacre_measure::manifest::Manifest)| -> Arc<dyn Verifier> {
        let (m, k) = manifest(&replayed(&control_plane), tweak);
        Arc::new(QemuVtpmVerifier::new(
            m,
            k,
            Box::new(EnrolledAks::new([cp_ak.clone()])),
        ))
    };
    let node_attest = || Arc::new(tpm_attest(&node));
    let c = Client::attested(
        &addr,
        expect(&|_| {}),
        node_attest(),
        Duration::from_secs(20),
    );
    let Response::Joined(joined) = c.call(&announce(6, "10.0.2.40")).unwrap() else {
        panic!("the node was not admitted")
    };
    assert_eq!(quoted(), 1, "one quote for the admitted node");
    // A service whose PCR 11 is not what the node expects: the node does not trust it (it is
    // not authenticated, so this is a transport error: retried until the node's timeout).
    let wrong = expect(&|m| {
        m.measurements.get_mut(&11).unwrap().expected = vec![0xee; 32];
    });
    let c = Client::attested(&addr, wrong, node_attest(), Duration::from_secs(20));
    match c.call(&announce(6, "10.0.2.40")) {
        Err(e @ CallError::Unreachable { .. }) => {
            assert!(e.retryable());
            assert!(
                e.to_string()
                    .contains("the service's evidence is refused: measurements"),
                "{e}"
            );
        }
        other => panic!("expected the node to refuse the service, got {other:?}"),
    }
    let before = quoted();

    // Once removed, the same node (its AK proven again) gets no quote: the tombstone is
    // checked before the service attests itself. Not authenticated, so retried by the node.
    service.remove_node(&joined.node, "test").unwrap();
    let c = Client::attested(
        &addr,
        expect(&|_| {}),
        node_attest(),
        Duration::from_secs(20),
    );
    let e = c.call(&announce(6, "10.0.2.40")).unwrap_err();
    assert!(e.retryable(), "{e}");
    assert_eq!(quoted(), before, "the service quoted for a removed node");
    // The refusal is recorded just after the connection closed.
    let refused =
        (0..200).find_map(|_| {
            let found =
                service.store().decisions().unwrap().into_iter().find(|d| {
                    d.outcome == "refused" && d.detail.contains("removed from the cluster")
                });
            if found.is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
            found
        });
    let refused = refused.expect("no refusal of the removed node recorded");
    assert_eq!(refused.check.as_deref(), Some("policy"), "{refused:?}");
}

/// In-cluster mode, checked the way the service checks nodes
/// (`nacre_attestation::incluster::ServiceVerifier`, over mutual attested TLS): a node joins a
/// running (`ready`) service that is a member of its cluster (PCR 15: the cluster id), and
/// refuses one of another cluster or one not in the running phase.
#[test]
fn nodes_check_the_in_cluster_service_phase_and_cluster() {
    use nacre_attestation::incluster::{ClusterIdentity, ServiceVerifier};
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_state(dir.path());
    let mut events = BOOT.to_vec();
    events.push(RuntimeEvent::ClusterId(cluster.cluster_id));
    events.push(RuntimeEvent::Phase(Phase::Ready));
    let control_plane = boot("plain", &events);
    let node = boot("plain", &BOOT);
    let addr = attested_service(dir.path(), &control_plane, &node);

    let cp_ak = Attester::with_tcti(&control_plane.tpm.tcti)
        .ak_public()
        .unwrap();
    let (m, k) = manifest(&replayed(&control_plane), |m| {
        m.phase = Some("ready".into())
    });
    let expect = |id: [u8; 32], phases: &[&str]| -> Arc<dyn Verifier> {
        Arc::new(ServiceVerifier {
            platforms: Arc::new(nacre_attestation::ByPlatform {
                qemu_vtpm: Some(Box::new(QemuVtpmVerifier::new(
                    m.clone(),
                    k.clone(),
                    Box::new(EnrolledAks::new([cp_ak.clone()])),
                ))),
                ..Default::default()
            }),
            phases: phases.iter().map(|p| p.to_string()).collect(),
            cluster: ClusterIdentity {
                cluster_id: Some(id),
                ..Default::default()
            },
        })
    };
    let node_attest = || Arc::new(tpm_attest(&node));
    let call = |v: Arc<dyn Verifier>| {
        Client::attested(&addr, v, node_attest(), Duration::from_secs(20))
            .call(&announce(6, "10.0.2.40"))
    };
    assert!(matches!(
        call(expect(cluster.cluster_id, &["ready"])).unwrap(),
        Response::Joined(_)
    ));
    for (v, why) in [
        (expect([0x18; 32], &["ready"]), "member of cluster"),
        (expect(cluster.cluster_id, &["sysinit"]), "at phase ready"),
    ] {
        match call(v) {
            Err(e @ CallError::Unreachable { .. }) => {
                assert!(e.retryable());
                assert!(e.to_string().contains(why), "{e}");
                assert!(e.to_string().contains("not authenticated yet"), "{e}");
            }
            other => panic!("expected the node to refuse the service, got {other:?}"),
        }
    }
}
