//! `nacre-image diff` and `inspect` on real images made with the project's shell tools: small
//! UKIs from scripts/lib/make-uki.sh (systemd-stub 252, the stub itself as the "kernel") in ESP
//! disks from scripts/lib/make-esp-disk.sh. Each difference must be named by partition, file and
//! section; identical copies must report none.

use nacre_image::diff::{diff, Difference};
use std::path::{Path, PathBuf};
use std::process::Command;

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn uki(dir: &Path, name: &str, cmdline: &str) -> PathBuf {
    let p = |n: &str| dir.join(n);
    std::fs::write(p("osrel"), "ID=nacre\n").unwrap();
    std::fs::write(p("initrd"), vec![7u8; 1000]).unwrap();
    let out = p(name);
    let st = Command::new(repo().join("scripts/lib/make-uki.sh"))
        .args(["--kernel", STUB, "--initrd"])
        .arg(p("initrd"))
        .args(["--cmdline", cmdline, "--osrel"])
        .arg(p("osrel"))
        .arg("--out")
        .arg(&out)
        .status()
        .expect("make-uki.sh (scripts/install-deps.sh)");
    assert!(st.success());
    out
}

fn disk(dir: &Path, name: &str, efi: &Path, extras: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut c = Command::new(repo().join("scripts/lib/make-esp-disk.sh"));
    c.arg("--efi")
        .arg(efi)
        .arg("--out")
        .arg(&out)
        .args(["--size-mib", "40"]);
    for e in extras {
        c.args(["--extra", e]);
    }
    assert!(c.status().expect("make-esp-disk.sh").success());
    out
}

fn locations(d: &[Difference]) -> Vec<&str> {
    d.iter().map(|x| x.location.as_str()).collect()
}

#[test]
fn identical_copies_do_not_differ() {
    let t = tempfile::tempdir().unwrap();
    let u = uki(t.path(), "a.efi", "console=ttyS0 roothash=00");
    let a = disk(t.path(), "a.img", &u, &[]);
    let b = t.path().join("b.img");
    std::fs::copy(&a, &b).unwrap();
    assert_eq!(diff(&a, &b).unwrap(), vec![]);
    // The same inputs built twice: the tools are deterministic.
    let c = disk(t.path(), "c.img", &u, &[]);
    assert_eq!(diff(&a, &c).unwrap(), vec![]);
    let u2 = uki(t.path(), "b.efi", "console=ttyS0 roothash=00");
    assert_eq!(diff(&u, &u2).unwrap(), vec![]);
}

#[test]
fn a_changed_cmdline_is_named_by_partition_file_and_section() {
    let t = tempfile::tempdir().unwrap();
    let ua = uki(t.path(), "a.efi", "console=ttyS0 roothash=00");
    let ub = uki(t.path(), "b.efi", "console=ttyS1 roothash=00");
    // Bare UKIs: the .cmdline section, and the PE checksum (which covers it) in the headers.
    let d = diff(&ua, &ub).unwrap();
    assert_eq!(
        locations(&d),
        ["uki headers", "uki section .cmdline"],
        "{d:#?}"
    );
    assert_eq!(d[0].detail, "PE headers differ (checksum)");
    // Disks: the ESP partition, the file, and its section; nothing else.
    let a = disk(t.path(), "a.img", &ua, &[]);
    let b = disk(t.path(), "b.img", &ub, &[]);
    let d = diff(&a, &b).unwrap();
    let l = locations(&d);
    assert!(l.contains(&"partition 1 (esp)"), "{d:#?}");
    assert!(l.contains(&"esp:/EFI/BOOT/BOOTX64.EFI"), "{d:#?}");
    assert!(
        l.contains(&"esp:/EFI/BOOT/BOOTX64.EFI section .cmdline"),
        "{d:#?}"
    );
    assert!(
        !l.iter().any(|x| x.contains(".linux")
            || x.contains(".initrd")
            || x.contains("gpt")
            || x.contains("outside")),
        "{d:#?}"
    );
    let part = d
        .iter()
        .find(|x| x.location == "partition 1 (esp)")
        .unwrap();
    assert!(!part.ranges.is_empty());
}

#[test]
fn an_extra_esp_file_is_named() {
    let t = tempfile::tempdir().unwrap();
    let u = uki(t.path(), "a.efi", "console=ttyS0");
    std::fs::write(t.path().join("c.cred"), b"credential").unwrap();
    let a = disk(t.path(), "a.img", &u, &[]);
    let extra = format!(
        "{}:loader/credentials/global.cred",
        t.path().join("c.cred").display()
    );
    let b = disk(t.path(), "b.img", &u, &[&extra]);
    let d = diff(&a, &b).unwrap();
    let l = locations(&d);
    assert!(l.contains(&"esp:/loader/credentials/global.cred"), "{d:#?}");
    assert!(!l.iter().any(|x| x.contains("BOOTX64")), "{d:#?}");
    let cred = d
        .iter()
        .find(|x| x.location == "esp:/loader/credentials/global.cred")
        .unwrap();
    assert_eq!(cred.detail, "only in B");
}

#[test]
fn changed_bytes_outside_the_esp_are_located() {
    let t = tempfile::tempdir().unwrap();
    let u = uki(t.path(), "a.efi", "console=ttyS0");
    let a = disk(t.path(), "a.img", &u, &[]);
    let b = t.path().join("b.img");
    std::fs::copy(&a, &b).unwrap();
    // The disk GUID in the primary header (LBA 1, offset 56): header field and CRC differ.
    let mut bytes = std::fs::read(&b).unwrap();
    bytes[512 + 56] ^= 1;
    std::fs::write(&b, &bytes).unwrap();
    let d = diff(&a, &b).unwrap();
    // A corrupt header CRC makes the GPT unreadable: reported, then compared byte by byte.
    assert!(
        d.iter()
            .any(|x| x.location == "gpt" && x.detail.starts_with("B:")),
        "{d:#?}"
    );
    assert!(
        d.iter()
            .any(|x| x.location == "whole file" && x.ranges == [(0, 4096)]),
        "{d:#?}"
    );
    // The last bytes of the disk (backup GPT area): outside partitions.
    let mut bytes = std::fs::read(&a).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    std::fs::write(&b, &bytes).unwrap();
    let d = diff(&a, &b).unwrap();
    assert_eq!(
        locations(&d),
        ["outside partitions (GPT entries, gaps, backup GPT)"],
        "{d:#?}"
    );
}

#[test]
fn inspect_reports_partitions_uki_and_measurements() {
    let t = tempfile::tempdir().unwrap();
    let u = uki(t.path(), "a.efi", "console=ttyS0 roothash=00");
    let a = disk(t.path(), "a.img", &u, &[]);
    let i = nacre_image::inspect::inspect(&a).unwrap();
    assert_eq!(i.partitions.len(), 1);
    assert_eq!(i.partitions[0].type_name, "esp");
    assert_eq!(i.uki.cmdline.as_deref(), Some("console=ttyS0 roothash=00"));
    assert_eq!(i.uki.roothash.as_deref(), Some("00"));
    assert!(i.uki.sections.iter().any(|s| s.name == ".cmdline"));
    assert!(i.verity.is_none() && i.roothash_matches.is_none());
    assert!(i.prediction.pcrs.contains_key(&11) && i.prediction.pcrs.contains_key(&4));
    // The bare UKI gives the same prediction as the disk (no drop-ins on this ESP).
    let j = nacre_image::inspect::inspect(&u).unwrap();
    assert_eq!(i.prediction.pcrs, j.prediction.pcrs);
    // A different cmdline: a different PCR 11 (systemd-stub 252 measures .cmdline there).
    let u2 = uki(t.path(), "b.efi", "console=ttyS1 roothash=00");
    let k = nacre_image::inspect::inspect(&u2).unwrap();
    assert_ne!(i.prediction.pcrs[&11], k.prediction.pcrs[&11]);
    // PCR 4 has the UKI's Authenticode digest, which covers .cmdline.
    assert_ne!(i.prediction.pcrs[&4], k.prediction.pcrs[&4]);
}
