//! AMD SEV-SNP launch digest: the 48-byte `MEASUREMENT` of an SNP attestation report, as the
//! PSP computes it for a guest QEMU (or EC2 / GCE) launches with OVMF.
//!
//! This mirrors PyPI's `sev-snp-measure` (virtee/sev-snp-measure 0.0.13, `--mode snp`)
//! step for step, so both give the same digest on the same inputs:
//!
//! 1. every 4 KiB page of the firmware image, mapped so that it ends at 4 GiB, is measured as
//!    a NORMAL page (`gctx.update_normal_pages`);
//! 2. the sections declared by OVMF's SEV metadata (`OvmfSevMetadata.asm`) are measured in
//!    order: SNP_SEC_MEM and SVSM_CAA as ZERO pages (UNMEASURED for GCE's SNP_SEC_MEM), the
//!    secrets page as SECRETS, the CPUID page as CPUID (last, for EC2), and SNP_KERNEL_HASHES as
//!    the page carrying QEMU's SEV hashes table (kernel/initrd/cmdline SHA-256) for a measured
//!    direct boot, ZERO pages otherwise;
//! 3. one VMSA page per vCPU: the BSP starts at the reset vector 0xfffffff0, the APs at the
//!    SEV-ES reset block's address from the OVMF footer table.
//!
//! Each step folds a PAGE_INFO structure (SNP firmware ABI, "SNP_LAUNCH_UPDATE") into the
//! running SHA-384 digest, starting from 48 zero bytes.
//!
//! Deliberate difference: `sev-snp-measure` prints a digest for a firmware without SEV metadata
//! (it then measures no metadata sections at all, a launch no SNP-capable OVMF describes); here
//! that is [`SnpError::NoSevMetadata`]. Every malformed input is a typed [`SnpError`] where the
//! Python tool raises, asserts or crashes.

use ring::digest::{digest, SHA256, SHA384};
use std::str::FromStr;

/// Size of the launch digest (SHA-384).
pub const LD_SIZE: usize = 48;
/// A launch digest.
pub type LaunchDigest = [u8; LD_SIZE];

const PAGE_SIZE: usize = 4096;
const FOUR_GB: u64 = 1 << 32;

/// The VMSA pages are recorded with GPA (u64)-1, page-aligned and with bits 52.. cleared.
const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;
/// The bootstrap processor starts at the reset vector.
const BSP_EIP: u32 = 0xffff_fff0;

/// GUIDs in their on-disk (little-endian "mixed") encoding, as Python's `uuid.bytes_le`.
pub use nacre_eventlog::decode::Guid;

/// Parse a GUID's canonical text form at compile time (panics on malformed input: constants
/// only).
pub const fn guid(s: &str) -> Guid {
    const fn nib(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("bad GUID hex digit"),
        }
    }
    let s = s.as_bytes();
    assert!(s.len() == 36, "GUID must be 36 characters");
    // Big-endian bytes in text order, skipping dashes.
    let mut be = [0u8; 16];
    let mut i = 0;
    let mut j = 0;
    while i < 36 {
        if s[i] == b'-' {
            i += 1;
            continue;
        }
        be[j] = (nib(s[i]) << 4) | nib(s[i + 1]);
        j += 1;
        i += 2;
    }
    assert!(j == 16, "GUID must have 32 hex digits");
    // bytes_le: the first three fields are little-endian.
    Guid([
        be[3], be[2], be[1], be[0], be[5], be[4], be[7], be[6], be[8], be[9], be[10], be[11],
        be[12], be[13], be[14], be[15],
    ])
}

/// GUIDs of OVMF's footer table and the entries this module reads.
pub mod guids {
    use super::{guid, Guid};
    pub const OVMF_TABLE_FOOTER: Guid = guid("96b582de-1fb2-45f7-baea-a366c55a082d");
    pub const SEV_HASH_TABLE_RV: Guid = guid("7255371f-3a3b-4b04-927b-1da6efa8d454");
    pub const SEV_ES_RESET_BLOCK: Guid = guid("00f771de-1a7e-4fcb-890e-68c77e2fb44e");
    pub const OVMF_SEV_METADATA: Guid = guid("dc886566-984a-4798-a75e-5585a7bf67cc");
    pub const SEV_HASH_TABLE_HEADER: Guid = guid("9438d606-4f22-4cc9-b479-a793d411fd21");
    pub const SEV_KERNEL_ENTRY: Guid = guid("4de79437-abd2-427f-b835-d5b172d2045b");
    pub const SEV_INITRD_ENTRY: Guid = guid("44baf731-3a2f-4bd7-9af1-41e29169781d");
    pub const SEV_CMDLINE_ENTRY: Guid = guid("97d02dd8-bd20-4c94-aa78-e7714d36ab2a");
}

#[derive(Debug, thiserror::Error)]
pub enum SnpError {
    #[error("firmware is truncated: {len} bytes is too short to hold the OVMF footer table")]
    Truncated { len: usize },
    #[error("firmware size {len} is not a multiple of 4096 bytes")]
    FirmwareNotPageAligned { len: usize },
    #[error("firmware size {len} exceeds 4 GiB")]
    FirmwareTooLarge { len: usize },
    #[error("firmware has no OVMF footer GUID table (no {} GUID 32 bytes before its end): not an OVMF image built for SEV", guids::OVMF_TABLE_FOOTER)]
    NoFooterTable,
    #[error("OVMF footer GUID table is malformed: {0}")]
    BadFooterTable(String),
    #[error("firmware has no SEV metadata (no {} entry in the OVMF footer table): it cannot launch an SEV-SNP guest", guids::OVMF_SEV_METADATA)]
    NoSevMetadata,
    #[error("the firmware's SEV metadata declares no sections: it cannot launch an SEV-SNP guest")]
    EmptySevMetadata,
    #[error("SEV metadata is truncated or out of bounds: {0}")]
    SevMetadataTruncated(String),
    #[error("SEV metadata has signature {0:?}, expected \"ASEV\"")]
    BadSevMetadataSignature([u8; 4]),
    #[error("SEV metadata version {0} is not supported (expected 1)")]
    BadSevMetadataVersion(u32),
    #[error("SEV metadata section {index} has unknown type {value:#x}")]
    UnknownSectionType { index: usize, value: u32 },
    #[error("SEV metadata section {index} ({kind:?} at GPA {gpa:#x}) has size {size:#x}, not a multiple of 4096")]
    SectionNotPageAligned {
        index: usize,
        kind: SectionType,
        gpa: u32,
        size: u32,
    },
    #[error("the OVMF footer table has no {name} entry ({guid})")]
    MissingTableEntry { name: &'static str, guid: Guid },
    #[error("the OVMF footer table's {name} entry is {len} bytes, too short")]
    ShortTableEntry { name: &'static str, len: usize },
    #[error("kernel hashes requested, but the firmware's SEV metadata has no SNP_KERNEL_HASHES section (use an OVMF built from OvmfPkg/AmdSev for measured direct boot)")]
    NoKernelHashesSection,
    #[error("the SNP_KERNEL_HASHES section is {size:#x} bytes; a measured direct boot needs exactly one page")]
    KernelHashesSectionSize { size: u32 },
    #[error("the SEV hashes table at page offset {offset:#x} does not fit in its page")]
    HashTableCrossesPage { offset: u32 },
    #[error("unknown vCPU type {0:?} (known: {known})", known = VCPU_TYPES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "))]
    UnknownVcpuType(String),
    #[error("unknown VMM type {0:?} (known: QEMU, ec2, gce)")]
    UnknownVmmType(String),
    #[error("a guest needs at least one vCPU")]
    ZeroVcpus,
    #[error(
        "the firmware's SEV-ES reset block gives AP reset address 0: it cannot start {vcpus} vCPUs"
    )]
    NoApResetAddress { vcpus: u32 },
}

/// The hypervisor launching the guest; they differ in initial register state and in how some
/// metadata pages are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum VmmType {
    #[default]
    #[serde(rename = "QEMU")]
    Qemu,
    #[serde(rename = "ec2")]
    Ec2,
    #[serde(rename = "gce")]
    Gce,
}

impl VmmType {
    /// The name sev-snp-measure's `--vmm-type` uses.
    pub fn name(self) -> &'static str {
        match self {
            VmmType::Qemu => "QEMU",
            VmmType::Ec2 => "ec2",
            VmmType::Gce => "gce",
        }
    }
}

impl FromStr for VmmType {
    type Err = SnpError;
    fn from_str(s: &str) -> Result<Self, SnpError> {
        match s.to_ascii_lowercase().as_str() {
            "qemu" => Ok(VmmType::Qemu),
            "ec2" => Ok(VmmType::Ec2),
            "gce" => Ok(VmmType::Gce),
            _ => Err(SnpError::UnknownVmmType(s.to_string())),
        }
    }
}

/// The 32-bit CPUID Fn0000_0001_EAX signature from family, model and stepping (AMD CPUID
/// specification #25481).
pub const fn cpu_sig(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf {
        (0xf, (family - 0xf) & 0xff)
    } else {
        (family, 0)
    };
    (family_high << 20)
        | (((model >> 4) & 0xf) << 16)
        | (family_low << 8)
        | ((model & 0xf) << 4)
        | (stepping & 0xf)
}

/// QEMU's EPYC CPU models, named as sev-snp-measure (and QEMU's `-cpu`) names them, with their
/// CPUID signatures.
pub const VCPU_TYPES: &[(&str, u32)] = &[
    ("EPYC", cpu_sig(23, 1, 2)),
    ("EPYC-v1", cpu_sig(23, 1, 2)),
    ("EPYC-v2", cpu_sig(23, 1, 2)),
    ("EPYC-IBPB", cpu_sig(23, 1, 2)),
    ("EPYC-v3", cpu_sig(23, 1, 2)),
    ("EPYC-v4", cpu_sig(23, 1, 2)),
    ("EPYC-Rome", cpu_sig(23, 49, 0)),
    ("EPYC-Rome-v1", cpu_sig(23, 49, 0)),
    ("EPYC-Rome-v2", cpu_sig(23, 49, 0)),
    ("EPYC-Rome-v3", cpu_sig(23, 49, 0)),
    ("EPYC-Milan", cpu_sig(25, 1, 1)),
    ("EPYC-Milan-v1", cpu_sig(25, 1, 1)),
    ("EPYC-Milan-v2", cpu_sig(25, 1, 1)),
    ("EPYC-Genoa", cpu_sig(25, 17, 0)),
    ("EPYC-Genoa-v1", cpu_sig(25, 17, 0)),
    ("EPYC-Turin", cpu_sig(26, 0, 0)),
];

/// The CPUID signature of a named vCPU type (exact, case-sensitive name as QEMU spells it).
pub fn vcpu_signature(name: &str) -> Result<u32, SnpError> {
    VCPU_TYPES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| SnpError::UnknownVcpuType(name.to_string()))
}

/// Types of the sections OVMF's SEV metadata declares (`OvmfSevMetadata.asm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SectionType {
    SnpSecMem,
    SnpSecrets,
    Cpuid,
    SvsmCaa,
    SnpKernelHashes,
}

impl SectionType {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => SectionType::SnpSecMem,
            2 => SectionType::SnpSecrets,
            3 => SectionType::Cpuid,
            4 => SectionType::SvsmCaa,
            0x10 => SectionType::SnpKernelHashes,
            _ => return None,
        })
    }
}

/// One section of the SEV metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MetadataSection {
    pub gpa: u32,
    pub size: u32,
    pub kind: SectionType,
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Size of a footer table entry header: u16 size + GUID.
const ENTRY_HEADER: usize = 18;
/// Size of the SEV metadata header: "ASEV", u32 size, u32 version, u32 num_items.
const METADATA_HEADER: usize = 16;
/// Size of one SEV metadata section descriptor: u32 gpa, u32 size, u32 type.
const METADATA_DESC: usize = 12;

/// An OVMF firmware image with a validated footer table and SEV metadata.
#[derive(Debug, Clone)]
pub struct Ovmf<'a> {
    data: &'a [u8],
    /// Footer table entries in file order (the first of duplicate GUIDs wins, as in
    /// sev-snp-measure, which parses from the end and overwrites).
    table: Vec<(Guid, &'a [u8])>,
    sections: Vec<MetadataSection>,
}

impl<'a> Ovmf<'a> {
    /// Parse a unified OVMF image (the whole flash device mapped below 4 GiB). Rejects images
    /// without a footer table or without SEV metadata.
    pub fn parse(data: &'a [u8]) -> Result<Self, SnpError> {
        let len = data.len();
        if len < 32 + ENTRY_HEADER {
            return Err(SnpError::Truncated { len });
        }
        if len as u64 > FOUR_GB {
            return Err(SnpError::FirmwareTooLarge { len });
        }
        if !len.is_multiple_of(PAGE_SIZE) {
            return Err(SnpError::FirmwareNotPageAligned { len });
        }
        let table = parse_footer_table(data)?;
        let mut ovmf = Ovmf {
            data,
            table,
            sections: Vec::new(),
        };
        ovmf.sections = ovmf.parse_sev_metadata()?;
        Ok(ovmf)
    }

    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Guest-physical address of the first byte (the image ends at 4 GiB).
    pub fn gpa(&self) -> u64 {
        FOUR_GB - self.data.len() as u64
    }

    /// The footer table entries, in file order.
    pub fn table(&self) -> &[(Guid, &'a [u8])] {
        &self.table
    }

    /// The data of a footer table entry.
    pub fn table_item(&self, guid: &Guid) -> Option<&'a [u8]> {
        self.table.iter().find(|(g, _)| g == guid).map(|(_, d)| *d)
    }

    /// The SEV metadata sections, in declaration order.
    pub fn sections(&self) -> &[MetadataSection] {
        &self.sections
    }

    pub fn has_section(&self, kind: SectionType) -> bool {
        self.sections.iter().any(|s| s.kind == kind)
    }

    fn table_u32(&self, guid: Guid, name: &'static str) -> Result<u32, SnpError> {
        let d = self
            .table_item(&guid)
            .ok_or(SnpError::MissingTableEntry { name, guid })?;
        if d.len() < 4 {
            return Err(SnpError::ShortTableEntry { name, len: d.len() });
        }
        Ok(le_u32(d, 0))
    }

    /// Where the APs start (the SEV-ES reset block).
    pub fn sev_es_reset_eip(&self) -> Result<u32, SnpError> {
        self.table_u32(guids::SEV_ES_RESET_BLOCK, "SEV-ES reset block")
    }

    /// GPA of the SEV hashes table QEMU fills for a measured direct boot.
    pub fn sev_hashes_table_gpa(&self) -> Result<u32, SnpError> {
        self.table_u32(guids::SEV_HASH_TABLE_RV, "SEV hashes table")
    }

    fn parse_sev_metadata(&self) -> Result<Vec<MetadataSection>, SnpError> {
        let data = self.data;
        let entry = self
            .table_item(&guids::OVMF_SEV_METADATA)
            .ok_or(SnpError::NoSevMetadata)?;
        if entry.len() < 4 {
            return Err(SnpError::ShortTableEntry {
                name: "SEV metadata",
                len: entry.len(),
            });
        }
        let offset_from_end = le_u32(entry, 0) as usize;
        let start = data.len().checked_sub(offset_from_end).ok_or_else(|| {
            SnpError::SevMetadataTruncated(format!(
                "it starts {offset_from_end:#x} bytes before the end of a {:#x}-byte image",
                data.len()
            ))
        })?;
        let header = data.get(start..start + METADATA_HEADER).ok_or_else(|| {
            SnpError::SevMetadataTruncated(format!("header at {start:#x} runs past the end"))
        })?;
        let sig: [u8; 4] = header[0..4].try_into().unwrap_or_default();
        if &sig != b"ASEV" {
            return Err(SnpError::BadSevMetadataSignature(sig));
        }
        let size = le_u32(header, 4) as usize;
        let version = le_u32(header, 8);
        if version != 1 {
            return Err(SnpError::BadSevMetadataVersion(version));
        }
        let num_items = le_u32(header, 12) as usize;
        let items_len = num_items
            .checked_mul(METADATA_DESC)
            .filter(|n| METADATA_HEADER + n <= size)
            .ok_or_else(|| {
                SnpError::SevMetadataTruncated(format!(
                    "{num_items} sections do not fit in its declared size {size:#x}"
                ))
            })?;
        let items = data
            .get(start + METADATA_HEADER..start + METADATA_HEADER + items_len)
            .ok_or_else(|| {
                SnpError::SevMetadataTruncated(format!(
                    "{num_items} sections at {start:#x} run past the end of the image"
                ))
            })?;
        if num_items == 0 {
            return Err(SnpError::EmptySevMetadata);
        }
        let mut out = Vec::with_capacity(num_items);
        for (index, d) in items.chunks_exact(METADATA_DESC).enumerate() {
            let gpa = le_u32(d, 0);
            let size = le_u32(d, 4);
            let value = le_u32(d, 8);
            let kind = SectionType::from_u32(value)
                .ok_or(SnpError::UnknownSectionType { index, value })?;
            // sev-snp-measure asserts page-multiple sizes for the ranges it measures page by
            // page (the secrets and CPUID sections are one page at `gpa` whatever their size).
            let ranged = matches!(
                kind,
                SectionType::SnpSecMem | SectionType::SvsmCaa | SectionType::SnpKernelHashes
            );
            if ranged && !(size as usize).is_multiple_of(PAGE_SIZE) {
                return Err(SnpError::SectionNotPageAligned {
                    index,
                    kind,
                    gpa,
                    size,
                });
            }
            out.push(MetadataSection { gpa, size, kind });
        }
        Ok(out)
    }
}

/// Parse OVMF's footer GUID table (also used for the TDX metadata, see [`crate::tdx`]). The
/// caller checks that `data` holds at least 50 bytes.
pub(crate) fn parse_footer_table(data: &[u8]) -> Result<Vec<(Guid, &[u8])>, SnpError> {
    // The table ends 32 bytes before the end of the image with an entry holding the footer GUID
    // and the size of the whole table (footer entry included); entries are laid out backwards,
    // each one's u16 size and GUID after its data.
    let footer_start = data.len() - 32 - ENTRY_HEADER;
    let footer = &data[footer_start..footer_start + ENTRY_HEADER];
    if footer[2..18] != guids::OVMF_TABLE_FOOTER.0 {
        return Err(SnpError::NoFooterTable);
    }
    let total = le_u16(footer, 0) as usize;
    let table_size = total.checked_sub(ENTRY_HEADER).ok_or_else(|| {
        SnpError::BadFooterTable(format!(
            "footer entry declares a table of {total} bytes, less than its own header"
        ))
    })?;
    let table_start = footer_start.checked_sub(table_size).ok_or_else(|| {
        SnpError::BadFooterTable(format!(
            "a {table_size}-byte table does not fit before the footer"
        ))
    })?;
    let mut rest = &data[table_start..footer_start];
    let mut entries = Vec::new();
    while rest.len() >= ENTRY_HEADER {
        let hdr = &rest[rest.len() - ENTRY_HEADER..];
        let size = le_u16(hdr, 0) as usize;
        let guid = Guid(hdr[2..18].try_into().expect("16 bytes"));
        if size < ENTRY_HEADER {
            return Err(SnpError::BadFooterTable(format!(
                "entry {guid} has size {size}, less than its header"
            )));
        }
        if size > rest.len() {
            return Err(SnpError::BadFooterTable(format!(
                "entry {guid} has size {size}, but only {} bytes of table remain",
                rest.len()
            )));
        }
        let entry_start = rest.len() - size;
        entries.push((guid, &rest[entry_start..rest.len() - ENTRY_HEADER]));
        rest = &rest[..entry_start];
    }
    if !rest.is_empty() {
        return Err(SnpError::BadFooterTable(format!(
            "{} stray bytes at the start of the table",
            rest.len()
        )));
    }
    // Parsed from the end: reverse to file order.
    entries.reverse();
    Ok(entries)
}

/// The SHA-256 digests QEMU puts in the SEV hashes table for a measured direct boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelHashes {
    pub kernel: [u8; 32],
    pub initrd: [u8; 32],
    pub cmdline: [u8; 32],
}

/// Size of QEMU's `SevHashTable` (header + three entries) and of its 16-byte-aligned padding.
const HASH_ENTRY_LEN: usize = 16 + 2 + 32;
const HASH_TABLE_LEN: usize = 16 + 2 + 3 * HASH_ENTRY_LEN;
const PADDED_HASH_TABLE_LEN: usize = (HASH_TABLE_LEN + 15) & !15;

fn sha256(b: &[u8]) -> [u8; 32] {
    digest(&SHA256, b)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

fn sha384(b: &[u8]) -> LaunchDigest {
    digest(&SHA384, b)
        .as_ref()
        .try_into()
        .expect("SHA-384 is 48 bytes")
}

impl KernelHashes {
    /// Hash the kernel, the initrd (empty when QEMU gets none) and the command line (QEMU
    /// hashes it with its terminating NUL; an absent command line is the empty one).
    pub fn new(kernel: &[u8], initrd: &[u8], cmdline: &str) -> Self {
        let mut c = Vec::with_capacity(cmdline.len() + 1);
        c.extend_from_slice(cmdline.as_bytes());
        c.push(0);
        KernelHashes {
            kernel: sha256(kernel),
            initrd: sha256(initrd),
            cmdline: sha256(&c),
        }
    }

    /// QEMU's `PaddedSevHashTable`: the table, zero-padded to a multiple of 16 bytes.
    pub fn table(&self) -> [u8; PADDED_HASH_TABLE_LEN] {
        let mut t = [0u8; PADDED_HASH_TABLE_LEN];
        t[0..16].copy_from_slice(&guids::SEV_HASH_TABLE_HEADER.0);
        t[16..18].copy_from_slice(&(HASH_TABLE_LEN as u16).to_le_bytes());
        let entries = [
            (guids::SEV_CMDLINE_ENTRY, &self.cmdline),
            (guids::SEV_INITRD_ENTRY, &self.initrd),
            (guids::SEV_KERNEL_ENTRY, &self.kernel),
        ];
        for (i, (guid, hash)) in entries.iter().enumerate() {
            let at = 18 + i * HASH_ENTRY_LEN;
            t[at..at + 16].copy_from_slice(&guid.0);
            t[at + 16..at + 18].copy_from_slice(&(HASH_ENTRY_LEN as u16).to_le_bytes());
            t[at + 18..at + 50].copy_from_slice(*hash);
        }
        t
    }

    /// The page QEMU measures: zeros with the table at `offset` within it.
    pub fn page(&self, offset: u32) -> Result<Vec<u8>, SnpError> {
        let at = offset as usize;
        if at + PADDED_HASH_TABLE_LEN > PAGE_SIZE {
            return Err(SnpError::HashTableCrossesPage { offset });
        }
        let mut page = vec![0u8; PAGE_SIZE];
        page[at..at + PADDED_HASH_TABLE_LEN].copy_from_slice(&self.table());
        Ok(page)
    }
}

/// PAGE_INFO page types (SNP firmware ABI).
#[derive(Clone, Copy)]
#[repr(u8)]
enum PageType {
    Normal = 1,
    Vmsa = 2,
    Zero = 3,
    Unmeasured = 4,
    Secrets = 5,
    Cpuid = 6,
}

/// The guest context's running launch digest.
#[derive(Debug, Clone)]
pub struct Gctx {
    ld: LaunchDigest,
}

impl Default for Gctx {
    fn default() -> Self {
        Gctx { ld: [0; LD_SIZE] }
    }
}

impl Gctx {
    /// Start from a precomputed digest (e.g. of the firmware pages alone).
    pub fn from_seed(ld: LaunchDigest) -> Self {
        Gctx { ld }
    }

    pub fn ld(&self) -> LaunchDigest {
        self.ld
    }

    fn update(&mut self, page_type: PageType, gpa: u64, contents: &LaunchDigest) {
        // PAGE_INFO: digest_cur, contents, length 0x70, page_type, is_imi, vmpl3..1 perms,
        // reserved, gpa.
        let mut info = [0u8; 0x70];
        info[0..48].copy_from_slice(&self.ld);
        info[48..96].copy_from_slice(contents);
        info[96..98].copy_from_slice(&0x70u16.to_le_bytes());
        info[98] = page_type as u8;
        info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.ld = sha384(&info);
    }

    /// Measure `data` (a whole number of pages) as NORMAL pages starting at `gpa`.
    pub fn update_normal_pages(&mut self, gpa: u64, data: &[u8]) {
        debug_assert!(data.len().is_multiple_of(PAGE_SIZE));
        for (i, page) in data.chunks(PAGE_SIZE).enumerate() {
            self.update(
                PageType::Normal,
                gpa + (i * PAGE_SIZE) as u64,
                &sha384(page),
            );
        }
    }

    fn update_empty_pages(&mut self, page_type: PageType, gpa: u64, len: u32) {
        for off in (0..u64::from(len)).step_by(PAGE_SIZE) {
            self.update(page_type, gpa + off, &[0; LD_SIZE]);
        }
    }

    fn update_vmsa_page(&mut self, page: &[u8; PAGE_SIZE]) {
        self.update(PageType::Vmsa, VMSA_GPA, &sha384(page));
    }
}

/// The launch digest of the firmware pages alone (sev-snp-measure's `snp:ovmf-hash` mode).
pub fn ovmf_hash(ovmf: &Ovmf) -> LaunchDigest {
    let mut g = Gctx::default();
    g.update_normal_pages(ovmf.gpa(), ovmf.data());
    g.ld()
}

/// One VMSA page (the initial register state of a vCPU), as sev-snp-measure builds it.
pub fn vmsa_page(eip: u32, sev_features: u64, vcpu_sig: u32, vmm: VmmType) -> [u8; PAGE_SIZE] {
    let mut g_pat: u64 = 0x0007_0406_0007_0406;
    let (cs_flags, ss_flags, tr_flags, rdx, mxcsr, fcw): (u16, u16, u16, u64, u32, u16) = match vmm
    {
        VmmType::Qemu => (0x9b, 0x93, 0x8b, u64::from(vcpu_sig), 0x1f80, 0x37f),
        VmmType::Ec2 => (
            if eip == BSP_EIP { 0x9a } else { 0x9b },
            0x92,
            0x83,
            0x600,
            0,
            0,
        ),
        VmmType::Gce => {
            g_pat = 0x0007_0106;
            (0x9b, 0x93, 0x8b, 0x600, 0, 0)
        }
    };
    let mut p = [0u8; PAGE_SIZE];
    // struct vmcb_seg { u16 selector; u16 attrib; u32 limit; u64 base; }
    let mut seg = |at: usize, selector: u16, attrib: u16, limit: u32, base: u64| {
        p[at..at + 2].copy_from_slice(&selector.to_le_bytes());
        p[at + 2..at + 4].copy_from_slice(&attrib.to_le_bytes());
        p[at + 4..at + 8].copy_from_slice(&limit.to_le_bytes());
        p[at + 8..at + 16].copy_from_slice(&base.to_le_bytes());
    };
    seg(0x00, 0, 0x93, 0xffff, 0); // es
    seg(0x10, 0xf000, cs_flags, 0xffff, u64::from(eip & 0xffff_0000)); // cs
    seg(0x20, 0, ss_flags, 0xffff, 0); // ss
    seg(0x30, 0, 0x93, 0xffff, 0); // ds
    seg(0x40, 0, 0x93, 0xffff, 0); // fs
    seg(0x50, 0, 0x93, 0xffff, 0); // gs
    seg(0x60, 0, 0, 0xffff, 0); // gdtr
    seg(0x70, 0, 0x82, 0xffff, 0); // ldtr
    seg(0x80, 0, 0, 0xffff, 0); // idtr
    seg(0x90, 0, tr_flags, 0xffff, 0); // tr
    let mut u64_at = |at: usize, v: u64| p[at..at + 8].copy_from_slice(&v.to_le_bytes());
    u64_at(0xd0, 0x1000); // efer: KVM enables EFER.SVME
    u64_at(0x148, 0x40); // cr4: KVM enables CR4.MCE
    u64_at(0x158, 0x10); // cr0
    u64_at(0x160, 0x400); // dr7
    u64_at(0x168, 0xffff_0ff0); // dr6
    u64_at(0x170, 0x2); // rflags
    u64_at(0x178, u64::from(eip & 0xffff)); // rip
    u64_at(0x268, g_pat); // g_pat
    u64_at(0x310, rdx); // rdx
    u64_at(0x3b0, sev_features); // sev_features
    u64_at(0x3e8, 0x1); // xcr0
    p[0x408..0x40c].copy_from_slice(&mxcsr.to_le_bytes()); // mxcsr
    p[0x410..0x412].copy_from_slice(&fcw.to_le_bytes()); // x87_fcw
    p
}

/// The default guest features (VMSA `sev_features`) sev-snp-measure assumes: SNPActive.
pub const DEFAULT_GUEST_FEATURES: u64 = 0x1;

/// Everything the SNP launch digest depends on.
#[derive(Debug, Clone)]
pub struct SnpLaunch<'a> {
    pub ovmf: &'a Ovmf<'a>,
    pub vcpus: u32,
    /// CPUID signature of the vCPUs (see [`vcpu_signature`]); EC2 and GCE ignore it.
    pub vcpu_sig: u32,
    pub vmm: VmmType,
    /// VMSA `sev_features` ([`DEFAULT_GUEST_FEATURES`] unless the guest enables more).
    pub guest_features: u64,
    /// Measured direct boot: QEMU's `-kernel/-initrd/-append` hashes.
    pub kernel_hashes: Option<KernelHashes>,
}

impl SnpLaunch<'_> {
    /// The launch digest (MEASUREMENT of the attestation report).
    pub fn digest(&self) -> Result<LaunchDigest, SnpError> {
        self.digest_from(Gctx::default(), true)
    }

    /// The launch digest starting from a precomputed firmware hash ([`ovmf_hash`]); the
    /// firmware's pages are not re-measured (its metadata still is).
    pub fn digest_from_ovmf_hash(&self, ovmf_hash: LaunchDigest) -> Result<LaunchDigest, SnpError> {
        self.digest_from(Gctx::from_seed(ovmf_hash), false)
    }

    fn digest_from(&self, mut g: Gctx, measure_firmware: bool) -> Result<LaunchDigest, SnpError> {
        let ovmf = self.ovmf;
        if self.vcpus == 0 {
            return Err(SnpError::ZeroVcpus);
        }
        // Validate everything before measuring anything.
        let kernel_page = match &self.kernel_hashes {
            None => None,
            Some(h) => {
                let sec = ovmf
                    .sections()
                    .iter()
                    .find(|s| s.kind == SectionType::SnpKernelHashes)
                    .ok_or(SnpError::NoKernelHashesSection)?;
                if sec.size as usize != PAGE_SIZE {
                    return Err(SnpError::KernelHashesSectionSize { size: sec.size });
                }
                let offset = ovmf.sev_hashes_table_gpa()? & 0xfff;
                Some(h.page(offset)?)
            }
        };
        let ap_eip = ovmf.sev_es_reset_eip()?;
        if ap_eip == 0 && self.vcpus > 1 {
            return Err(SnpError::NoApResetAddress { vcpus: self.vcpus });
        }

        if measure_firmware {
            g.update_normal_pages(ovmf.gpa(), ovmf.data());
        }
        for s in ovmf.sections() {
            let gpa = u64::from(s.gpa);
            match s.kind {
                SectionType::SnpSecMem if self.vmm == VmmType::Gce => {
                    g.update_empty_pages(PageType::Unmeasured, gpa, s.size)
                }
                SectionType::SnpSecMem | SectionType::SvsmCaa => {
                    g.update_empty_pages(PageType::Zero, gpa, s.size)
                }
                SectionType::SnpSecrets => g.update(PageType::Secrets, gpa, &[0; LD_SIZE]),
                SectionType::Cpuid => {
                    if self.vmm != VmmType::Ec2 {
                        g.update(PageType::Cpuid, gpa, &[0; LD_SIZE])
                    }
                }
                SectionType::SnpKernelHashes => match &kernel_page {
                    Some(page) => g.update_normal_pages(gpa, page),
                    None => g.update_empty_pages(PageType::Zero, gpa, s.size),
                },
            }
        }
        if self.vmm == VmmType::Ec2 {
            for s in ovmf
                .sections()
                .iter()
                .filter(|s| s.kind == SectionType::Cpuid)
            {
                g.update(PageType::Cpuid, u64::from(s.gpa), &[0; LD_SIZE]);
            }
        }

        let bsp = vmsa_page(BSP_EIP, self.guest_features, self.vcpu_sig, self.vmm);
        g.update_vmsa_page(&bsp);
        if self.vcpus > 1 {
            let ap = vmsa_page(ap_eip, self.guest_features, self.vcpu_sig, self.vmm);
            for _ in 1..self.vcpus {
                g.update_vmsa_page(&ap);
            }
        }
        Ok(g.ld())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_roundtrip() {
        let g = guids::OVMF_SEV_METADATA;
        assert_eq!(g.to_string(), "dc886566-984a-4798-a75e-5585a7bf67cc");
        assert_eq!(&g.0[..4], &[0x66, 0x65, 0x88, 0xdc]);
    }

    #[test]
    fn cpu_signatures() {
        assert_eq!(vcpu_signature("EPYC-v4").unwrap(), 0x800f12);
        assert_eq!(vcpu_signature("EPYC-Milan").unwrap(), 0xa00f11);
        assert_eq!(vcpu_signature("EPYC-Genoa").unwrap(), 0xa10f10);
        assert!(matches!(
            vcpu_signature("epyc"),
            Err(SnpError::UnknownVcpuType(_))
        ));
    }

    #[test]
    fn hash_table_layout() {
        assert_eq!(HASH_TABLE_LEN, 168);
        assert_eq!(PADDED_HASH_TABLE_LEN, 176);
        let h = KernelHashes::new(b"", b"", "");
        assert!(h.page(4096 - 176).is_ok());
        assert!(matches!(
            h.page(4096 - 175),
            Err(SnpError::HashTableCrossesPage { .. })
        ));
    }
}
