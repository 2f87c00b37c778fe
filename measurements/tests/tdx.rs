//! Intel TDX: MRTD of a TDVF image, refusal of firmware without (or with broken) TDX metadata,
//! and RTMR[1]/RTMR[2] of a UKI boot, recomputed here from the predicted events.
//!
//! Oracle: crates.io's `mosaik` 0.3.13 (its TDVF MRTD code, `src/tee/tdx/builder/mrtd.rs`),
//! built outside the workspace by `tests/oracle/mosaik-mrtd.sh`. The test that runs it skips
//! (with a printed reason) when the binary is absent; its value for Debian's OVMF.fd is also
//! pinned below, so the comparison holds without it. mosaik implements the per-section order
//! only; the per-page order (upstream KVM) has no oracle here and no TDX host checked it.

use nacre_eventlog::alg::HashAlg;
use nacre_eventlog::tcg::{EventLog, EventType};
use nacre_measure::predict::{predict, BootConfig, Event, Origin};
use nacre_measure::tdx::{self, PageAddOrder, SectionType, Tdvf, TdxError};
use nacre_measure::uki::StubProfile;
use ring::digest::{digest, Context, SHA256, SHA384};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::build_uki;

mod support;

const DEBIAN_OVMF: &str = "/usr/share/ovmf/OVMF.fd";
/// Debian's split 4 MiB code image: a footer table, no TDX metadata.
const DEBIAN_OVMF_CODE_4M: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// SHA-256 of /usr/share/ovmf/OVMF.fd in Debian 12's ovmf 2022.11-6+deb12u2.
const DEBIAN_OVMF_SHA256: &str = "7b456907dd0786d415999e801a1ac4637b8ed4d7cf5378cfc6edbe5e574dd773";

/// MRTD of Debian 12's OVMF.fd (ovmf 2022.11-6+deb12u2), per-section order, as computed by the
/// oracle: crates.io `mosaik` 0.3.13 (.crate sha256 e4873b74…a890), its
/// `src/tee/tdx/builder/mrtd.rs::compute_mrtd` compiled unmodified by
/// `measurements/tests/oracle/mosaik-mrtd.sh` and run as
/// `/tmp/nacre-mosaik-mrtd/target/release/mosaik-mrtd /usr/share/ovmf/OVMF.fd`.
const DEBIAN_MRTD_PER_SECTION_MOSAIK: &str = "acccbcc870a381adab0d3919d90a7f268ac3b0364771f202ed4bb4e892d045b33db3b32e6924cba830a724eed443f7e1";
/// The same firmware, per-page order (upstream KVM). nacre's own value (no oracle; equal to
/// this file's independent recomputation below).
const DEBIAN_MRTD_PER_PAGE: &str = "4c7206f0f483c524f12c366c711e9049030a8d47c471ee5aa9c4999a08de4057fb887fed0744d5631a212967fb231c47";

fn debian_ovmf() -> Vec<u8> {
    let fw = std::fs::read(DEBIAN_OVMF).unwrap_or_else(|e| {
        panic!("{DEBIAN_OVMF}: {e}: install Debian's ovmf package (scripts/install-deps.sh)")
    });
    assert_eq!(
        hex::encode(digest(&SHA256, &fw)),
        DEBIAN_OVMF_SHA256,
        "{DEBIAN_OVMF} is not ovmf 2022.11-6+deb12u2's: the pinned MRTDs are for that build"
    );
    fw
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// File offset of the TDVF descriptor, found without nacre's parser: walk the footer table
/// backwards (each entry: data, u16 size, GUID) to the e47a6535-… entry.
fn descriptor(fw: &[u8]) -> usize {
    let n = fw.len();
    let guid_e47a6535 = [0x35, 0x65, 0x7a, 0xe4, 0x4a, 0x98, 0x98, 0x47];
    let mut end = n - 32 - 18; // the footer entry's start
    loop {
        let size = u16::from_le_bytes([fw[end - 18], fw[end - 17]]) as usize;
        if fw[end - 16..end - 8] == guid_e47a6535 {
            return n - le_u32(fw, end - size) as usize;
        }
        end -= size;
    }
}

/// MRTD straight from the metadata bytes, written independently of nacre's parser.
fn reference_mrtd(fw: &[u8], per_page: bool) -> String {
    let d = descriptor(fw);
    let count = le_u32(fw, d + 12) as usize;
    let mut h = Context::new(&SHA384);
    let add = |h: &mut Context, gpa: u64| {
        let mut b = Vec::from(&b"MEM.PAGE.ADD\0\0\0\0"[..]);
        b.extend_from_slice(&gpa.to_le_bytes());
        b.resize(128, 0);
        h.update(&b);
    };
    let ext = |h: &mut Context, gpa: u64, data: &[u8]| {
        for c in 0..16u64 {
            let mut b = Vec::from(&b"MR.EXTEND\0\0\0\0\0\0\0"[..]);
            b.extend_from_slice(&(gpa + c * 256).to_le_bytes());
            b.resize(128, 0);
            h.update(&b);
            h.update(&data[(c * 256) as usize..(c * 256 + 256) as usize]);
        }
    };
    for i in 0..count {
        let e = d + 16 + 32 * i;
        let (off, gpa, size, attr) = (
            le_u32(fw, e) as usize,
            le_u64(fw, e + 8),
            le_u64(fw, e + 16),
            le_u32(fw, e + 28),
        );
        if attr & 2 != 0 {
            continue;
        }
        let pages = size / 4096;
        let page = |p: u64| &fw[off + (p * 4096) as usize..off + (p * 4096 + 4096) as usize];
        if per_page {
            for p in 0..pages {
                add(&mut h, gpa + p * 4096);
                if attr & 1 != 0 {
                    ext(&mut h, gpa + p * 4096, page(p));
                }
            }
        } else {
            for p in 0..pages {
                add(&mut h, gpa + p * 4096);
            }
            if attr & 1 != 0 {
                for p in 0..pages {
                    ext(&mut h, gpa + p * 4096, page(p));
                }
            }
        }
    }
    hex::encode(h.finish())
}

#[test]
fn debian_ovmf_metadata_and_mrtd() {
    let fw = debian_ovmf();
    let t = Tdvf::parse(&fw).unwrap();
    assert_eq!(t.descriptor_offset(), fw.len() - 0x840);
    let kinds: Vec<_> = t
        .sections()
        .iter()
        .map(|s| (s.kind, s.gpa, s.size, s.attributes))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                SectionType::Bfv,
                0xffe2_0000,
                0x1e_0000,
                tdx::ATTR_MR_EXTEND
            ),
            (SectionType::Cfv, 0xffe0_0000, 0x2_0000, 0),
            (SectionType::TempMem, 0x81_0000, 0x1_0000, 0),
            (SectionType::TempMem, 0x80_b000, 0x2000, 0),
            (SectionType::TdHob, 0x80_9000, 0x2000, 0),
            (SectionType::TempMem, 0x80_0000, 0x6000, 0),
        ]
    );
    let per_section = hex::encode(t.mrtd(PageAddOrder::PerSection));
    let per_page = hex::encode(t.mrtd(PageAddOrder::PerPage));
    assert_eq!(per_section, DEBIAN_MRTD_PER_SECTION_MOSAIK, "oracle value");
    assert_eq!(per_section, reference_mrtd(&fw, false));
    assert_eq!(per_page, reference_mrtd(&fw, true));
    assert_eq!(per_page, DEBIAN_MRTD_PER_PAGE);
    assert_ne!(per_page, per_section);
}

fn oracle() -> Option<PathBuf> {
    let p = std::env::var_os("NACRE_MOSAIK_MRTD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/nacre-mosaik-mrtd/target/release/mosaik-mrtd"));
    p.is_file().then_some(p)
}

fn run_oracle(bin: &Path, fw: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("fw.fd");
    std::fs::write(&f, fw).unwrap();
    let out = Command::new(bin).arg(&f).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn mrtd_equals_mosaik_when_present() {
    let Some(bin) = oracle() else {
        println!(
            "SKIPPED mrtd_equals_mosaik_when_present: the mosaik MRTD oracle is not built \
             (run measurements/tests/oracle/mosaik-mrtd.sh, or set NACRE_MOSAIK_MRTD); the \
             pinned oracle value is still checked by debian_ovmf_metadata_and_mrtd"
        );
        return;
    };
    let fw = debian_ovmf();
    assert_eq!(run_oracle(&bin, &fw), DEBIAN_MRTD_PER_SECTION_MOSAIK);
    // Variants of the firmware: a changed code byte, a TempMem page added as PAGE.AUG (mosaik
    // skips it too), a changed GPA.
    let d = descriptor(&fw);
    let mut variants = Vec::new();
    let mut v = fw.clone();
    v[0x20000 + 0x1234] ^= 0x5a;
    variants.push(v);
    let mut v = fw.clone();
    v[d + 16 + 32 * 2 + 28] = 2;
    variants.push(v);
    let mut v = fw.clone();
    v[d + 16 + 32 * 5 + 8..d + 16 + 32 * 5 + 16].copy_from_slice(&0x70_0000u64.to_le_bytes());
    variants.push(v);
    for v in variants {
        let ours = hex::encode(Tdvf::parse(&v).unwrap().mrtd(PageAddOrder::PerSection));
        assert_eq!(ours, run_oracle(&bin, &v));
        assert_ne!(ours, DEBIAN_MRTD_PER_SECTION_MOSAIK);
    }
}

#[test]
fn page_aug_sections_are_not_measured() {
    let fw = debian_ovmf();
    let d = descriptor(&fw);
    let mut v = fw.clone();
    v[d + 16 + 32 * 2 + 28] = tdx::ATTR_PAGE_AUG as u8; // the 64 KiB TempMem
    let t = Tdvf::parse(&v).unwrap();
    assert!(t.sections()[2].page_aug());
    for (order, per_page) in [
        (PageAddOrder::PerPage, true),
        (PageAddOrder::PerSection, false),
    ] {
        let got = hex::encode(t.mrtd(order));
        assert_eq!(got, reference_mrtd(&v, per_page));
        assert_ne!(got, reference_mrtd(&fw, per_page));
    }
}

#[test]
fn orders_agree_on_a_single_measured_page() {
    // A minimal TDVF image: one BFV page (MR.EXTEND), the metadata, and the footer table.
    let mut fw = vec![0u8; 0x3000];
    for (i, b) in fw[..0x1000].iter_mut().enumerate() {
        *b = (i * 13 % 251) as u8;
    }
    let d = 0x2000;
    fw[d - 16..d].copy_from_slice(&tdx::guids::TDVF_METADATA.0);
    fw[d..d + 4].copy_from_slice(b"TDVF");
    fw[d + 4..d + 8].copy_from_slice(&48u32.to_le_bytes());
    fw[d + 8..d + 12].copy_from_slice(&1u32.to_le_bytes());
    fw[d + 12..d + 16].copy_from_slice(&1u32.to_le_bytes());
    let e = d + 16;
    fw[e + 4..e + 8].copy_from_slice(&0x1000u32.to_le_bytes());
    fw[e + 8..e + 16].copy_from_slice(&0xffff_f000u64.to_le_bytes());
    fw[e + 16..e + 24].copy_from_slice(&0x1000u64.to_le_bytes());
    fw[e + 28..e + 32].copy_from_slice(&1u32.to_le_bytes());
    // Footer table: [u32 offset][u16 22][GUID e47a6535] [u16 40][footer GUID] then 32 bytes.
    let n = fw.len();
    let footer = n - 32 - 18;
    let entry = footer - 22;
    fw[entry..entry + 4].copy_from_slice(&((n - d) as u32).to_le_bytes());
    fw[entry + 4..entry + 6].copy_from_slice(&22u16.to_le_bytes());
    fw[entry + 6..entry + 22].copy_from_slice(&tdx::guids::TDX_METADATA_OFFSET.0);
    fw[footer..footer + 2].copy_from_slice(&40u16.to_le_bytes());
    fw[footer + 2..footer + 18].copy_from_slice(&nacre_measure::snp::guids::OVMF_TABLE_FOOTER.0);
    let t = Tdvf::parse(&fw).unwrap();
    assert_eq!(
        t.mrtd(PageAddOrder::PerPage),
        t.mrtd(PageAddOrder::PerSection)
    );
    assert_eq!(
        hex::encode(t.mrtd(PageAddOrder::PerPage)),
        reference_mrtd(&fw, true)
    );
}

#[test]
fn firmware_without_tdx_metadata_is_refused() {
    let code = std::fs::read(DEBIAN_OVMF_CODE_4M).unwrap();
    let err = Tdvf::parse(&code).unwrap_err();
    assert!(matches!(err, TdxError::NoTdxMetadata), "{err}");
    assert!(err.to_string().contains("no TDX metadata"), "{err}");
    assert!(matches!(
        Tdvf::parse(&[0u8; 40]).unwrap_err(),
        TdxError::Truncated { len: 40 }
    ));
    assert!(matches!(
        Tdvf::parse(&vec![0u8; 0x1000]).unwrap_err(),
        TdxError::NoFooterTable
    ));
}

/// Apply `f` to a copy of Debian's OVMF.fd (with the descriptor's file offset) and parse it.
fn corrupt(f: impl FnOnce(&mut Vec<u8>, usize)) -> TdxError {
    let mut fw = debian_ovmf();
    let d = descriptor(&fw);
    f(&mut fw, d);
    Tdvf::parse(&fw).expect_err("corrupted metadata must be refused")
}

/// A change to a firmware image.
type Mutation = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn malformed_metadata_is_refused_with_offsets() {
    let fw_len = debian_ovmf().len();
    let d = fw_len - 0x840;
    let d_hex = format!("{d:#x}");
    let entry = move |i: usize| d + 16 + 32 * i;
    let put32 =
        |fw: &mut Vec<u8>, at: usize, v: u32| fw[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |fw: &mut Vec<u8>, at: usize, v: u64| fw[at..at + 8].copy_from_slice(&v.to_le_bytes());

    let e = corrupt(|fw, d| fw[d] = b'X');
    assert!(
        matches!(e, TdxError::BadSignature { .. }) && e.to_string().contains(&d_hex),
        "{e}"
    );
    let e = corrupt(|fw, d| put32(fw, d + 8, 2));
    assert!(matches!(e, TdxError::BadVersion { version: 2, .. }), "{e}");
    let e = corrupt(|fw, d| put32(fw, d + 4, 0xd1));
    assert!(
        matches!(e, TdxError::BadLength { .. }) && e.to_string().contains(&d_hex),
        "{e}"
    );
    let e = corrupt(|fw, d| put32(fw, d + 12, 0));
    assert!(matches!(e, TdxError::NoSections { .. }), "{e}");
    let e = corrupt(|fw, d| fw[d - 1] ^= 1);
    assert!(matches!(e, TdxError::MissingMetadataGuid { .. }), "{e}");
    // The footer entry's offset pointing outside the image.
    let e = corrupt(|fw, _| {
        let n = fw.len();
        let entry = (0..n - 50)
            .rev()
            .find(|&i| fw[i + 6..i + 10] == [0x35, 0x65, 0x7a, 0xe4])
            .unwrap();
        put32(fw, entry, 0x4000_0000)
    });
    assert!(matches!(e, TdxError::DescriptorOutOfBounds { .. }), "{e}");
    // Sections.
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(move |fw| put32(fw, entry(1) + 24, 9)),
            "unknown type 0x9",
        ),
        (
            Box::new(move |fw| put32(fw, entry(1) + 28, 4)),
            "unknown attribute bits 0x4",
        ),
        (
            Box::new(move |fw| put64(fw, entry(2) + 8, 0x81_0800)),
            "GPA 0x810800 is not a multiple",
        ),
        (
            Box::new(move |fw| put64(fw, entry(2) + 16, 0x1_0100)),
            "memory size 0x10100",
        ),
        (
            Box::new(move |fw| put64(fw, entry(3) + 16, 0)),
            "memory size 0",
        ),
        (
            Box::new(move |fw| put32(fw, entry(1) + 4, 0x2_1000)),
            "exceeds memory size",
        ),
        (
            Box::new(move |fw| put32(fw, entry(0), 0x30_0000)),
            "outside the",
        ),
        (
            Box::new(move |fw| put32(fw, entry(1) + 4, 0)),
            "has no raw data",
        ),
        (
            Box::new(move |fw| put32(fw, entry(4) + 4, 0x1000)),
            "not loaded from the image",
        ),
        (
            Box::new(move |fw| put32(fw, entry(0) + 28, 3)),
            "both MR.EXTEND and PAGE.AUG",
        ),
        (
            Box::new(move |fw| put64(fw, entry(0) + 16, 0x1f_0000)),
            "only 0x1e0000 of its 0x1f0000",
        ),
        (
            Box::new(move |fw| {
                put64(fw, entry(1) + 16, 0x3_0000);
                put32(fw, entry(1) + 28, 1);
            }),
            "only 0x20000 of its 0x30000 bytes",
        ),
        (
            Box::new(move |fw| put64(fw, entry(3) + 8, 0x81_8000)),
            "overlap at GPA 0x818000",
        ),
        (
            Box::new(move |fw| put64(fw, entry(2) + 8, 0xffff_ffff_ffff_f000)),
            "64-bit address space",
        ),
    ];
    for (i, (mutate, want)) in cases.into_iter().enumerate() {
        let e = corrupt(|fw, _| mutate(fw));
        let msg = e.to_string();
        assert!(msg.contains(want), "case {i}: {msg:?} should say {want:?}");
        if !msg.contains("overlap") {
            assert!(
                msg.contains("file offset 0x"),
                "case {i}: no offset in {msg:?}"
            );
        }
    }
    // A BFV-less image (the BFV retyped as a payload that is not measured).
    let e = corrupt(|fw, _| {
        put32(fw, entry(0) + 24, 5);
        put32(fw, entry(0) + 28, 0);
    });
    assert!(matches!(e, TdxError::NoBfv), "{e}");
}

#[test]
fn truncated_firmware_is_refused() {
    let fw = debian_ovmf();
    // The last 1 MiB only: the footer and metadata are there, the BFV's raw data is not.
    let tail = &fw[fw.len() - 0x10_0000..];
    let e = Tdvf::parse(tail).unwrap_err();
    assert!(matches!(e, TdxError::RawDataOutOfBounds { .. }), "{e}");
    assert!(e.to_string().contains("file offset 0x"), "{e}");
    // Cut inside the metadata: the footer table is gone.
    let e = Tdvf::parse(&fw[..fw.len() - 0x800]).unwrap_err();
    assert!(matches!(e, TdxError::NoFooterTable), "{e}");
    // Every prefix length near the end fails cleanly (no panic).
    for cut in (1..0x900).step_by(7) {
        assert!(Tdvf::parse(&fw[..fw.len() - cut]).is_err());
        assert!(Tdvf::parse(&fw[cut..]).is_err());
    }
}

// ---- RTMRs --------------------------------------------------------------------------------

fn fold(digests: &[&[u8]]) -> String {
    let mut v = vec![0u8; 48];
    for d in digests {
        let mut c = Context::new(&SHA384);
        c.update(&v);
        c.update(d);
        v = c.finish().as_ref().to_vec();
    }
    hex::encode(v)
}

fn sha384(b: &[u8]) -> Vec<u8> {
    digest(&SHA384, b).as_ref().to_vec()
}

#[test]
fn rtmrs_from_predicted_events() {
    let dir = tempfile::tempdir().unwrap();
    let uki = std::fs::read(build_uki(dir.path())).unwrap();
    let gpt = b"EFI PART stand-in for UEFI_GPT_DATA".to_vec();
    for stub in [StubProfile::V252, StubProfile::V257] {
        let cfg = BootConfig {
            alg: HashAlg::Sha384,
            stub: Some(stub),
            ..BootConfig::default()
        };
        let p = predict(&uki, &cfg).unwrap();
        let r = tdx::predict_rtmrs(&p, Some(&gpt)).unwrap();

        // RTMR[1]: PCR 4's events with the GPT event before the UKI, then ExitBootServices.
        let pcr4: Vec<&Event> = p.events.iter().filter(|e| e.pcr == 4).collect();
        assert_eq!(pcr4[0].event_type, EventType::EfiAction);
        assert_eq!(pcr4[1].event_type, EventType::Separator);
        let gpt_digest = sha384(&gpt);
        let mut want: Vec<&[u8]> = vec![&pcr4[0].digest, &pcr4[1].digest, &gpt_digest];
        want.extend(pcr4[2..].iter().map(|e| e.digest.as_slice()));
        let (ebs1, ebs2) = (
            sha384(b"Exit Boot Services Invocation"),
            sha384(b"Exit Boot Services Returned with Success"),
        );
        want.push(&ebs1);
        want.push(&ebs2);
        assert_eq!(
            pcr4[0].digest,
            sha384(b"Calling EFI Application from Boot Option")
        );
        assert_eq!(pcr4[1].digest, sha384(&[0; 4]));
        assert_eq!(hex::encode(r.rtmr1.unwrap()), fold(&want), "{stub:?}");
        assert_eq!(r.rtmr1_events.len(), want.len());

        // RTMR[2]: PCR 8-15 from the stubs; systemd-stub 252 has no CC measurement support.
        let rtmr2: Vec<&[u8]> = p
            .events
            .iter()
            .filter(|e| (8..=15).contains(&e.pcr))
            .filter(|e| match e.origin {
                Origin::SystemdStub => stub == StubProfile::V257,
                Origin::NacreInit => false,
                _ => true,
            })
            .map(|e| e.digest.as_slice())
            .collect();
        assert_eq!(hex::encode(r.rtmr2), fold(&rtmr2), "{stub:?}");
        let from_stub = r
            .rtmr2_events
            .iter()
            .filter(|e| e.origin == Origin::SystemdStub)
            .count();
        match stub {
            StubProfile::V252 => assert_eq!(from_stub, 0),
            _ => assert!(from_stub >= 2, "stub 257 measures its sections"),
        }
        assert!(r.rtmr2_events.iter().any(|e| e.pcr == 9));
    }

    // Without the disk's GPT, RTMR[1] is not predicted; a sha256 prediction is refused.
    let p = predict(
        &uki,
        &BootConfig {
            alg: HashAlg::Sha384,
            ..BootConfig::default()
        },
    )
    .unwrap();
    let r = tdx::predict_rtmrs(&p, None).unwrap();
    assert!(r.rtmr1.is_none() && r.rtmr1_unpredicted.is_some());
    let p256 = predict(&uki, &BootConfig::default()).unwrap();
    assert!(matches!(
        tdx::predict_rtmrs(&p256, None),
        Err(TdxError::WrongBank(HashAlg::Sha256))
    ));
}

#[test]
fn gpt_event_data_layout() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
    let mut child = Command::new("sfdisk")
        .args(["--quiet", "--label", "gpt", img.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk (util-linux)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"size=2MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\nsize=1MiB\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let disk = std::fs::read(&img).unwrap();
    let data = tdx::gpt_event_from_file(&img).unwrap();
    assert_eq!(Some(data.clone()), tdx::gpt_event_data(&disk, 512));
    // Header (92 bytes from LBA 1), two used entries, each 128 bytes from LBA 2.
    assert_eq!(&data[..92], &disk[512..604]);
    assert_eq!(le_u64(&data, 92), 2);
    assert_eq!(data.len(), 92 + 8 + 2 * 128);
    assert_eq!(&data[100..356], &disk[1024..1280]);
}

/// The QEMU/OVMF boot captures of tests/boot.rs, when they exist (they take minutes to make).
fn boot_capture() -> Option<PathBuf> {
    let base = std::env::var_os("NACRE_BOOT_CAPTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-boot"));
    let d = base.join("plain-sha384");
    (d.join("disk.img").is_file() && d.join("capture/eventlog.bin").is_file()).then_some(d)
}

#[test]
fn rtmr1_events_match_a_real_ovmf_log_when_present() {
    let Some(dir) = boot_capture() else {
        println!(
            "SKIPPED rtmr1_events_match_a_real_ovmf_log_when_present: no boot capture \
             (run the boot tests first, or set NACRE_BOOT_CAPTURES to their e2e-boot directory)"
        );
        return;
    };
    // OVMF with a vTPM logs the same event data into PCRs 2-6 as TDVF into RTMR[1], except
    // that the TPM path adds separators for PCRs 2, 3, 5 and 6 (TDVF: one separator only).
    let files = nacre_measure::source::BootFiles::open(&dir.join("disk.img")).unwrap();
    let p = predict(
        &files.uki,
        &BootConfig {
            alg: HashAlg::Sha384,
            dropins: files.dropins.clone(),
            ..BootConfig::default()
        },
    )
    .unwrap();
    let gpt = tdx::gpt_event_from_file(&dir.join("disk.img")).unwrap();
    let r = tdx::predict_rtmrs(&p, Some(&gpt)).unwrap();
    let log = EventLog::parse(&std::fs::read(dir.join("capture/eventlog.bin")).unwrap()).unwrap();
    let logged: Vec<Vec<u8>> = log
        .events
        .iter()
        .filter(|e| (2..=6).contains(&e.pcr))
        .filter(|e| !(e.event_type == EventType::Separator && e.pcr != 4))
        .filter_map(|e| e.digest(HashAlg::Sha384).map(|d| d.to_vec()))
        .collect();
    let predicted: Vec<Vec<u8>> = r.rtmr1_events.iter().map(|e| e.digest.clone()).collect();
    assert_eq!(predicted, logged);
}

// ---- CLI ----------------------------------------------------------------------------------

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nacre-measure"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_tdx_digest_and_golden() {
    let out = cli(&["tdx-digest", "--ovmf", DEBIAN_OVMF_CODE_4M]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no TDX metadata"));

    let out = cli(&[
        "tdx-digest",
        "--ovmf",
        DEBIAN_OVMF,
        "--page-add-order",
        "per-section",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(DEBIAN_MRTD_PER_SECTION_MOSAIK));

    let dir = tempfile::tempdir().unwrap();
    let uki = build_uki(dir.path());
    let out = cli(&[
        "tdx-digest",
        "--ovmf",
        DEBIAN_OVMF,
        uki.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["mrtd"], DEBIAN_MRTD_PER_PAGE);
    assert_eq!(j["ovmf_sha256"], DEBIAN_OVMF_SHA256);
    assert!(j["rtmr0"].is_null() && j["rtmr1"].is_null());
    assert!(j["rtmr1_unpredicted"].as_str().unwrap().contains("GPT"));
    assert_eq!(j["rtmr2"].as_str().unwrap().len(), 96);

    let m = dir.path().join("measurements.json");
    let out = cli(&[
        "golden",
        uki.to_str().unwrap(),
        "--out",
        m.to_str().unwrap(),
        "--variant",
        "qemu-tdx",
        "--tdx-ovmf",
        DEBIAN_OVMF,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest =
        nacre_measure::manifest::Manifest::from_json(&std::fs::read(&m).unwrap()).unwrap();
    let t = manifest.tdx.expect("a tdx entry");
    assert_eq!(t.mrtd, DEBIAN_MRTD_PER_PAGE);
    assert_eq!(t.page_add_order, "per-page");
    assert_eq!(t.ovmf_sha256, DEBIAN_OVMF_SHA256);
    assert_eq!(t.rtmr1, None);
    assert_eq!(t.rtmr2.as_deref(), j["rtmr2"].as_str());
}
