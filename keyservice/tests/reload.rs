//! The `nacre-keyservice serve` binary on loopback with a node whose evidence comes from a real
//! swtpm (see attestation's test support): a manifest revoked while the service runs stops
//! admitting the node after SIGHUP, without a restart, and admits it again when the revocation
//! is withdrawn; a service whose only manifest is expired or below --min-version does not start.

#[path = "../../attestation/tests/support/mod.rs"]
mod support;

mod common;

use base64::Engine;
use nacre_attestation::atls::TpmAttest;
use nacre_attestation::join::{CallError, Client, Request, Response, WgAnnounce};
use nacre_attestation::tpm::Attester;
use nacre_eventlog::{Phase, RuntimeEvent};
use nacre_keyservice::tls;
use nacre_measure::sign::PemSigner;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const BOOT: [RuntimeEvent; 3] = [
    RuntimeEvent::Phase(Phase::EnterInitrd),
    RuntimeEvent::Phase(Phase::LeaveInitrd),
    RuntimeEvent::Phase(Phase::Sysinit),
];

struct Service {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// Wait for a line of the service's output containing `what`, after the first `after`.
    fn wait_for(&self, what: &str, after: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(l) = self.out.lock().unwrap()[after..]
                .iter()
                .find(|l| l.contains(what))
            {
                return l.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no {what:?} in {:#?}", self.out.lock().unwrap());
    }

    fn lines(&self) -> usize {
        self.out.lock().unwrap().len()
    }
}

fn serve(args: &[&str]) -> Service {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nacre-keyservice"))
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let o = out.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stream).lines() {
                let Ok(l) = l else { break };
                eprintln!("service: {l}");
                o.lock().unwrap().push(l);
            }
        });
    }
    Service { child, out }
}

fn cluster_state(dir: &Path) {
    common::cluster_state(dir, None);
}

fn join(addr: &str, dir: &Path, node: &Node) -> Result<Response, CallError> {
    let attest = TpmAttest {
        attester: Attester::with_tcti(&node.tpm.tcti),
        pcrs: QUOTED.to_vec(),
        firmware_log: node.firmware_log.clone(),
        runtime_log: node.runtime_log.clone(),
    };
    let ca = std::fs::read(dir.join(tls::CA_CERT)).unwrap();
    Client::new(addr, &ca, Arc::new(attest), Duration::from_secs(20))
        .unwrap()
        .call(&Request::Join {
            wireguard: WgAnnounce {
                public_key: base64::engine::general_purpose::STANDARD.encode([7; 32]),
                underlay: "10.0.2.15".parse().unwrap(),
                listen_port: 51820,
            },
        })
}

/// The files of a service: state, a signed sysinit manifest of the node (changed by
/// `tweak`), the release key, the node's AK.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(node: &Node, tweak: impl Fn(&mut nacre_measure::manifest::Manifest)) -> Files {
        let dir = tempfile::tempdir().unwrap();
        cluster_state(dir.path());
        let (signer, _) = PemSigner::generate().unwrap();
        let m = manifest_signed_by(
            &replayed(node),
            |m| {
                m.phase = Some("sysinit".into());
                // serve refuses manifests without a lifetime (--allow-no-expiry aside).
                m.not_after = Some("2099-12-31T23:59:59Z".into());
                tweak(m)
            },
            &signer,
        );
        std::fs::write(dir.path().join("m.json"), &m.json).unwrap();
        std::fs::write(dir.path().join("m.json.sig"), &m.signature_b64).unwrap();
        std::fs::write(
            dir.path().join("release.pub"),
            nacre_measure::sign::to_pem(
                "PUBLIC KEY",
                &nacre_measure::sign::BlobSigner::public_key_spki(&signer),
            ),
        )
        .unwrap();
        let ak = Attester::with_tcti(&node.tpm.tcti).ak_public().unwrap();
        std::fs::write(dir.path().join("ak.der"), ak).unwrap();
        Files { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn args(&self, addr: &str) -> Vec<String> {
        [
            "--state",
            &self.path(""),
            "--listen",
            addr,
            "--manifest",
            &self.path("m.json"),
            "--manifest-key",
            &self.path("release.pub"),
            "--ak",
            &self.path("ak.der"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// Write `text` to `path` keeping its modification time: only SIGHUP makes the service see it.
fn write_unseen(path: &str, text: &str) {
    let before = std::fs::metadata(path).unwrap().modified().unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(before)
        .unwrap();
}

fn sighup(s: &Service) {
    let pid = s.child.id() as libc::pid_t;
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
}

#[test]
fn revocation_takes_effect_on_sighup_without_a_restart() {
    let node = boot("plain", &BOOT);
    let f = Files::new(&node, |m| m.image.version = "1.4.0".into());
    let revoked = f.path("revoked.txt");
    std::fs::write(&revoked, "# nothing revoked\n").unwrap();
    let addr = format!("127.0.0.1:{}", free_ports());
    let mut args = f.args(&addr);
    args.extend(["--revoked".into(), revoked.clone()]);
    args.extend(["--min-version".into(), "1.4".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = serve(&args);
    s.wait_for("listening on", 0);
    let started = Instant::now();
    match join(&addr, f.dir.path(), &node).unwrap() {
        Response::Joined(_) => {}
        other => panic!("{other:?}"),
    }
    // Revoke the manifest by its file's digest; the service sees it on SIGHUP.
    let digest =
        nacre_measure::manifest::manifest_digest(&std::fs::read(f.path("m.json")).unwrap());
    write_unseen(&revoked, &format!("{digest} # CVE\n"));
    let n = s.lines();
    sighup(&s);
    let l = s.wait_for("reload (SIGHUP)", n);
    assert!(
        l.contains("skipped") && l.contains("manifest digest"),
        "{l}"
    );
    let e = join(&addr, f.dir.path(), &node).unwrap_err();
    assert!(matches!(e, CallError::Refused { .. }), "{e:?}");
    s.wait_for("no golden manifest configured", n);
    // Withdrawn: admitted again, by the same process.
    let n = s.lines();
    write_unseen(&revoked, "");
    sighup(&s);
    s.wait_for("reload (SIGHUP): manifest", n);
    match join(&addr, f.dir.path(), &node).unwrap() {
        Response::Joined(_) => {}
        other => panic!("{other:?}"),
    }
    // Revoked by the UKI's digest, seen by the file's change (no signal).
    let n = s.lines();
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&revoked, "00".repeat(32)).unwrap();
    let l = s.wait_for("reload (a manifest or the revocation list changed)", n);
    assert!(l.contains("uki_sha256"), "{l}");
    assert!(join(&addr, f.dir.path(), &node).is_err());
    assert!(s
        .out
        .lock()
        .unwrap()
        .iter()
        .all(|l| !l.contains("panicked")));
    eprintln!("reloads took {:?}", started.elapsed());
}

#[test]
fn a_service_with_only_refused_manifests_does_not_start() {
    let node = boot("plain", &BOOT);
    let addr = format!("127.0.0.1:{}", free_ports());
    let expired = Files::new(&node, |m| {
        m.image.version = "2.0.0".into();
        m.not_after = Some("2020-01-01T00:00:00Z".into());
    });
    let a = expired.args(&addr);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut s = serve(&a);
    assert!(!s.child.wait().unwrap().success());
    s.wait_for("no manifest is left to admit nodes", 0);
    s.wait_for("manifest expired", 0);
    let old = Files::new(&node, |m| m.image.version = "1.2.0".into());
    let mut a = old.args(&addr);
    a.extend(["--min-version".into(), "v1.3".into()]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut s = serve(&a);
    assert!(!s.child.wait().unwrap().success());
    s.wait_for("below the minimum version", 0);
}
