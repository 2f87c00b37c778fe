//! Read-only FAT12/16/32 with VFAT long names, over any `Read + Seek` (an image file, or a
//! [`crate::Slice`] of one): no loop device, no mount, no root.
//!
//! Everything on disk is treated as hostile: boot-sector fields are range-checked before use,
//! every cluster number is checked against the volume, chains are checked for loops and for
//! covering the file size, and sizes are capped, so a malformed image yields a [`FatError`]
//! naming the path and cluster, never a panic, a hang or a huge allocation.

mod bpb;
mod dir;
mod error;
mod file;
mod listing;
mod path;
mod table;

use std::io::{Read, Seek, SeekFrom};

pub use bpb::{FatType, Geometry};
pub use dir::DirEntry;
pub use error::FatError;
pub use file::FatFile;
use table::Table;

use crate::io_util::read_exact_at;

/// FAT's own limit on entries per directory (fatgen103), in bytes; bounds directory reads.
const MAX_DIR_BYTES: u64 = 65536 * 32;

/// A FAT volume opened for reading.
#[derive(Debug)]
pub struct Fat<R> {
    dev: R,
    geo: Geometry,
    table: Table,
}

impl<R: Read + Seek> Fat<R> {
    /// Reads and checks the boot sector of the volume at the start of `dev`. The whole of
    /// `dev` (its length from `seek(End)`) must hold the volume the boot sector describes.
    pub fn new(mut dev: R) -> Result<Fat<R>, FatError> {
        let device_bytes = dev.seek(SeekFrom::End(0)).map_err(|source| FatError::Io {
            context: "the volume length".into(),
            offset: 0,
            source,
        })?;
        let mut bs = [0u8; 512];
        read_exact_at(&mut dev, 0, &mut bs).map_err(|source| FatError::Io {
            context: "the boot sector".into(),
            offset: 0,
            source,
        })?;
        let geo = bpb::parse(&bs)?;
        if geo.volume_bytes() > device_bytes {
            return Err(FatError::VolumeTruncated {
                volume_bytes: geo.volume_bytes(),
                device_bytes,
            });
        }
        let table = Table::new(&geo);
        Ok(Fat { dev, geo, table })
    }

    /// The checked layout (FAT type, cluster size, ...), e.g. for `nacre-image inspect`.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// Gives back the device.
    pub fn into_inner(self) -> R {
        self.dev
    }

    /// The entry at `path` (`/` or `\` separated, case-insensitive). The root is returned as a
    /// directory entry with an empty name.
    pub fn stat(&mut self, path: &str) -> Result<DirEntry, FatError> {
        let comps = path::components(path);
        let mut cur = self.root_entry();
        for (i, comp) in comps.iter().enumerate() {
            let here = comps.get(..i).unwrap_or_default();
            if !cur.is_dir {
                return Err(FatError::NotADirectory {
                    path: path::join(here),
                });
            }
            let listing = self.list(&cur, &path::join(here))?;
            let found = listing.into_iter().find(|e| {
                path::names_equal(comp, &e.name) || path::names_equal(comp, &e.short_name)
            });
            cur = found.ok_or_else(|| FatError::NotFound {
                path: path::join(comps.get(..=i).unwrap_or_default()),
            })?;
        }
        Ok(cur)
    }

    /// Whether `path` names a file or directory. Corruption met on the way is an error, not
    /// `false`: a broken directory must not look like a missing drop-in.
    pub fn exists(&mut self, path: &str) -> Result<bool, FatError> {
        match self.stat(path) {
            Ok(_) => Ok(true),
            Err(FatError::NotFound { .. } | FatError::NotADirectory { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Entries of the directory at `path`, in on-disk order, without `.` and `..`.
    pub fn read_dir(&mut self, path: &str) -> Result<Vec<DirEntry>, FatError> {
        let e = self.stat(path)?;
        let p = path::join(&path::components(path));
        if !e.is_dir {
            return Err(FatError::NotADirectory { path: p });
        }
        self.list(&e, &p)
    }

    /// The whole file at `path`, refusing files larger than `limit` bytes before reading.
    pub fn read_file(&mut self, path: &str, limit: u64) -> Result<Vec<u8>, FatError> {
        let e = self.stat(path)?;
        let p = path::join(&path::components(path));
        let mut f = self.open_entry(&p, &e)?;
        if f.len() > limit {
            return Err(FatError::FileTooLarge {
                path: p,
                size: f.len(),
                limit,
            });
        }
        f.read_all()
    }

    /// A streaming reader for the file at `path`. Its whole cluster chain is checked here, so
    /// reads fail only on I/O errors.
    pub fn open(&mut self, path: &str) -> Result<FatFile<'_, R>, FatError> {
        let e = self.stat(path)?;
        let p = path::join(&path::components(path));
        self.open_entry(&p, &e)
    }

    /// Like [`Fat::open`] for an entry already listed by [`Fat::read_dir`] or [`Fat::walk`],
    /// without looking the path up again; `path` is only used in error messages.
    pub fn open_entry(&mut self, path: &str, e: &DirEntry) -> Result<FatFile<'_, R>, FatError> {
        let p = path.to_string();
        if e.is_dir {
            return Err(FatError::IsADirectory { path: p });
        }
        let size = u64::from(e.size);
        if size > self.geo.data_bytes() {
            return Err(FatError::SizeExceedsVolume {
                path: p,
                size,
                data_bytes: self.geo.data_bytes(),
            });
        }
        let clusters = if size == 0 {
            Vec::new()
        } else {
            self.chain_of(&p, e.first_cluster, Some(size))?
        };
        Ok(FatFile::new(self, p, clusters, size))
    }

    /// Clusters of the file or directory at `path`, in chain order (for a file, only as many as
    /// its size needs). Shows fragmentation; mostly for diagnostics and tests.
    pub fn clusters(&mut self, path: &str) -> Result<Vec<u32>, FatError> {
        let e = self.stat(path)?;
        let p = path::join(&path::components(path));
        if e.is_dir {
            if e.first_cluster == 0 {
                return Ok(Vec::new()); // fixed FAT12/16 root
            }
            return self.chain_of(&p, e.first_cluster, None);
        }
        if e.size == 0 {
            return Ok(Vec::new());
        }
        self.chain_of(&p, e.first_cluster, Some(u64::from(e.size)))
    }

    /// The root directory as an entry: cluster 0 on FAT12/16 (its fixed region), the root
    /// cluster on FAT32.
    fn root_entry(&self) -> DirEntry {
        DirEntry {
            name: String::new(),
            short_name: String::new(),
            is_dir: true,
            size: 0,
            first_cluster: self.geo.root_cluster,
            attributes: 0x10,
        }
    }
}
