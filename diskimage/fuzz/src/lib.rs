//! Fuzz input decoding shared by the targets.
//!
//! A FAT32 volume needs 65525 clusters (32 MiB with 512-byte clusters), far beyond what a
//! fuzzer mutates well. So an input is either the raw image, or a sparse one: `SPRS`, the
//! device size in KiB (u32 LE, capped at 512 MiB), then chunks of `offset: u32 LE,
//! len: u16 LE, bytes`; everything not covered reads as zero. `make-seeds.sh` produces such
//! seeds from real mkfs.vfat/sfdisk images.

use std::io::{self, Read, Seek, SeekFrom};

const MAGIC: &[u8; 4] = b"SPRS";
const MAX_LEN: u64 = 512 << 20;

/// A sparse device over borrowed chunks.
pub struct Sparse<'a> {
    len: u64,
    chunks: Vec<(u64, &'a [u8])>,
    pos: u64,
}

/// Decodes an input: sparse if it starts with `SPRS`, otherwise the bytes themselves.
pub fn device(data: &[u8]) -> Sparse<'_> {
    let Some(rest) = data.strip_prefix(MAGIC) else {
        return Sparse {
            len: data.len() as u64,
            chunks: vec![(0, data)],
            pos: 0,
        };
    };
    let mut chunks = Vec::new();
    let kib = rest
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let len = (u64::from(kib) * 1024).min(MAX_LEN);
    let mut rest = rest.get(4..).unwrap_or_default();
    while let Some(h) = rest.get(..6) {
        let off = u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
        let n = usize::from(u16::from_le_bytes([h[4], h[5]]));
        let body = rest.get(6..).unwrap_or_default();
        let n = n.min(body.len());
        chunks.push((off, &body[..n]));
        rest = &body[n..];
    }
    Sparse {
        len,
        chunks,
        pos: 0,
    }
}

impl Sparse<'_> {
    /// Device length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty device.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for Sparse<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let mut n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        let pos = self.pos;
        // The first chunk covering `pos` supplies bytes; else zeros up to the next chunk.
        let covering = self
            .chunks
            .iter()
            .find(|(o, c)| *o <= pos && pos < o + c.len() as u64);
        if let Some((o, c)) = covering {
            let from = (pos - o) as usize;
            n = n.min(c.len() - from);
            buf[..n].copy_from_slice(&c[from..from + n]);
        } else {
            let next = self
                .chunks
                .iter()
                .map(|(o, _)| *o)
                .filter(|&o| o > pos)
                .min();
            if let Some(next) = next {
                n = n.min((next - pos) as usize);
            }
            buf[..n].fill(0);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Sparse<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let (base, d) = match to {
            SeekFrom::Start(p) => (p, 0),
            SeekFrom::End(d) => (self.len, d),
            SeekFrom::Current(d) => (self.pos, d),
        };
        self.pos = base
            .checked_add_signed(d)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "negative seek"))?;
        Ok(self.pos)
    }
}
