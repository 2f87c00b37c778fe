//! Directory listing and cluster-chain walking: the two places where a hostile image could
//! make a reader loop or read far more than it holds, so both are bounded here.

use std::collections::HashSet;
use std::io::{Read, Seek};

use super::table::Link;
use super::{dir, DirEntry, Fat, FatError, FatType, MAX_DIR_BYTES};
use crate::io_util::read_exact_at;

impl<R: Read + Seek> Fat<R> {
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

    /// Lists a directory given its entry; `p` names it in errors.
    pub(super) fn list(&mut self, d: &DirEntry, p: &str) -> Result<Vec<DirEntry>, FatError> {
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
    pub(super) fn chain_of(
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
