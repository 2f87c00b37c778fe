//! End to end: real UKIs (systemd-stub 252 + Debian kernel) booted under OVMF + swtpm in QEMU,
//! with Secure Boot off, on (own PK/KEK/db), and with credentials and a system extension on the
//! ESP. nacre-measure's prediction, made from the disk image alone, must equal the guest's PCRs
//! and its firmware event log event by event; the signed manifest must verify against them; an
//! unsigned UKI under Secure Boot must be refused by the firmware and by the prediction alike.
//!
//! The boots take ~1-2 minutes under TCG; they run once per test binary and the artifacts stay in
//! target/tmp/e2e-boot for inspection.

use nacre_eventlog::tcg::EventLog;
use nacre_eventlog::HashAlg;
use nacre_measure::diff::{self, Observed};
use nacre_measure::efivars::SecureBootVars;
use nacre_measure::predict::{predict, BootConfig, PredictError, Prediction, PREDICTED_PCRS};
use nacre_measure::source::BootFiles;
use nacre_measure::uki::StubProfile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Build and boot all variants once.
fn captures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-boot");
        let status = Command::new(repo().join("tests/e2e/build-variants.sh"))
            .arg(&dir)
            .status()
            .expect("tests/e2e/build-variants.sh");
        assert!(status.success(), "building the boot variants failed");
        let status = Command::new(repo().join("tests/e2e/capture-all.sh"))
            .arg(&dir)
            .status()
            .expect("tests/e2e/capture-all.sh");
        assert!(
            status.success(),
            "booting the variants failed (see {}/*/capture/console.log)",
            dir.display()
        );
        dir
    })
}

fn config(variant: &str, files: &BootFiles) -> BootConfig {
    let vars = captures().join(variant).join("vars.fd");
    let secure_boot = if vars.exists() {
        SecureBootVars::from_ovmf_varstore(&std::fs::read(vars).unwrap()).unwrap()
    } else {
        SecureBootVars::default()
    };
    BootConfig {
        secure_boot,
        dropins: files.dropins.clone(),
        ..BootConfig::default()
    }
}

fn captured_pcrs(variant: &str, alg: HashAlg) -> BTreeMap<u32, Vec<u8>> {
    let file = match alg {
        HashAlg::Sha256 => "capture/pcrs.json".to_string(),
        other => format!("capture/pcrs-{}.json", other.name()),
    };
    let raw: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(captures().join(variant).join(file)).unwrap())
            .unwrap();
    raw.into_iter()
        .map(|(k, v)| (k.parse().unwrap(), hex::decode(v).unwrap()))
        .collect()
}

fn check_variant(variant: &str) -> Prediction {
    check_variant_bank(variant, HashAlg::Sha256)
}

fn check_variant_bank(variant: &str, alg: HashAlg) -> Prediction {
    let dir = captures().join(variant);
    let files = BootFiles::open(&dir.join("disk.img")).unwrap();
    assert!(files.from_disk);
    let cfg = BootConfig {
        alg,
        ..config(variant, &files)
    };
    let p = predict(&files.uki, &cfg).unwrap();

    // Event by event against the firmware log.
    let log = EventLog::parse(&std::fs::read(dir.join("capture/eventlog.bin")).unwrap()).unwrap();
    let observed: Vec<Observed> = log
        .events
        .iter()
        .filter_map(|e| Observed::from_log(e, p.alg))
        .collect();
    let diffs = diff::compare(&p.events, &observed, &PREDICTED_PCRS);
    assert!(
        diffs.is_empty(),
        "{variant}: {}",
        diffs
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Value by value against the PCRs the guest read from its TPM.
    let pcrs = captured_pcrs(variant, alg);
    for (pcr, value) in &p.pcrs {
        assert_eq!(
            hex::encode(value),
            hex::encode(&pcrs[pcr]),
            "{variant}: PCR {pcr}"
        );
    }
    p
}

#[test]
fn plain_boot_matches_prediction() {
    let p = check_variant("plain");
    assert!(!p.secure_boot);
    // Without Secure Boot the stub's LoadImage of the kernel is measured into PCR 4.
    assert_eq!(p.events.iter().filter(|e| e.pcr == 4).count(), 4);
}

#[test]
fn secure_boot_matches_prediction() {
    let p = check_variant("sb");
    assert!(p.secure_boot);
    assert!(p.events.iter().any(
        |e| e.pcr == 7 && e.event_type == nacre_eventlog::tcg::EventType::EfiVariableAuthority
    ));
}

#[test]
fn credentials_and_sysext_boot_matches_prediction() {
    let p = check_variant("extra");
    assert_eq!(p.events.iter().filter(|e| e.pcr == 12).count(), 2);
    assert_eq!(p.events.iter().filter(|e| e.pcr == 13).count(), 1);
    // The drop-ins change PCR 9 (they are appended to the initrd) and 12/13, nothing else.
    let plain = check_variant("plain");
    for pcr in [4, 7, 11] {
        assert_eq!(p.pcrs[&pcr], plain.pcrs[&pcr], "PCR {pcr}");
    }
    for pcr in [9, 12, 13] {
        assert_ne!(p.pcrs[&pcr], plain.pcrs[&pcr], "PCR {pcr}");
    }
}

#[test]
fn systemd_stub_257_boot_matches_prediction() {
    // trixie's stub on the same kernel, initrd, cmdline and os-release as `plain`: it measures
    // its .sbat into PCR 11 and appends .extra/os-release to the initrd (PCR 9).
    let p = check_variant("stub257");
    assert_eq!(p.stub, StubProfile::V257);
    assert!(p
        .events
        .iter()
        .any(|e| e.pcr == 11 && e.description.starts_with(".sbat")));
    let plain = check_variant("plain");
    assert_ne!(p.pcrs[&9], plain.pcrs[&9]);
    // Like 252, it starts the same kernel through LoadImage: the last PCR 4 event is the same.
    let kernel = |p: &Prediction| {
        p.events
            .iter()
            .rfind(|e| e.pcr == 4)
            .unwrap()
            .digest
            .clone()
    };
    assert_eq!(kernel(&p), kernel(&plain));
}

#[test]
fn sha384_bank_matches_prediction() {
    // The plain disk booted with a TPM that has sha256 and sha384 banks.
    let p = check_variant_bank("plain-sha384", HashAlg::Sha384);
    assert!(p.pcrs.values().all(|v| v.len() == 48));
}

#[test]
fn unsigned_uki_is_refused_by_firmware_and_prediction() {
    let dir = captures().join("sb-unsigned");
    let result = std::fs::read_to_string(dir.join("capture/result")).unwrap();
    assert!(result.contains("refused"), "{result}");
    let files = BootFiles::open(&dir.join("disk.img")).unwrap();
    let err = predict(&files.uki, &config("sb-unsigned", &files)).unwrap_err();
    assert!(matches!(err, PredictError::NotAuthorized), "{err}");
}

/// The release flow a user runs: golden manifest signed, then verified against the node's PCRs
/// and event log with the CLI; a manifest for another image, a tampered manifest or a forged
/// event log are refused.
#[test]
fn cli_golden_sign_and_verify_against_the_boot() {
    let bin = env!("CARGO_BIN_EXE_nacre-measure");
    let dir = captures();
    let work = tempfile::tempdir().unwrap();
    let w = |n: &str| work.path().join(n);
    let run = |args: &[&str]| Command::new(bin).args(args).output().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let sb = dir.join("sb");
    assert!(run(&["keygen", "--prefix", &s(&w("release"))])
        .status
        .success());
    let out = run(&[
        "golden",
        &s(&sb.join("disk.img")),
        "--vars",
        &s(&sb.join("vars.fd")),
        "--phase",
        "none",
        "--version",
        "v0.0.1-test",
        "--out",
        &s(&w("measurements.json")),
        "--key",
        &s(&w("release.key")),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verify = |manifest: &Path, pcrs: &Path, log: &Path| {
        run(&[
            "verify",
            &s(manifest),
            "--key",
            &s(&w("release.pub")),
            "--pcrs",
            &s(pcrs),
            "--eventlog",
            &s(log),
            "--json",
        ])
    };
    let cap = sb.join("capture");
    let ok = verify(
        &w("measurements.json"),
        &cap.join("pcrs.json"),
        &cap.join("eventlog.bin"),
    );
    assert!(
        ok.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );

    // The plain boot is a different node state: PCR 7 (Secure Boot off) and 4 differ.
    let plain = dir.join("plain/capture");
    let bad = verify(
        &w("measurements.json"),
        &plain.join("pcrs.json"),
        &plain.join("eventlog.bin"),
    );
    assert_eq!(bad.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    let failed: Vec<u64> = report["pcrs"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pcr"].as_u64().unwrap())
        .collect();
    assert!(failed.contains(&7) && failed.contains(&4), "{report}");

    // A log that does not replay to the PCRs it comes with is refused outright.
    let forged = verify(
        &w("measurements.json"),
        &cap.join("pcrs.json"),
        &plain.join("eventlog.bin"),
    );
    assert!(!forged.status.success());
    assert!(String::from_utf8_lossy(&forged.stderr).contains("does not belong to these PCRs"));

    // One changed byte in the manifest: the signature no longer verifies.
    let mut m = std::fs::read(w("measurements.json")).unwrap();
    let at = m.iter().position(|&b| b == b'"').unwrap();
    m[at + 1] ^= 0x01;
    std::fs::write(w("tampered.json"), &m).unwrap();
    std::fs::copy(w("measurements.json.sig"), w("tampered.json.sig")).unwrap();
    let t = verify(
        &w("tampered.json"),
        &cap.join("pcrs.json"),
        &cap.join("eventlog.bin"),
    );
    assert!(!t.status.success());
    assert!(
        String::from_utf8_lossy(&t.stderr).contains("signature"),
        "{}",
        String::from_utf8_lossy(&t.stderr)
    );
}

/// nacre-init's runtime log: a golden manifest for the attestation phase (`sysinit`) verifies
/// against the real firmware log of a boot plus the init's CEL records (written with the shared
/// event definitions), and refuses a runtime log that stops a phase early.
#[test]
fn runtime_log_phases_verify_with_the_firmware_log() {
    use nacre_eventlog::runtime::{Phase, RuntimeEvent};
    use nacre_eventlog::{CelWriter, HashAlg};
    let bin = env!("CARGO_BIN_EXE_nacre-measure");
    let plain = captures().join("plain");
    let work = tempfile::tempdir().unwrap();
    let w = |n: &str| work.path().join(n).to_str().unwrap().to_string();
    let write_cel = |path: &str, upto: Phase| {
        let mut cel = CelWriter::open(Path::new(path)).unwrap();
        for phase in Phase::ALL.into_iter().filter(|p| *p <= upto) {
            let rec = RuntimeEvent::Phase(phase)
                .to_cel(cel.next_recnum(), &[HashAlg::Sha256])
                .unwrap();
            cel.append(&rec).unwrap();
        }
    };
    write_cel(&w("runtime.cel"), Phase::Sysinit);
    write_cel(&w("short.cel"), Phase::LeaveInitrd);
    let run = |args: &[&str]| Command::new(bin).args(args).output().unwrap();
    assert!(run(&["keygen", "--prefix", &w("k")]).status.success());
    let out = run(&[
        "golden",
        plain.join("disk.img").to_str().unwrap(),
        "--phase",
        "sysinit",
        "--out",
        &w("m.json"),
        "--key",
        &w("k.key"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = plain.join("capture/eventlog.bin");
    let verify = |cel: &str| {
        run(&[
            "verify",
            &w("m.json"),
            "--key",
            &w("k.pub"),
            "--eventlog",
            log.to_str().unwrap(),
            "--runtime-log",
            cel,
        ])
    };
    let ok = verify(&w("runtime.cel"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    // A record whose text was edited while its digest stayed: refused, not replayed.
    let edited = std::fs::read_to_string(w("runtime.cel")).unwrap().replacen(
        "\"sysinit\"",
        "\"sysinix\"",
        1,
    );
    std::fs::write(w("edited.cel"), edited).unwrap();
    let e = verify(&w("edited.cel"));
    assert!(!e.status.success());
    assert!(
        String::from_utf8_lossy(&e.stderr).contains("not a valid nacre runtime event"),
        "{}",
        String::from_utf8_lossy(&e.stderr)
    );
    let short = verify(&w("short.cel"));
    assert_eq!(short.status.code(), Some(2));
    let text = String::from_utf8_lossy(&short.stdout);
    assert!(
        text.contains("PCR 11") && text.contains("sysinit"),
        "{text}"
    );
}
