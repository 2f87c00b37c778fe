//! Streaming access to one file whose cluster chain was verified when it was opened, so large
//! files (a UKI) can be hashed without holding them in memory.

use std::io::{self, Read, Seek, SeekFrom};

use super::{Fat, FatError};
use crate::io_util::read_exact_at;

/// An open file on a [`Fat`] volume; `Read + Seek` over exactly its `size` bytes.
#[derive(Debug)]
pub struct FatFile<'a, R> {
    fat: &'a mut Fat<R>,
    path: String,
    clusters: Vec<u32>,
    size: u64,
    pos: u64,
}

impl<'a, R: Read + Seek> FatFile<'a, R> {
    pub(super) fn new(fat: &'a mut Fat<R>, path: String, clusters: Vec<u32>, size: u64) -> Self {
        FatFile {
            fat,
            path,
            clusters,
            size,
            pos: 0,
        }
    }

    /// File size in bytes.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Normalized path, as used in errors.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The rest of the file from the current position, with typed errors.
    pub fn read_all(&mut self) -> Result<Vec<u8>, FatError> {
        let left = self.size.saturating_sub(self.pos);
        let mut out = vec![0u8; usize::try_from(left).unwrap_or(0)];
        let mut done = 0;
        while let Some(rest) = out.get_mut(done..).filter(|r| !r.is_empty()) {
            let n = self.read_some(rest)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(out)
    }

    /// Reads from `pos`, up to the end of the run of contiguous clusters it falls in, so an
    /// unfragmented file is read with one system call per buffer.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, FatError> {
        let left = self.size.saturating_sub(self.pos);
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let cs = u64::from(self.fat.geo.cluster_size);
        let idx = usize::try_from(self.pos / cs).unwrap_or(usize::MAX);
        let Some(&first) = self.clusters.get(idx) else {
            return Ok(0); // cannot happen: the chain covers the size
        };
        let within = self.pos % cs;
        let want = left.min(buf.len() as u64);
        // Extend the run only as far as this read needs: keeps small reads O(1) each.
        let mut run: u32 = 1;
        while u64::from(run) * cs - within < want
            && self.clusters.get(idx.saturating_add(run as usize))
                == Some(&first.saturating_add(run))
        {
            run += 1;
        }
        let n = (u64::from(run) * cs - within).min(want);
        let n = usize::try_from(n).unwrap_or(buf.len()).min(buf.len());
        let offset = self.fat.geo.cluster_offset(first) + within;
        let dst = buf.get_mut(..n).unwrap_or_default();
        read_exact_at(&mut self.fat.dev, offset, dst).map_err(|source| FatError::Io {
            context: format!("file {}", self.path),
            offset,
            source,
        })?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Read for FatFile<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_some(buf).map_err(io::Error::other)
    }
}

impl<R: Read + Seek> Seek for FatFile<'_, R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let (base, delta) = match to {
            SeekFrom::Start(p) => (p, 0),
            SeekFrom::End(d) => (self.size, d),
            SeekFrom::Current(d) => (self.pos, d),
        };
        self.pos = base.checked_add_signed(delta).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek to a negative position")
        })?;
        Ok(self.pos)
    }
}
