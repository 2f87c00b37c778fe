//! The TPM-sealed key source against swtpm on the host (the node uses /dev/tpmrm0; the same
//! tss-esapi code talks to swtpm's socket through the swtpm TCTI here).

use nacre_eventlog::alg::HashAlg;
use nacre_eventlog::runtime::{Phase, RuntimeEvent};
use nacre_measure::pcrsig;
use nacre_measure::sign::RsaSigner;
use nacre_statedisk::keysource::KeySource;
use nacre_statedisk::tpm::{SignedPolicy, TpmSealed, ANCHOR_INDEX, POLICY_REF};
use std::process::{Child, Command};
use std::time::Duration;

struct Swtpm {
    child: Child,
    tcti: String,
    name: String,
    port: u16,
}

impl Swtpm {
    /// Power-cycle: the same state (seeds, NV), PCRs reset.
    fn reboot(self) -> Swtpm {
        let (name, port) = (self.name.clone(), self.port);
        drop(self);
        spawn_swtpm(&name, port, false)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn swtpm(name: &str, port: u16) -> Swtpm {
    spawn_swtpm(name, port, true)
}

fn spawn_swtpm(name: &str, port: u16, fresh: bool) -> Swtpm {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("swtpm-{name}"));
    if fresh {
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--flags", "startup-clear"])
        .arg("--tpmstate")
        .arg(format!("dir={}", dir.display()))
        .args([
            "--server",
            &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
        ])
        .args([
            "--ctrl",
            &format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
        ])
        .spawn()
        .expect("swtpm");
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The connection check used the one client slot: give swtpm a moment to accept the next.
    std::thread::sleep(Duration::from_millis(200));
    Swtpm {
        child,
        tcti: format!("swtpm:host=127.0.0.1,port={port}"),
        name: name.into(),
        port,
    }
}

fn context(tcti: &str) -> tss_esapi::Context {
    use std::str::FromStr;
    tss_esapi::Context::new(tss_esapi::tcti_ldr::TctiNameConf::from_str(tcti).unwrap()).unwrap()
}

fn extend_pcr11(tcti: &str, digest: &[u8]) {
    use tss_esapi::handles::PcrHandle;
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use tss_esapi::structures::{Digest, DigestValues};
    let mut ctx = context(tcti);
    let mut v = DigestValues::new();
    v.set(
        HashingAlgorithm::Sha256,
        Digest::try_from(digest.to_vec()).unwrap(),
    );
    ctx.execute_with_nullauth_session(|c| c.pcr_extend(PcrHandle::Pcr11, v))
        .unwrap();
}

fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    let mut c = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        c.update(p);
    }
    c.finish().as_ref().to_vec()
}

/// nacre-init's phase events up to sysinit (when the state disk is opened), and `ready`.
fn phase(p: Phase) -> Vec<u8> {
    RuntimeEvent::Phase(p).digest(HashAlg::Sha256).unwrap()
}

/// Boot an "image": PCR 11 gets the image's stub measurement, then the phases up to sysinit.
/// Returns PCR 11 as the TPM now holds it.
fn boot_image(tcti: &str, image: u8) -> Vec<u8> {
    let mut pcr = vec![0u8; 32];
    for d in [
        vec![image; 32],
        phase(Phase::EnterInitrd),
        phase(Phase::LeaveInitrd),
        phase(Phase::Sysinit),
    ] {
        extend_pcr11(tcti, &d);
        pcr = sha256(&[&pcr, &d]);
    }
    pcr
}

/// An RSA PCR-signing key (openssl), as the image's build holds it.
struct PcrKey {
    signer: RsaSigner,
    public_pem: Vec<u8>,
}

fn pcr_key(dir: &std::path::Path, name: &str) -> PcrKey {
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl genrsa");
    let signer = RsaSigner::from_pem_file(&key).unwrap();
    let public_pem = nacre_measure::sign::to_pem("PUBLIC KEY", &signer.public_spki()).into_bytes();
    PcrKey { signer, public_pem }
}

/// The state disk's signature JSON (`nacre-measure export pcrsig --state-disk`: nacre's
/// policyRef) for these PCR 11 values.
fn signature(k: &PcrKey, values: &[&[u8]]) -> Vec<u8> {
    signature_with_ref(k, values, pcrsig::STATE_DISK_POLICY_REF)
}

fn signature_with_ref(k: &PcrKey, values: &[&[u8]], policy_ref: &[u8]) -> Vec<u8> {
    let phases: Vec<(String, Vec<u8>)> = values
        .iter()
        .map(|v| ("sysinit".to_string(), v.to_vec()))
        .collect();
    serde_json::to_vec(
        &pcrsig::sign_pcr11_with_ref(&k.signer, HashAlg::Sha256, &phases, policy_ref).unwrap(),
    )
    .unwrap()
}

fn source(tcti: &str, k: &PcrKey, sig: &[u8]) -> TpmSealed {
    let mut s = TpmSealed::with_tcti(tcti, SignedPolicy::parse(&k.public_pem, sig).unwrap());
    s.forbid_after(vec![phase(Phase::Ready)]);
    s
}

const UUID: &str = "3f12551b-d978-47d1-a7b5-41cd387d027e";

fn seal(s: &mut TpmSealed) -> (Vec<u8>, serde_json::Map<String, serde_json::Value>) {
    let key = s.disk_key(UUID).unwrap();
    assert_eq!(key.len(), 64);
    let mut token = s.new_token().unwrap().expect("a token");
    token.insert("keyslots".into(), serde_json::json!(["0"]));
    (key.to_vec(), token)
}

fn unseal(
    s: &mut TpmSealed,
    token: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<u8>, String> {
    s.use_token(token).map_err(|e| e.to_string())?;
    s.disk_key(UUID)
        .map(|k| k.to_vec())
        .map_err(|e| e.to_string())
}

/// The signed policy: the key survives an image update whose PCR 11 the same key signs, and
/// nothing else opens it (another key's signature, no signature for this PCR 11, a signature
/// the workload could use, another TPM, a header whose object is not the anchored one).
#[test]
fn sealed_key_survives_signed_updates_but_not_substitution() {
    let tmp = tempfile::tempdir().unwrap();
    let image_key = pcr_key(tmp.path(), "image");
    let other_key = pcr_key(tmp.path(), "other");
    let mut tpm = swtpm("seal", 23211);

    // Image v1, first boot: the key is sealed and its object's name anchored in NV.
    let v1 = boot_image(&tpm.tcti, 1);
    let sig1 = signature(&image_key, &[&v1]);
    let (key, token) = seal(&mut source(&tpm.tcti, &image_key, &sig1));
    // The same boot (and every later boot of v1): the same key.
    assert_eq!(
        unseal(&mut source(&tpm.tcti, &image_key, &sig1), &token).unwrap(),
        key
    );

    // Image v2 (another PCR 11 before sysinit), signed by the same key: the disk still opens.
    tpm = tpm.reboot();
    let v2 = boot_image(&tpm.tcti, 2);
    assert_ne!(v1, v2);
    let sig2 = signature(&image_key, &[&v2]);
    assert_eq!(
        unseal(&mut source(&tpm.tcti, &image_key, &sig2), &token).unwrap(),
        key
    );
    // v1's signature does not cover v2's PCR 11.
    let e = unseal(&mut source(&tpm.tcti, &image_key, &sig1), &token).unwrap_err();
    assert!(e.contains("no signature for PCR 11 as it is now"), "{e}");
    // An image signed by another key: its signature file names no entry of the image's key...
    let foreign_sig = signature(&other_key, &[&v2]);
    let e = SignedPolicy::parse(&image_key.public_pem, &foreign_sig).unwrap_err();
    assert!(
        e.contains("no sha256 PCR 11 entry signed by the image's key"),
        "{e}"
    );
    // ...and with that other key as the image's, the sealed object's policy is not its.
    let e = unseal(&mut source(&tpm.tcti, &other_key, &foreign_sig), &token).unwrap_err();
    assert!(
        e.contains("not PolicyAuthorize with the image's PCR public key"),
        "{e}"
    );
    // A signature file that also signs PCR 11 after `ready` (what the workload sees) is refused:
    // the workload could unseal the key.
    let ready = sha256(&[&v2, &phase(Phase::Ready)]);
    let e = unseal(
        &mut source(
            &tpm.tcti,
            &image_key,
            &signature(&image_key, &[&v2, &ready]),
        ),
        &token,
    )
    .unwrap_err();
    assert!(e.contains("after the disk is open"), "{e}");
    // systemd's signature for the same PCR 11 (empty policyRef, as `systemd-measure sign` and
    // `export pcrsig` without --state-disk write) does not open it.
    assert_eq!(pcrsig::STATE_DISK_POLICY_REF, POLICY_REF);
    let e = unseal(
        &mut source(
            &tpm.tcti,
            &image_key,
            &signature_with_ref(&image_key, &[&v2], b""),
        ),
        &token,
    )
    .unwrap_err();
    assert!(e.contains("TPM2_VerifySignature"), "{e}");
    // Not even once the workload runs (PCR 11 after `ready`), with systemd's signature for that
    // value and no check of the file by the key source: the TPM refuses.
    extend_pcr11(&tpm.tcti, &phase(Phase::Ready));
    let mut workload = TpmSealed::with_tcti(
        &tpm.tcti,
        SignedPolicy::parse(
            &image_key.public_pem,
            &signature_with_ref(&image_key, &[&ready], b""),
        )
        .unwrap(),
    );
    let e = unseal(&mut workload, &token).unwrap_err();
    assert!(e.contains("TPM2_VerifySignature"), "{e}");
    tpm = tpm.reboot();
    assert_eq!(boot_image(&tpm.tcti, 2), v2);
    // The signature must verify: a flipped byte in it is refused by the TPM.
    let mut bad: serde_json::Value = serde_json::from_slice(&sig2).unwrap();
    let entry = &mut bad["sha256"][0]["sig"];
    let mut raw = base64_decode(entry.as_str().unwrap());
    raw[10] ^= 1;
    *entry = serde_json::json!(base64_encode(&raw));
    let e = unseal(
        &mut source(&tpm.tcti, &image_key, &serde_json::to_vec(&bad).unwrap()),
        &token,
    )
    .unwrap_err();
    assert!(e.contains("TPM2_VerifySignature"), "{e}");

    // A header planted with another sealed object of this TPM under the same public policy
    // (here: sealed by the node itself before the current disk; an attacker's object fails
    // the same way): not the anchored name, refused. The current one still opens.
    let (key_b, token_b) = seal(&mut source(&tpm.tcti, &image_key, &sig2));
    assert_ne!(key_b, key);
    let e = unseal(&mut source(&tpm.tcti, &image_key, &sig2), &token).unwrap_err();
    assert!(e.contains("is not the one anchored in NV index"), "{e}");
    assert_eq!(
        unseal(&mut source(&tpm.tcti, &image_key, &sig2), &token_b).unwrap(),
        key_b
    );

    // Another TPM (another owner seed) cannot load the sealed object at all.
    let other = swtpm("other", 23221);
    let v = boot_image(&other.tcti, 2);
    assert_eq!(v, v2);
    let e = unseal(&mut source(&other.tcti, &image_key, &sig2), &token_b).unwrap_err();
    assert!(e.contains("loading the sealed object"), "{e}");

    // An anchor index defined by someone else (another public area) is refused when sealing.
    define_foreign_anchor(&other.tcti);
    let mut s = source(&other.tcti, &image_key, &sig2);
    let e = s.disk_key(UUID).unwrap_err().to_string();
    assert!(e.contains("exists with another public area"), "{e}");

    // A token with a field nacre does not write is refused before the TPM is asked.
    let mut odd = token_b.clone();
    odd.insert("pin".into(), serde_json::json!(true));
    assert!(source(&tpm.tcti, &image_key, &sig2)
        .use_token(&odd)
        .is_err());
}

/// NV index ANCHOR_INDEX defined with owner authorization and no policy (an attacker's).
fn define_foreign_anchor(tcti: &str) {
    use tss_esapi::attributes::NvIndexAttributesBuilder;
    use tss_esapi::handles::NvIndexTpmHandle;
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use tss_esapi::interface_types::resource_handles::Provision;
    use tss_esapi::structures::NvPublicBuilder;
    let mut ctx = context(tcti);
    let attrs = NvIndexAttributesBuilder::new()
        .with_owner_write(true)
        .with_owner_read(true)
        .build()
        .unwrap();
    let public = NvPublicBuilder::new()
        .with_nv_index(NvIndexTpmHandle::new(ANCHOR_INDEX).unwrap())
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(attrs)
        .with_data_area_size(34)
        .build()
        .unwrap();
    ctx.execute_with_nullauth_session(|c| c.nv_define_space(Provision::Owner, None, public))
        .unwrap();
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
