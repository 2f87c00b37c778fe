//! GUID Partition Table reader for raw disk images.
//!
//! Nacre measures and inspects images before they ever boot, so this reads the table the way
//! UEFI firmware would and refuses what firmware would refuse. One deliberate difference: when
//! the primary header is corrupt, firmware (and `sfdisk`) quietly fall back to the backup; here
//! that is an error, because measuring an image whose primary table is damaged would
//! predict a boot from bytes nobody meant to ship. The error says whether the backup is valid.

mod error;
mod header;
pub mod types;

use std::io::{Read, Seek};

use crate::guid::Guid;
use crate::io_util::{array, le64, read_exact_at};
pub use error::{BackupStatus, GptError};
use header::{read_header, Header};
pub use header::{HeaderProblem, MAX_ENTRY_ARRAY_BYTES};

/// Logical sector sizes tried, in order: 512 (classic and `SectorSize=512`) and 4096
/// (what mkosi's offline systemd-repart writes by default).
pub const SECTOR_SIZES: [u64; 2] = [512, 4096];

/// One used entry of the partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based position in the entry array (the `N` of `/dev/sdaN`).
    pub index: u32,
    /// What the partition is for; see [`types`].
    pub type_guid: Guid,
    /// This partition's own GUID (`PARTUUID`).
    pub unique_guid: Guid,
    /// First sector, inclusive.
    pub first_lba: u64,
    /// Last sector, inclusive.
    pub last_lba: u64,
    /// Attribute bits (bit 0 required, bit 2 legacy-bootable, 48..63 type-specific).
    pub attributes: u64,
    /// Label (`PARTLABEL`), decoded from UTF-16LE; unpaired surrogates become U+FFFD.
    pub name: String,
    /// Logical sector size of the disk, so byte positions need no second argument.
    pub sector_size: u64,
}

impl Partition {
    /// Byte offset of the partition in the image.
    pub fn byte_offset(&self) -> u64 {
        self.first_lba.saturating_mul(self.sector_size)
    }

    /// Length in bytes (`last_lba` is inclusive).
    pub fn byte_len(&self) -> u64 {
        let sectors = self
            .last_lba
            .saturating_sub(self.first_lba)
            .saturating_add(1);
        sectors.saturating_mul(self.sector_size)
    }

    /// DPS name of the type (`"esp"`, `"root-x86-64"`, ...), if known.
    pub fn type_name(&self) -> Option<&'static str> {
        types::type_name(&self.type_guid)
    }
}

/// A verified GPT: primary header, entry array and partitions that fit the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    /// Detected logical sector size (512 or 4096).
    pub sector_size: u64,
    /// Disk GUID.
    pub disk_guid: Guid,
    /// Header revision (0x00010000 for 1.0).
    pub revision: u32,
    /// First LBA partitions may use.
    pub first_usable_lba: u64,
    /// Last LBA partitions may use.
    pub last_usable_lba: u64,
    /// Where the primary says the backup header is.
    pub backup_lba: u64,
    /// Slots in the entry array (used or not).
    pub entry_count: u32,
    /// Bytes per entry.
    pub entry_size: u32,
    /// Used entries, in table order.
    pub partitions: Vec<Partition>,
}

impl Gpt {
    /// Reads and verifies the GPT of an image that is `disk_len` bytes long. Reads only LBA 0,
    /// the primary header and its entry array (and the backup header if the primary is bad).
    pub fn read<R: Read + Seek>(r: &mut R, disk_len: u64) -> Result<Gpt, GptError> {
        if disk_len < 1024 {
            return Err(GptError::DiskTooSmall { disk_len });
        }
        check_protective_mbr(r)?;
        let Some(ss) = detect_sector_size(r, disk_len)? else {
            let backup = SECTOR_SIZES.into_iter().find_map(|ss| {
                let lba = (disk_len / ss).checked_sub(1)?;
                read_header(r, lba, ss, disk_len).ok().map(|_| (ss, lba))
            });
            return Err(GptError::NoHeader { backup });
        };
        let disk_sectors = disk_len / ss;
        let (hdr, entries) = match read_header(r, 1, ss, disk_len) {
            Ok(v) => v,
            Err(problem) => {
                let backup_lba = disk_sectors.saturating_sub(1);
                let backup = match read_header(r, backup_lba, ss, disk_len) {
                    Ok(_) => BackupStatus::Valid,
                    Err(p) => BackupStatus::Corrupt(p),
                };
                return Err(GptError::PrimaryCorrupt {
                    sector_size: ss,
                    problem,
                    backup_lba,
                    backup,
                });
            }
        };
        check_layout(&hdr, ss, disk_len)?;
        let partitions = decode_entries(&hdr, &entries, ss)?;
        Ok(Gpt {
            sector_size: ss,
            disk_guid: hdr.disk_guid,
            revision: hdr.revision,
            first_usable_lba: hdr.first_usable_lba,
            last_usable_lba: hdr.last_usable_lba,
            backup_lba: hdr.alternate_lba,
            entry_count: hdr.entry_count,
            entry_size: hdr.entry_size,
            partitions,
        })
    }

    /// Partitions with the given type GUID.
    pub fn partitions_of_type<'a>(&'a self, ty: &'a Guid) -> impl Iterator<Item = &'a Partition> {
        self.partitions.iter().filter(move |p| p.type_guid == *ty)
    }
}

fn check_protective_mbr<R: Read + Seek>(r: &mut R) -> Result<(), GptError> {
    let mut mbr = [0u8; 512];
    read_exact_at(r, 0, &mut mbr).map_err(|source| GptError::Io { offset: 0, source })?;
    if mbr.get(510..512) != Some([0x55, 0xAA].as_slice()) {
        return Err(GptError::NoProtectiveMbr {
            reason: "boot signature 55 AA missing at byte 510",
        });
    }
    // Four 16-byte entries from byte 446; the OS type byte is at +4. A hybrid MBR may carry
    // other entries too, so one 0xEE entry is enough.
    let has_ee = (0..4).any(|i| mbr.get(446 + i * 16 + 4) == Some(&0xEE));
    if !has_ee {
        return Err(GptError::NoProtectiveMbr {
            reason: "no partition of type 0xEE (GPT protective)",
        });
    }
    Ok(())
}

/// The first size whose LBA 1 starts with `EFI PART`. A 512-byte-sector disk keeps its entry
/// array at byte 4096, which can never start with that signature, so the order is unambiguous.
fn detect_sector_size<R: Read + Seek>(r: &mut R, disk_len: u64) -> Result<Option<u64>, GptError> {
    for ss in SECTOR_SIZES {
        if disk_len < ss.saturating_mul(2) {
            continue;
        }
        let mut sig = [0u8; 8];
        read_exact_at(r, ss, &mut sig).map_err(|source| GptError::Io { offset: ss, source })?;
        if &sig == b"EFI PART" {
            return Ok(Some(ss));
        }
    }
    Ok(None)
}

fn check_layout(hdr: &Header, ss: u64, disk_len: u64) -> Result<(), GptError> {
    let disk_sectors = disk_len / ss;
    let furthest = hdr.alternate_lba.max(hdr.last_usable_lba);
    if furthest >= disk_sectors {
        return Err(GptError::Truncated {
            disk_len,
            needed: furthest.saturating_add(1).saturating_mul(ss),
            sector_size: ss,
        });
    }
    let bad = |reason: String| Err(GptError::BadLayout { reason });
    if hdr.first_usable_lba > hdr.last_usable_lba {
        return bad(format!(
            "first usable LBA {} is after last usable LBA {}",
            hdr.first_usable_lba, hdr.last_usable_lba
        ));
    }
    let array_sectors = hdr.entries_bytes().div_ceil(ss);
    let array_end = hdr.entries_lba.saturating_add(array_sectors);
    if hdr.entries_lba < 2 || array_end > hdr.first_usable_lba {
        return bad(format!(
            "entry array (LBA {}..{array_end}) is not between the header and the first usable LBA {}",
            hdr.entries_lba, hdr.first_usable_lba
        ));
    }
    Ok(())
}

fn decode_entries(hdr: &Header, entries: &[u8], ss: u64) -> Result<Vec<Partition>, GptError> {
    let size = usize::try_from(hdr.entry_size).unwrap_or(usize::MAX);
    let mut parts = Vec::new();
    for (i, e) in entries.chunks_exact(size).enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(1);
        let type_guid = Guid(array(e, 0));
        if type_guid.is_nil() {
            continue;
        }
        let p = Partition {
            index,
            type_guid,
            unique_guid: Guid(array(e, 16)),
            first_lba: le64(e, 32),
            last_lba: le64(e, 40),
            attributes: le64(e, 48),
            name: decode_name(e.get(56..128).unwrap_or_default()),
            sector_size: ss,
        };
        if p.first_lba > p.last_lba
            || p.first_lba < hdr.first_usable_lba
            || p.last_lba > hdr.last_usable_lba
        {
            return Err(GptError::BadPartition {
                index,
                reason: format!(
                    "LBA range {}..={} is not inside the usable range {}..={}",
                    p.first_lba, p.last_lba, hdr.first_usable_lba, hdr.last_usable_lba
                ),
            });
        }
        parts.push(p);
    }
    let mut by_start: Vec<&Partition> = parts.iter().collect();
    by_start.sort_by_key(|p| p.first_lba);
    for w in by_start.windows(2) {
        if let [a, b] = w {
            if b.first_lba <= a.last_lba {
                return Err(GptError::Overlap {
                    a: a.index.min(b.index),
                    b: a.index.max(b.index),
                });
            }
        }
    }
    Ok(parts)
}

/// UTF-16LE up to the first NUL; invalid code units become U+FFFD rather than failing, since
/// a label is for display only.
fn decode_name(raw: &[u8]) -> String {
    let units = raw
        .chunks_exact(2)
        .map(|c| {
            u16::from_le_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        })
        .take_while(|&u| u != 0);
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}
