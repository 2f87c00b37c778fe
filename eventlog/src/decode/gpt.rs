//! UEFI_GPT_DATA, the data of EV_EFI_GPT_EVENT (PCR 5): the GPT header of the boot disk
//! followed by its non-empty partition entries. Decoded to the disk GUID and the partitions,
//! which is what changes when a disk image is rebuilt.

use std::fmt;

use super::guid::Guid;
use super::text;
use crate::bytes::Cursor;

/// Size of EFI_PARTITION_TABLE_HEADER as embedded in UEFI_GPT_DATA.
const HEADER_SIZE: usize = 92;

/// A decoded UEFI_GPT_DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptData {
    /// DiskGUID from the header.
    pub disk_guid: Guid,
    /// The partition entries.
    pub partitions: Vec<GptPartition>,
}

/// One EFI_PARTITION_ENTRY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptPartition {
    /// PartitionTypeGUID.
    pub type_guid: Guid,
    /// UniquePartitionGUID.
    pub unique_guid: Guid,
    /// StartingLBA.
    pub first_lba: u64,
    /// EndingLBA.
    pub last_lba: u64,
    /// PartitionName.
    pub name: String,
}

/// Parses UEFI_GPT_DATA; `None` unless it is a consistent "EFI PART" header plus entries.
pub fn parse(data: &[u8]) -> Option<GptData> {
    let mut c = Cursor::new(data);
    let header = c.take(HEADER_SIZE)?;
    if header.get(..8)? != b"EFI PART" {
        return None;
    }
    let disk_guid = Guid(header.get(56..72)?.try_into().ok()?);
    let entry_size =
        usize::try_from(u32::from_le_bytes(header.get(84..88)?.try_into().ok()?)).ok()?;
    let count = usize::try_from(c.u64()?).ok()?;
    if entry_size < 128 || c.remaining() != count.checked_mul(entry_size)? {
        return None;
    }
    let mut partitions = Vec::new();
    while !c.is_empty() {
        let mut e = Cursor::new(c.take(entry_size)?);
        partitions.push(GptPartition {
            type_guid: Guid(e.array()?),
            unique_guid: Guid(e.array()?),
            first_lba: e.u64()?,
            last_lba: e.u64()?,
            name: {
                let _attributes = e.u64()?;
                text::utf16(e.take(72)?, false).unwrap_or_default()
            },
        });
    }
    Some(GptData {
        disk_guid,
        partitions,
    })
}

impl fmt::Display for GptData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "disk {}, {} partitions",
            self.disk_guid,
            self.partitions.len()
        )?;
        for p in &self.partitions {
            write!(
                f,
                "; {:?} type {} uuid {} lba {}-{}",
                p.name, p.type_guid, p.unique_guid, p.first_lba, p.last_lba
            )?;
        }
        Ok(())
    }
}
