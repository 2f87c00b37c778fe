//! Intel TDX launch measurements of a guest booted by TDVF (edk2's OVMF built with TDX
//! support): MRTD from the firmware image, and the RTMR[1]/RTMR[2] values a UKI boot gives.
//!
//! # MRTD
//!
//! The VMM reads the firmware's TDVF metadata (TDVF design guide, "TDVF metadata"; edk2
//! `OvmfPkg/ResetVector/X64/IntelTdxMetadata.asm`): the OVMF footer GUID table has an entry
//! `e47a6535-984a-4798-865e-4685a7bf8ec2` whose u32 is the distance of the metadata descriptor
//! from the end of the image; the descriptor (signature "TDVF", length, version 1, section
//! count) is preceded by the GUID `e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae` and followed by
//! 32-byte section entries (data offset, raw size, GPA, memory size, type, attributes).
//!
//! For every section without the PAGE.AUG attribute, in metadata order, the VMM adds each 4 KiB
//! page with TDH.MEM.PAGE.ADD and, for sections with MR.EXTEND, measures each 256-byte chunk with
//! TDH.MR.EXTEND. The TDX module folds each operation into one running SHA-384 (finalized by
//! TDH.MR.FINALIZE): PAGE.ADD contributes a 128-byte block "MEM.PAGE.ADD" ‖ 0⁴ ‖ GPA (u64 LE) ‖
//! 0¹⁰⁴; MR.EXTEND a 128-byte block "MR.EXTEND" ‖ 0⁷ ‖ GPA ‖ 0¹⁰⁴, then the 256 bytes.
//!
//! Where the VMMs differ is the interleaving ([`PageAddOrder`]): upstream QEMU (10.1) with
//! upstream KVM (Linux 6.16, `KVM_TDX_INIT_MEM_REGION` through guest_memfd) adds a page and
//! extends its chunks before the next page ([`PageAddOrder::PerPage`], the default; Phala's
//! dstack-mr uses this order for QEMU 9 and later); the QEMU 8.x TDX patch sets add all pages
//! of a section first, then extend them ([`PageAddOrder::PerSection`]; dstack-mr's "two-pass"
//! order for QEMU 8.x). PerSection is checked against an independent implementation (crates.io's
//! `mosaik` 0.3.13, see `measurements/tests/tdx.rs`); PerPage is the same records in the other
//! order and is checked against no other tool and no TDX host.
//!
//! Every malformed input is a typed [`TdxError`] naming the file offset of what is wrong.
//!
//! # RTMRs
//!
//! TDVF maps TPM PCR indices to CC measurement registers (UEFI 2.10 §38.4.1): PCR 0 → MRTD,
//! PCR 1 and 7 → RTMR[0], PCR 2–6 → RTMR[1], PCR 8–15 → RTMR[2]; RTMR[3] is left to the OS.
//! The event digests are SHA-384 of the same event data as the TPM's sha384 bank, so RTMR[1]
//! and RTMR[2] follow from nacre's ordered event prediction ([`predict_rtmrs`]):
//!
//! - **RTMR[1]** (edk2 `OvmfPkg/IntelTdx/TdTcg2Dxe` and `DxeTpm2MeasureBootLib`): the
//!   EV_EFI_ACTION "Calling EFI Application from Boot Option" and ONE EV_SEPARATOR (TdTcg2Dxe's
//!   ReadyToBoot handler extends the separator only into RTMR[1]: RTMR[0]'s was extended before,
//!   PCR 2/3/5/6 get no separators of their own), the EV_EFI_GPT_EVENT of the boot disk (the UKI
//!   is loaded from a GPT disk), the UKI's Authenticode digest, the kernel's when systemd-stub
//!   starts it with LoadImage and Secure Boot is off (stub 252), then EV_EFI_ACTION "Exit Boot
//!   Services Invocation" and "Exit Boot Services Returned with Success" (the values hold once
//!   the OS runs). It needs the disk image (for the GPT event): from a bare UKI it is not
//!   predicted. The single separator follows current edk2's TdTcg2Dxe (and dstack-mr's
//!   hardware-checked RTMR[1] logs); whether a given firmware build (e.g. Debian's
//!   edk2-stable202211 OVMF.fd) includes TdTcg2Dxe and behaves the same was not checked.
//! - **RTMR[2]**: what systemd-stub and the Linux EFI stub measure into PCRs 8–15, in order:
//!   the stub's sections (PCR 11), its credential/sysext archives (PCR 12/13) and the kernel's
//!   load options and initrd (PCR 9). systemd-stub 252 only measures through the TCG2 protocol,
//!   which TDVF does not provide without a vTPM, so its events are left out for stub 252 (stub
//!   255+ measures through EFI_CC_MEASUREMENT_PROTOCOL); the Linux EFI stub's events are assumed
//!   to reach RTMR[2] (a kernel whose EFI stub measures through the CC protocol; not checked
//!   here). nacre-init's runtime events extend the TPM, not an RTMR, and are left out.
//! - **RTMR[0]** is not predicted: it holds the TD HOB (built by the VMM from the guest's
//!   memory size), the CFV (variable store), Secure Boot variables, ACPI tables and boot
//!   variables, which depend on the VMM's configuration. Verifiers must treat it as warn-only.
//!
//! RTMR[1]'s event list was compared with a real OVMF boot's firmware log (vTPM, sha384 bank:
//! the same event data, less the TPM path's separators for PCRs 2, 3, 5, 6), see
//! `tests/tdx.rs`. None of these values was compared with a TDX host's quote or CC event log:
//! no TDX hardware was available.

use crate::predict::{Event, Origin, Prediction};
use crate::snp::{self, guid, Guid, SnpError};
use crate::uki::StubProfile;
use nacre_eventlog::alg::HashAlg;
use nacre_eventlog::tcg::EventType;
use ring::digest::{Context, SHA384};
use serde::Serialize;

/// A TDX measurement register value (SHA-384).
pub type Mr = [u8; 48];

const PAGE_SIZE: u64 = 4096;
const CHUNK_SIZE: usize = 256;
/// Size of a footer table entry header: u16 size + GUID.
const ENTRY_HEADER: usize = 18;
/// The TDVF descriptor header: "TDVF", u32 length, u32 version, u32 section count.
const DESCRIPTOR_HEADER: usize = 16;
/// One TDVF section entry.
const SECTION_ENTRY: usize = 32;

/// GUIDs of the TDX metadata.
pub mod guids {
    use super::{guid, Guid};
    /// Footer table entry holding the descriptor's distance from the end of the image.
    pub const TDX_METADATA_OFFSET: Guid = guid("e47a6535-984a-4798-865e-4685a7bf8ec2");
    /// The GUID in the 16 bytes right before the "TDVF" descriptor.
    pub const TDVF_METADATA: Guid = guid("e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae");
}

/// Section attribute: the section's pages are measured into MRTD with TDH.MR.EXTEND.
pub const ATTR_MR_EXTEND: u32 = 0x1;
/// Section attribute: the pages are added later with TDH.MEM.PAGE.AUG (not in MRTD).
pub const ATTR_PAGE_AUG: u32 = 0x2;

#[derive(Debug, thiserror::Error)]
pub enum TdxError {
    #[error("firmware is truncated: {len} bytes cannot hold the OVMF footer table")]
    Truncated { len: usize },
    #[error("firmware has no OVMF footer GUID table (no {} GUID 48 bytes before its end): not an OVMF/TDVF image", snp::guids::OVMF_TABLE_FOOTER)]
    NoFooterTable,
    #[error("OVMF footer GUID table is malformed: {0}")]
    BadFooterTable(String),
    #[error("firmware has no TDX metadata (no {} entry in the OVMF footer table): it cannot launch a TDX guest", guids::TDX_METADATA_OFFSET)]
    NoTdxMetadata,
    #[error("the footer table's TDX metadata entry holds {len} bytes, expected 4")]
    ShortMetadataEntry { len: usize },
    #[error("the TDX metadata offset {offset_from_end:#x} from the end does not point into the {len}-byte image (with room for the descriptor header and the GUID before it)")]
    DescriptorOutOfBounds { offset_from_end: u32, len: usize },
    #[error("the 16 bytes before the TDVF descriptor at file offset {offset:#x} are {found}, not the TDVF metadata GUID {}", guids::TDVF_METADATA)]
    MissingMetadataGuid { offset: usize, found: Guid },
    #[error(
        "the TDVF descriptor at file offset {offset:#x} has signature {found:?}, expected \"TDVF\""
    )]
    BadSignature { offset: usize, found: [u8; 4] },
    #[error("the TDVF descriptor at file offset {offset:#x} has version {version}, only version 1 is defined")]
    BadVersion { offset: usize, version: u32 },
    #[error("the TDVF descriptor at file offset {offset:#x} declares no sections")]
    NoSections { offset: usize },
    #[error("the TDVF descriptor at file offset {offset:#x} declares length {length:#x}, but {sections} sections need {expected:#x}")]
    BadLength {
        offset: usize,
        length: u32,
        sections: u32,
        expected: u64,
    },
    #[error("the TDVF descriptor at file offset {offset:#x} with {sections} sections runs past the end of the {len}-byte image")]
    DescriptorTruncated {
        offset: usize,
        sections: u32,
        len: usize,
    },
    #[error("TDVF section {index} (entry at file offset {offset:#x}) has unknown type {value:#x}")]
    UnknownSectionType {
        index: usize,
        offset: usize,
        value: u32,
    },
    #[error("TDVF section {index} (entry at file offset {offset:#x}) has unknown attribute bits {value:#x}")]
    UnknownAttributes {
        index: usize,
        offset: usize,
        value: u32,
    },
    #[error("TDVF section {index} ({kind:?}, entry at file offset {offset:#x}): {field} {value:#x} is not a multiple of 4096")]
    NotPageAligned {
        index: usize,
        offset: usize,
        kind: SectionType,
        field: &'static str,
        value: u64,
    },
    #[error("TDVF section {index} ({kind:?}, entry at file offset {offset:#x}) has memory size 0")]
    EmptySection {
        index: usize,
        offset: usize,
        kind: SectionType,
    },
    #[error("TDVF section {index} ({kind:?}, entry at file offset {offset:#x}) ends beyond the 64-bit address space")]
    AddressOverflow {
        index: usize,
        offset: usize,
        kind: SectionType,
    },
    #[error("TDVF section {index} ({kind:?}, entry at file offset {offset:#x}): raw data size {raw:#x} exceeds memory size {size:#x}")]
    RawLargerThanMemory {
        index: usize,
        offset: usize,
        kind: SectionType,
        raw: u32,
        size: u64,
    },
    #[error("TDVF section {index} ({kind:?}, entry at file offset {offset:#x}): raw data at file offset {data_offset:#x} + {raw:#x} lies outside the {len}-byte image")]
    RawDataOutOfBounds {
        index: usize,
        offset: usize,
        kind: SectionType,
        data_offset: u32,
        raw: u32,
        len: usize,
    },
    #[error("TDVF section {index} ({kind:?}, entry at file offset {offset:#x}) has no raw data: a firmware volume must be copied from the image")]
    MissingRawData {
        index: usize,
        offset: usize,
        kind: SectionType,
    },
    #[error("TDVF section {index} ({kind:?}, entry at file offset {offset:#x}) has {raw:#x} bytes of raw data, but this type is not loaded from the image")]
    UnexpectedRawData {
        index: usize,
        offset: usize,
        kind: SectionType,
        raw: u32,
    },
    #[error("TDVF section {index} ({kind:?}, entry at file offset {offset:#x}) is measured (MR.EXTEND) but only {raw:#x} of its {size:#x} bytes come from the image: the rest depends on the VMM")]
    MeasuredNotFromImage {
        index: usize,
        offset: usize,
        kind: SectionType,
        raw: u32,
        size: u64,
    },
    #[error("TDVF section {index} ({kind:?}, entry at file offset {offset:#x}) has both MR.EXTEND and PAGE.AUG: PAGE.AUG pages cannot be measured")]
    AugmentedAndMeasured {
        index: usize,
        offset: usize,
        kind: SectionType,
    },
    #[error(
        "TDVF sections {first} and {second} overlap at GPA {gpa:#x}: a page cannot be added twice"
    )]
    Overlap {
        first: usize,
        second: usize,
        gpa: u64,
    },
    #[error("the TDVF metadata declares no BFV section: there is no firmware code to measure")]
    NoBfv,
    #[error("RTMRs are SHA-384 registers: predict with the sha384 bank (the prediction used {0})")]
    WrongBank(HashAlg),
    #[error("unknown page-add order {0:?} (known: per-page, per-section)")]
    UnknownPageAddOrder(String),
    #[error("hashing: {0}")]
    Alg(#[from] nacre_eventlog::alg::AlgError),
}

impl TdxError {
    fn from_footer(e: SnpError) -> Self {
        match e {
            SnpError::NoFooterTable => TdxError::NoFooterTable,
            SnpError::BadFooterTable(s) => TdxError::BadFooterTable(s),
            other => TdxError::BadFooterTable(other.to_string()),
        }
    }
}

/// TDVF section types (TDVF design guide, table "TDVF_SECTION type").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SectionType {
    /// Boot firmware volume (code), copied from the image.
    Bfv,
    /// Configuration firmware volume (variables), copied from the image.
    Cfv,
    /// The TD HOB the VMM writes.
    TdHob,
    /// Temporary memory, zero.
    TempMem,
    /// Permanent memory.
    PermMem,
    /// A payload (e.g. a kernel) the VMM loads.
    Payload,
    /// The payload's parameters.
    PayloadParam,
}

impl SectionType {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => SectionType::Bfv,
            1 => SectionType::Cfv,
            2 => SectionType::TdHob,
            3 => SectionType::TempMem,
            4 => SectionType::PermMem,
            5 => SectionType::Payload,
            6 => SectionType::PayloadParam,
            _ => return None,
        })
    }
}

/// One TDVF section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TdvfSection {
    /// Position in the metadata.
    pub index: usize,
    /// File offset of this section's entry in the metadata.
    pub entry_offset: usize,
    /// File offset of the section's raw data.
    pub data_offset: u32,
    pub raw_size: u32,
    /// Guest-physical address.
    pub gpa: u64,
    pub size: u64,
    pub kind: SectionType,
    pub attributes: u32,
}

impl TdvfSection {
    pub fn mr_extend(&self) -> bool {
        self.attributes & ATTR_MR_EXTEND != 0
    }
    pub fn page_aug(&self) -> bool {
        self.attributes & ATTR_PAGE_AUG != 0
    }
}

/// How the VMM interleaves TDH.MEM.PAGE.ADD and TDH.MR.EXTEND (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PageAddOrder {
    /// Each page is added, then its 16 chunks are extended (upstream KVM + QEMU 9+).
    #[default]
    PerPage,
    /// All pages of a section are added, then all are extended (QEMU 8.x TDX stacks).
    PerSection,
}

impl PageAddOrder {
    pub fn name(self) -> &'static str {
        match self {
            PageAddOrder::PerPage => "per-page",
            PageAddOrder::PerSection => "per-section",
        }
    }
}

impl std::str::FromStr for PageAddOrder {
    type Err = TdxError;
    fn from_str(s: &str) -> Result<Self, TdxError> {
        match s {
            "per-page" | "single-pass" => Ok(PageAddOrder::PerPage),
            "per-section" | "two-pass" => Ok(PageAddOrder::PerSection),
            _ => Err(TdxError::UnknownPageAddOrder(s.to_string())),
        }
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// A firmware image with validated TDVF metadata.
#[derive(Debug, Clone)]
pub struct Tdvf<'a> {
    data: &'a [u8],
    descriptor_offset: usize,
    sections: Vec<TdvfSection>,
}

impl<'a> Tdvf<'a> {
    /// Parse and validate the TDVF metadata of a firmware image (the whole flash image, as
    /// QEMU's `-bios` gets it). Rejects images without TDX metadata or with malformed metadata.
    pub fn parse(data: &'a [u8]) -> Result<Self, TdxError> {
        let len = data.len();
        if len < 32 + ENTRY_HEADER {
            return Err(TdxError::Truncated { len });
        }
        let table = snp::parse_footer_table(data).map_err(TdxError::from_footer)?;
        let entry = table
            .iter()
            .find(|(g, _)| *g == guids::TDX_METADATA_OFFSET)
            .map(|(_, d)| *d)
            .ok_or(TdxError::NoTdxMetadata)?;
        if entry.len() != 4 {
            return Err(TdxError::ShortMetadataEntry { len: entry.len() });
        }
        let offset_from_end = le_u32(entry, 0);
        let d = len
            .checked_sub(offset_from_end as usize)
            .filter(|d| *d >= 16 && d + DESCRIPTOR_HEADER <= len)
            .ok_or(TdxError::DescriptorOutOfBounds {
                offset_from_end,
                len,
            })?;
        let mut g = [0u8; 16];
        g.copy_from_slice(&data[d - 16..d]);
        if Guid(g) != guids::TDVF_METADATA {
            return Err(TdxError::MissingMetadataGuid {
                offset: d,
                found: Guid(g),
            });
        }
        let mut sig = [0u8; 4];
        sig.copy_from_slice(&data[d..d + 4]);
        if &sig != b"TDVF" {
            return Err(TdxError::BadSignature {
                offset: d,
                found: sig,
            });
        }
        let length = le_u32(data, d + 4);
        let version = le_u32(data, d + 8);
        let count = le_u32(data, d + 12);
        if version != 1 {
            return Err(TdxError::BadVersion { offset: d, version });
        }
        if count == 0 {
            return Err(TdxError::NoSections { offset: d });
        }
        let expected = DESCRIPTOR_HEADER as u64 + u64::from(count) * SECTION_ENTRY as u64;
        if u64::from(length) != expected {
            return Err(TdxError::BadLength {
                offset: d,
                length,
                sections: count,
                expected,
            });
        }
        if d as u64 + expected > len as u64 {
            return Err(TdxError::DescriptorTruncated {
                offset: d,
                sections: count,
                len,
            });
        }
        let mut sections = Vec::with_capacity(count as usize);
        for index in 0..count as usize {
            let offset = d + DESCRIPTOR_HEADER + index * SECTION_ENTRY;
            let e = &data[offset..offset + SECTION_ENTRY];
            let type_value = le_u32(e, 24);
            let kind = SectionType::from_u32(type_value).ok_or(TdxError::UnknownSectionType {
                index,
                offset,
                value: type_value,
            })?;
            let s = TdvfSection {
                index,
                entry_offset: offset,
                data_offset: le_u32(e, 0),
                raw_size: le_u32(e, 4),
                gpa: le_u64(e, 8),
                size: le_u64(e, 16),
                kind,
                attributes: le_u32(e, 28),
            };
            validate_section(&s, len)?;
            sections.push(s);
        }
        // No page may be added twice.
        let mut ranges: Vec<&TdvfSection> = sections.iter().collect();
        ranges.sort_by_key(|s| s.gpa);
        for w in ranges.windows(2) {
            if w[0].gpa + w[0].size > w[1].gpa {
                let (first, second) = (w[0].index.min(w[1].index), w[0].index.max(w[1].index));
                return Err(TdxError::Overlap {
                    first,
                    second,
                    gpa: w[1].gpa,
                });
            }
        }
        if !sections.iter().any(|s| s.kind == SectionType::Bfv) {
            return Err(TdxError::NoBfv);
        }
        Ok(Tdvf {
            data,
            descriptor_offset: d,
            sections,
        })
    }

    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// File offset of the "TDVF" descriptor.
    pub fn descriptor_offset(&self) -> usize {
        self.descriptor_offset
    }

    /// The sections in metadata order.
    pub fn sections(&self) -> &[TdvfSection] {
        &self.sections
    }

    /// MRTD: the SHA-384 over the TDH.MEM.PAGE.ADD and TDH.MR.EXTEND records of the build.
    pub fn mrtd(&self, order: PageAddOrder) -> Mr {
        let mut h = Context::new(&SHA384);
        for s in self.sections.iter().filter(|s| !s.page_aug()) {
            let pages = s.size / PAGE_SIZE;
            match order {
                PageAddOrder::PerPage => {
                    for p in 0..pages {
                        page_add(&mut h, s.gpa + p * PAGE_SIZE);
                        if s.mr_extend() {
                            self.extend_page(&mut h, s, p);
                        }
                    }
                }
                PageAddOrder::PerSection => {
                    for p in 0..pages {
                        page_add(&mut h, s.gpa + p * PAGE_SIZE);
                    }
                    if s.mr_extend() {
                        for p in 0..pages {
                            self.extend_page(&mut h, s, p);
                        }
                    }
                }
            }
        }
        to_mr(h.finish().as_ref())
    }

    fn extend_page(&self, h: &mut Context, s: &TdvfSection, page: u64) {
        // Validated: MR.EXTEND sections are backed by the image for their whole size.
        let start = s.data_offset as usize + (page * PAGE_SIZE) as usize;
        let content = &self.data[start..start + PAGE_SIZE as usize];
        for (i, chunk) in content.chunks(CHUNK_SIZE).enumerate() {
            let mut rec = [0u8; 128];
            rec[..9].copy_from_slice(b"MR.EXTEND");
            let gpa = s.gpa + page * PAGE_SIZE + (i * CHUNK_SIZE) as u64;
            rec[16..24].copy_from_slice(&gpa.to_le_bytes());
            h.update(&rec);
            h.update(chunk);
        }
    }
}

fn page_add(h: &mut Context, gpa: u64) {
    let mut rec = [0u8; 128];
    rec[..12].copy_from_slice(b"MEM.PAGE.ADD");
    rec[16..24].copy_from_slice(&gpa.to_le_bytes());
    h.update(&rec);
}

fn to_mr(d: &[u8]) -> Mr {
    let mut m = [0u8; 48];
    m.copy_from_slice(&d[..48]);
    m
}

fn validate_section(s: &TdvfSection, len: usize) -> Result<(), TdxError> {
    let (index, offset, kind) = (s.index, s.entry_offset, s.kind);
    let known = ATTR_MR_EXTEND | ATTR_PAGE_AUG;
    if s.attributes & !known != 0 {
        return Err(TdxError::UnknownAttributes {
            index,
            offset,
            value: s.attributes,
        });
    }
    for (field, value) in [("GPA", s.gpa), ("memory size", s.size)] {
        if value % PAGE_SIZE != 0 {
            return Err(TdxError::NotPageAligned {
                index,
                offset,
                kind,
                field,
                value,
            });
        }
    }
    if s.size == 0 {
        return Err(TdxError::EmptySection {
            index,
            offset,
            kind,
        });
    }
    if s.gpa.checked_add(s.size).is_none() {
        return Err(TdxError::AddressOverflow {
            index,
            offset,
            kind,
        });
    }
    if u64::from(s.raw_size) > s.size {
        return Err(TdxError::RawLargerThanMemory {
            index,
            offset,
            kind,
            raw: s.raw_size,
            size: s.size,
        });
    }
    if s.data_offset as u64 + u64::from(s.raw_size) > len as u64 {
        return Err(TdxError::RawDataOutOfBounds {
            index,
            offset,
            kind,
            data_offset: s.data_offset,
            raw: s.raw_size,
            len,
        });
    }
    match kind {
        SectionType::Bfv | SectionType::Cfv if s.raw_size == 0 => {
            return Err(TdxError::MissingRawData {
                index,
                offset,
                kind,
            })
        }
        SectionType::TdHob | SectionType::TempMem if s.raw_size != 0 => {
            return Err(TdxError::UnexpectedRawData {
                index,
                offset,
                kind,
                raw: s.raw_size,
            })
        }
        _ => {}
    }
    if s.mr_extend() && s.page_aug() {
        return Err(TdxError::AugmentedAndMeasured {
            index,
            offset,
            kind,
        });
    }
    if s.mr_extend() && u64::from(s.raw_size) != s.size {
        return Err(TdxError::MeasuredNotFromImage {
            index,
            offset,
            kind,
            raw: s.raw_size,
            size: s.size,
        });
    }
    Ok(())
}

/// The EV_EFI_GPT_EVENT data edk2 measures when it loads an image from a GPT disk
/// (`UEFI_GPT_DATA`): the primary GPT header (92 bytes), the number of used entries (u64), then
/// the used entries (non-zero type GUID) in table order.
pub fn gpt_event_data(disk: &[u8], sector_size: u64) -> Option<Vec<u8>> {
    let ss = usize::try_from(sector_size).ok()?;
    let hdr = disk.get(ss..ss.checked_add(92)?)?;
    if &hdr[..8] != b"EFI PART" {
        return None;
    }
    let entries_lba = le_u64(hdr, 72);
    let count = le_u32(hdr, 80) as usize;
    let entry_size = le_u32(hdr, 84) as usize;
    if entry_size < 128 {
        return None;
    }
    let start = usize::try_from(entries_lba).ok()?.checked_mul(ss)?;
    let table = disk.get(start..start.checked_add(count.checked_mul(entry_size)?)?)?;
    Some(uefi_gpt_data(hdr, table, entry_size))
}

/// The EV_EFI_GPT_EVENT data of a raw disk image file: its GPT is validated (CRCs, bounds)
/// by `nacre_diskimage`, then the primary header and entry array are read as edk2 reads them.
pub fn gpt_event_from_file(path: &std::path::Path) -> Result<Vec<u8>, GptEventError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e: std::io::Error| GptEventError::Io(e.to_string());
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let gpt =
        nacre_diskimage::Gpt::read(&mut f, len).map_err(|e| GptEventError::Gpt(e.to_string()))?;
    let ss = gpt.sector_size;
    let mut hdr = vec![0u8; ss as usize];
    f.seek(SeekFrom::Start(ss)).map_err(io)?;
    f.read_exact(&mut hdr).map_err(io)?;
    let entries_lba = le_u64(&hdr, 72);
    let table_len = u64::from(gpt.entry_count) * u64::from(gpt.entry_size);
    let start = entries_lba
        .checked_mul(ss)
        .filter(|s| s.checked_add(table_len).is_some_and(|e| e <= len))
        .ok_or_else(|| GptEventError::Gpt("partition entry array out of bounds".into()))?;
    let mut table = vec![0u8; table_len as usize];
    f.seek(SeekFrom::Start(start)).map_err(io)?;
    f.read_exact(&mut table).map_err(io)?;
    Ok(uefi_gpt_data(&hdr[..92], &table, gpt.entry_size as usize))
}

/// `UEFI_GPT_DATA`: header, u64 count of used entries, the used entries.
fn uefi_gpt_data(hdr: &[u8], table: &[u8], entry_size: usize) -> Vec<u8> {
    let used: Vec<&[u8]> = table
        .chunks(entry_size)
        .filter(|e| e.iter().take(16).any(|b| *b != 0))
        .collect();
    let mut out = hdr.to_vec();
    out.extend_from_slice(&(used.len() as u64).to_le_bytes());
    for e in used {
        out.extend_from_slice(e);
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum GptEventError {
    #[error("reading the disk image: {0}")]
    Io(String),
    #[error("the disk image's GPT: {0}")]
    Gpt(String),
}

/// The string TDVF measures when ExitBootServices is called, and when it succeeded.
pub const EXIT_BOOT_SERVICES_INVOCATION: &str = "Exit Boot Services Invocation";
pub const EXIT_BOOT_SERVICES_SUCCEEDED: &str = "Exit Boot Services Returned with Success";

/// The CC measurement register TDVF maps a PCR to (0: MRTD, 1–3: RTMR[0–2]); `None` for PCRs
/// TDVF does not map (16+).
pub fn pcr_to_mr_index(pcr: u32) -> Option<u32> {
    match pcr {
        0 => Some(0),
        1 | 7 => Some(1),
        2..=6 => Some(2),
        8..=15 => Some(3),
        _ => None,
    }
}

/// Predicted RTMR[1] and RTMR[2] of a UKI boot under TDVF, with the events behind them.
#[derive(Debug, Clone, Serialize)]
pub struct RtmrPrediction {
    /// `None` when not predictable (see `rtmr1_unpredicted`).
    #[serde(serialize_with = "opt_hex")]
    pub rtmr1: Option<Mr>,
    /// Why RTMR[1] is not predicted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmr1_unpredicted: Option<String>,
    pub rtmr1_events: Vec<Event>,
    #[serde(with = "hex::serde")]
    pub rtmr2: Mr,
    pub rtmr2_events: Vec<Event>,
}

/// Why RTMR[0] is never predicted here.
pub const RTMR0_NOT_PREDICTED: &str = "RTMR[0] is not predicted: it holds the TD HOB (built by the VMM from the guest's memory), the CFV variable store, the Secure Boot variables, ACPI tables and boot variables, all set by the VMM's configuration; treat it as warn-only";

fn opt_hex<S: serde::Serializer>(v: &Option<Mr>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(m) => s.serialize_some(&hex::encode(m)),
        None => s.serialize_none(),
    }
}

/// Extend a register from zero with the events' digests.
pub fn replay_rtmr(events: &[Event]) -> Result<Mr, TdxError> {
    let mut v = vec![0u8; 48];
    for e in events {
        v = HashAlg::Sha384.extend(&v, &e.digest)?;
    }
    Ok(to_mr(&v))
}

/// RTMR[1] and RTMR[2] from a sha384 prediction (see the module docs for what goes in).
/// `gpt_event`: the EV_EFI_GPT_EVENT data of the boot disk ([`gpt_event_data`]); without it
/// RTMR[1] is not predicted.
pub fn predict_rtmrs(p: &Prediction, gpt_event: Option<&[u8]>) -> Result<RtmrPrediction, TdxError> {
    if p.alg != HashAlg::Sha384 {
        return Err(TdxError::WrongBank(p.alg));
    }
    let alg = HashAlg::Sha384;
    let fw = Origin::Firmware;
    let action = |pcr: u32, s: &str| -> Result<Event, TdxError> {
        Ok(Event {
            pcr,
            event_type: EventType::EfiAction,
            digest: alg.hash(s.as_bytes())?,
            description: s.to_string(),
            origin: fw,
        })
    };

    // RTMR[1]: PCR 2-6 events, the GPT event before the first image, then ExitBootServices.
    let mut rtmr1_events = Vec::new();
    let mut gpt_done = false;
    for e in p
        .events
        .iter()
        .filter(|e| pcr_to_mr_index(e.pcr) == Some(2))
    {
        if e.event_type == EventType::EfiBootServicesApplication && !gpt_done {
            if let Some(g) = gpt_event {
                rtmr1_events.push(Event {
                    pcr: 5,
                    event_type: EventType::EfiGptEvent,
                    digest: alg.hash(g)?,
                    description: "GPT of the boot disk (UEFI_GPT_DATA)".into(),
                    origin: fw,
                });
            }
            gpt_done = true;
        }
        rtmr1_events.push(e.clone());
    }
    rtmr1_events.push(action(5, EXIT_BOOT_SERVICES_INVOCATION)?);
    rtmr1_events.push(action(5, EXIT_BOOT_SERVICES_SUCCEEDED)?);
    let (rtmr1, rtmr1_unpredicted) = match gpt_event {
        Some(_) => (Some(replay_rtmr(&rtmr1_events)?), None),
        None => (
            None,
            Some("the boot disk's GPT (EV_EFI_GPT_EVENT) is unknown for a bare UKI: give the disk image".to_string()),
        ),
    };

    // RTMR[2]: PCR 8-15, by the stubs that measure through the CC protocol.
    let rtmr2_events: Vec<Event> = p
        .events
        .iter()
        .filter(|e| pcr_to_mr_index(e.pcr) == Some(3))
        .filter(|e| match e.origin {
            Origin::SystemdStub => p.stub != StubProfile::V252,
            Origin::LinuxEfiStub | Origin::Firmware => true,
            Origin::NacreInit => false,
        })
        .cloned()
        .collect();
    let rtmr2 = replay_rtmr(&rtmr2_events)?;
    Ok(RtmrPrediction {
        rtmr1,
        rtmr1_unpredicted,
        rtmr1_events,
        rtmr2,
        rtmr2_events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_encode_as_in_edk2() {
        // IntelTdxMetadata.asm: DB 0xf3, 0xf9, 0xea, 0xe9, 0x8e, 0x16, 0xd5, 0x44, ...
        assert_eq!(
            &guids::TDVF_METADATA.0[..8],
            &[0xf3, 0xf9, 0xea, 0xe9, 0x8e, 0x16, 0xd5, 0x44]
        );
        assert_eq!(
            &guids::TDX_METADATA_OFFSET.0[..4],
            &[0x35, 0x65, 0x7a, 0xe4]
        );
    }

    #[test]
    fn pcr_mapping() {
        assert_eq!(pcr_to_mr_index(0), Some(0));
        assert_eq!(pcr_to_mr_index(7), Some(1));
        assert_eq!(pcr_to_mr_index(4), Some(2));
        assert_eq!(pcr_to_mr_index(11), Some(3));
        assert_eq!(pcr_to_mr_index(16), None);
    }
}
