//! Errors of the FAT reader. Each names the path (or boot-sector field) and the cluster or
//! byte offset involved, so a bad image can be diagnosed from the message alone.

use std::io;

/// Why a FAT volume, directory or file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    /// An underlying read failed (for an image: usually it ends early).
    #[error("reading {context} at byte offset {offset} of the volume: {source}")]
    Io {
        /// What was being read.
        context: String,
        /// Volume-relative byte offset.
        offset: u64,
        /// Underlying error.
        source: io::Error,
    },
    /// A boot-sector (BPB) field is invalid.
    #[error("invalid FAT boot sector: {reason}")]
    BadBootSector {
        /// Which field and why.
        reason: String,
    },
    /// The BPB layout and the cluster count disagree about the FAT type.
    #[error("FAT boot sector has a {layout} layout but {clusters} clusters, which makes it {by_count} by the FAT specification; UEFI firmware will not read it as intended (mkosi: use SectorSize=512 or a larger ESP)")]
    TypeMismatch {
        /// "FAT32" or "FAT12/FAT16", from the BPB fields.
        layout: &'static str,
        /// Data clusters on the volume.
        clusters: u32,
        /// Type implied by the count.
        by_count: &'static str,
    },
    /// The boot sector describes a volume larger than the partition or file holding it.
    #[error("FAT volume is truncated: boot sector says {volume_bytes} bytes, only {device_bytes} present")]
    VolumeTruncated {
        /// Size from the boot sector.
        volume_bytes: u64,
        /// Size of the device or slice.
        device_bytes: u64,
    },
    /// The path cannot be resolved (e.g. empty component rules).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// No entry of that name.
    #[error("{path}: not found")]
    NotFound {
        /// Normalized path.
        path: String,
    },
    /// A path component that should be a directory is a file.
    #[error("{path}: not a directory")]
    NotADirectory {
        /// Normalized path of the file.
        path: String,
    },
    /// A file was expected.
    #[error("{path}: is a directory")]
    IsADirectory {
        /// Normalized path.
        path: String,
    },
    /// A directory entry's first cluster is not a data cluster.
    #[error("{path}: first cluster {cluster} is outside the volume (valid: 2..={max})")]
    FirstClusterOutOfRange {
        /// Path of the entry.
        path: String,
        /// The cluster number from the entry.
        cluster: u32,
        /// Highest valid cluster.
        max: u32,
    },
    /// A FAT entry in the chain is free, bad, reserved or out of range.
    #[error("{path}: FAT entry of cluster {cluster} is {value:#x}, which {reason}")]
    BadLink {
        /// Path of the file or directory.
        path: String,
        /// Cluster whose entry is wrong.
        cluster: u32,
        /// The raw entry.
        value: u32,
        /// What the value means.
        reason: String,
    },
    /// The chain visits a cluster twice.
    #[error("{path}: cluster chain loops back to cluster {cluster}")]
    ChainLoop {
        /// Path of the file or directory.
        path: String,
        /// The cluster seen twice.
        cluster: u32,
    },
    /// The chain ends before the file size is covered.
    #[error("{path}: cluster chain ends after {found} clusters, but the file size {size} needs {needed}")]
    ChainTooShort {
        /// Path of the file.
        path: String,
        /// File size from the directory entry.
        size: u64,
        /// Clusters the size needs.
        needed: u64,
        /// Clusters in the chain.
        found: u64,
    },
    /// The file is larger than the caller's limit.
    #[error("{path}: size {size} exceeds the limit of {limit} bytes")]
    FileTooLarge {
        /// Path of the file.
        path: String,
        /// Its size.
        size: u64,
        /// The limit passed in.
        limit: u64,
    },
    /// The file claims more bytes than the data area holds.
    #[error("{path}: size {size} exceeds the volume's data area of {data_bytes} bytes")]
    SizeExceedsVolume {
        /// Path of the file.
        path: String,
        /// Its size.
        size: u64,
        /// Bytes in the data area.
        data_bytes: u64,
    },
    /// More than 65536 entries (the FAT limit) in one directory.
    #[error("{path}: directory is longer than the FAT maximum of 65536 entries")]
    DirectoryTooLarge {
        /// Path of the directory.
        path: String,
    },
    /// A directory uses a cluster already used by another directory: a cycle (a subdirectory
    /// pointing back at an ancestor) or a cross-link.
    #[error("{path}: directory uses cluster {cluster}, which another directory already uses (cycle or cross-link)")]
    DirectoryCycle {
        /// Path of the repeated directory.
        path: String,
        /// Its first cluster.
        cluster: u32,
    },
}
