//! Shared by the measurement tests: a real UKI made by scripts/lib/make-uki.sh from this
//! machine's Debian kernel and systemd-stub.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn kernel() -> PathBuf {
    let mut k: Vec<_> = std::fs::read_dir("/boot")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .collect();
    k.sort();
    k.pop()
        .expect("a Debian kernel in /boot (linux-image-amd64)")
}

pub fn build_uki(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("osrel"), "ID=nacre\nVERSION_ID=tdx\n").unwrap();
    std::fs::write(dir.join("cmdline"), "console=ttyS0 nacre.test=tdx").unwrap();
    let initrd: Vec<u8> = (0..50_021u32).map(|i| (i * 11 % 253) as u8).collect();
    std::fs::write(dir.join("initrd"), initrd).unwrap();
    let uki = dir.join("uki.efi");
    let s = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let out = Command::new(repo().join("scripts/lib/make-uki.sh"))
        .args(["--kernel", kernel().to_str().unwrap()])
        .args(["--initrd", &s("initrd"), "--cmdline-file", &s("cmdline")])
        .args(["--osrel", &s("osrel"), "--out", &s("uki.efi")])
        .args(["--stub", "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    uki
}
