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
mod path;
mod table;

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};

pub use bpb::{FatType, Geometry};
pub use dir::DirEntry;
pub use error::FatError;
pub use file::FatFile;
use table::{Link, Table};

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

    /// Every file and directory on the volume, depth first, with its full path. Directories
    /// must not share clusters (a cycle, or a cross-link): that is an error, and it also keeps
    /// the walk linear in the volume size whatever the image claims.
    pub fn walk(&mut self) -> Result<Vec<(String, DirEntry)>, FatError> {
        let mut out = Vec::new();
        let mut used = HashSet::new();
        let mut stack = vec![(String::new(), self.root_entry())];
        while let Some((dir_path, dir)) = stack.pop() {
            let shown = if dir_path.is_empty() {
                "/"
            } else {
                dir_path.as_str()
            };
            let chain = self.dir_clusters(&dir, shown)?;
            // The fixed FAT12/16 root has no clusters; 0 stands for it.
            for &c in chain.as_deref().unwrap_or(&[0]) {
                if !used.insert(c) {
                    return Err(FatError::DirectoryCycle {
                        path: shown.to_string(),
                        cluster: c,
                    });
                }
            }
            for e in self.list_in(chain.as_deref(), shown)? {
                let p = format!("{dir_path}/{}", e.name);
                if e.is_dir {
                    stack.push((p.clone(), e.clone()));
                }
                out.push((p, e));
            }
        }
        Ok(out)
    }

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

    /// Lists a directory given its entry; `p` names it in errors.
    fn list(&mut self, d: &DirEntry, p: &str) -> Result<Vec<DirEntry>, FatError> {
        let chain = self.dir_clusters(d, p)?;
        self.list_in(chain.as_deref(), p)
    }

    /// The clusters of a directory, or `None` for the fixed FAT12/16 root. Cluster 0 means the
    /// root (as in `..` entries): the fixed region on FAT12/16, the root cluster on FAT32.
    fn dir_clusters(&mut self, d: &DirEntry, p: &str) -> Result<Option<Vec<u32>>, FatError> {
        let first = if d.first_cluster == 0 {
            self.geo.root_cluster
        } else {
            d.first_cluster
        };
        if first == 0 {
            return Ok(None);
        }
        self.chain_of(p, first, None).map(Some)
    }

    /// Parses the directory in `chain` (or the fixed root), stopping at the end marker.
    fn list_in(&mut self, chain: Option<&[u32]>, p: &str) -> Result<Vec<DirEntry>, FatError> {
        let mut parser = dir::Parser::new(self.geo.fat_type == FatType::Fat32);
        let cs = u64::from(self.geo.cluster_size);
        let pieces: Vec<(u64, u64)> = match chain {
            Some(chain) => chain
                .iter()
                .map(|&c| (self.geo.cluster_offset(c), cs))
                .collect(),
            None => {
                let (start, len) = (self.geo.root_dir_offset(), self.geo.root_dir_bytes());
                let step = u64::from(self.geo.bytes_per_sector);
                (0..len.div_ceil(step))
                    .map(|i| (start + i * step, step.min(len - i * step)))
                    .collect()
            }
        };
        for (offset, len) in pieces {
            if parser.done {
                break;
            }
            let buf = self.read_bytes(offset, len, p)?;
            parser.feed(&buf);
        }
        Ok(parser.entries)
    }

    /// Follows the chain from `first`: for a file of `file_size` bytes exactly the clusters that
    /// size needs (a longer chain is not walked further), for a directory (`None`) to the
    /// end-of-chain marker, at most [`MAX_DIR_BYTES`].
    fn chain_of(
        &mut self,
        p: &str,
        first: u32,
        file_size: Option<u64>,
    ) -> Result<Vec<u32>, FatError> {
        let max = self.geo.max_cluster();
        if first < 2 || first > max {
            return Err(FatError::FirstClusterOutOfRange {
                path: p.to_string(),
                cluster: first,
                max,
            });
        }
        let cs = u64::from(self.geo.cluster_size);
        let dir_cap = MAX_DIR_BYTES.div_ceil(cs);
        let want = file_size.map(|s| s.div_ceil(cs));
        let mut chain = vec![first];
        let mut seen = HashSet::from([first]);
        let mut cur = first;
        loop {
            let len = chain.len() as u64;
            if want == Some(len) {
                return Ok(chain);
            }
            match self.table.link(&mut self.dev, cur)? {
                Link::Next(n) => {
                    if !seen.insert(n) {
                        return Err(FatError::ChainLoop {
                            path: p.to_string(),
                            cluster: n,
                        });
                    }
                    if want.is_none() && len >= dir_cap {
                        return Err(FatError::DirectoryTooLarge {
                            path: p.to_string(),
                        });
                    }
                    chain.push(n);
                    cur = n;
                }
                Link::End => {
                    return match want {
                        Some(needed) => Err(FatError::ChainTooShort {
                            path: p.to_string(),
                            size: file_size.unwrap_or_default(),
                            needed,
                            found: len,
                        }),
                        None => Ok(chain),
                    };
                }
                Link::Invalid(value, why) => {
                    return Err(FatError::BadLink {
                        path: p.to_string(),
                        cluster: cur,
                        value,
                        reason: why.to_string(),
                    })
                }
            }
        }
    }

    fn read_bytes(&mut self, offset: u64, len: u64, p: &str) -> Result<Vec<u8>, FatError> {
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
        read_exact_at(&mut self.dev, offset, &mut buf).map_err(|source| FatError::Io {
            context: format!("directory {p}"),
            offset,
            source,
        })?;
        Ok(buf)
    }
}
