//! No input makes the UKI parser or the prediction panic (the cargo-fuzz target `uki` does
//! this at depth; this in-tree run keeps CI honest without nightly). A small real UKI is built
//! with scripts/lib/make-uki.sh from systemd-stub 252, using the stub itself as the "kernel"
//! (a real PE), then mutated.

use nacre_measure::efivars::SecureBootVars;
use nacre_measure::predict::{predict, BootConfig};
use std::path::Path;
use std::process::Command;

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

fn small_uki() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("osrel"), "ID=nacre\n").unwrap();
    std::fs::write(p("initrd"), vec![7u8; 1000]).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let status = Command::new(repo.join("scripts/lib/make-uki.sh"))
        .args(["--kernel", STUB, "--initrd"])
        .arg(p("initrd"))
        .args(["--cmdline", "console=ttyS0 roothash=00", "--osrel"])
        .arg(p("osrel"))
        .arg("--out")
        .arg(p("uki.efi"))
        .status()
        .expect("make-uki.sh (scripts/install-deps.sh)");
    assert!(status.success());
    std::fs::read(p("uki.efi")).unwrap()
}

#[test]
fn mutated_ukis_give_errors_not_panics() {
    let uki = small_uki();
    let plain = BootConfig::default();
    let sb = BootConfig {
        secure_boot: SecureBootVars::from_ovmf_varstore(
            &std::fs::read("/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd").unwrap(),
        )
        .unwrap(),
        ..BootConfig::default()
    };
    assert!(predict(&uki, &plain).is_ok());
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let headers = 0x1000.min(uki.len());
    let (mut ok, mut err) = (0, 0);
    for i in 0..4000 {
        let mut m = uki.clone();
        for _ in 0..1 + next() % 4 {
            // Mostly the headers and section table, sometimes anywhere.
            let at = if i % 4 == 0 {
                next() as usize % m.len()
            } else {
                next() as usize % headers
            };
            m[at] = next() as u8;
        }
        if i % 50 == 0 {
            m.truncate(next() as usize % m.len());
        }
        let cfg = if i % 3 == 0 { &sb } else { &plain };
        match predict(&m, cfg) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    // The mutations must reach both outcomes, or the test exercises nothing.
    assert!(ok > 100 && err > 100, "ok {ok}, err {err}");
}
