//! The TPM-sealed key source against swtpm on the host (the node uses /dev/tpmrm0; the same
//! tss-esapi code talks to swtpm's socket through the swtpm TCTI here).

use nacre_statedisk::keysource::KeySource;
use nacre_statedisk::tpm::TpmSealed;
use std::process::{Child, Command};
use std::time::Duration;

struct Swtpm {
    child: Child,
    tcti: String,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn swtpm(name: &str, port: u16) -> Swtpm {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("swtpm-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
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
    }
}

fn extend_pcr11(tcti: &str) {
    use std::str::FromStr;
    use tss_esapi::handles::PcrHandle;
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use tss_esapi::structures::{Digest, DigestValues};
    let mut ctx =
        tss_esapi::Context::new(tss_esapi::tcti_ldr::TctiNameConf::from_str(tcti).unwrap())
            .unwrap();
    let mut v = DigestValues::new();
    v.set(
        HashingAlgorithm::Sha256,
        Digest::try_from(vec![0xab; 32]).unwrap(),
    );
    ctx.execute_with_nullauth_session(|c| c.pcr_extend(PcrHandle::Pcr11, v))
        .unwrap();
}

#[test]
fn sealed_key_unseals_under_the_same_pcr_11_only() {
    let tpm = swtpm("seal", 23211);
    let mut new = TpmSealed::with_tcti(&tpm.tcti);
    let key = new
        .disk_key("3f12551b-d978-47d1-a7b5-41cd387d027e")
        .unwrap();
    assert_eq!(key.len(), 64);
    let mut token = new.new_token().unwrap().expect("a token");
    token.insert("keyslots".into(), serde_json::json!(["0"]));

    // Next boot, same PCR 11: the same key.
    let mut again = TpmSealed::with_tcti(&tpm.tcti);
    again.use_token(&token).unwrap();
    assert_eq!(
        *again
            .disk_key("3f12551b-d978-47d1-a7b5-41cd387d027e")
            .unwrap(),
        *key
    );
    assert!(again.new_token().unwrap().is_none());

    // PCR 11 moved on (another UKI, or a later phase): refused.
    extend_pcr11(&tpm.tcti);
    let mut moved = TpmSealed::with_tcti(&tpm.tcti);
    moved.use_token(&token).unwrap();
    let e = moved.disk_key("x").unwrap_err().to_string();
    assert!(e.contains("unsealing the disk key"), "{e}");

    // Another TPM (another owner seed) cannot load the sealed object at all.
    let other = swtpm("other", 23221);
    let mut foreign = TpmSealed::with_tcti(&other.tcti);
    foreign.use_token(&token).unwrap();
    let e = foreign.disk_key("x").unwrap_err().to_string();
    assert!(
        e.contains("loading the sealed object") || e.contains("unsealing"),
        "{e}"
    );

    // A token with a field nacre does not write is refused before the TPM is asked.
    let mut odd = token.clone();
    odd.insert("pin".into(), serde_json::json!(true));
    assert!(TpmSealed::with_tcti(&tpm.tcti).use_token(&odd).is_err());
}
