//! FAT reading checked against images built by mkfs.vfat and filled by mtools, for FAT12, 16
//! and 32 with 512- and 4096-byte logical sectors.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use common::{bytes, mkfs, mtool};
use nacre_diskimage::fat::{Fat, FatError, FatType};

const LIMIT: u64 = 64 << 20;
const MANY: usize = 250;

/// What the test put on the volume: path → content.
type Files = BTreeMap<String, Vec<u8>>;

fn put(img: &Path, dir: &Path, files: &mut Files, path: &str, data: Vec<u8>) {
    let src = dir.join(format!("src{}", files.len()));
    std::fs::write(&src, &data).unwrap();
    mtool("mcopy", img, &[src.to_str().unwrap(), &format!("::{path}")]);
    files.insert(path.to_string(), data);
}

/// Fills a fresh volume: ESP layout, long/odd names, deep nesting, a big file, a fragmented
/// file and a directory with many long-named entries.
fn populate(img: &Path, dir: &Path, cluster: usize) -> Files {
    let mut files = Files::new();
    for d in [
        "/EFI",
        "/EFI/BOOT",
        "/EFI/BOOT/BOOTX64.EFI.extra.d",
        "/EFI/Linux",
        "/loader",
        "/loader/credentials",
        "/a",
        "/a/b",
        "/a/b/c",
        "/a/b/c/d",
        "/a/b/c/d/e",
        "/frag",
        "/many",
    ] {
        mtool("mmd", img, &[&format!("::{d}")]);
    }
    put(
        img,
        dir,
        &mut files,
        "/EFI/BOOT/BOOTX64.EFI",
        bytes(1, 3 << 20),
    );
    put(
        img,
        dir,
        &mut files,
        "/EFI/BOOT/BOOTX64.EFI.extra.d/tpm2-root.cred",
        bytes(2, 700),
    );
    put(
        img,
        dir,
        &mut files,
        "/EFI/BOOT/BOOTX64.EFI.extra.d/Netzwerk Konfiguration.cred",
        bytes(3, 5000),
    );
    put(
        img,
        dir,
        &mut files,
        "/EFI/BOOT/BOOTX64.EFI.extra.d/nacre-k8s.sysext.raw",
        bytes(4, 70_000),
    );
    put(
        img,
        dir,
        &mut files,
        "/loader/credentials/cluster.cred",
        bytes(5, 33),
    );
    put(
        img,
        dir,
        &mut files,
        "/This is a rather long file name, with spaces and commas.conf",
        bytes(6, 10),
    );
    put(img, dir, &mut files, "/MixedCase.Txt", b"mixed".to_vec());
    put(img, dir, &mut files, "/lower.txt", b"lower".to_vec());
    put(
        img,
        dir,
        &mut files,
        "/café-ünïcode.conf",
        b"unicode".to_vec(),
    );
    put(img, dir, &mut files, "/empty.txt", Vec::new());
    put(
        img,
        dir,
        &mut files,
        "/a/b/c/d/e/deep file.txt",
        b"deep".to_vec(),
    );
    // Holes first, then a large file: mtools fills the holes, so the file is fragmented.
    for i in 0..8 {
        put(
            img,
            dir,
            &mut files,
            &format!("/frag/s{i}"),
            bytes(10 + i, 3 * cluster),
        );
    }
    for i in [1, 3, 5] {
        mtool("mdel", img, &[&format!("::/frag/s{i}")]);
        files.remove(&format!("/frag/s{i}"));
    }
    forget_next_free_hint(img);
    put(
        img,
        dir,
        &mut files,
        "/frag/big",
        bytes(20, (2 << 20) + 123),
    );
    // Many entries in one directory, copied with one mcopy (one process, fast).
    let mut srcs = Vec::new();
    let many_dir = dir.join("many");
    std::fs::create_dir(&many_dir).unwrap();
    for i in 0..MANY {
        let name = format!("entry with a long name number {i:04}.txt");
        let data = format!("file {i}\n").into_bytes();
        std::fs::write(many_dir.join(&name), &data).unwrap();
        srcs.push(many_dir.join(&name).to_str().unwrap().to_string());
        files.insert(format!("/many/{name}"), data);
    }
    let mut args: Vec<&str> = srcs.iter().map(String::as_str).collect();
    args.push("::/many/");
    mtool("mcopy", img, &args);
    files
}

/// On FAT32, mtools allocates after the FSInfo "next free" hint and would not fill the holes;
/// marking the hint unknown (0xFFFFFFFF, as the spec allows) makes it search from the start.
fn forget_next_free_hint(img: &Path) {
    let bs = common::read_at(img, 0, 512);
    if bs[22..24] != [0, 0] {
        return; // FAT12/16: no FSInfo
    }
    let bps = u64::from(u16::from_le_bytes([bs[11], bs[12]]));
    let fsinfo = u64::from(u16::from_le_bytes([bs[48], bs[49]]));
    common::write_at(img, fsinfo * bps + 492, &[0xFF; 4]);
}

/// Recursive listing by mtools, as paths without the trailing `/` of directories.
fn mdir_listing(img: &Path) -> Vec<String> {
    let out = mtool("mdir", img, &["-/", "-b", "::/"]);
    let mut v: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("::"))
        .map(|l| l.trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

fn check_variant(fat_bits: u32, sector: u32, size: u64, extra: &[&str], want: FatType) {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("fat.img");
    mkfs(&img, fat_bits, sector, size, extra);
    let cluster = {
        let g = Fat::new(File::open(&img).unwrap())
            .unwrap()
            .geometry()
            .clone();
        g.cluster_size as usize
    };
    let files = populate(&img, tmp.path(), cluster);
    let mut fat = Fat::new(File::open(&img).unwrap()).unwrap();
    let g = fat.geometry().clone();
    assert_eq!(g.fat_type, want);
    assert_eq!(g.bytes_per_sector, sector);

    // The whole tree agrees with mtools' own recursive listing.
    let mut walked: Vec<String> = fat.walk().unwrap().into_iter().map(|(p, _)| p).collect();
    walked.sort();
    assert_eq!(walked, mdir_listing(&img));

    // Every file reads back byte for byte.
    for (path, data) in &files {
        assert_eq!(&fat.read_file(path, LIMIT).unwrap(), data, "{path}");
    }
    // UEFI-style path: backslashes, any case; mtools' mtype agrees on the bytes.
    let boot = fat.read_file("\\efi\\boot\\bootx64.efi", LIMIT).unwrap();
    let mtype = mtool("mtype", &img, &["::/EFI/BOOT/BOOTX64.EFI"]).stdout;
    assert_eq!(boot, mtype);
    assert_eq!(Some(&boot), files.get("/EFI/BOOT/BOOTX64.EFI"));

    // Long names, with the 8.3 alias usable for lookup too.
    let dropins = fat.read_dir("/EFI/BOOT/BOOTX64.EFI.extra.d").unwrap();
    let netz = dropins
        .iter()
        .find(|e| e.name == "Netzwerk Konfiguration.cred")
        .unwrap();
    assert_eq!(netz.size, 5000);
    assert!(netz.short_name.contains('~'), "{}", netz.short_name);
    let by_short = fat
        .stat(&format!(
            "/efi/boot/bootx64.efi.extra.d/{}",
            netz.short_name
        ))
        .unwrap();
    assert_eq!(&by_short, netz);
    let root: Vec<String> = fat
        .read_dir("/")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    for n in [
        "lower.txt",
        "MixedCase.Txt",
        "café-ünïcode.conf",
        "EFI",
        "empty.txt",
    ] {
        assert!(root.iter().any(|r| r == n), "{n} not in {root:?}");
    }

    // A directory spanning many clusters.
    let many = fat.read_dir("/many").unwrap();
    assert_eq!(many.len(), MANY);
    assert!(
        fat.clusters("/many").unwrap().len() > 1,
        "directory should span clusters"
    );

    // The large file really is fragmented, and still reads back (checked above).
    let chain = fat.clusters("/frag/big").unwrap();
    let runs = 1 + chain.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert!(
        runs > 1,
        "not fragmented: {} clusters from {:?}",
        chain.len(),
        chain.first()
    );

    // Streaming reader with small reads and seeks.
    let mut f = fat.open("/EFI/BOOT/BOOTX64.EFI").unwrap();
    let mut streamed = Vec::new();
    let mut buf = [0u8; 1000];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        streamed.extend_from_slice(&buf[..n]);
    }
    assert_eq!(streamed, boot);
    f.seek(SeekFrom::Start(1_000_001)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..], &boot[1_000_001..1_001_001]);

    // Errors name the path.
    assert!(fat.exists("/EFI/BOOT/bootx64.EFI").unwrap());
    assert!(!fat.exists("/EFI/BOOT/missing.efi").unwrap());
    assert!(!fat.exists("/lower.txt/below").unwrap());
    let e = fat.read_file("/EFI/nope/x", LIMIT).unwrap_err();
    assert!(
        matches!(&e, FatError::NotFound { path } if path == "/EFI/nope"),
        "{e}"
    );
    let e = fat.read_file("/EFI/BOOT", LIMIT).unwrap_err();
    assert!(matches!(e, FatError::IsADirectory { .. }), "{e}");
    let e = fat.read_dir("/lower.txt").unwrap_err();
    assert!(matches!(e, FatError::NotADirectory { .. }), "{e}");
    let e = fat.read_file("/EFI/BOOT/BOOTX64.EFI", 1000).unwrap_err();
    assert!(e.to_string().contains("/EFI/BOOT/BOOTX64.EFI"), "{e}");
    assert!(matches!(e, FatError::FileTooLarge { .. }), "{e}");
}

#[test]
fn fat12_512() {
    check_variant(12, 512, 8 << 20, &[], FatType::Fat12);
}

#[test]
fn fat16_512() {
    check_variant(16, 512, 16 << 20, &[], FatType::Fat16);
}

#[test]
fn fat32_512() {
    check_variant(32, 512, 40 << 20, &[], FatType::Fat32);
}

#[test]
fn fat12_4096() {
    check_variant(12, 4096, 12 << 20, &["-s", "1"], FatType::Fat12);
}

#[test]
fn fat16_4096() {
    check_variant(16, 4096, 32 << 20, &["-s", "1"], FatType::Fat16);
}

#[test]
fn fat32_4096() {
    check_variant(32, 4096, 300 << 20, &[], FatType::Fat32);
}
