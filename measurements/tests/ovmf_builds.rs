//! The firmware ovmf/build.sh builds (AMDSEV.fd with a kernel-hashes table, INTELTDX.fd with
//! TDX metadata), measured by nacre-measure and by independent tools on the same bytes:
//! PyPI's sev-snp-measure for the SEV-SNP launch digest (firmware alone and measured direct boot
//! of a real UKI, as the qemu-snp variant boots), mosaik's TDVF code for MRTD (when built:
//! measurements/tests/oracle/mosaik-mrtd.sh, `NACRE_MOSAIK_MRTD`).
//!
//! The firmware is looked for in `NACRE_OVMF_DIR`, default `target/ovmf` (where scripts/test.sh
//! builds it before the tests). Without it each test prints SKIPPED and returns: the firmware
//! build takes minutes, so a plain `cargo test` does not make it.

use std::path::{Path, PathBuf};
use std::process::Command;
use support::build_uki;

mod support;

fn ovmf(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("NACRE_OVMF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::repo().join("target/ovmf"));
    let p = dir.join(name);
    if p.is_file() {
        Some(p)
    } else {
        println!(
            "SKIPPED: {} is missing (build it: ovmf/build.sh {})",
            p.display(),
            dir.display()
        );
        None
    }
}

fn sev_snp_measure(args: &[&str]) -> String {
    let venv = std::env::var_os("NACRE_VENV").unwrap_or_else(|| "/opt/nacre-venv".into());
    let tool = Path::new(&venv).join("bin/sev-snp-measure");
    let out = Command::new(&tool)
        .args(["--mode", "snp", "--output-format", "hex"])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (scripts/install-deps.sh installs it)",
                tool.display()
            )
        });
    assert!(
        out.status.success(),
        "sev-snp-measure {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn nacre_measure(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_nacre-measure"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nacre-measure {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn amdsev_launch_digests_equal_sev_snp_measure() {
    let Some(fw) = ovmf("AMDSEV.fd") else { return };
    let fw = fw.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let uki = build_uki(dir.path());
    let uki = uki.to_str().unwrap();
    for vcpus in ["1", "4"] {
        for t in ["EPYC-Milan", "EPYC-Genoa"] {
            let base = ["--ovmf", fw, "--vcpus", vcpus, "--vcpu-type", t];
            // The firmware alone (its hashes page measured as zeros).
            let ours = json(&nacre_measure(
                &[&["snp-digest", "--json"][..], &base].concat(),
            ));
            assert_eq!(ours["measurement"], sev_snp_measure(&base), "{base:?}");
            // Measured direct boot of the whole UKI (QEMU -kernel UKI), as qemu-snp boots.
            let ours = json(&nacre_measure(
                &[&["snp-digest", "--json", "--kernel", uki][..], &base].concat(),
            ));
            assert_eq!(
                ours["measurement"],
                sev_snp_measure(&[&base[..], &["--kernel", uki]].concat()),
                "{base:?} --kernel UKI"
            );
        }
    }
}

#[test]
fn golden_direct_boot_values_equal_sev_snp_measure() {
    let Some(fw) = ovmf("AMDSEV.fd") else { return };
    let fw = fw.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let uki = build_uki(dir.path());
    let m = dir.path().join("measurements.json");
    nacre_measure(&[
        "golden",
        uki.to_str().unwrap(),
        "--out",
        m.to_str().unwrap(),
        "--variant",
        "qemu-snp",
        "--snp-ovmf",
        fw,
        "--snp-vcpus",
        "2",
        "--snp-vcpu-types",
        "EPYC-Milan",
        "--snp-direct-boot",
        "uki",
    ]);
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    let v = &j["snp"][0];
    assert_eq!(v["direct_boot"], "uki");
    let want = sev_snp_measure(&[
        "--ovmf",
        fw,
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC-Milan",
        "--kernel",
        uki.to_str().unwrap(),
    ]);
    assert_eq!(v["measurement"], want);
    // Without --snp-direct-boot the value is the firmware's alone: another digest.
    nacre_measure(&[
        "golden",
        uki.to_str().unwrap(),
        "--out",
        m.to_str().unwrap(),
        "--snp-ovmf",
        fw,
        "--snp-vcpus",
        "2",
        "--snp-vcpu-types",
        "EPYC-Milan",
    ]);
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    assert!(j["snp"][0]["direct_boot"].is_null());
    assert_ne!(j["snp"][0]["measurement"], want);
}

#[test]
fn inteltdx_mrtd() {
    let Some(fw) = ovmf("INTELTDX.fd") else {
        return;
    };
    let per_section = json(&nacre_measure(&[
        "tdx-digest",
        "--ovmf",
        fw.to_str().unwrap(),
        "--page-add-order",
        "per-section",
        "--json",
    ]));
    let per_page = json(&nacre_measure(&[
        "tdx-digest",
        "--ovmf",
        fw.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(per_page["mrtd"].as_str().unwrap().len(), 96);
    assert_ne!(per_page["mrtd"], per_section["mrtd"]);
    match std::env::var_os("NACRE_MOSAIK_MRTD").map(PathBuf::from) {
        Some(oracle) if oracle.is_file() => {
            let out = Command::new(&oracle).arg(&fw).output().unwrap();
            assert!(out.status.success());
            let theirs = String::from_utf8(out.stdout).unwrap().trim().to_string();
            assert_eq!(per_section["mrtd"], theirs, "MRTD (per-section) vs mosaik");
        }
        _ => println!(
            "SKIPPED the mosaik comparison: NACRE_MOSAIK_MRTD is not set \
             (measurements/tests/oracle/mosaik-mrtd.sh builds it)"
        ),
    }
}
