//! Helpers for tests that build real images with dosfstools, mtools and util-linux.
//! A missing tool fails the test (never skips it): the point is checking against real tools.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const INSTALL_HINT: &str = "run /work/main/scripts/install-deps.sh \
    (or apt-get install -y dosfstools mtools fdisk)";

/// Absolute path of a tool; /usr/sbin and /sbin are searched too, since mkfs.vfat, sfdisk and
/// fdisk live there and are not on an ordinary user's PATH.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]);
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("required tool `{name}` not found: {INSTALL_HINT}");
}

/// Runs a command, failing the test with its stderr if it does not succeed.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}; {INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An mtools command on image `img` (`-i img` is added), with the image check disabled and a
/// UTF-8 locale so non-ASCII long names work.
pub fn mtool(name: &str, img: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(tool(name));
    c.env("MTOOLS_SKIP_CHECK", "1")
        .env("LC_ALL", "C.UTF-8")
        .arg("-i")
        .arg(img)
        .args(args);
    run(&mut c)
}

/// Creates a sparse file of `size` bytes and formats it with `mkfs.vfat -F fat -S sector`.
pub fn mkfs(img: &Path, fat: u32, sector: u32, size: u64, extra: &[&str]) {
    let f = std::fs::File::create(img).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    let mut c = Command::new(tool("mkfs.vfat"));
    c.args(["-F", &fat.to_string(), "-S", &sector.to_string()])
        .args(extra)
        .arg(img);
    run(&mut c);
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `data` into `img` at `offset` without truncating it.
pub fn write_at(img: &Path, offset: u64, data: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(data).unwrap();
}

/// Reads `len` bytes of `img` at `offset`.
pub fn read_at(img: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(img).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut b = vec![0; len];
    f.read_exact(&mut b).unwrap();
    b
}

/// Copies the file `src` into `dst` at `offset` with `dd conv=notrunc,sparse`, as an image
/// build script would place a file system into its partition.
pub fn dd_into(src: &Path, dst: &Path, offset: u64) {
    assert_eq!(offset % 4096, 0);
    let mut c = Command::new(tool("dd"));
    c.arg(format!("if={}", src.display()))
        .arg(format!("of={}", dst.display()))
        .args(["bs=4096", "conv=notrunc,sparse", "status=none"])
        .arg(format!("seek={}", offset / 4096));
    run(&mut c);
}
