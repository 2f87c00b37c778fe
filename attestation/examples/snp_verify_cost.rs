//! The cost of verifying one SEV-SNP report on one core: `cargo run -p nacre-attestation
//! --example snp_verify_cost [ITERATIONS]` (add `--release` for optimised code). Times
//! `snp::verify_report` (parse, VCEK/VLEK chain to the bundled ASK/ASVK with RSA-PSS, report
//! signature with ECDSA P-384, TCB/chip binding, platform policy) on the real fixtures, and,
//! once, `AmdRoots::bundled` (three ARKs' self-signatures and their ASK/ASVK signatures).

use nacre_attestation::snp::{verify_report, AmdRoots, Generation, SnpPolicy, Tcb};
use std::time::Instant;

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/snp");
    let read = |f: &str| std::fs::read(format!("{dir}/{f}")).expect("fixture");
    let t = Instant::now();
    let roots = AmdRoots::bundled().expect("bundled roots");
    println!(
        "AmdRoots::bundled (once at start): {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let policy = SnpPolicy::new(0, Generation::ALL.map(|g| (g, Tcb::default())));
    for (report, vek) in [
        ("milan-report.bin", "milan-vcek.der"),
        ("turin-report.bin", "turin-vcek.der"),
        ("aws-vlek-report.bin", "aws-vlek.der"),
    ] {
        let (r, v) = (read(report), read(vek));
        verify_report(&r, &v, &roots, &policy).expect("verifies");
        let t = Instant::now();
        for _ in 0..n {
            verify_report(&r, &v, &roots, &policy).expect("verifies");
        }
        let each = t.elapsed().as_secs_f64() / f64::from(n);
        println!(
            "{report}: {:.3} ms per report ({:.0}/s, {n} iterations)",
            each * 1e3,
            1.0 / each
        );
    }
}
