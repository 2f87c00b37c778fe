//! The seed corpus of PID 1's fuzz targets (`luks2_header`, `verity_superblock`,
//! `ext4_superblock`, `dhcp`: fuzz/seeds.list) through the same entry functions the fuzz targets
//! call (fuzz/src/pid1.rs, which compiles nacre-init's verity parser from its source), in the
//! normal `cargo test`: every seed must give what the list says and none may panic. The other
//! targets' seeds are checked by keyservice/tests/fuzz_corpus.rs; fuzzing is `scripts/fuzz.sh`.

#[path = "../../fuzz/src/pid1.rs"]
mod pid1;

use std::path::{Path, PathBuf};

/// The targets whose entry functions are in fuzz/src/pid1.rs (keyservice's test skips them).
const TARGETS: [&str; 4] = [
    "luks2_header",
    "verity_superblock",
    "ext4_superblock",
    "dhcp",
];

type Entry = fn(&[u8]) -> Result<(), String>;

fn entry(target: &str) -> Option<Entry> {
    Some(match target {
        "luks2_header" => pid1::luks2_header,
        "verity_superblock" => pid1::verity_superblock,
        "ext4_superblock" => pid1::ext4_superblock,
        "dhcp" => pid1::dhcp,
        _ => return None,
    })
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(p: &str) -> Vec<u8> {
    let p = root().join(p);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// (target, expect ok, path) of this test's lines of fuzz/seeds.list.
fn seeds() -> Vec<(String, bool, String)> {
    let list = String::from_utf8(read("fuzz/seeds.list")).expect("seeds.list is text");
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "seeds.list: {l:?} is not `target ok|err path`");
            let ok = match f[1] {
                "ok" => true,
                "err" => false,
                other => panic!("seeds.list: {other:?} is neither ok nor err"),
            };
            TARGETS
                .contains(&f[0])
                .then(|| (f[0].to_owned(), ok, f[2].to_owned()))
        })
        .collect()
}

#[test]
fn every_pid1_seed_gives_what_the_list_says() {
    let seeds = seeds();
    for t in TARGETS {
        assert!(
            root().join(format!("fuzz/fuzz_targets/{t}.rs")).exists(),
            "fuzz target {t} is missing from fuzz/fuzz_targets"
        );
        assert!(
            seeds.iter().any(|(s, ok, _)| s == t && *ok),
            "fuzz target {t} has no accepted seed in fuzz/seeds.list"
        );
        assert!(
            seeds.iter().any(|(s, ok, _)| s == t && !*ok),
            "fuzz target {t} has no refused seed in fuzz/seeds.list"
        );
    }
    let mut failures = Vec::new();
    for (target, ok, path) in &seeds {
        let f = entry(target).expect("a target of TARGETS");
        match (f(&read(path)), ok) {
            (Ok(()), true) | (Err(_), false) => {}
            (r, _) => failures.push(format!("{target} {path}: {r:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Edited copies of the accepted seeds are refused (the seeds above show acceptance): what an
/// attacker with the disk or the network would try first.
#[test]
fn edited_seeds_are_refused() {
    // LUKS2: one byte of the primary's JSON changed (checksum no longer matches), the label
    // removed from both copies with the checksums made right (a format that never completed),
    // the area cut short.
    let luks = read("fuzz/seeds/luks2/key-service.bin");
    assert_eq!(pid1::luks2_header(&luks), Ok(()));
    let mut e = luks.clone();
    e[4096 + 2] ^= 1;
    assert!(pid1::luks2_header(&e).unwrap_err().contains("checksum"));
    assert!(pid1::luks2_header(&luks[..luks.len() - 1]).is_err());
    let mut e = luks.clone();
    for at in [0usize, 16384] {
        e[at + 24..at + 72].fill(0);
        let sum = nacre_statedisk::luks2::copy_checksum(&e[at..at + 16384]);
        e[at + 448..at + 480].copy_from_slice(&sum);
    }
    assert!(pid1::luks2_header(&e).unwrap_err().contains("label"));

    // verity: version 2, an unknown algorithm, a salt longer than the superblock allows.
    let v = read("fuzz/seeds/verity/sha256-4k.bin");
    assert_eq!(pid1::verity_superblock(&v), Ok(()));
    for (at, byte) in [(8usize, 2u8), (32, b'm'), (81, 0x02)] {
        let mut e = v.clone();
        e[at] = byte;
        assert!(pid1::verity_superblock(&e).is_err(), "byte {at} = {byte}");
    }
    assert!(pid1::verity_superblock(&v[..511]).is_err());

    // ext4: the magic changed, the superblock cut.
    let x = read("fuzz/seeds/ext4/nacre-var.bin");
    assert_eq!(pid1::ext4_superblock(&x), Ok(()));
    let mut e = x.clone();
    e[1024 + 0x38] ^= 1;
    assert!(pid1::ext4_superblock(&e).is_err());
    assert!(pid1::ext4_superblock(&x[..2047]).is_err());

    // DHCP: the ACK without its end option, with a netmask that is not contiguous, cut inside
    // its options.
    let a = read("fuzz/seeds/dhcp/dnsmasq-ack.bin");
    assert_eq!(pid1::dhcp(&a), Ok(()));
    let end = a.iter().rposition(|&b| b == 255).unwrap();
    assert!(pid1::dhcp(&a[..end]).unwrap_err().contains("end option"));
    let mask = a
        .windows(6)
        .position(|w| w == [1, 4, 255, 255, 255, 0])
        .unwrap();
    let mut e = a.clone();
    e[mask + 4] = 0x0f;
    assert!(pid1::dhcp(&e).unwrap_err().contains("contiguous"));
    assert!(pid1::dhcp(&a[..250]).is_err());
}
