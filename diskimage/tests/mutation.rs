//! Poor man's fuzzing that runs in every `cargo test`: tens of thousands of pseudo-random
//! mutations of small real images (built with mkfs.vfat/mtools and sfdisk), each parsed fully.
//! A panic fails with the iteration and leaves the image for reproduction; a hang trips a
//! watchdog that aborts the process. The cargo-fuzz targets in `fuzz/` go further.

mod common;

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bytes, mkfs, mtool, run, tool};
use nacre_diskimage::fat::Fat;
use nacre_diskimage::gpt::Gpt;

/// Iterations per test; `NACRE_MUTATIONS` overrides the default.
fn iters(default: u64) -> u64 {
    std::env::var("NACRE_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Aborts the process if `progress` stops moving for 60 s: a parser stuck in a loop must fail
/// the run, not stall CI.
fn watchdog(progress: Arc<AtomicU64>, what: &'static str) {
    std::thread::spawn(move || {
        let mut last = u64::MAX;
        loop {
            std::thread::sleep(Duration::from_secs(60));
            let now = progress.load(Ordering::Relaxed);
            if now == u64::MAX {
                return;
            }
            if now == last {
                eprintln!("{what}: no progress in 60 s at iteration {now}: parser hangs");
                std::process::abort();
            }
            last = now;
        }
    });
}

/// Applies 1–8 mutations inside the `hot` ranges (or anywhere, 1 in 8), returning the
/// original bytes for restoring.
fn mutate(img: &mut [u8], hot: &[(usize, usize)], rng: &mut Rng) -> Vec<(usize, u8)> {
    let mut undo = Vec::new();
    for _ in 0..1 + rng.below(8) {
        let pos = if rng.below(8) == 0 || hot.is_empty() {
            rng.below(img.len() as u64) as usize
        } else {
            let (s, e) = hot[rng.below(hot.len() as u64) as usize];
            s + rng.below((e - s) as u64) as usize
        };
        let r = rng.next();
        let val: &[u8] = match r % 6 {
            0 => &[0],
            1 => &[0xFF],
            2 => &[0xFF, 0x0F],
            3 => &[0xF8, 0xFF, 0xFF, 0x0F],
            _ => &[],
        };
        let n = if val.is_empty() { 1 } else { val.len() };
        for i in 0..n {
            let Some(b) = img.get_mut(pos + i) else { break };
            undo.push((pos + i, *b));
            *b = match val.get(i) {
                Some(v) => *v,
                None if r % 6 == 4 => *b ^ (1 << ((r >> 8) % 8)),
                None => (r >> 16) as u8,
            };
        }
    }
    undo
}

fn run_mutations(
    name: &'static str,
    mut img: Vec<u8>,
    hot: &[(usize, usize)],
    iters: u64,
    check: fn(&[u8]) -> bool,
) {
    let progress = Arc::new(AtomicU64::new(0));
    watchdog(progress.clone(), name);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ iters);
    let started = Instant::now();
    let mut slowest = (Duration::ZERO, 0);
    let mut parsed = 0u64;
    for i in 0..iters {
        progress.store(i, Ordering::Relaxed);
        let undo = mutate(&mut img, hot, &mut rng);
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| check(&img)));
        slowest = slowest.max((t.elapsed(), i));
        parsed += u64::from(matches!(result, Ok(true)));
        if result.is_err() {
            let out = std::env::temp_dir().join(format!("nacre-{name}-crash-{i}.img"));
            std::fs::write(&out, &img).unwrap();
            panic!(
                "{name}: parser panicked at iteration {i}; input saved to {}",
                out.display()
            );
        }
        for (p, b) in undo.into_iter().rev() {
            img[p] = b;
        }
    }
    progress.store(u64::MAX, Ordering::Relaxed);
    eprintln!(
        "{name}: {iters} mutations in {:?}, {parsed} still parsed, slowest {:?} (iteration {})",
        started.elapsed(),
        slowest.0,
        slowest.1
    );
    // Both outcomes must be common, or the mutations are not exercising the parser.
    assert!(
        parsed > iters / 20 && parsed < iters - iters / 20,
        "{name}: {parsed}/{iters} parsed"
    );
}

/// Opens the volume, walks every directory and reads every file (as the fuzz target does).
/// True if the whole walk succeeded.
fn check_fat(img: &[u8]) -> bool {
    let Ok(mut fat) = Fat::new(Cursor::new(img)) else {
        return false;
    };
    let walked = fat.walk();
    let ok = walked.is_ok();
    if let Ok(all) = walked {
        for (path, e) in all {
            if !e.is_dir {
                let _ = fat.open_entry(&path, &e).and_then(|mut f| f.read_all());
            }
        }
    }
    // Lookups through damaged directories, also where the walk gave up.
    let _ = fat.read_file("\\efi\\boot\\bootx64.efi", 1 << 20);
    let _ = fat.clusters("/many");
    ok
}

/// Builds a small populated volume and returns it with the byte ranges worth mutating:
/// boot sector, the start of the FAT, the root directory and every directory cluster.
fn fat_image(dir: &Path, bits: u32, size: u64) -> (Vec<u8>, Vec<(usize, usize)>) {
    let img = dir.join(format!("fat{bits}.img"));
    mkfs(&img, bits, 512, size, &["-s", "1"]);
    mtool(
        "mmd",
        &img,
        &["::/EFI", "::/EFI/BOOT", "::/many", "::/a", "::/a/b"],
    );
    let src = dir.join("src");
    std::fs::write(&src, bytes(9, 20_000)).unwrap();
    mtool(
        "mcopy",
        &img,
        &[src.to_str().unwrap(), "::/EFI/BOOT/BOOTX64.EFI"],
    );
    std::fs::write(&src, b"x").unwrap();
    for i in 0..24 {
        mtool(
            "mcopy",
            &img,
            &[
                src.to_str().unwrap(),
                &format!("::/many/a long file name {i}.txt"),
            ],
        );
    }
    mtool(
        "mcopy",
        &img,
        &[src.to_str().unwrap(), "::/a/b/Deep Name.conf"],
    );
    let data = std::fs::read(&img).unwrap();
    let mut fat = Fat::new(Cursor::new(data.as_slice())).unwrap();
    let g = fat.geometry().clone();
    let mut hot = vec![
        (0, 512),
        (
            g.fat_offset() as usize,
            (g.fat_offset() + g.fat_bytes().min(1024)) as usize,
        ),
    ];
    if g.root_dir_bytes() > 0 {
        hot.push((
            g.root_dir_offset() as usize,
            (g.root_dir_offset() + g.root_dir_bytes()) as usize,
        ));
    }
    let dirs: Vec<String> = fat
        .walk()
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.is_dir)
        .map(|(p, _)| p)
        .collect();
    for d in dirs.iter().map(String::as_str).chain(["/"]) {
        for c in fat.clusters(d).unwrap() {
            let o = g.cluster_offset(c) as usize;
            hot.push((o, o + g.cluster_size as usize));
        }
    }
    assert!(hot.len() > 6, "expected multi-cluster directories");
    // Only the used part of each range matters (past the end marker nothing is parsed).
    for r in &mut hot {
        let used = data[r.0..r.1]
            .iter()
            .rposition(|&b| b != 0)
            .map_or(32, |p| p + 33);
        r.1 = r.1.min(r.0 + used);
    }
    hot.push((510, 512));
    (data, hot)
}

#[test]
fn fat12_mutations() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, hot) = fat_image(tmp.path(), 12, 256 << 10);
    run_mutations("fat12", img, &hot, iters(50_000), check_fat);
}

#[test]
fn fat16_mutations() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, hot) = fat_image(tmp.path(), 16, 3 << 20);
    run_mutations("fat16", img, &hot, iters(25_000), check_fat);
}

#[test]
fn fat32_mutations() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, hot) = fat_image(tmp.path(), 32, 34 << 20);
    run_mutations("fat32", img, &hot, iters(25_000), check_fat);
}

/// True if the table parsed at the real length.
fn check_gpt(img: &[u8]) -> bool {
    let len = img.len() as u64;
    let ok = Gpt::read(&mut Cursor::new(img), len).is_ok();
    // Also lie about the length now and then: callers pass it separately.
    let lens = [
        len,
        len / 2 + (u64::from(img[0x1C0]) << 9),
        u64::from(img[0x1C1]) << 12,
    ];
    for l in lens {
        if let Ok(gpt) = Gpt::read(&mut Cursor::new(img), l) {
            for p in &gpt.partitions {
                let _ = (p.byte_offset(), p.byte_len(), p.type_name());
            }
        }
    }
    ok
}

#[test]
fn gpt_mutations() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("gpt.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let mut c = Command::new(tool("sfdisk"));
    c.arg("-q").arg(&img).stdin(std::fs::File::open({
        let s = tmp.path().join("script");
        std::fs::write(&s, "label: gpt\nsize=256K, type=U, name=\"ESP\"\nsize=128K, type=L, name=\"x\"\ntype=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\n").unwrap();
        s
    }).unwrap());
    run(&mut c);
    let data = std::fs::read(&img).unwrap();
    assert_eq!(
        Gpt::read(&mut Cursor::new(&data), data.len() as u64)
            .unwrap()
            .partitions
            .len(),
        3
    );
    let end = data.len();
    let hot = [
        (0x1B0, 0x200),
        (512, 512 + 92),
        (1024, 1024 + 3 * 128),
        (end - 512, end - 512 + 92),
    ];
    run_mutations("gpt", data, &hot, iters(50_000), check_gpt);
}
