//! Damaged FAT volumes (made with mkfs.vfat/mtools, then patched) must give errors that name
//! the problem and the file, and never hang or panic.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{bytes, mkfs, mtool, read_at, write_at};
use nacre_diskimage::fat::{Fat, FatError, FatType, Geometry};

const LIMIT: u64 = 64 << 20;

struct Vol {
    _tmp: tempfile::TempDir,
    img: PathBuf,
    geo: Geometry,
}

/// A volume with `/loop.bin` (5 clusters) and `/a/b/` (`/a` spans several clusters).
fn volume(fat_bits: u32, size: u64) -> Vol {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("v.img");
    mkfs(&img, fat_bits, 512, size, &["-s", "1"]);
    let geo = open(&img).geometry().clone();
    let src = tmp.path().join("loop.bin");
    std::fs::write(&src, bytes(7, 5 * geo.cluster_size as usize)).unwrap();
    mtool("mcopy", &img, &[src.to_str().unwrap(), "::/loop.bin"]);
    mtool("mmd", &img, &["::/a", "::/a/b"]);
    for i in 0..40 {
        let f = tmp
            .path()
            .join(format!("a long file name to fill the directory {i}"));
        std::fs::write(&f, b"x").unwrap();
        mtool("mcopy", &img, &[f.to_str().unwrap(), "::/a/"]);
    }
    Vol {
        _tmp: tmp,
        img,
        geo,
    }
}

fn open(img: &Path) -> Fat<File> {
    Fat::new(File::open(img).unwrap()).unwrap()
}

/// Sets the FAT entry of `cluster` in every FAT copy.
fn set_fat(v: &Vol, cluster: u32, value: u32) {
    let g = &v.geo;
    let c = u64::from(cluster);
    for copy in 0..g.num_fats {
        let base =
            u64::from(g.reserved_sectors + copy * g.fat_sectors) * u64::from(g.bytes_per_sector);
        match g.fat_type {
            FatType::Fat12 => {
                let off = base + c + c / 2;
                let old = read_at(&v.img, off, 2);
                let mut w = u16::from_le_bytes([old[0], old[1]]);
                w = if cluster % 2 == 1 {
                    (w & 0x000F) | ((value as u16) << 4)
                } else {
                    (w & 0xF000) | (value as u16 & 0x0FFF)
                };
                write_at(&v.img, off, &w.to_le_bytes());
            }
            FatType::Fat16 => write_at(&v.img, base + 2 * c, &(value as u16).to_le_bytes()),
            FatType::Fat32 => write_at(&v.img, base + 4 * c, &value.to_le_bytes()),
        }
    }
}

/// Byte offset of the 8.3 entry `name11` within `len` bytes at `start`.
fn find_entry(img: &Path, start: u64, len: usize, name11: &[u8; 11]) -> u64 {
    let region = read_at(img, start, len);
    let i = region
        .chunks(32)
        .position(|e| e.starts_with(name11))
        .expect("entry not found");
    start + 32 * i as u64
}

fn root_entry(v: &Vol, name11: &[u8; 11]) -> u64 {
    let g = &v.geo;
    if g.fat_type == FatType::Fat32 {
        find_entry(
            &v.img,
            g.cluster_offset(g.root_cluster),
            g.cluster_size as usize,
            name11,
        )
    } else {
        find_entry(
            &v.img,
            g.root_dir_offset(),
            g.root_dir_bytes() as usize,
            name11,
        )
    }
}

fn read_err(v: &Vol, path: &str) -> FatError {
    let t = Instant::now();
    let e = open(&v.img).read_file(path, LIMIT).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    e
}

#[test]
fn bpb_zero_bytes_per_sector() {
    let v = volume(16, 16 << 20);
    write_at(&v.img, 11, &[0, 0]);
    let e = Fat::new(File::open(&v.img).unwrap()).unwrap_err();
    assert!(matches!(e, FatError::BadBootSector { .. }), "{e}");
    assert!(
        e.to_string().contains("bytes per sector (offset 11) is 0"),
        "{e}"
    );
}

#[test]
fn bpb_cluster_size_not_power_of_two() {
    let v = volume(16, 16 << 20);
    write_at(&v.img, 13, &[3]);
    let e = Fat::new(File::open(&v.img).unwrap()).unwrap_err();
    assert!(
        e.to_string()
            .contains("sectors per cluster (offset 13) is 3"),
        "{e}"
    );
}

/// What mkosi's offline repart produces for a small ESP with 4096-byte sectors: mkfs.vfat only
/// warns, but the volume is FAT16-sized with a FAT32 layout and firmware skips it.
#[test]
fn fat32_layout_with_too_few_clusters() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("small.img");
    mkfs(&img, 32, 4096, 64 << 20, &[]);
    let e = Fat::new(File::open(&img).unwrap()).unwrap_err();
    assert!(
        matches!(
            e,
            FatError::TypeMismatch {
                layout: "FAT32",
                by_count: "FAT16",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn truncated_volume() {
    let v = volume(16, 16 << 20);
    File::options()
        .write(true)
        .open(&v.img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let e = Fat::new(File::open(&v.img).unwrap()).unwrap_err();
    assert!(
        matches!(
            e,
            FatError::VolumeTruncated {
                device_bytes: 0x80_0000,
                ..
            }
        ),
        "{e}"
    );
}

fn chain_loop(fat_bits: u32, size: u64) {
    let v = volume(fat_bits, size);
    let c = open(&v.img).clusters("/loop.bin").unwrap();
    assert_eq!(c.len(), 5);
    set_fat(&v, c[3], c[1]);
    let e = read_err(&v, "/LOOP.BIN");
    assert!(
        matches!(&e, FatError::ChainLoop { path, cluster } if path == "/LOOP.BIN" && *cluster == c[1]),
        "{e}"
    );
}

#[test]
fn file_chain_loop_fat12() {
    chain_loop(12, 1 << 20);
}

#[test]
fn file_chain_loop_fat16() {
    chain_loop(16, 16 << 20);
}

#[test]
fn file_chain_loop_fat32() {
    chain_loop(32, 40 << 20);
}

#[test]
fn directory_chain_loop() {
    for (bits, size) in [(12, 1 << 20), (16, 16 << 20), (32, 40 << 20)] {
        let v = volume(bits, size);
        let c = open(&v.img).clusters("/a").unwrap();
        assert!(c.len() > 1, "FAT{bits}: /a should span clusters");
        set_fat(&v, *c.last().unwrap(), c[0]);
        let t = Instant::now();
        let e = open(&v.img).read_dir("/a").unwrap_err();
        assert!(
            matches!(&e, FatError::ChainLoop { path, .. } if path == "/a"),
            "FAT{bits}: {e}"
        );
        assert!(open(&v.img).walk().is_err());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}

#[test]
fn chain_shorter_than_size() {
    let v = volume(16, 16 << 20);
    let c = open(&v.img).clusters("/loop.bin").unwrap();
    set_fat(&v, c[1], 0xFFFF);
    let e = read_err(&v, "/loop.bin");
    assert!(
        matches!(
            e,
            FatError::ChainTooShort {
                found: 2,
                needed: 5,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().starts_with("/loop.bin: "), "{e}");
}

#[test]
fn link_out_of_range_free_or_bad() {
    for (value, what) in [(0xFFF0, "points outside"), (0, "free"), (0xFFF7, "bad")] {
        let v = volume(16, 16 << 20);
        let c = open(&v.img).clusters("/loop.bin").unwrap();
        set_fat(&v, c[1], value);
        let e = read_err(&v, "/loop.bin");
        assert!(
            matches!(e, FatError::BadLink { cluster, .. } if cluster == c[1]),
            "{e}"
        );
        assert!(e.to_string().contains(what), "{e}");
    }
}

#[test]
fn first_cluster_out_of_range() {
    let v = volume(16, 16 << 20);
    let off = root_entry(&v, b"LOOP    BIN");
    write_at(&v.img, off + 26, &0xFFF0u16.to_le_bytes());
    let e = read_err(&v, "/loop.bin");
    assert!(
        matches!(
            e,
            FatError::FirstClusterOutOfRange {
                cluster: 0xFFF0,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn absurd_and_too_large_sizes() {
    let v = volume(32, 40 << 20);
    let off = root_entry(&v, b"LOOP    BIN");
    write_at(&v.img, off + 28, &u32::MAX.to_le_bytes());
    let e = read_err(&v, "/loop.bin");
    assert!(matches!(e, FatError::SizeExceedsVolume { .. }), "{e}");
    // One byte more than the 5-cluster chain holds.
    let size = 5 * v.geo.cluster_size + 1;
    write_at(&v.img, off + 28, &size.to_le_bytes());
    let e = read_err(&v, "/loop.bin");
    assert!(
        matches!(
            e,
            FatError::ChainTooShort {
                found: 5,
                needed: 6,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn directory_cycle_in_walk() {
    let v = volume(16, 16 << 20);
    let a = open(&v.img).clusters("/a").unwrap();
    let off = find_entry(
        &v.img,
        v.geo.cluster_offset(a[0]),
        v.geo.cluster_size as usize,
        b"B          ",
    );
    write_at(&v.img, off + 26, &(a[0] as u16).to_le_bytes());
    let e = open(&v.img).walk().unwrap_err();
    assert!(
        matches!(&e, FatError::DirectoryCycle { path, .. } if path == "/a/b"),
        "{e}"
    );
}
