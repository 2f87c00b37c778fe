//! nacre-init booted for real: Debian's kernel, direct kernel boot under QEMU (TCG), a GPT disk
//! with an erofs root and its dm-verity hash partition, and a software TPM. Each case is one boot
//! (~6 s); they run two at a time.

mod console;

use nacre_eventlog::runtime::{pcr11_after, Phase};
use nacre_eventlog::HashAlg;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Build the node once per test binary.
fn node() -> &'static Path {
    static NODE: OnceLock<PathBuf> = OnceLock::new();
    NODE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("init-node");
        let status = Command::new(repo().join("tests/init/build-node.sh"))
            .arg(&dir)
            .args(["--init", env!("CARGO_BIN_EXE_nacre-init")])
            .status()
            .expect("tests/init/build-node.sh");
        assert!(status.success(), "building the test node failed");
        dir
    })
}

struct Boot {
    console: String,
}

impl Boot {
    fn has(&self, s: &str) -> bool {
        self.console.contains(s)
    }
}

/// Boot the node (or a variant of its disk) and return the console.
fn boot(name: &str, args: &[&str]) -> Boot {
    let log = node().join(format!("{name}.log"));
    let status = Command::new(repo().join("tests/init/boot.sh"))
        .arg(node())
        .arg(&log)
        .args(args)
        .status()
        .expect("tests/init/boot.sh");
    let console = console::read(&log);
    assert!(
        status.success(),
        "{name}: boot.sh failed ({status}); console:\n{console}"
    );
    Boot { console }
}

/// A copy of the node's disk with one byte of the root partition flipped.
fn tampered_disk(name: &str, offset_in_root: u64) -> PathBuf {
    let src = node().join("disk.img");
    let dst = node().join(format!("{name}.img"));
    let mut disk = std::fs::read(&src).unwrap();
    let root: u64 = std::fs::read_to_string(node().join("root-offset"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    disk[(root + offset_in_root) as usize] ^= 0x01;
    std::fs::write(&dst, disk).unwrap();
    dst
}

#[test]
fn good_boot_reaches_the_payload_with_measured_phases() {
    let b = boot("good", &["--tpm", "--cmdline", "nacre.insecure-platform=1"]);
    assert!(b.has("root verified"), "{}", b.console);
    assert!(b.has("NACRE-CHECK root read-only"), "{}", b.console);
    assert!(b.has("NACRE-PAYLOAD-OK"), "{}", b.console);
    // No firmware measured PCR 11 in a direct kernel boot: it holds exactly the four phases,
    // as the shared event definitions (and so nacre-measure) predict.
    let expected = pcr11_after(&[0u8; 32], Phase::Ready, HashAlg::Sha256).unwrap();
    assert!(
        b.has(&format!("PCR 11 (sha256) = {}", hex::encode(&expected))),
        "{}",
        b.console
    );
    // The runtime log the payload printed replays to that value.
    let log: String = b
        .console
        .split("NACRE-RUNTIME-LOG-BEGIN")
        .nth(1)
        .and_then(|s| s.split("NACRE-RUNTIME-LOG-END").next())
        .unwrap()
        .lines()
        // The supervisor prefixes each line of a service's output with "[payload] ".
        .filter_map(|l| l.split_once("[payload] ").map(|(_, rest)| rest))
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let records = nacre_eventlog::cel::parse(log.as_bytes()).unwrap();
    assert_eq!(records.len(), 4);
    let mut pcr = vec![0u8; 32];
    for r in &records {
        pcr = HashAlg::Sha256
            .extend(&pcr, r.digest(HashAlg::Sha256).unwrap())
            .unwrap();
    }
    assert_eq!(pcr, expected);
}

fn assert_stopped_before_root(b: &Boot, why: &str) {
    assert!(
        !b.has("NACRE-PAYLOAD-OK"),
        "{why}: payload ran:\n{}",
        b.console
    );
    assert!(
        !b.has("stage 2 (verified root)"),
        "{why}: stage 2 ran:\n{}",
        b.console
    );
}

#[test]
fn flipped_byte_in_the_root_metadata_is_refused() {
    // erofs' superblock (offset 1024): read when the root is mounted.
    let disk = tampered_disk("tampered-sb", 1024 + 8);
    let b = boot(
        "tampered-sb",
        &[
            "--tpm",
            "--disk",
            disk.to_str().unwrap(),
            "--cmdline",
            "nacre.insecure-platform=1",
        ],
    );
    assert_stopped_before_root(&b, "tampered superblock");
    assert!(b.has("verity"), "{}", b.console);
    assert!(b.has("FATAL") || b.has("Kernel panic"), "{}", b.console);
}

#[test]
fn flipped_byte_in_a_file_the_node_runs_is_refused() {
    // Inside the payload script's data (found by its contents; erofs may keep it in a block it
    // also reads while resolving paths): dm-verity refuses the block whenever it is read, and
    // panic_on_corruption stops the node.
    let root = std::fs::read(node().join("root.erofs")).unwrap();
    let needle = b"NACRE-CHECK root read-only";
    let at = root
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap() as u64;
    let disk = tampered_disk("tampered-data", at + 3);
    let b = boot(
        "tampered-data",
        &[
            "--tpm",
            "--disk",
            disk.to_str().unwrap(),
            "--cmdline",
            "nacre.insecure-platform=1",
        ],
    );
    assert!(!b.has("NACRE-PAYLOAD-OK"), "{}", b.console);
    assert!(
        b.has("verity") && (b.has("corrupt") || b.has("FATAL")),
        "{}",
        b.console
    );
}

#[test]
fn wrong_root_hash_is_refused() {
    let wrong = "ab".repeat(32);
    let b = boot(
        "wrong-hash",
        &[
            "--tpm",
            "--roothash",
            &wrong,
            "--cmdline",
            "nacre.insecure-platform=1",
        ],
    );
    assert_stopped_before_root(&b, "wrong root hash");
    assert!(b.has("FATAL") || b.has("Kernel panic"), "{}", b.console);
}

#[test]
fn missing_root_hash_is_refused_with_a_clear_reason() {
    let b = boot(
        "no-hash",
        &[
            "--tpm",
            "--roothash",
            "none",
            "--cmdline",
            "nacre.insecure-platform=1",
        ],
    );
    assert_stopped_before_root(&b, "no root hash");
    assert!(
        b.has("FATAL: verified root: no roothash= on the measured command line"),
        "{}",
        b.console
    );
}

#[test]
fn plain_vm_without_the_insecure_flag_is_refused() {
    let b = boot("not-cvm", &["--tpm"]);
    assert_stopped_before_root(&b, "not a CVM");
    assert!(
        b.has("FATAL: detect the platform: not running in a confidential VM"),
        "{}",
        b.console
    );
    // Refused before anything was measured or loaded.
    assert!(!b.has("load kernel modules"), "{}", b.console);
}
