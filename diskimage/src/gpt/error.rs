//! Errors of the GPT reader: each says which structure (MBR, primary or backup header, entry,
//! partition) is wrong and where, so a broken image can be repaired from the message alone.

use std::io;

use super::HeaderProblem;

/// Why a disk image's GPT cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    /// The image could not be read at `offset`.
    #[error("reading the disk image at byte offset {offset}: {source}")]
    Io {
        /// Byte offset of the failed read.
        offset: u64,
        /// Underlying error.
        source: io::Error,
    },
    /// Too short to hold a protective MBR and a GPT header.
    #[error("disk image of {disk_len} bytes is too small to hold a GPT")]
    DiskTooSmall {
        /// Length of the image.
        disk_len: u64,
    },
    /// LBA 0 is not a protective MBR.
    #[error("no protective MBR at LBA 0: {reason}")]
    NoProtectiveMbr {
        /// What was missing.
        reason: &'static str,
    },
    /// Neither LBA 1 for 512-byte nor for 4096-byte sectors holds `EFI PART`.
    #[error("no GPT header signature at LBA 1 (tried 512- and 4096-byte sectors); {}", describe_backup(*.backup))]
    NoHeader {
        /// A valid backup header found at the last LBA, as (sector size, LBA), if any.
        backup: Option<(u64, u64)>,
    },
    /// The primary header or its entry array fails verification.
    #[error("primary GPT header at LBA 1 ({sector_size}-byte sectors) is corrupt: {problem}; the backup header at LBA {backup_lba} {backup}")]
    PrimaryCorrupt {
        /// Logical sector size in use.
        sector_size: u64,
        /// What is wrong with the primary.
        problem: HeaderProblem,
        /// Last LBA of the image, where the backup header belongs.
        backup_lba: u64,
        /// State of the backup, for the operator deciding how to repair.
        backup: BackupStatus,
    },
    /// The header places the backup or usable space past the end of the image.
    #[error("disk image is truncated: it has {disk_len} bytes but its GPT ({sector_size}-byte sectors) needs {needed}")]
    Truncated {
        /// Length of the image.
        disk_len: u64,
        /// Bytes the header says the disk has.
        needed: u64,
        /// Logical sector size in use.
        sector_size: u64,
    },
    /// Header fields contradict each other.
    #[error("GPT header layout is invalid: {reason}")]
    BadLayout {
        /// The contradiction.
        reason: String,
    },
    /// One partition entry is unusable.
    #[error("GPT partition {index}: {reason}")]
    BadPartition {
        /// 1-based entry index.
        index: u32,
        /// What is wrong.
        reason: String,
    },
    /// Two partitions share sectors.
    #[error("GPT partitions {a} and {b} overlap")]
    Overlap {
        /// 1-based index of the earlier partition.
        a: u32,
        /// 1-based index of the later one.
        b: u32,
    },
}

fn describe_backup(backup: Option<(u64, u64)>) -> String {
    match backup {
        Some((ss, lba)) => format!("a valid backup header exists at LBA {lba} ({ss}-byte sectors)"),
        None => "no valid backup header at the last LBA either".to_string(),
    }
}

/// Whether the backup header (at the image's last LBA) verifies; reported with primary errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupStatus {
    /// Header and entry array verify: the table can be repaired from it.
    Valid,
    /// The backup is broken too.
    Corrupt(HeaderProblem),
}

impl std::fmt::Display for BackupStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupStatus::Valid => write!(f, "is valid (the table can be restored from it)"),
            BackupStatus::Corrupt(p) => write!(f, "is not usable either: {p}"),
        }
    }
}
