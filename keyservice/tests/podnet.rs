//! Pod ranges from the key service (issue 11): a cluster made by `nacre-keyservice init
//! --pod-cidr ...` hands each node that joins (real swtpm evidence over attested TLS) its own
//! pod range, routes every peer's pod range through that peer's tunnel (`allowed_ips`), keeps a
//! node's range across a restart of the service and a rejoin, and gives kubelet the API
//! server's CA, the cluster DNS address and domain. A database without a pod network still
//! serves as before; `init` refuses bad pod, service, DNS and CA settings, writing nothing.

#[path = "../../attestation/tests/support/mod.rs"]
mod support;

mod common;

use base64::Engine;
use nacre_attestation::atls::TpmAttest;
use nacre_attestation::join::{Client, Joined, PodNetwork, Request, Response, WgAnnounce};
use nacre_attestation::tpm::Attester;
use nacre_attestation::{EnrolledAks, QemuVtpmVerifier, Verifier};
use nacre_eventlog::{HashAlg, Phase, RuntimeEvent};
use nacre_keyservice::server::{load_identity, Server};
use nacre_keyservice::store::{Decision, Store, DB_FILE};
use nacre_keyservice::{tls, Service};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use support::*;

const BOOT: [RuntimeEvent; 3] = [
    RuntimeEvent::Phase(Phase::EnterInitrd),
    RuntimeEvent::Phase(Phase::LeaveInitrd),
    RuntimeEvent::Phase(Phase::Sysinit),
];

fn ca_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k8s-root-ca.pem")
}

fn keyservice(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nacre-keyservice"))
        .args(args)
        .output()
        .unwrap()
}

struct Running {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn serve(dir: &Path, verifier: Arc<dyn Verifier>) -> Running {
    let store = Store::open(&dir.join(DB_FILE)).unwrap();
    let service = Arc::new(Service::new(store, Box::new(|_: &Decision| {})).unwrap());
    let (chain, key) = load_identity(dir).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Arc::new(Server::new(service, verifier, chain, key));
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let thread = std::thread::spawn(move || server.run(listener, st));
    Running {
        addr,
        stop,
        thread: Some(thread),
    }
}

fn client(addr: &str, dir: &Path, node: &Node) -> Client {
    let ca = std::fs::read(dir.join(tls::CA_CERT)).unwrap();
    let attest = TpmAttest {
        attester: Attester::with_tcti(&node.tpm.tcti),
        pcrs: QUOTED.to_vec(),
        firmware_log: node.firmware_log.clone(),
        runtime_log: node.runtime_log.clone(),
    };
    Client::new(addr, &ca, Arc::new(attest), Duration::from_secs(20)).unwrap()
}

fn join(c: &Client, key: u8, underlay: &str) -> Joined {
    let req = Request::Join {
        wireguard: WgAnnounce {
            public_key: base64::engine::general_purpose::STANDARD.encode([key; 32]),
            underlay: underlay.parse().unwrap(),
            listen_port: 51820,
        },
    };
    match c.call(&req).unwrap() {
        Response::Joined(j) => j,
        other => panic!("not joined: {other:?}"),
    }
}

/// Extend PCR 15 with the cluster id, as nacre-init does after joining, and log it.
fn member(node: &mut Node, id: [u8; 32]) {
    let ev = RuntimeEvent::ClusterId(id);
    let rec = ev
        .to_cel(node.runtime_log.len() as u64, &[HashAlg::Sha256])
        .unwrap();
    extend(&node.tpm.tcti, &[(15, rec.digests[0].digest.clone())]);
    node.runtime_log.push(rec);
}

/// A verifier admitting `nodes` (all booted alike) at phase sysinit.
fn verifier(nodes: &[&Node]) -> impl Fn() -> Arc<dyn Verifier> {
    let (m, key) = manifest(&replayed(nodes[0]), |m| m.phase = Some("sysinit".into()));
    let aks: Vec<Vec<u8>> = nodes
        .iter()
        .map(|n| Attester::with_tcti(&n.tpm.tcti).ak_public().unwrap())
        .collect();
    move || {
        Arc::new(QemuVtpmVerifier::new(
            m.clone(),
            key.clone(),
            Box::new(EnrolledAks::new(aks.clone())),
        ))
    }
}

fn pods(range: &str) -> Option<PodNetwork> {
    Some(PodNetwork {
        pod_range: range.into(),
        pod_cidr: "10.32.0.0/16".into(),
        service_cidr: Some("10.96.0.0/12".into()),
    })
}

#[test]
fn nodes_get_disjoint_pod_ranges_that_peers_route_and_keep_them() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ks");
    let ca = ca_fixture();
    let out = keyservice(&[
        "init",
        "--state",
        state.to_str().unwrap(),
        "--api-server",
        "https://10.0.2.2:6443",
        "--api-server-ca",
        ca.to_str().unwrap(),
        "--pod-cidr",
        "10.32.0.0/16",
        "--service-cidr",
        "10.96.0.0/12",
        "--cluster-dns",
        "10.96.0.10",
        "--endpoint",
        "10.0.2.2:7443",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("pods 10.32.0.0/16 in /24 ranges, services 10.96.0.0/12"),
        "{said}"
    );

    // cluster.toml: the node routes the overlay, pod and service ranges only through wg0.
    let cfg = nacre_cluster::parse(&std::fs::read(state.join("cluster.toml")).unwrap()).unwrap();
    assert_eq!(
        cfg.config.network.cluster_ranges,
        ["10.244.0.0/16", "10.32.0.0/16", "10.96.0.0/12"]
    );

    let mut a = boot("plain", &BOOT);
    let b = boot("plain", &BOOT);
    let make = verifier(&[&a, &b]);
    let cluster_id = Store::open(&state.join(DB_FILE))
        .and_then(|s| s.cluster())
        .map(|c| c.cluster_id);
    let svc = serve(&state, make());
    let ja = join(&client(&svc.addr, &state, &a), 1, "10.0.2.15");
    assert_eq!(ja.overlay, "10.244.0.1/32");
    assert_eq!(ja.pods, pods("10.32.1.0/24"));
    assert!(ja.peers.is_empty());
    // kubelet's data: the CA exactly as given, the DNS address, the default domain.
    assert_eq!(
        ja.kubelet.api_server_ca.as_deref(),
        Some(std::fs::read_to_string(&ca).unwrap().as_str())
    );
    assert_eq!(
        ja.kubelet.api_server.as_deref(),
        Some("https://10.0.2.2:6443")
    );
    assert_eq!(ja.kubelet.cluster_dns.as_deref(), Some("10.96.0.10"));
    assert_eq!(ja.kubelet.cluster_domain, "cluster.local");

    // b gets the next range and routes a's overlay address and pod range through a.
    let jb = join(&client(&svc.addr, &state, &b), 2, "10.0.2.16");
    assert_eq!(jb.overlay, "10.244.0.2/32");
    assert_eq!(jb.pods, pods("10.32.2.0/24"));
    assert_eq!(jb.peers.len(), 1);
    assert_eq!(jb.peers[0].allowed_ips, ["10.244.0.1/32", "10.32.1.0/24"]);

    // a, now a member, sees b's range in its peer set.
    member(&mut a, cluster_id.unwrap());
    let Response::Peers { peers } = client(&svc.addr, &state, &a)
        .call(&Request::Peers {})
        .unwrap()
    else {
        panic!("no peers")
    };
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].allowed_ips, ["10.244.0.2/32", "10.32.2.0/24"]);
    svc.stop();

    // After a restart of the service, b rejoins (a new WireGuard key): same range.
    let svc = serve(&state, make());
    let jb = join(&client(&svc.addr, &state, &b), 3, "10.0.2.16");
    assert!(jb.rejoin);
    assert_eq!(jb.pods, pods("10.32.2.0/24"));
    assert_eq!(jb.peers[0].allowed_ips, ["10.244.0.1/32", "10.32.1.0/24"]);
    svc.stop();

    // `nodes` lists each node's range.
    let out = keyservice(&["nodes", "--state", state.to_str().unwrap()]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("node-1 10.244.0.1/32 pods 10.32.1.0/24"),
        "{listed}"
    );
    assert!(
        listed.contains("node-2 10.244.0.2/32 pods 10.32.2.0/24"),
        "{listed}"
    );
}

/// A database without a pod network (every database made before pod ranges existed): joins
/// and peers as before, one /32 per peer, no pod network, no CA or DNS for kubelet.
#[test]
fn a_cluster_without_a_pod_network_serves_as_before() {
    let dir = tempfile::tempdir().unwrap();
    common::cluster_state(dir.path(), Some("https://10.0.2.2:6443"));
    let a = boot("plain", &BOOT);
    let b = boot("plain", &BOOT);
    let make = verifier(&[&a, &b]);
    let svc = serve(dir.path(), make());
    let ja = join(&client(&svc.addr, dir.path(), &a), 1, "10.0.2.15");
    assert_eq!(ja.pods, None);
    let jb = join(&client(&svc.addr, dir.path(), &b), 2, "10.0.2.16");
    assert_eq!(jb.pods, None);
    assert_eq!(jb.peers[0].allowed_ips, ["10.244.0.1/32"]);
    assert_eq!(jb.kubelet.api_server_ca, None);
    assert_eq!(jb.kubelet.cluster_dns, None);
    svc.stop();
    let store = Store::open(&dir.path().join(DB_FILE)).unwrap();
    assert!(store
        .nodes()
        .unwrap()
        .iter()
        .all(|(_, r)| r.pod_range.is_none()));
}

#[test]
fn init_refuses_bad_pod_service_dns_and_ca_settings_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let key = dir.path().join("key.pem");
    // A PEM block of another kind (a private key label around the fixture's bytes).
    let ca = std::fs::read_to_string(ca_fixture()).unwrap();
    std::fs::write(&key, ca.replace("CERTIFICATE", "PRIVATE KEY")).unwrap();
    let truncated = dir.path().join("truncated.pem");
    let lines: Vec<&str> = ca.lines().collect();
    let mut cut = lines[..lines.len() - 3].join("\n");
    cut.push_str("\n-----END CERTIFICATE-----\n");
    std::fs::write(&truncated, cut).unwrap();
    let trailing = dir.path().join("trailing.pem");
    std::fs::write(&trailing, format!("{ca}rm -rf /\n")).unwrap();
    let api = ["--api-server", "https://10.0.2.2:6443"];
    let ca_path = ca_fixture();
    let ca_s = ca_path.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--pod-cidr", "10.32.0.1/16"], "host bits are set"),
        (vec!["--pod-cidr", "10.32.0.0"], "--pod-cidr \"10.32.0.0\""),
        (vec!["--pod-cidr", "fd00::/48"], "IPv4 only"),
        (vec!["--pod-cidr", "10.244.128.0/17"], "overlap"),
        (
            vec!["--pod-cidr", "10.32.0.0/16", "--pod-prefix", "16"],
            "--pod-prefix 16: must be longer",
        ),
        (
            vec![
                "--pod-cidr",
                "10.32.0.0/16",
                "--service-cidr",
                "10.32.0.0/20",
            ],
            "the service CIDR 10.32.0.0/20 and the pod CIDR 10.32.0.0/16 overlap",
        ),
        (
            vec![
                "--pod-cidr",
                "10.32.0.0/16",
                "--service-cidr",
                "10.96.0.0/12",
                "--cluster-dns",
                "10.32.0.10",
            ],
            "--cluster-dns 10.32.0.10 is not inside the service CIDR 10.96.0.0/12",
        ),
        // clap: the flags that make no sense alone.
        (vec!["--pod-prefix", "24"], "--pod-cidr"),
        (vec!["--service-cidr", "10.96.0.0/12"], "--pod-cidr"),
        (
            vec!["--pod-cidr", "10.32.0.0/16", "--cluster-dns", "10.96.0.10"],
            "--service-cidr",
        ),
        (vec!["--api-server-ca", ca_s], "--api-server"),
        (
            [&api[..], &["--api-server-ca", garbage.to_str().unwrap()]].concat(),
            "no PEM CERTIFICATE block",
        ),
        (
            [&api[..], &["--api-server-ca", key.to_str().unwrap()]].concat(),
            "not a CERTIFICATE",
        ),
        (
            [&api[..], &["--api-server-ca", truncated.to_str().unwrap()]].concat(),
            "not an X.509 certificate",
        ),
        (
            [&api[..], &["--api-server-ca", trailing.to_str().unwrap()]].concat(),
            "text after certificate 1",
        ),
        (
            [&api[..], &["--api-server-ca", "/nonexistent/ca.pem"]].concat(),
            "reading --api-server-ca /nonexistent/ca.pem",
        ),
    ];
    for (i, (args, expect)) in cases.iter().enumerate() {
        let state = dir.path().join(format!("s{i}"));
        let mut all = vec!["init", "--state", state.to_str().unwrap()];
        all.extend(args.iter().copied());
        let out = keyservice(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(!state.join(DB_FILE).exists(), "{args:?} wrote a database");
    }
    // The same fixture, accepted: the settings are fine on their own.
    let state = dir.path().join("ok");
    let out = keyservice(
        &[
            &["init", "--state", state.to_str().unwrap()][..],
            &api,
            &["--api-server-ca", ca_s],
            &["--pod-cidr", "10.32.0.0/16", "--pod-prefix", "26"],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = Store::open(&state.join(DB_FILE))
        .unwrap()
        .cluster()
        .unwrap();
    assert_eq!(c.pods.unwrap().pod_prefix, 26);
}
