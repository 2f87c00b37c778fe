//! One GPT header plus its partition entry array, checked the way firmware checks it
//! (signature, header CRC32, own LBA, entry geometry, entry-array CRC32). Used for the primary
//! header and, for the error message only, for the backup.

use std::io::{Read, Seek};

use crate::guid::Guid;
use crate::io_util::{array, le32, le64, read_exact_at};

/// Entry arrays larger than this are refused before allocating: real tables are 16 KiB
/// (128 entries of 128 bytes); the cap only stops a forged count from costing memory.
pub const MAX_ENTRY_ARRAY_BYTES: u64 = 4 << 20;

/// The smallest header the UEFI spec defines; the CRC covers `header_size` bytes.
const MIN_HEADER_SIZE: u32 = 92;

/// What is wrong with one GPT header copy. Kept separate from [`super::GptError`] so the same
/// checks can describe the backup header inside the error about the primary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderProblem {
    /// The first 8 bytes are not `EFI PART`.
    #[error("no \"EFI PART\" signature")]
    BadSignature,
    /// The header size field is below 92 or above one sector.
    #[error("header size {size} is outside 92..={sector_size}")]
    BadHeaderSize {
        /// Value of the header-size field.
        size: u32,
        /// Logical sector size in use.
        sector_size: u64,
    },
    /// The header CRC32 does not match the header bytes.
    #[error("header CRC32 mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderCrc {
        /// CRC32 stored in the header.
        stored: u32,
        /// CRC32 of the header as read.
        computed: u32,
    },
    /// `MyLBA` names another place than where the header was read.
    #[error("header claims to be at LBA {found} but was read from LBA {expected}")]
    WrongLba {
        /// LBA the header was read from.
        expected: u64,
        /// LBA the header names as its own.
        found: u64,
    },
    /// The entry size is not 128 × 2^n.
    #[error("partition entry size {0} is not 128 times a power of two")]
    BadEntrySize(u32),
    /// count × size exceeds [`MAX_ENTRY_ARRAY_BYTES`] or the disk.
    #[error("partition entry array at LBA {lba} ({count} entries of {size} bytes) does not fit in the {disk_len}-byte disk (or exceeds {MAX_ENTRY_ARRAY_BYTES} bytes)")]
    EntryArrayTooLarge {
        /// First LBA of the array.
        lba: u64,
        /// Number of entries.
        count: u32,
        /// Size of one entry.
        size: u32,
        /// Disk length in bytes.
        disk_len: u64,
    },
    /// The entry-array CRC32 does not match.
    #[error(
        "partition entry array CRC32 mismatch: stored {stored:#010x}, computed {computed:#010x}"
    )]
    EntriesCrc {
        /// CRC32 stored in the header.
        stored: u32,
        /// CRC32 of the array as read.
        computed: u32,
    },
    /// Reading the header or its array failed (usually: the image ends early).
    #[error("cannot read {len} bytes at byte offset {offset}: {error}")]
    Read {
        /// Byte offset of the failed read.
        offset: u64,
        /// Bytes requested.
        len: u64,
        /// The I/O error, as text so the problem stays `Clone + Eq`.
        error: String,
    },
}

/// The fields of a header that passed [`read_header`].
#[derive(Debug, Clone)]
pub struct Header {
    pub revision: u32,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: Guid,
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
}

impl Header {
    /// Size of the entry array in bytes (checked against the cap when read).
    pub fn entries_bytes(&self) -> u64 {
        u64::from(self.entry_count).saturating_mul(u64::from(self.entry_size))
    }
}

fn read_at<R: Read + Seek>(r: &mut R, offset: u64, len: u64) -> Result<Vec<u8>, HeaderProblem> {
    let problem = |error: String| HeaderProblem::Read { offset, len, error };
    let n = usize::try_from(len).map_err(|e| problem(e.to_string()))?;
    let mut buf = vec![0u8; n];
    read_exact_at(r, offset, &mut buf).map_err(|e| problem(e.to_string()))?;
    Ok(buf)
}

/// Reads and verifies the header at `lba` and its entry array. Returns the raw entry array so
/// the caller decodes exactly the bytes whose CRC was checked.
pub fn read_header<R: Read + Seek>(
    r: &mut R,
    lba: u64,
    sector_size: u64,
    disk_len: u64,
) -> Result<(Header, Vec<u8>), HeaderProblem> {
    let offset = lba.saturating_mul(sector_size);
    let sector = read_at(r, offset, sector_size)?;
    if sector.get(..8) != Some(b"EFI PART".as_slice()) {
        return Err(HeaderProblem::BadSignature);
    }
    let size = le32(&sector, 12);
    let hdr_len = usize::try_from(size).unwrap_or(usize::MAX);
    let hdr = match sector.get(..hdr_len) {
        Some(h) if size >= MIN_HEADER_SIZE => h,
        _ => return Err(HeaderProblem::BadHeaderSize { size, sector_size }),
    };
    let stored = le32(hdr, 16);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(hdr.get(..16).unwrap_or_default());
    hasher.update(&[0; 4]);
    hasher.update(hdr.get(20..).unwrap_or_default());
    let computed = hasher.finalize();
    if stored != computed {
        return Err(HeaderProblem::HeaderCrc { stored, computed });
    }
    let found = le64(hdr, 24);
    if found != lba {
        return Err(HeaderProblem::WrongLba {
            expected: lba,
            found,
        });
    }
    let header = Header {
        revision: le32(hdr, 8),
        alternate_lba: le64(hdr, 32),
        first_usable_lba: le64(hdr, 40),
        last_usable_lba: le64(hdr, 48),
        disk_guid: Guid(array(hdr, 56)),
        entries_lba: le64(hdr, 72),
        entry_count: le32(hdr, 80),
        entry_size: le32(hdr, 84),
    };
    let es = header.entry_size;
    if es < 128 || !es.is_power_of_two() {
        return Err(HeaderProblem::BadEntrySize(es));
    }
    let bytes = header.entries_bytes();
    let start = header.entries_lba.checked_mul(sector_size);
    let fits = start
        .and_then(|s| s.checked_add(bytes))
        .is_some_and(|end| end <= disk_len);
    if !fits || bytes > MAX_ENTRY_ARRAY_BYTES {
        return Err(HeaderProblem::EntryArrayTooLarge {
            lba: header.entries_lba,
            count: header.entry_count,
            size: es,
            disk_len,
        });
    }
    let entries = read_at(r, start.unwrap_or_default(), bytes)?;
    let stored = le32(hdr, 88);
    let computed = crc32fast::hash(&entries);
    if stored != computed {
        return Err(HeaderProblem::EntriesCrc { stored, computed });
    }
    Ok((header, entries))
}
