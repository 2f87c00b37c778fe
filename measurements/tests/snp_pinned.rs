//! `nacre-measure golden --snp-measurement`: observed SEV-SNP launch measurements (Azure's
//! paravisor's) pinned in the manifest's `snp` values; bad values refused. A UKI built from
//! this machine's kernel and systemd-stub (no QEMU).

use nacre_measure::manifest::Manifest;
use std::process::Command;
use support::build_uki;

mod support;

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nacre-measure"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn golden_pins_observed_snp_measurements_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let uki = build_uki(dir.path());
    let out = dir.path().join("m.json");
    let golden = |extra: &[&str]| {
        let mut a = vec![
            "golden",
            uki.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        cli(&a)
    };
    let (a, b) = ("AB".repeat(48), "cd".repeat(48));
    let o = golden(&[
        "--variant",
        "azure-sev-snp",
        "--snp-measurement",
        &a,
        "--snp-measurement",
        &b,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = Manifest::from_json(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(m.snp.len(), 2, "{:?}", m.snp);
    assert_eq!(m.snp[0].measurement, "ab".repeat(48));
    assert_eq!(m.snp[1].measurement, b);
    for v in &m.snp {
        assert_eq!(v.vmm, "azure");
        assert_eq!(v.vcpu_type, "observed");
        assert_eq!(v.vcpus, 0);
        assert!(v.direct_boot.is_none());
    }

    // Refused, saying why, and nothing written.
    std::fs::remove_file(&out).unwrap();
    for (bad, why) in [
        ("ab".repeat(47), "96 hex digits"),
        ("ab".repeat(49), "96 hex digits"),
        (format!("{}zz", "ab".repeat(47)), "96 hex digits"),
        (String::new(), "96 hex digits"),
    ] {
        let o = golden(&["--variant", "azure-sev-snp", "--snp-measurement", &bad]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{bad:?} accepted");
        assert!(e.contains("--snp-measurement") && e.contains(why), "{e}");
        assert!(!out.exists());
    }
    // Only for SEV-SNP variants.
    let o = golden(&["--variant", "qemu-vtpm", "--snp-measurement", &a]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a SEV-SNP"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.exists());
}
