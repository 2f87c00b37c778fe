//! The encrypted state disk booted for real: Debian's kernel, direct kernel boot under QEMU
//! (TCG), a second virtio disk with serial "nacre-state", a software TPM whose state is kept
//! across boots (the disk key is sealed to it). Two nodes (two TPMs), each a chain of boots, the
//! two chains on two threads. A second test finds the state disk on NVMe and SCSI by serial, and
//! by `rule = "only-data-disk"` (found, and refused with two data disks).

mod console;

use nacre_statedisk::luks2::{self, classify, DiskState, Header};
use nacre_statedisk::token::TPM_TOKEN_TYPE;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const DISK_SIZE: u64 = 64 << 20;
/// The header area compared and swapped by the tests: nacre's data segment starts at 1 MiB,
/// cryptsetup's default at 16 MiB.
const AREA: usize = 16 << 20;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn work() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("statedisk")
}

const PAYLOAD: &str = r#"#!/bin/sh
# kubelet's stand-in for the state disk tests: /var is the state disk, and what was written
# there on an earlier boot is still there.
echo "NACRE-STATE-MOUNT $(grep ' /var ' /proc/mounts)"
for d in /var/lib/kubelet /var/lib/containerd; do
  [ -d "$d" ] || { echo "NACRE-STATE-FAIL no $d"; exit 1; }
done
if [ -f /var/nacre-test/marker ]; then
  echo "NACRE-STATE-FOUND $(cat /var/nacre-test/marker)"
else
  busybox mkdir -p /var/nacre-test
  id=$(cat /proc/sys/kernel/random/uuid)
  echo "$id" > /var/nacre-test/marker
  busybox sync
  echo "NACRE-STATE-WROTE $id"
fi
"#;

const CONFIG: &str = r#"[payload]
command = "/etc/nacre/check.sh"

[state_disk]
serial = "nacre-state"
key_source = "tpm-sealed"
"#;

/// With the NVMe and SCSI disk drivers (their closure from modules.dep brings nvme-core,
/// scsi_mod, scsi_common, t10-pi, crc-t10dif, crc64-rocksoft, ...).
const MODULES: &str = "virtio_pci virtio_blk nvme virtio_scsi sd_mod dm-verity erofs dm-crypt xts \
     algif_skcipher crc32c_generic ext4 qemu_fw_cfg";

/// The image's PCR-signing key (made once per run with openssl) and the signed PCR 11 policy
/// for these boots: direct kernel boot has no stub, so PCR 11 holds nacre-init's phases only,
/// and the disk is opened at `sysinit` (the only phase signed, with nacre's policyRef:
/// `nacre-measure export pcrsig --state-disk`). The public key goes into each node's verified root
/// (`/etc/nacre/tpm2-pcr-public-key.pem`), the signature to QEMU's fw_cfg, where the node's
/// key source reads it (`opt/nacre/tpm2-pcr-signature.json`).
struct PcrPolicy {
    public_key: PathBuf,
    signature: PathBuf,
}

fn pcr_policy() -> &'static PcrPolicy {
    static P: OnceLock<PcrPolicy> = OnceLock::new();
    P.get_or_init(|| {
        use nacre_eventlog::alg::HashAlg;
        use nacre_eventlog::runtime::{Phase, RuntimeEvent};
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("statedisk-pcr-key");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("pcr.key");
        let out = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl genrsa");
        let signer = nacre_measure::sign::RsaSigner::from_pem_file(&key).unwrap();
        let mut pcr11 = vec![0u8; 32];
        for p in [Phase::EnterInitrd, Phase::LeaveInitrd, Phase::Sysinit] {
            let d = RuntimeEvent::Phase(p).digest(HashAlg::Sha256).unwrap();
            pcr11 = HashAlg::Sha256.extend(&pcr11, &d).unwrap();
        }
        let sig = nacre_measure::pcrsig::sign_pcr11_with_ref(
            &signer,
            HashAlg::Sha256,
            &[("enter-initrd:leave-initrd:sysinit".into(), pcr11)],
            nacre_measure::pcrsig::STATE_DISK_POLICY_REF,
        )
        .unwrap();
        let p = PcrPolicy {
            public_key: dir.join("tpm2-pcr-public-key.pem"),
            signature: dir.join("tpm2-pcr-signature.json"),
        };
        std::fs::write(
            &p.public_key,
            nacre_measure::sign::to_pem("PUBLIC KEY", &signer.public_spki()),
        )
        .unwrap();
        std::fs::write(&p.signature, serde_json::to_vec(&sig).unwrap()).unwrap();
        p
    })
}

/// QEMU's fw_cfg item with the signed policy.
fn fw_cfg_signature() -> [String; 2] {
    [
        "-fw_cfg".into(),
        format!(
            "name=opt/nacre/tpm2-pcr-signature.json,file={}",
            pcr_policy().signature.display()
        ),
    ]
}

/// Build a node: mkfs.ext4 and the TPM's device TCTI (dlopened by tss2) in the root, this
/// `[state_disk]` configuration, the state disk's modules in the initrd's list.
fn build_node(name: &str, config: &str, modules: &str) -> PathBuf {
    let w = work();
    std::fs::create_dir_all(&w).unwrap();
    std::fs::write(w.join("payload.sh"), PAYLOAD).unwrap();
    let toml = w.join(format!("{name}.toml"));
    std::fs::write(&toml, config).unwrap();
    let tcti = std::fs::canonicalize("/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0")
        .expect("libtss2-tcti-device0");
    let dir = w.join(name);
    let t = Instant::now();
    let status = Command::new(repo().join("tests/init/build-node.sh"))
        .arg(&dir)
        .args(["--init", env!("CARGO_BIN_EXE_nacre-init")])
        .arg("--payload")
        .arg(w.join("payload.sh"))
        .args(["--add", "/usr/sbin/mkfs.ext4:usr/sbin/mkfs.ext4"])
        .arg("--add-file")
        .arg(format!(
            "{}:lib/x86_64-linux-gnu/libtss2-tcti-device.so.0",
            tcti.display()
        ))
        .arg("--add-file")
        .arg(format!("{}:etc/nacre/init.toml", toml.display()))
        .arg("--add-file")
        .arg(format!(
            "{}:etc/nacre/tpm2-pcr-public-key.pem",
            pcr_policy().public_key.display()
        ))
        .args(["--initrd-modules", modules])
        .status()
        .expect("tests/init/build-node.sh");
    assert!(
        status.success(),
        "building the state disk test node {name} failed"
    );
    eprintln!(
        "statedisk: node {name} built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    dir
}

/// The node of most cases (no integrity).
fn node() -> &'static Path {
    static NODE: OnceLock<PathBuf> = OnceLock::new();
    NODE.get_or_init(|| {
        let _ = std::fs::remove_dir_all(work());
        build_node("node", CONFIG, MODULES)
    })
}

fn blank_disk(name: &str) -> PathBuf {
    let p = work().join(format!("{name}.img"));
    let _ = std::fs::remove_file(&p);
    std::fs::File::create(&p)
        .unwrap()
        .set_len(DISK_SIZE)
        .unwrap();
    p
}

fn copy_disk(from: &Path, name: &str) -> PathBuf {
    let p = work().join(format!("{name}.img"));
    std::fs::copy(from, &p).unwrap();
    p
}

/// A copy of a TPM's state (for a boot that must not change the original).
fn copy_tpm(from: &Path, name: &str) -> PathBuf {
    let p = work().join(format!("tpm-{name}"));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), p.join(e.file_name())).unwrap();
        }
    }
    p
}

struct Boot {
    console: String,
    secs: f64,
}

impl Boot {
    fn has(&self, s: &str) -> bool {
        self.console.contains(s)
    }
    /// The rest of the first line containing `marker`.
    fn after(&self, marker: &str) -> Option<String> {
        self.console
            .lines()
            .find_map(|l| l.split_once(marker).map(|(_, r)| r.trim().to_string()))
    }
}

fn boot_args(disk: &Path, tpm: &Path) -> Vec<String> {
    let [f, v] = fw_cfg_signature();
    vec![
        "--qemu-arg".into(),
        f,
        "--qemu-arg".into(),
        v,
        "--tpm".into(),
        "--tpm-state".into(),
        tpm.display().to_string(),
        "--state-disk".into(),
        disk.display().to_string(),
        "--cmdline".into(),
        "nacre.insecure-platform=1".into(),
        "--timeout".into(),
        "180".into(),
    ]
}

/// Boot the node with this state disk and TPM until it powers off; return the console.
fn boot(name: &str, disk: &Path, tpm: &Path) -> Boot {
    boot_node(node(), name, disk, tpm)
}

fn boot_node(node: &Path, name: &str, disk: &Path, tpm: &Path) -> Boot {
    let log = work().join(format!("{name}.log"));
    let t = Instant::now();
    let status = Command::new(repo().join("tests/init/boot.sh"))
        .arg(node)
        .arg(&log)
        .args(boot_args(disk, tpm))
        .status()
        .expect("tests/init/boot.sh");
    let console = console::read(&log);
    assert!(
        status.success(),
        "{name}: boot.sh failed ({status}); console:\n{console}"
    );
    let secs = t.elapsed().as_secs_f64();
    eprintln!("statedisk: boot {name}: {secs:.1} s");
    Boot { console, secs }
}

/// Boot, and kill QEMU (a power cut) as soon as the console shows `needle`.
fn boot_and_cut(name: &str, disk: &Path, tpm: &Path, needle: &str) -> Boot {
    let log = work().join(format!("{name}.log"));
    let pidfile = work().join(format!("{name}.pid"));
    let _ = std::fs::remove_file(&pidfile);
    let t = Instant::now();
    let mut child = Command::new(repo().join("tests/init/boot.sh"))
        .arg(node())
        .arg(&log)
        .args(boot_args(disk, tpm))
        .args(["--qemu-arg", "-pidfile", "--qemu-arg"])
        .arg(&pidfile)
        .spawn()
        .expect("tests/init/boot.sh");
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut cut = false;
    while Instant::now() < deadline {
        let console = console::read(&log);
        if console.contains(needle) {
            let pid: i32 = std::fs::read_to_string(&pidfile)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            cut = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    let console = console::read(&log);
    assert!(cut, "{name}: never saw {needle:?}; console:\n{console}");
    let secs = t.elapsed().as_secs_f64();
    eprintln!("statedisk: boot {name} (cut): {secs:.1} s");
    Boot { console, secs }
}

fn tpm_profile() -> luks2::Profile {
    luks2::Profile {
        integrity: false,
        token_type: Some(TPM_TOKEN_TYPE.into()),
    }
}

/// The disk's header area, validated as the node would.
fn validated(disk: &Path) -> luks2::Validated {
    let area = read_area(disk);
    assert_eq!(classify(&area), DiskState::Initialized);
    Header::parse(&area)
        .unwrap()
        .validate(&tpm_profile(), DISK_SIZE)
        .unwrap()
}

fn read_area(disk: &Path) -> Vec<u8> {
    let mut v = std::fs::read(disk).unwrap();
    v.truncate(AREA);
    v
}

fn assert_mounted_and_payload_ran(b: &Boot, what: &str) {
    assert!(b.has("mounted on /var"), "{what}:\n{}", b.console);
    let m = b.after("NACRE-STATE-MOUNT").unwrap_or_default();
    assert!(
        m.contains("/dev/mapper/nacre-state /var ext4 rw"),
        "{what}: /var is {m:?}:\n{}",
        b.console
    );
    assert!(!b.has("NACRE-STATE-FAIL"), "{what}:\n{}", b.console);
}

/// Refused: one FATAL line naming the step, nothing after it ran, the disk untouched.
fn assert_refused(b: &Boot, before: &[u8], disk: &Path, reason: &str) {
    let fatal = b.after("FATAL: open the state disk:").unwrap_or_default();
    assert!(
        fatal.contains(reason),
        "expected a refusal mentioning {reason:?}, got {fatal:?}:\n{}",
        b.console
    );
    assert!(!b.has("measure ready"), "services started:\n{}", b.console);
    assert!(!b.has("NACRE-STATE-"), "payload ran:\n{}", b.console);
    assert!(
        !b.has("formatting"),
        "refused disk was formatted:\n{}",
        b.console
    );
    let after = std::fs::read(disk).unwrap();
    assert!(
        after == before,
        "the refused disk {} was written",
        disk.display()
    );
}

/// Node 1: first boot, second boot, a header swapped in from another disk of the same node.
fn node1() {
    let tpm = work().join("tpm-node1");
    let disk = blank_disk("node1");
    // (a) First boot: format, mount, the payload writes a marker.
    let a = boot("first", &disk, &tpm);
    assert!(a.has("state disk: formatting"), "{}", a.console);
    assert!(a.has("state disk: format complete"), "{}", a.console);
    assert!(a.has("formatted this boot"), "{}", a.console);
    assert_mounted_and_payload_ran(&a, "first boot");
    let marker = a
        .after("NACRE-STATE-WROTE")
        .expect("the payload wrote its marker");
    let v = validated(&disk);
    let header_len = v.data_offset as usize;
    assert_eq!(
        header_len,
        1 << 20,
        "nacre formats with a 1 MiB header area"
    );
    let pre_second = read_area(&disk)[..header_len].to_vec();

    // (b) Second boot, same TPM: the same disk opens and the marker is there.
    let b = boot("second", &disk, &tpm);
    assert!(!b.has("formatting"), "{}", b.console);
    assert!(
        b.has(&format!("header valid (UUID {}", v.uuid)),
        "{}",
        b.console
    );
    assert_mounted_and_payload_ran(&b, "second boot");
    assert_eq!(
        b.after("NACRE-STATE-FOUND").as_deref(),
        Some(marker.as_str()),
        "{}",
        b.console
    );
    // Opening never writes the header.
    assert!(
        read_area(&disk)[..header_len] == pre_second[..],
        "the second boot wrote the header area"
    );

    // Another disk formatted on a copy of this node's TPM (same seed, same signed policy): its
    // header and token are genuine, and its key opens its own keyslot; the copy's anchor now
    // names its sealed object, this TPM's anchor still names this disk's.
    let other = blank_disk("node1-other");
    let o = boot("same-node-other-disk", &other, &copy_tpm(&tpm, "other"));
    assert_mounted_and_payload_ran(&o, "other disk");

    // (c) That header planted on this disk: a sealed object of this TPM under the image's policy,
    // but not the one its anchor names: refused before unsealing, nothing written.
    let swapped = copy_disk(&disk, "swapped-same-node");
    {
        let mut img = std::fs::read(&swapped).unwrap();
        // Only the header area (nacre's data segment starts at 1 MiB): the data stays this disk's.
        img[..header_len].copy_from_slice(&read_area(&other)[..header_len]);
        std::fs::write(&swapped, &img).unwrap();
    }
    let before = std::fs::read(&swapped).unwrap();
    let s = boot(
        "swapped-same-node",
        &swapped,
        &copy_tpm(&tpm, "swapped-same-node"),
    );
    assert_refused(&s, &before, &swapped, "not the one anchored in NV index");

    // (c) This disk's own header on the other disk's data: valid, unsealed, activated, but the
    // plaintext is not the file system its header names: refused, nothing written.
    let moved = copy_disk(&other, "header-on-other-data");
    {
        let mut img = std::fs::read(&moved).unwrap();
        img[..header_len].copy_from_slice(&read_area(&disk)[..header_len]);
        std::fs::write(&moved, &img).unwrap();
    }
    let before = std::fs::read(&moved).unwrap();
    let m = boot(
        "header-on-other-data",
        &moved,
        &copy_tpm(&tpm, "header-on-other-data"),
    );
    assert_refused(&m, &before, &moved, "belongs to another disk");
    eprintln!(
        "statedisk: node 1: first {:.1} s, second {:.1} s, other disk {:.1} s, planted {:.1} s, moved {:.1} s",
        a.secs, b.secs, o.secs, s.secs, m.secs
    );

    // The integrity option: dm-integrity with HMAC-SHA256 tags under dm-crypt. The first boot
    // formats (wiping the tags), validates its own header with the integrity profile and opens it.
    let config = format!("{CONFIG}integrity = \"hmac(sha256)\"\n");
    let inode = build_node(
        "node-integrity",
        &config,
        &format!("{MODULES} dm-integrity authenc"),
    );
    let idisk = blank_disk("integrity");
    let i = boot_node(&inode, "integrity", &idisk, &work().join("tpm-integrity"));
    assert!(i.has("format complete"), "{}", i.console);
    assert_mounted_and_payload_ran(&i, "integrity");
    assert!(i.has("NACRE-STATE-WROTE"), "{}", i.console);
    let area = read_area(&idisk);
    let profile = luks2::Profile {
        integrity: true,
        ..tpm_profile()
    };
    let v = Header::parse(&area)
        .unwrap()
        .validate(&profile, DISK_SIZE)
        .unwrap();
    assert!(
        i.has(&format!("header valid (UUID {}", v.uuid)),
        "{}",
        i.console
    );
    // The same header is refused by a node configured without integrity.
    let e = Header::parse(&area)
        .unwrap()
        .validate(&tpm_profile(), DISK_SIZE)
        .unwrap_err();
    assert!(e.to_string().contains("segments.0.integrity"), "{e}");
    eprintln!("statedisk: integrity: first boot {:.1} s", i.secs);
}

/// Node 2: a power cut during the first format, the boot after it, an edited header, and a
/// foreign header carrying this node's genuine token.
fn node2() {
    let tpm = work().join("tpm-node2");
    let disk = blank_disk("node2");
    // (d) Power cuts in the middle of the first format: once as soon as it starts, then (on
    // the next boot) after the LUKS2 header, keyslot and token are written, while the file
    // system is being made.
    let c0 = boot_and_cut("cut-early", &disk, &tpm, "state disk: formatting");
    assert!(
        !c0.has("format complete"),
        "the cut came too late:\n{}",
        c0.console
    );
    assert!(
        matches!(classify(&read_area(&disk)), DiskState::Uninitialized(_)),
        "a half-formatted disk looks initialized"
    );
    let c = boot_and_cut("cut", &disk, &tpm, "making the file system");
    assert!(c.has("state disk: formatting"), "{}", c.console);
    assert!(
        !c.has("format complete"),
        "the cut came too late:\n{}",
        c.console
    );
    let area = read_area(&disk);
    assert_eq!(
        &area[..6],
        luks2::MAGIC_PRIMARY,
        "no header was written before the cut"
    );
    assert!(
        matches!(classify(&area), DiskState::Uninitialized(_)),
        "a half-formatted disk looks initialized"
    );
    // The next boot formats again and ends with a correct, usable disk.
    let r = boot("after-cut", &disk, &tpm);
    let why = r.after("state disk: formatting").unwrap_or_default();
    assert!(why.contains("did not complete"), "{why:?}:\n{}", r.console);
    assert!(r.has("format complete"), "{}", r.console);
    assert_mounted_and_payload_ran(&r, "boot after the cut");
    assert!(r.has("NACRE-STATE-WROTE"), "{}", r.console);
    let v = validated(&disk);
    assert!(
        r.has(&format!("header valid (UUID {}", v.uuid)),
        "{}",
        r.console
    );

    // (c) One flipped byte in the primary header's JSON: refused, nothing written.
    let edited = copy_disk(&disk, "edited");
    let mut img = std::fs::read(&edited).unwrap();
    let json = Header::parse(&img[..AREA]).unwrap().json;
    let at = 4096 + json.find("aes-xts-plain64").unwrap();
    img[at] ^= 0x20; // "aes" -> "Aes"
    std::fs::write(&edited, &img).unwrap();
    let e = boot("edited", &edited, &copy_tpm(&tpm, "edited"));
    assert_refused(&e, &img, &edited, "primary header: checksum");

    // (c) A swapped header: another LUKS2 disk's header, formatted with nacre's profile and
    // label, carrying a copy of this disk's genuine TPM token (which unseals): no keyslot of it
    // opens with the disk key. Refused, nothing written.
    let foreign = work().join("foreign.img");
    let _ = std::fs::remove_file(&foreign);
    std::fs::File::create(&foreign)
        .unwrap()
        .set_len(DISK_SIZE)
        .unwrap();
    let key = work().join("foreign.key");
    std::fs::write(&key, [0x42u8; 64]).unwrap();
    let out = Command::new("cryptsetup")
        .args([
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
        ])
        .args([
            "--pbkdf-force-iterations",
            "1000",
            "--sector-size",
            "4096",
            "--cipher",
        ])
        .args([
            "aes-xts-plain64",
            "--key-size",
            "512",
            "--label",
            "nacre-state",
            "--key-file",
        ])
        .arg(&key)
        .arg(&foreign)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("cryptsetup")
        .args(["token", "export", "--token-id", "0"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tok = work().join("foreign.token.json");
    std::fs::write(&tok, &out.stdout).unwrap();
    let out = Command::new("cryptsetup")
        .args(["token", "import", "--json-file"])
        .arg(&tok)
        .arg(&foreign)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let swapped = copy_disk(&disk, "swapped-foreign");
    let mut img = std::fs::read(&swapped).unwrap();
    img[..AREA].copy_from_slice(&read_area(&foreign));
    std::fs::write(&swapped, &img).unwrap();
    let s = boot(
        "swapped-foreign",
        &swapped,
        &copy_tpm(&tpm, "swapped-foreign"),
    );
    assert_refused(
        &s,
        &img,
        &swapped,
        "no keyslot of the validated header opens",
    );
    eprintln!(
        "statedisk: node 2: cuts after {:.1} s and {:.1} s, after-cut {:.1} s, edited {:.1} s, swapped {:.1} s",
        c0.secs, c.secs, r.secs, e.secs, s.secs
    );
}

/// `[state_disk]` as nacre-init reads it (TOML): exactly one selector, unknown keys refused, the
/// errors say what is wrong.
#[test]
fn state_disk_config_from_toml() {
    use nacre_statedisk::{Config, Selector};
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct File {
        state_disk: Config,
    }
    let parse =
        |t: &str| toml::from_str::<File>(&format!("[state_disk]\n{t}")).map(|f| f.state_disk);
    let c = parse("serial = \"nacre-state\"\nkey_source = \"tpm-sealed\"\n").unwrap();
    assert_eq!(c.disk, Selector::Serial("nacre-state".into()));
    let c = parse("device_name = \"sdf\"\nkey_source = \"key-service\"\n").unwrap();
    assert_eq!(c.disk, Selector::DeviceName("sdf".into()));
    let c = parse("rule = \"only-data-disk\"\nintegrity = \"hmac(sha256)\"\n").unwrap();
    assert_eq!(c.disk, Selector::OnlyDataDisk);
    assert!(c.integrity.is_some());
    for (t, why) in [
        ("key_source = \"tpm-sealed\"\n", "none is given"),
        (
            "serial = \"a\"\ndevice_name = \"b\"\n",
            "serial and device_name are given",
        ),
        (
            "serial = \"a\"\nrule = \"only-data-disk\"\n",
            "serial and rule are given",
        ),
        ("rule = \"first-disk\"\n", "first-disk"),
        ("rule = \"only-data-disk\"\nserail = \"x\"\n", "serail"),
        ("serial = \"\"\n", "serial is empty"),
        ("device_name = \"sdf \"\n", "blanks"),
        ("serial = 7\n", "string"),
    ] {
        let e = parse(t).unwrap_err().to_string();
        assert!(e.contains(why), "{t:?}: {e}");
    }
}

/// QEMU arguments attaching `disk` as drive `id` on `bus` (`virtio`, `nvme`, `scsi`), with this
/// serial (none: no serial).
fn attach(disk: &Path, id: &str, bus: &str, serial: Option<&str>) -> Vec<String> {
    let serial = serial.map(|s| format!(",serial={s}")).unwrap_or_default();
    let mut a = vec![
        "-drive".to_string(),
        format!("file={},if=none,id={id},format=raw", disk.display()),
    ];
    match bus {
        "virtio" => a.extend([
            "-device".into(),
            format!("virtio-blk-pci,drive={id}{serial}"),
        ]),
        "nvme" => a.extend(["-device".into(), format!("nvme,drive={id}{serial}")]),
        "scsi" => a.extend([
            "-device".into(),
            format!("virtio-scsi-pci,id=scsi-{id}"),
            "-device".into(),
            format!("scsi-hd,bus=scsi-{id}.0,drive={id}{serial}"),
        ]),
        other => panic!("no bus {other}"),
    }
    a
}

/// Boot `node` with a fresh TPM and these disks (QEMU arguments) until it powers off.
fn boot_disks(node: &Path, name: &str, disks: &[Vec<String>]) -> Boot {
    let log = work().join(format!("{name}.log"));
    let tpm = work().join(format!("tpm-{name}"));
    let _ = std::fs::remove_dir_all(&tpm);
    let mut cmd = Command::new(repo().join("tests/init/boot.sh"));
    cmd.arg(node)
        .arg(&log)
        .arg("--tpm")
        .arg("--tpm-state")
        .arg(&tpm);
    cmd.args(["--cmdline", "nacre.insecure-platform=1", "--timeout", "180"]);
    for a in fw_cfg_signature().iter().chain(disks.iter().flatten()) {
        cmd.arg("--qemu-arg").arg(a);
    }
    let t = Instant::now();
    let status = cmd.status().expect("tests/init/boot.sh");
    let console = console::read(&log);
    assert!(
        status.success(),
        "{name}: boot.sh failed ({status}); console:\n{console}"
    );
    let secs = t.elapsed().as_secs_f64();
    eprintln!("statedisk: boot {name}: {secs:.1} s");
    Boot { console, secs }
}

/// A first boot on this disk: found as `how`, formatted, mounted on /var, the payload ran.
fn assert_first_boot(b: &Boot, disk: &Path, how: &str, what: &str) {
    assert!(b.has(how), "{what}: not found as {how:?}:\n{}", b.console);
    assert!(
        b.has("state disk: format complete"),
        "{what}:\n{}",
        b.console
    );
    assert!(b.has("formatted this boot"), "{what}:\n{}", b.console);
    assert_mounted_and_payload_ran(b, what);
    assert!(b.has("NACRE-STATE-WROTE"), "{what}:\n{}", b.console);
    let v = validated(disk);
    assert!(
        b.has(&format!("header valid (UUID {}", v.uuid)),
        "{what}:\n{}",
        b.console
    );
}

#[test]
fn state_disk_on_nvme_scsi_and_only_data_disk() {
    let t = Instant::now();
    let shared = node();
    std::thread::scope(|s| {
        // The shared node (serial = "nacre-state"): the disk on NVMe, then on virtio-scsi.
        let buses = s.spawn(|| {
            let disk = blank_disk("nvme");
            let n = boot_disks(
                shared,
                "nvme",
                &[attach(&disk, "state", "nvme", Some("nacre-state"))],
            );
            assert_first_boot(
                &n,
                &disk,
                "state disk: /dev/nvme0n1 (NVMe serial \"nacre-state\", confirmed by Identify Controller,",
                "NVMe",
            );
            let disk = blank_disk("scsi");
            let c = boot_disks(
                shared,
                "scsi",
                &[attach(&disk, "state", "scsi", Some("nacre-state"))],
            );
            assert_first_boot(
                &c,
                &disk,
                "state disk: /dev/sda (SCSI serial \"nacre-state\"",
                "SCSI",
            );
            eprintln!("statedisk: NVMe {:.1} s, SCSI {:.1} s", n.secs, c.secs);
        });
        // A node with rule = "only-data-disk": one data disk without a serial is the state
        // disk; with two data disks the boot stops naming both, and neither is written.
        let rule = s.spawn(|| {
            let config = CONFIG.replace("serial = \"nacre-state\"", "rule = \"only-data-disk\"");
            let odd = build_node("node-only-data-disk", &config, MODULES);
            let disk = blank_disk("only-data-disk");
            let o = boot_disks(
                &odd,
                "only-data-disk",
                &[attach(&disk, "state", "virtio", None)],
            );
            // Which of the two virtio disks is the boot disk depends on PCI enumeration: the
            // guest's own line says, the state disk is the other one.
            let root = o
                .after("nacre-init: root:")
                .and_then(|r| r.split_whitespace().next().map(str::to_string))
                .unwrap_or_default();
            let state = match root.as_str() {
                "vda" => "vdb",
                "vdb" => "vda",
                other => panic!("root on {other:?}:\n{}", o.console),
            };
            assert_first_boot(
                &o,
                &disk,
                &format!("state disk: /dev/{state} (the only disk besides the boot disk {root},"),
                "only-data-disk",
            );
            let a = blank_disk("two-data-disks-a");
            let b = blank_disk("two-data-disks-b");
            let before = std::fs::read(&a).unwrap();
            let r = boot_disks(
                &odd,
                "two-data-disks",
                &[
                    attach(&a, "a", "virtio", None),
                    attach(&b, "b", "nvme", Some("other")),
                ],
            );
            assert_refused(
                &r,
                &before,
                &a,
                "rule only-data-disk matches more than one disk (nvme0n1, vd",
            );
            assert!(
                std::fs::read(&b).unwrap() == before,
                "the second data disk was written"
            );
            eprintln!(
                "statedisk: only-data-disk {:.1} s, two data disks {:.1} s",
                o.secs, r.secs
            );
        });
        for h in [buses, rule] {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
    });
    eprintln!(
        "statedisk: NVMe, SCSI, only-data-disk in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn state_disk_format_reopen_refusals_and_power_cut() {
    let t = Instant::now();
    node();
    std::thread::scope(|s| {
        let a = s.spawn(node1);
        let b = s.spawn(node2);
        let ra = a.join();
        let rb = b.join();
        if let Err(e) = ra {
            std::panic::resume_unwind(e);
        }
        if let Err(e) = rb {
            std::panic::resume_unwind(e);
        }
    });
    eprintln!("statedisk: all boots in {:.1} s", t.elapsed().as_secs_f64());
}
