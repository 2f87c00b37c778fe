//! SEV-SNP launch digests: nacre_measure::snp against PyPI's sev-snp-measure on the same inputs.
//!
//! sev-snp-measure lives in the project venv (`${NACRE_VENV:-/opt/nacre-venv}`, installed by
//! scripts/install-deps.sh); these tests fail, not skip, without it. Firmware: Debian's unified
//! OVMF.fd (package `ovmf`, with SEV metadata but no SNP_KERNEL_HASHES section) and, for
//! measured direct boot, the last page of an AmdSev OVMF (tests/fixtures/snp/README.md).

use nacre_measure::snp::{
    self, vcpu_signature, KernelHashes, Ovmf, SnpError, SnpLaunch, VmmType, LD_SIZE,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const DEBIAN_OVMF: &str = "/usr/share/ovmf/OVMF.fd";
/// Debian's split 4 MiB code image: a footer table but no SEV metadata.
const DEBIAN_OVMF_CODE_4M: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/snp")
        .join(name)
}

fn amdsev() -> PathBuf {
    fixture("ovmf_AmdSev_suffix.bin")
}

fn debian_ovmf() -> PathBuf {
    let p = PathBuf::from(DEBIAN_OVMF);
    assert!(
        p.is_file(),
        "{DEBIAN_OVMF} is missing: install Debian's ovmf package (run scripts/install-deps.sh)"
    );
    p
}

fn tool() -> PathBuf {
    let venv = std::env::var_os("NACRE_VENV").unwrap_or_else(|| "/opt/nacre-venv".into());
    let p = Path::new(&venv).join("bin/sev-snp-measure");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/install-deps.sh (it installs PyPI's sev-snp-measure into the \
         venv; in a venv that already exists: {}/bin/pip install sev-snp-measure==0.0.13)",
        p.display(),
        Path::new(&venv).display()
    );
    p
}

fn tmp() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// The newest installed kernel, else a stand-in (only its bytes matter to the digest).
fn kernel() -> PathBuf {
    static K: OnceLock<PathBuf> = OnceLock::new();
    K.get_or_init(|| {
        let newest = std::fs::read_dir("/boot")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
            .filter(|e| std::fs::File::open(e.path()).is_ok())
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
        match newest {
            Some(e) => e.path(),
            None => {
                eprintln!("no readable /boot/vmlinuz-*: using a generated 1 MiB stand-in kernel");
                let p = tmp().join("vmlinuz-standin");
                let data: Vec<u8> = (0u32..1 << 20)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect();
                std::fs::write(&p, data).unwrap();
                p
            }
        }
    })
    .clone()
}

fn initrd() -> PathBuf {
    static I: OnceLock<PathBuf> = OnceLock::new();
    I.get_or_init(|| {
        let p = tmp().join("initrd.img");
        let data: Vec<u8> = (0u32..70_001).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, data).unwrap();
        p
    })
    .clone()
}

#[derive(Clone, Debug)]
struct Case {
    ovmf: PathBuf,
    vcpus: u32,
    vcpu_type: &'static str,
    vmm: VmmType,
    features: u64,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    /// `Some("")` passes `--append ""`.
    cmdline: Option<String>,
}

impl Case {
    fn new(ovmf: PathBuf, vcpus: u32, vcpu_type: &'static str) -> Self {
        Case {
            ovmf,
            vcpus,
            vcpu_type,
            vmm: VmmType::Qemu,
            features: snp::DEFAULT_GUEST_FEATURES,
            kernel: None,
            initrd: None,
            cmdline: None,
        }
    }

    fn direct_boot(mut self, initrd: Option<PathBuf>, cmdline: Option<&str>) -> Self {
        self.kernel = Some(kernel());
        self.initrd = initrd;
        self.cmdline = cmdline.map(str::to_string);
        self
    }

    fn rust(&self) -> Result<[u8; LD_SIZE], SnpError> {
        let fw = std::fs::read(&self.ovmf).unwrap();
        let ovmf = Ovmf::parse(&fw)?;
        let kernel_hashes = self.kernel.as_ref().map(|k| {
            let initrd = self
                .initrd
                .as_ref()
                .map(|i| std::fs::read(i).unwrap())
                .unwrap_or_default();
            KernelHashes::new(
                &std::fs::read(k).unwrap(),
                &initrd,
                self.cmdline.as_deref().unwrap_or(""),
            )
        });
        SnpLaunch {
            ovmf: &ovmf,
            vcpus: self.vcpus,
            vcpu_sig: vcpu_signature(self.vcpu_type)?,
            vmm: self.vmm,
            guest_features: self.features,
            kernel_hashes,
        }
        .digest()
    }

    fn python_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--mode".into(),
            "snp".into(),
            "--vcpus".into(),
            self.vcpus.to_string(),
            "--vcpu-type".into(),
            self.vcpu_type.into(),
            "--vmm-type".into(),
            self.vmm.name().into(),
            "--guest-features".into(),
            format!("{:#x}", self.features),
            "--ovmf".into(),
            self.ovmf.display().to_string(),
            "--output-format".into(),
            "hex".into(),
        ];
        if let Some(k) = &self.kernel {
            a.extend(["--kernel".into(), k.display().to_string()]);
        }
        if let Some(i) = &self.initrd {
            a.extend(["--initrd".into(), i.display().to_string()]);
        }
        if let Some(c) = &self.cmdline {
            a.extend(["--append".into(), c.clone()]);
        }
        a
    }

    /// sev-snp-measure's digest (hex), or its stderr when it fails.
    fn python(&self) -> Result<String, String> {
        python(&self.python_args())
    }

    /// Assert both agree; returns the digest.
    fn check(&self) -> String {
        let py = self
            .python()
            .unwrap_or_else(|e| panic!("sev-snp-measure failed on {self:?}: {e}"));
        let rs = hex::encode(
            self.rust()
                .unwrap_or_else(|e| panic!("nacre snp failed on {self:?}: {e}")),
        );
        assert_eq!(rs, py, "digest mismatch for {self:?}");
        eprintln!("ok {rs} {}", self.python_args().join(" "));
        rs
    }
}

fn python(args: &[String]) -> Result<String, String> {
    let out = Command::new(tool())
        .args(args)
        .output()
        .expect("running sev-snp-measure");
    if out.status.success() {
        let s = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert_eq!(
            s.len(),
            2 * LD_SIZE,
            "unexpected sev-snp-measure output {s:?}"
        );
        Ok(s)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn debian_ovmf_has_sev_metadata_without_kernel_hashes() {
    let fw = std::fs::read(debian_ovmf()).unwrap();
    let ovmf = Ovmf::parse(&fw).unwrap();
    assert!(ovmf.has_section(snp::SectionType::SnpSecMem));
    assert!(ovmf.has_section(snp::SectionType::SnpSecrets));
    assert!(ovmf.has_section(snp::SectionType::Cpuid));
    assert!(!ovmf.has_section(snp::SectionType::SnpKernelHashes));
}

#[test]
fn debian_ovmf_matches_sev_snp_measure() {
    let fw = debian_ovmf();
    let mut n = 0;
    for vcpus in [1, 2, 4] {
        for t in ["EPYC-v4", "EPYC-Milan", "EPYC-Genoa"] {
            Case::new(fw.clone(), vcpus, t).check();
            n += 1;
        }
    }
    Case::new(fw.clone(), 3, "EPYC").check();
    Case::new(fw.clone(), 2, "EPYC-Rome").check();
    let mut c = Case::new(fw.clone(), 2, "EPYC-Milan");
    c.features = 0x21;
    c.check();
    assert_eq!(n, 9);
}

#[test]
fn debian_split_code_image_with_metadata_matches() {
    // The 2 MiB split OVMF_CODE.fd carries SEV metadata too (the 4 MiB one does not).
    let p = PathBuf::from("/usr/share/OVMF/OVMF_CODE.fd");
    assert!(
        p.is_file(),
        "{} missing: run scripts/install-deps.sh",
        p.display()
    );
    Case::new(p, 2, "EPYC-v4").check();
}

#[test]
fn ec2_and_gce_match() {
    for vmm in [VmmType::Ec2, VmmType::Gce] {
        for vcpus in [1, 2] {
            let mut c = Case::new(debian_ovmf(), vcpus, "EPYC-Milan");
            c.vmm = vmm;
            c.check();
            let mut c = Case::new(amdsev(), vcpus, "EPYC-Genoa")
                .direct_boot(Some(initrd()), Some("console=ttyS0"));
            c.vmm = vmm;
            c.check();
        }
    }
}

#[test]
fn pinned_digest_from_the_sev_crate() {
    // virtee/sev's tests pin this digest for its fixture (an independent third implementation).
    let fw = std::fs::read(amdsev()).unwrap();
    let ovmf = Ovmf::parse(&fw).unwrap();
    let d = SnpLaunch {
        ovmf: &ovmf,
        vcpus: 1,
        vcpu_sig: vcpu_signature("EPYC-v4").unwrap(),
        vmm: VmmType::Qemu,
        guest_features: 0x1,
        kernel_hashes: Some(KernelHashes::new(b"", b"", "")),
    }
    .digest()
    .unwrap();
    assert_eq!(
        hex::encode(d),
        "ddc5224521617a536ee7ce9dd6224d1b58a8d4fda1c741f3ac99fc4bfa04ba6e9fc98646d4a07a9079397fa3852819b5"
    );
    assert_eq!(
        hex::encode(snp::ovmf_hash(&ovmf)),
        "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74"
    );
    // Seeding with the firmware hash gives the same digest.
    let seeded = SnpLaunch {
        ovmf: &ovmf,
        vcpus: 1,
        vcpu_sig: vcpu_signature("EPYC-v4").unwrap(),
        vmm: VmmType::Qemu,
        guest_features: 0x1,
        kernel_hashes: Some(KernelHashes::new(b"", b"", "")),
    }
    .digest_from_ovmf_hash(snp::ovmf_hash(&ovmf))
    .unwrap();
    assert_eq!(seeded, d);
}

#[test]
fn measured_direct_boot_matches_sev_snp_measure() {
    let fw = amdsev();
    let cmdline = "console=ttyS0 root=/dev/vda2 ro nacre.role=worker";
    for vcpus in [1, 2, 4] {
        for t in ["EPYC-v4", "EPYC-Milan", "EPYC-Genoa"] {
            Case::new(fw.clone(), vcpus, t)
                .direct_boot(Some(initrd()), Some(cmdline))
                .check();
        }
    }
    // Empty command line, given explicitly and absent; no initrd.
    Case::new(fw.clone(), 2, "EPYC-v4")
        .direct_boot(Some(initrd()), Some(""))
        .check();
    Case::new(fw.clone(), 2, "EPYC-v4")
        .direct_boot(Some(initrd()), None)
        .check();
    Case::new(fw.clone(), 1, "EPYC-Milan")
        .direct_boot(None, Some(cmdline))
        .check();
    // The same firmware without a kernel: the hashes page is measured as zeros.
    let without = Case::new(fw.clone(), 2, "EPYC-Milan").check();
    let with = Case::new(fw, 2, "EPYC-Milan")
        .direct_boot(Some(initrd()), Some(cmdline))
        .check();
    assert_ne!(without, with);
}

#[test]
fn full_size_amdsev_like_firmware_matches() {
    // Debian's 2 MiB image with its last page replaced by the AmdSev one: a full-size firmware
    // whose metadata declares SNP_KERNEL_HASHES.
    let mut fw = std::fs::read(debian_ovmf()).unwrap();
    let tail = std::fs::read(amdsev()).unwrap();
    let n = fw.len();
    fw[n - 4096..].copy_from_slice(&tail);
    let p = tmp().join("ovmf-amdsev-2m.fd");
    std::fs::write(&p, &fw).unwrap();
    Case::new(p.clone(), 4, "EPYC-Milan")
        .direct_boot(Some(initrd()), Some("quiet"))
        .check();
    Case::new(p, 1, "EPYC-Genoa").check();
}

#[test]
fn firmware_without_sev_metadata_is_rejected() {
    let p = PathBuf::from(DEBIAN_OVMF_CODE_4M);
    assert!(
        p.is_file(),
        "{} missing: run scripts/install-deps.sh",
        p.display()
    );
    let c = Case::new(p, 1, "EPYC-v4");
    let err = c.rust().unwrap_err();
    assert!(matches!(err, SnpError::NoSevMetadata), "{err}");
    assert!(err.to_string().contains("no SEV metadata"), "{err}");
    // sev-snp-measure prints a digest for it anyway (no metadata pages measured at all).
    assert!(
        c.python().is_ok(),
        "sev-snp-measure changed: it now rejects firmware without SEV metadata"
    );

    // A footer table with only a reset block (synthetic): also rejected.
    let mut fw = vec![0u8; 8192];
    let n = fw.len();
    let reset = snp::guids::SEV_ES_RESET_BLOCK.0;
    let footer = snp::guids::OVMF_TABLE_FOOTER.0;
    // entry: data(4) size(2) guid(16) | footer: size(2) guid(16) | 32 bytes
    let table_end = n - 32;
    let footer_at = table_end - 18;
    fw[footer_at..footer_at + 2].copy_from_slice(&(18u16 + 22).to_le_bytes());
    fw[footer_at + 2..table_end].copy_from_slice(&footer);
    let entry_at = footer_at - 22;
    fw[entry_at..entry_at + 4].copy_from_slice(&0x80b004u32.to_le_bytes());
    fw[entry_at + 4..entry_at + 6].copy_from_slice(&22u16.to_le_bytes());
    fw[entry_at + 6..footer_at].copy_from_slice(&reset);
    let err = Ovmf::parse(&fw).unwrap_err();
    assert!(matches!(err, SnpError::NoSevMetadata), "{err}");
    let p = tmp().join("no-metadata.fd");
    std::fs::write(&p, &fw).unwrap();
    assert!(Case::new(p, 1, "EPYC-v4").python().is_ok());
}

#[test]
fn truncated_or_malformed_firmware_is_rejected() {
    let full = std::fs::read(debian_ovmf()).unwrap();
    // Cut: the footer table at the end is gone.
    assert!(matches!(
        Ovmf::parse(&full[..full.len() / 2]),
        Err(SnpError::NoFooterTable)
    ));
    assert!(matches!(
        Ovmf::parse(&full[..40]),
        Err(SnpError::Truncated { len: 40 })
    ));
    assert!(matches!(
        Ovmf::parse(&[]),
        Err(SnpError::Truncated { len: 0 })
    ));
    assert!(matches!(
        Ovmf::parse(&full[..full.len() - 100]),
        Err(SnpError::FirmwareNotPageAligned { .. })
    ));
    // No footer at all (sev-snp-measure fails too: no SEV-ES reset block).
    let zeros = vec![0u8; 8192];
    assert!(matches!(Ovmf::parse(&zeros), Err(SnpError::NoFooterTable)));
    let p = tmp().join("zeros.fd");
    std::fs::write(&p, &zeros).unwrap();
    assert!(Case::new(p, 1, "EPYC-v4").python().is_err());

    let amd = std::fs::read(amdsev()).unwrap();
    let meta_start = 4096 - 0x554;
    // SEV metadata pointer beyond the start of the image.
    let mut bad = amd.clone();
    let off = find_entry(&bad, &snp::guids::OVMF_SEV_METADATA);
    bad[off..off + 4].copy_from_slice(&0x2000u32.to_le_bytes());
    assert!(matches!(
        Ovmf::parse(&bad),
        Err(SnpError::SevMetadataTruncated(_))
    ));
    // Wrong signature / version.
    let mut bad = amd.clone();
    bad[meta_start] = b'X';
    assert!(matches!(
        Ovmf::parse(&bad),
        Err(SnpError::BadSevMetadataSignature(_))
    ));
    let mut bad = amd.clone();
    bad[meta_start + 8] = 2;
    assert!(matches!(
        Ovmf::parse(&bad),
        Err(SnpError::BadSevMetadataVersion(2))
    ));
    // More sections than the metadata holds.
    let mut bad = amd.clone();
    bad[meta_start + 12..meta_start + 16].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(
        Ovmf::parse(&bad),
        Err(SnpError::SevMetadataTruncated(_))
    ));
    // A footer entry whose size runs past the table.
    let mut bad = amd.clone();
    let off = find_entry(&bad, &snp::guids::SEV_ES_RESET_BLOCK);
    bad[off + 4..off + 6].copy_from_slice(&0x7000u16.to_le_bytes());
    assert!(matches!(
        Ovmf::parse(&bad),
        Err(SnpError::BadFooterTable(_))
    ));
}

/// Offset of the data of a footer table entry (the data has 4 bytes before size+GUID here).
fn find_entry(fw: &[u8], guid: &snp::Guid) -> usize {
    let at = fw
        .windows(16)
        .rposition(|w| w == guid.0)
        .expect("entry GUID present");
    at - 2 - 4
}

#[test]
fn bad_section_type_is_rejected() {
    let mut fw = std::fs::read(amdsev()).unwrap();
    let items = 4096 - 0x554 + 16;
    // Section 2 (the secrets page) gets type 7.
    fw[items + 2 * 12 + 8..items + 2 * 12 + 12].copy_from_slice(&7u32.to_le_bytes());
    let err = Ovmf::parse(&fw).unwrap_err();
    assert!(
        matches!(err, SnpError::UnknownSectionType { index: 2, value: 7 }),
        "{err}"
    );
    let p = tmp().join("bad-section.fd");
    std::fs::write(&p, &fw).unwrap();
    // sev-snp-measure dies with a Python ValueError.
    assert!(Case::new(p, 1, "EPYC-v4").python().is_err());

    // A zero-page section whose size is not whole pages.
    let mut fw = std::fs::read(amdsev()).unwrap();
    fw[items + 4..items + 8].copy_from_slice(&0x9001u32.to_le_bytes());
    assert!(matches!(
        Ovmf::parse(&fw),
        Err(SnpError::SectionNotPageAligned { index: 0, .. })
    ));
}

#[test]
fn kernel_hashes_need_the_hashes_section() {
    let c = Case::new(debian_ovmf(), 1, "EPYC-v4").direct_boot(Some(initrd()), Some("quiet"));
    let err = c.rust().unwrap_err();
    assert!(matches!(err, SnpError::NoKernelHashesSection), "{err}");
    let py = c.python().unwrap_err();
    assert!(py.contains("SNP_KERNEL_HASHES"), "{py}");
}

#[test]
fn bad_parameters_are_rejected() {
    assert!(matches!(
        vcpu_signature("EPYC-Zen9"),
        Err(SnpError::UnknownVcpuType(_))
    ));
    assert!(matches!(
        "xen".parse::<VmmType>(),
        Err(SnpError::UnknownVmmType(_))
    ));
    assert_eq!("qemu".parse::<VmmType>().unwrap(), VmmType::Qemu);
    assert!(matches!(
        Case::new(debian_ovmf(), 0, "EPYC-v4").rust(),
        Err(SnpError::ZeroVcpus)
    ));
}

// ---- CLI ----

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nacre-measure"))
        .args(args)
        .output()
        .expect("running nacre-measure")
}

fn cli_ok(args: &[&str]) -> String {
    let out = cli(args);
    assert!(
        out.status.success(),
        "nacre-measure {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn cli_snp_digest_matches_sev_snp_measure() {
    let fw = debian_ovmf();
    let fw = fw.to_str().unwrap();
    let out = cli_ok(&[
        "snp-digest",
        "--ovmf",
        fw,
        "--vcpus",
        "4",
        "--vcpu-type",
        "EPYC-Milan",
    ]);
    let expect = Case::new(fw.into(), 4, "EPYC-Milan").check();
    assert_eq!(out.trim(), expect);

    let amd = amdsev();
    let k = kernel();
    let i = initrd();
    let args = [
        "snp-digest",
        "--ovmf",
        amd.to_str().unwrap(),
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC-Genoa",
        "--vmm",
        "qemu",
        "--kernel",
        k.to_str().unwrap(),
        "--initrd",
        i.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0",
        "--guest-features",
        "0x21",
    ];
    let out = cli_ok(&args);
    let mut c =
        Case::new(amd.clone(), 2, "EPYC-Genoa").direct_boot(Some(i.clone()), Some("console=ttyS0"));
    c.features = 0x21;
    let expect = c.check();
    assert_eq!(out.trim(), expect);

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let v: serde_json::Value = serde_json::from_str(&cli_ok(&json_args)).unwrap();
    assert_eq!(v["measurement"], expect);
    assert_eq!(v["vcpus"], 2);
    assert_eq!(v["vcpu_type"], "EPYC-Genoa");
    assert_eq!(v["guest_features"], "0x21");
    assert_eq!(v["vmm"], "QEMU");
    assert_eq!(v["cmdline"], "console=ttyS0");

    // Errors are reported, not digests.
    let out = cli(&[
        "snp-digest",
        "--ovmf",
        DEBIAN_OVMF_CODE_4M,
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC-v4",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no SEV metadata"));
    let out = cli(&[
        "snp-digest",
        "--ovmf",
        fw,
        "--vcpus",
        "1",
        "--vcpu-type",
        "Pentium",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown vCPU type"));
}

#[test]
fn cli_snp_digest_from_uki_sections() {
    let stub = Path::new("/usr/lib/systemd/boot/efi/linuxx64.efi.stub");
    assert!(
        stub.is_file(),
        "{} missing: run scripts/install-deps.sh (systemd-boot-efi)",
        stub.display()
    );
    let dir = tmp().join("uki");
    std::fs::create_dir_all(&dir).unwrap();
    let cmdline = "console=ttyS0 nacre.role=worker";
    std::fs::write(dir.join("cmdline"), cmdline).unwrap();
    let uki = dir.join("test.efi");
    let st = Command::new("objcopy")
        .arg("--add-section")
        .arg(format!(".cmdline={}", dir.join("cmdline").display()))
        .args(["--change-section-vma", ".cmdline=0x30000"])
        .arg("--add-section")
        .arg(format!(".linux={}", kernel().display()))
        .args(["--change-section-vma", ".linux=0x2000000"])
        .arg("--add-section")
        .arg(format!(".initrd={}", initrd().display()))
        .args(["--change-section-vma", ".initrd=0x3000000"])
        .arg(stub)
        .arg(&uki)
        .status()
        .expect("objcopy (binutils; run scripts/install-deps.sh)");
    assert!(st.success(), "objcopy failed building a test UKI");

    let amd = amdsev();
    let out = cli_ok(&[
        "snp-digest",
        "--ovmf",
        amd.to_str().unwrap(),
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC-v4",
        "--uki",
        uki.to_str().unwrap(),
    ]);
    let expect = Case::new(amd, 2, "EPYC-v4")
        .direct_boot(Some(initrd()), Some(cmdline))
        .check();
    assert_eq!(out.trim(), expect);
}
