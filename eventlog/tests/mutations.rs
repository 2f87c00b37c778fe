//! A fuzzer that runs with `cargo test`: ~100k deterministic mutations of the real logs (and
//! of a CEL log) through every parser and decoder, checking that nothing panics and that
//! whatever parses also writes back and re-parses to the same log. The coverage-guided
//! cargo-fuzz targets `eventlog_tcg` and `eventlog_cel` in the top-level `fuzz/` go further;
//! this keeps the property checked on every build.

mod common;

use common::{log_bytes, FIXTURES};
use nacre_eventlog::{cel, decode, replay, EventLog, EventType, HashAlg, Phase, RuntimeEvent};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [u32; 10] = [
    0,
    1,
    2,
    3,
    23,
    24,
    0x20,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    0x8000_0001,
];

fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            1 if len >= 4 => {
                let i = rng.below(len - 3);
                let v = INTERESTING[rng.below(INTERESTING.len())];
                data[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            2 => data.truncate(rng.below(len + 1)),
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                data.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                let chunk = data[a..b].to_vec();
                let at = rng.below(len);
                data.splice(at..at, chunk);
            }
            _ => data.extend(std::iter::repeat_n(rng.next() as u8, rng.below(8))),
        }
    }
}

/// What the fuzz target `eventlog_tcg` (fuzz/src/lib.rs) does.
fn exercise_tcg(data: &[u8]) -> bool {
    let Ok(log) = EventLog::parse(data) else {
        return false;
    };
    for e in &log.events {
        let _ = e.decode().to_string();
    }
    let _ = replay(&log, &[]);
    let bytes = log.to_bytes().expect("a parsed log must serialize");
    assert_eq!(EventLog::parse(&bytes).as_ref(), Ok(&log), "round trip");
    true
}

#[test]
fn mutated_logs_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let seeds: Vec<Vec<u8>> = FIXTURES.iter().map(|n| log_bytes(n)).collect();
    let mut parsed = 0;
    let iterations = 60_000;
    for _ in 0..iterations {
        let mut data = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &mut data);
        parsed += usize::from(exercise_tcg(&data));
    }
    eprintln!("{parsed} of {iterations} mutated logs parsed");
    // Both outcomes must be common, or the mutations test nothing.
    assert!(
        parsed > iterations / 20 && parsed < iterations * 19 / 20,
        "{parsed}"
    );
}

#[test]
fn decoders_never_panic_on_any_slice() {
    let mut rng = Rng(42);
    let data: Vec<u8> = FIXTURES.iter().flat_map(|n| log_bytes(n)).collect();
    for _ in 0..30_000 {
        let a = rng.below(data.len());
        let b = (a + rng.below(1200)).min(data.len());
        let mut slice = data[a..b].to_vec();
        mutate(&mut rng, &mut slice);
        let t = EventType::NAMED[rng.below(EventType::NAMED.len())];
        let _ = decode::decode(t, &slice).to_string();
    }
}

#[test]
fn mutated_cel_logs_never_panic() {
    let mut text = Vec::new();
    for (i, ev) in Phase::ALL
        .map(RuntimeEvent::Phase)
        .into_iter()
        .chain([RuntimeEvent::ClusterId([1; 32])])
        .enumerate()
    {
        let rec = ev
            .to_cel(i as u64, &[HashAlg::Sha1, HashAlg::Sha256])
            .unwrap();
        text.extend(rec.to_line());
    }
    assert_eq!(cel::parse(&text).unwrap().len(), 5);
    let mut rng = Rng(7);
    for _ in 0..10_000 {
        let mut data = text.clone();
        mutate(&mut rng, &mut data);
        if let Ok(records) = cel::parse(&data) {
            for r in &records {
                let _ = RuntimeEvent::from_cel(r);
            }
        }
    }
}
