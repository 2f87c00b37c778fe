//! Test support shared by nacre-attestation's and nacre-keyservice's tests: a real swtpm whose
//! PCRs are extended with the events of a real OVMF boot's firmware log (eventlog/tests/fixtures)
//! and nacre-init's runtime events, the way a real boot would, and signed manifests over them.
#![allow(dead_code)]

use nacre_attestation::verify::SignedManifest;
use nacre_eventlog::{CelRecord, EventLog, EventType, HashAlg, RuntimeEvent};
use nacre_measure::manifest::{Expected, ImageRef, Manifest, SCHEMA};
use nacre_measure::sign::{sign_blob, BlobSigner, PemSigner, PublicKey};
use nacre_measure::uki::StubProfile;
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

/// PCRs the test manifests enforce; PCR 0 is warn-only.
pub const ENFORCED: [u32; 4] = [4, 7, 9, 11];
pub const WARN_ONLY: u32 = 0;
pub const QUOTED: [u32; 6] = [0, 4, 7, 9, 11, 15];

pub struct Swtpm {
    pub child: Child,
    pub tcti: String,
    pub _dir: Option<tempfile::TempDir>,
    pub _keep: Option<tempfile::TempDir>,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two consecutive free loopback ports (server, ctrl).
pub fn free_ports() -> u16 {
    for _ in 0..100 {
        let a = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let p = a.local_addr().unwrap().port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair");
}

pub fn swtpm() -> Swtpm {
    swtpm_in(tempfile::tempdir().unwrap())
}

/// A swtpm manufactured like a real TPM: an EK certificate issued by swtpm's local CA whose
/// state lives in `ca` (created on first use, shared by every TPM of a test), and the TCG
/// default decrypt-only ECC EK, or with `allow_signing` the old scheme's signing EK
/// (`--allow-signing`, for the tests that show it is refused).
pub fn swtpm_with_ek(ca: &std::path::Path, allow_signing: bool) -> Swtpm {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ca).unwrap();
    let localca = dir.path().join("localca.conf");
    std::fs::write(
        &localca,
        format!(
            "statedir = {0}\nsigningkey = {0}/signkey.pem\nissuercert = {0}/issuercert.pem\ncertserial = {0}/certserial\n",
            ca.display()
        ),
    )
    .unwrap();
    let setup = dir.path().join("setup.conf");
    std::fs::write(
        &setup,
        format!(
            "create_certs_tool= /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha256\n",
            localca.display()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut cmd = Command::new("swtpm_setup");
    cmd.args(["--tpm2", "--create-ek-cert", "--config"])
        .arg(&setup)
        .arg("--tpmstate")
        .arg(&state);
    if allow_signing {
        cmd.args(["--allow-signing", "--decryption"]);
    }
    let out = cmd
        .output()
        .expect("swtpm_setup (Debian package swtpm-tools)");
    assert!(
        out.status.success(),
        "swtpm_setup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut t = swtpm_state(&state);
    t._keep = Some(dir);
    t
}

/// The operator's EK CA bundle (root and intermediate, PEM) of a local CA directory.
pub fn ek_ca_bundle(ca: &std::path::Path) -> Vec<u8> {
    let mut b = std::fs::read(ca.join("swtpm-localca-rootca-cert.pem")).unwrap();
    b.extend(std::fs::read(ca.join("issuercert.pem")).unwrap());
    b
}

fn swtpm_in(dir: tempfile::TempDir) -> Swtpm {
    let mut t = swtpm_state(dir.path());
    t._dir = Some(dir);
    t
}

fn swtpm_state(state: &std::path::Path) -> Swtpm {
    for _ in 0..5 {
        let port = free_ports();
        let mut child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .args([
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
            ])
            .args([
                "--ctrl",
                &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm (Debian package swtpm)");
        let mut up = false;
        for _ in 0..50 {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            // Probe the control port, leaving the server port's single client slot free.
            if TcpStream::connect(("127.0.0.1", port + 1)).is_ok() {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if up {
            std::thread::sleep(Duration::from_millis(100));
            return Swtpm {
                child,
                tcti: format!("swtpm:host=127.0.0.1,port={port}"),
                _dir: None,
                _keep: None,
            };
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("swtpm did not start");
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../eventlog/tests/fixtures/{name}.eventlog.bin",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

pub fn extend(tcti: &str, digests: &[(u32, Vec<u8>)]) {
    use tss_esapi::handles::PcrHandle;
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use tss_esapi::structures::{Digest, DigestValues};
    let mut ctx =
        tss_esapi::Context::new(tss_esapi::tcti_ldr::TctiNameConf::from_str(tcti).unwrap())
            .unwrap();
    for (pcr, d) in digests {
        let mut v = DigestValues::new();
        v.set(
            HashingAlgorithm::Sha256,
            Digest::try_from(d.clone()).unwrap(),
        );
        let h = PcrHandle::try_from(*pcr).unwrap();
        ctx.execute_with_nullauth_session(|c| c.pcr_extend(h, v))
            .unwrap();
    }
}

/// A node after boot: a swtpm whose PCRs hold the firmware log's events and the runtime log's.
pub struct Node {
    pub tpm: Swtpm,
    pub firmware_log: Vec<u8>,
    pub runtime_log: Vec<CelRecord>,
}

pub fn boot(log_name: &str, runtime: &[RuntimeEvent]) -> Node {
    boot_on(swtpm(), log_name, runtime)
}

/// The same boot on a given TPM.
pub fn boot_on(tpm: Swtpm, log_name: &str, runtime: &[RuntimeEvent]) -> Node {
    let firmware_log = fixture(log_name);
    let log = EventLog::parse(&firmware_log).unwrap();
    let mut digests: Vec<(u32, Vec<u8>)> = log
        .events
        .iter()
        .filter(|e| e.event_type != EventType::NoAction)
        .map(|e| (e.pcr, e.digest(HashAlg::Sha256).unwrap().to_vec()))
        .collect();
    let runtime_log: Vec<CelRecord> = runtime
        .iter()
        .enumerate()
        .map(|(i, e)| e.to_cel(i as u64, &[HashAlg::Sha256]).unwrap())
        .collect();
    digests.extend(
        runtime_log
            .iter()
            .map(|r| (r.pcr, r.digests[0].digest.clone())),
    );
    extend(&tpm.tcti, &digests);
    Node {
        tpm,
        firmware_log,
        runtime_log,
    }
}

pub fn replayed(node: &Node) -> nacre_eventlog::PcrBank {
    let log = EventLog::parse(&node.firmware_log).unwrap();
    nacre_eventlog::replay_banks(&log, &node.runtime_log, &[HashAlg::Sha256])
        .unwrap()
        .remove(0)
}

/// A manifest over the replayed values (ENFORCED enforced, PCR 0 warn-only), signed.
pub fn manifest(
    values: &nacre_eventlog::PcrBank,
    tweak: impl Fn(&mut Manifest),
) -> (SignedManifest, PublicKey) {
    let (signer, _) = PemSigner::generate().unwrap();
    let key = PublicKey::from_spki(&signer.public_key_spki()).unwrap();
    (manifest_signed_by(values, tweak, &signer), key)
}

/// The same, signed with `signer` (several manifests under one release key).
pub fn manifest_signed_by(
    values: &nacre_eventlog::PcrBank,
    tweak: impl Fn(&mut Manifest),
    signer: &PemSigner,
) -> SignedManifest {
    let mut measurements = BTreeMap::new();
    for p in ENFORCED {
        measurements.insert(
            p,
            Expected {
                expected: values.get(p).unwrap().to_vec(),
                warn_only: false,
            },
        );
    }
    measurements.insert(
        WARN_ONLY,
        Expected {
            expected: values.get(WARN_ONLY).unwrap().to_vec(),
            warn_only: true,
        },
    );
    let mut m = Manifest {
        schema: SCHEMA.into(),
        image: ImageRef {
            reference: "nacre-test".into(),
            version: "0.0.0".into(),
            variant: "qemu-vtpm".into(),
            uki_sha256: "00".repeat(32),
            roothash: None,
        },
        alg: HashAlg::Sha256,
        stub: StubProfile::V252,
        secure_boot: false,
        phase: Some("enter-initrd".into()),
        not_after: None,
        measurements,
        events: vec![],
        snp: vec![],
        tdx: None,
    };
    tweak(&mut m);
    signed(&m, signer)
}

/// `m` as published: its JSON and `signer`'s signature over it.
pub fn signed(m: &Manifest, signer: &PemSigner) -> SignedManifest {
    let json = m.to_json();
    let sig = sign_blob(signer, &json).unwrap();
    SignedManifest {
        json,
        signature_b64: sig.into_bytes(),
    }
}

/// Writes `data` to a new owner-readable, owner-writable NV index (512-byte chunks), as a
/// cloud's vTPM holds its reports, templates and certificates.
pub fn write_nv(ctx: &mut tss_esapi::Context, index: u32, data: &[u8]) {
    use tss_esapi::attributes::NvIndexAttributesBuilder;
    use tss_esapi::handles::NvIndexTpmHandle;
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
    use tss_esapi::structures::{MaxNvBuffer, NvPublicBuilder};
    let nv_public = NvPublicBuilder::new()
        .with_nv_index(NvIndexTpmHandle::new(index).unwrap())
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(
            NvIndexAttributesBuilder::new()
                .with_owner_write(true)
                .with_owner_read(true)
                .build()
                .unwrap(),
        )
        .with_data_area_size(data.len())
        .build()
        .unwrap();
    let handle = ctx
        .execute_with_nullauth_session(|c| c.nv_define_space(Provision::Owner, None, nv_public))
        .unwrap();
    for (i, chunk) in data.chunks(512).enumerate() {
        let buf = MaxNvBuffer::try_from(chunk.to_vec()).unwrap();
        ctx.execute_with_nullauth_session(|c| {
            c.nv_write(NvAuth::Owner, handle, buf, (i * 512) as u16)
        })
        .unwrap();
    }
}

// ---- SEV-SNP: the chain made in the tests (tests/fixtures/snp/test-made, NOT AMD's keys). ----

/// A file of attestation/tests/fixtures/snp.
pub fn snp_file(name: &str) -> Vec<u8> {
    let p = format!(
        "{}/../attestation/tests/fixtures/snp/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// AMD roots holding only the test-made Milan ARK, ASK and ASVK.
pub fn test_made_roots() -> nacre_attestation::snp::AmdRoots {
    use nacre_attestation::snp::{AmdRoots, Generation};
    let mut r = AmdRoots::empty();
    r.set(
        Generation::Milan,
        &snp_file("test-made/test-made-ark.pem"),
        &snp_file("test-made/test-made-ask.pem"),
        Some(&snp_file("test-made/test-made-asvk.pem")),
    )
    .unwrap();
    r
}

/// `r` (an attestation report) signed again by the test-made VCEK: ECDSA P-384 over its first
/// 0x2A0 bytes, r and s little-endian in the signature field at 0x2A0.
pub fn signed_by_test_vcek(mut r: Vec<u8>) -> Vec<u8> {
    use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P384_SHA384_FIXED_SIGNING,
        &snp_file("test-made/test-made-vcek.pk8"),
        &rng,
    )
    .unwrap();
    let sig = key.sign(&rng, &r[..0x2A0]).unwrap();
    let sig = sig.as_ref();
    r[0x2A0..0x4A0].fill(0);
    for (i, c) in [&sig[..48], &sig[48..]].into_iter().enumerate() {
        for (j, b) in c.iter().rev().enumerate() {
            r[0x2A0 + i * 72 + j] = *b;
        }
    }
    r
}

/// milan-v3-report.bin with REPORT_DATA set to `data`, re-signed by the test-made VCEK (whose
/// hwID and TCB are that report's chip id and REPORTED_TCB).
pub fn test_signed_report(data: [u8; 64]) -> Vec<u8> {
    let mut r = snp_file("milan-v3-report.bin");
    r[0x50..0x90].copy_from_slice(&data);
    signed_by_test_vcek(r)
}
