//! `nacre-measure golden --not-after/--lifetime-days`, its default lifetime and --no-expiry,
//! and `verify` of an expired manifest, on a UKI built from this machine's kernel and
//! systemd-stub (no QEMU).

use nacre_measure::manifest::{parse_rfc3339_utc, Manifest};
use std::process::Command;
use support::build_uki;

mod support;

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nacre-measure"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn golden_with_a_lifetime_and_verify_of_an_expired_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let uki = build_uki(dir.path());
    let w = |n: &str| dir.path().join(n).display().to_string();
    ok(&cli(&["keygen", "--prefix", &w("k")]));
    let golden = |out: &str, extra: &[&str]| {
        let mut a = vec![
            "golden",
            uki.to_str().unwrap(),
            "--version",
            "1.4.0",
            "--out",
            out,
            "--key",
        ];
        let key = w("k.key");
        a.push(&key);
        a.extend_from_slice(extra);
        cli(&a)
    };

    // --lifetime-days: not_after is that many days from now.
    let m = w("m.json");
    ok(&golden(&m, &["--lifetime-days", "30"]));
    let manifest = Manifest::from_json(&std::fs::read(&m).unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = parse_rfc3339_utc(manifest.not_after.as_deref().unwrap()).unwrap();
    assert!(t.abs_diff(now + 30 * 86400) < 120, "{t} vs {now}");
    let out = cli(&["verify", &m, "--key", &w("k.pub")]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("lifetime: OK"));

    // --not-after in the past: signed, but verify says expired and fails.
    let old = w("old.json");
    ok(&golden(&old, &["--not-after", "2025-01-31T00:00:00Z"]));
    let out = cli(&["verify", &old, "--key", &w("k.pub"), "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["expired"], true);
    assert_eq!(j["not_after"], "2025-01-31T00:00:00Z");
    assert_eq!(j["ok"], false);

    // Without a lifetime flag: the default lifetime, 180 days from now.
    let default = w("default.json");
    ok(&golden(&default, &[]));
    let manifest = Manifest::from_json(&std::fs::read(&default).unwrap()).unwrap();
    let t = parse_rfc3339_utc(manifest.not_after.as_deref().expect("a default not_after")).unwrap();
    assert!(t.abs_diff(now + 180 * 86400) < 120, "{t} vs {now}");

    // --no-expiry: no not_after (the manifest never expires); not with a lifetime flag.
    let plain = w("plain.json");
    ok(&golden(&plain, &["--no-expiry"]));
    assert!(!String::from_utf8_lossy(&std::fs::read(&plain).unwrap()).contains("not_after"));
    for flags in [
        ["--no-expiry", "--lifetime-days", "3"],
        ["--no-expiry", "--not-after", "2027-01-31T00:00:00Z"],
    ] {
        let out = golden(&w("conflict.json"), &flags);
        assert!(!out.status.success(), "{flags:?}");
    }

    // A malformed time, and both flags at once, are refused.
    let out = golden(&w("bad.json"), &["--not-after", "2025-01-31"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--not-after"));
    let out = golden(
        &w("both.json"),
        &[
            "--not-after",
            "2027-01-31T00:00:00Z",
            "--lifetime-days",
            "3",
        ],
    );
    assert!(!out.status.success());
}
