//! Credential activation in the join protocol, over loopback with real swtpms manufactured with
//! swtpm's local CA (EK certificate, TCG default decrypt-only EK): a node whose AK the service
//! trusts through its EK certificate is served only after it activated the service's
//! credential; a node that cannot is refused; and the same the other way round (a node checking
//! an in-cluster service).

#[path = "../../attestation/tests/support/mod.rs"]
mod support;

mod common;

use base64::Engine;
use nacre_attestation::atls::{Attest, TpmAttest};
use nacre_attestation::credential::CredentialChallenge;
use nacre_attestation::ek::EkCertified;
use nacre_attestation::join::{CallError, Client, Request, Response, WgAnnounce};
use nacre_attestation::tpm::Attester;
use nacre_attestation::{Evidence, QemuVtpmVerifier, Verifier};
use nacre_eventlog::{Phase, RuntimeEvent};
use nacre_keyservice::server::{load_identity, Server};
use nacre_keyservice::store::{Decision, Store, DB_FILE};
use nacre_keyservice::{tls, Service};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

const BOOT: [RuntimeEvent; 3] = [
    RuntimeEvent::Phase(Phase::EnterInitrd),
    RuntimeEvent::Phase(Phase::LeaveInitrd),
    RuntimeEvent::Phase(Phase::Sysinit),
];

fn cluster_state(dir: &Path) {
    common::cluster_state(dir, None);
}

fn service(dir: &Path) -> (Arc<Service>, Arc<Mutex<Vec<Decision>>>) {
    let decisions = Arc::new(Mutex::new(Vec::new()));
    let d = decisions.clone();
    let store = Store::open(&dir.join(DB_FILE)).unwrap();
    let s = Service::new(
        store,
        Box::new(move |x: &Decision| d.lock().unwrap().push(x.clone())),
    )
    .unwrap();
    (Arc::new(s), decisions)
}

fn run(server: Server) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Arc::new(server);
    std::thread::spawn(move || server.run(listener, Arc::new(AtomicBool::new(false))));
    addr
}

fn attest(node: &Node) -> TpmAttest {
    TpmAttest {
        attester: Attester::with_tcti(&node.tpm.tcti),
        pcrs: QUOTED.to_vec(),
        firmware_log: node.firmware_log.clone(),
        runtime_log: node.runtime_log.clone(),
    }
}

/// A node (or service) whose evidence is genuine but that answers credential challenges with
/// something else than its TPM's answer (as a software AK would have to).
/// An attester that counts the evidence it makes (each a TPM quote).
struct Counting(TpmAttest, Arc<std::sync::atomic::AtomicUsize>);

impl Attest for Counting {
    fn evidence(&self, nonce: &[u8], tls_spki: &[u8]) -> Result<Evidence, String> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.evidence(nonce, tls_spki)
    }
    fn activate_credential(&self, c: &CredentialChallenge) -> Result<Vec<u8>, String> {
        self.0.activate_credential(c)
    }
}

struct NoActivation(TpmAttest);

impl Attest for NoActivation {
    fn evidence(&self, nonce: &[u8], tls_spki: &[u8]) -> Result<Evidence, String> {
        self.0.evidence(nonce, tls_spki)
    }
    fn activate_credential(&self, _c: &CredentialChallenge) -> Result<Vec<u8>, String> {
        Ok(vec![0x42; 32])
    }
}

fn join() -> Request {
    Request::Join {
        wireguard: WgAnnounce {
            public_key: base64::engine::general_purpose::STANDARD.encode([6; 32]),
            underlay: "10.0.2.40".parse().unwrap(),
            listen_port: 51820,
        },
    }
}

fn ek_verifier(node: &Node, ca: &Path) -> Arc<dyn Verifier> {
    let (m, k) = manifest(&replayed(node), |m| m.phase = Some("sysinit".into()));
    Arc::new(QemuVtpmVerifier::new(
        m,
        k,
        Box::new(EkCertified::from_pem(&ek_ca_bundle(ca)).unwrap()),
    ))
}

#[test]
fn a_node_trusted_through_its_ek_is_served_only_after_activation() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ekca");
    cluster_state(dir.path());
    let node = boot_on(swtpm_with_ek(&ca, false), "plain", &BOOT);
    let (svc, decisions) = service(dir.path());
    let (chain, key) = load_identity(dir.path()).unwrap();
    let addr = run(Server::new(
        svc.clone(),
        ek_verifier(&node, &ca),
        chain,
        key,
    ));
    let svc_ca = std::fs::read(dir.path().join(tls::CA_CERT)).unwrap();

    let t0 = std::time::Instant::now();
    let c = Client::new(
        &addr,
        &svc_ca,
        Arc::new(attest(&node)),
        Duration::from_secs(20),
    )
    .unwrap();
    let r = c.call(&join()).unwrap();
    eprintln!("join with credential activation: {:?}", t0.elapsed());
    assert!(matches!(r, Response::Joined(_)), "{r:?}");

    // Genuine evidence, but the credential does not come back: refused, nothing served.
    let c = Client::new(
        &addr,
        &svc_ca,
        Arc::new(NoActivation(attest(&node))),
        Duration::from_secs(20),
    )
    .unwrap();
    match c.call(&Request::Peers {}) {
        Err(e @ CallError::Refused { .. }) => {
            assert!(e.to_string().contains("credential"), "{e}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let d = decisions.lock().unwrap().clone();
    let last = d.last().unwrap();
    assert_eq!(
        last.check.as_deref(),
        Some("credential activation"),
        "{last:?}"
    );
    assert_eq!(last.op, "attest");

    // A caller that hands the service a pending acceptance directly gets nothing served.
    let ev = attest(&node).evidence(b"nonce", b"tls").unwrap();
    let pending = ek_verifier(&node, &ca)
        .verify(
            &ev,
            &nacre_attestation::Expectation {
                nonce: b"nonce",
                tls_public_key: b"tls",
                join: nacre_attestation::JoinKind::Either,
            },
        )
        .unwrap();
    assert!(pending.ek_activation.is_some());
    match svc.handle(&pending, "127.0.0.1:9".parse().unwrap(), &join()) {
        Response::Refused { reason } => {
            assert!(reason.contains("credential activation"), "{reason}")
        }
        other => panic!("a pending acceptance was served: {other:?}"),
    }
}

#[test]
fn an_in_cluster_service_trusted_through_its_ek_proves_itself_to_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ekca");
    cluster_state(dir.path());
    let control_plane = boot_on(swtpm_with_ek(&ca, false), "plain", &BOOT);
    let node = boot_on(swtpm_with_ek(&ca, false), "plain", &BOOT);
    let nodes = ek_verifier(&node, &ca);
    let (svc, _) = service(dir.path());
    let quotes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let good = run(Server::attested(
        svc.clone(),
        nodes.clone(),
        Arc::new(Counting(attest(&control_plane), quotes.clone())),
    ));
    let quoted = || quotes.load(std::sync::atomic::Ordering::SeqCst);
    let (m, k) = manifest(&replayed(&control_plane), |_| {});
    let the_service: Arc<dyn Verifier> = Arc::new(QemuVtpmVerifier::new(
        m,
        k,
        Box::new(EkCertified::from_pem(&ek_ca_bundle(&ca)).unwrap()),
    ));
    // Both directions activate: the node challenges the service, the service the node.
    let c = Client::attested(
        &good,
        the_service.clone(),
        Arc::new(attest(&node)),
        Duration::from_secs(20),
    );
    let r = c.call(&join()).unwrap();
    assert!(matches!(r, Response::Joined(_)), "{r:?}");
    assert_eq!(quoted(), 1);

    // A node with genuine evidence whose AK cannot be proven (it cannot activate the
    // service's challenge) gets no quote: the service proves the client's AK before quoting.
    let e = Client::attested(
        &good,
        the_service.clone(),
        Arc::new(NoActivation(attest(&node))),
        Duration::from_secs(20),
    )
    .call(&join())
    .unwrap_err();
    assert!(e.retryable(), "{e}");
    assert_eq!(
        quoted(),
        1,
        "the service quoted for a client whose AK was not proven"
    );

    // A service with genuine evidence that cannot activate: the node does not trust it (not
    // authenticated: a transport error, retried until the node's timeout, never served).
    let bad = run(Server::attested(
        svc,
        nodes,
        Arc::new(NoActivation(attest(&control_plane))),
    ));
    let c = Client::attested(
        &bad,
        the_service,
        Arc::new(attest(&node)),
        Duration::from_secs(20),
    );
    match c.call(&join()) {
        Err(e @ CallError::Unreachable { .. }) => {
            assert!(e.retryable());
            assert!(e.to_string().contains("not the one sent"), "{e}");
            assert!(e.to_string().contains("not authenticated yet"), "{e}");
        }
        other => panic!("expected the node to refuse the service, got {other:?}"),
    }
}
