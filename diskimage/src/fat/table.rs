//! Reading the File Allocation Table on demand through a small window cache, so a large
//! FAT32 volume is never loaded whole: following a chain touches only the FAT sectors it uses.

use std::io::{Read, Seek};

use super::bpb::{FatType, Geometry};
use super::error::FatError;
use crate::io_util::read_exact_at;

/// Bytes of FAT cached at a time; sequential chains stay inside one window for long.
const WINDOW: u64 = 8192;

/// Meaning of one FAT entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The chain continues at this cluster (already checked to be in range).
    Next(u32),
    /// End-of-chain marker.
    End,
    /// Anything else: free, bad, reserved or out of range. The string says which.
    Invalid(u32, &'static str),
}

/// FAT reader with a one-window cache.
#[derive(Debug)]
pub struct Table {
    offset: u64,
    len: u64,
    fat_type: FatType,
    max_cluster: u32,
    window_start: u64,
    window: Vec<u8>,
}

impl Table {
    pub fn new(g: &Geometry) -> Table {
        Table {
            offset: g.fat_offset(),
            len: g.fat_bytes(),
            fat_type: g.fat_type,
            max_cluster: g.max_cluster(),
            window_start: 0,
            window: Vec::new(),
        }
    }

    /// Bytes `[off, off + n)` of the FAT (FAT-relative), loading a window if needed.
    fn bytes<R: Read + Seek>(&mut self, r: &mut R, off: u64, n: u64) -> Result<&[u8], FatError> {
        let end = off.saturating_add(n);
        let cached_end = self.window_start.saturating_add(self.window.len() as u64);
        if off < self.window_start || end > cached_end {
            let mut start = off - off % WINDOW;
            if end > start.saturating_add(WINDOW) {
                start = off; // entry straddles a window boundary (FAT12)
            }
            let wlen = WINDOW.min(self.len.saturating_sub(start));
            if end > start.saturating_add(wlen) {
                return Err(FatError::BadBootSector {
                    reason: format!(
                        "FAT entry at byte {off} lies beyond the {}-byte FAT",
                        self.len
                    ),
                });
            }
            let abs = self.offset.saturating_add(start);
            self.window.resize(usize::try_from(wlen).unwrap_or(0), 0);
            self.window_start = start;
            if let Err(source) = read_exact_at(r, abs, &mut self.window) {
                self.window.clear();
                return Err(FatError::Io {
                    context: "the FAT".into(),
                    offset: abs,
                    source,
                });
            }
        }
        let lo = usize::try_from(off - self.window_start).unwrap_or(usize::MAX);
        let hi = lo.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
        Ok(self.window.get(lo..hi).unwrap_or_default())
    }

    /// Raw entry value of `cluster` (masked to 28 bits on FAT32).
    pub fn entry<R: Read + Seek>(&mut self, r: &mut R, cluster: u32) -> Result<u32, FatError> {
        let c = u64::from(cluster);
        let v = match self.fat_type {
            FatType::Fat12 => {
                let b = self.bytes(r, c + c / 2, 2)?;
                let w = u16::from_le_bytes([
                    b.first().copied().unwrap_or(0),
                    b.get(1).copied().unwrap_or(0),
                ]);
                u32::from(if cluster % 2 == 1 { w >> 4 } else { w & 0x0FFF })
            }
            FatType::Fat16 => {
                let b = self.bytes(r, c * 2, 2)?;
                u32::from(u16::from_le_bytes([
                    b.first().copied().unwrap_or(0),
                    b.get(1).copied().unwrap_or(0),
                ]))
            }
            FatType::Fat32 => {
                let b = self.bytes(r, c * 4, 4)?;
                let mut a = [0u8; 4];
                a.iter_mut().zip(b).for_each(|(d, s)| *d = *s);
                u32::from_le_bytes(a) & 0x0FFF_FFFF
            }
        };
        Ok(v)
    }

    /// Decoded entry of `cluster`.
    pub fn link<R: Read + Seek>(&mut self, r: &mut R, cluster: u32) -> Result<Link, FatError> {
        let v = self.entry(r, cluster)?;
        let (bad, eoc) = match self.fat_type {
            FatType::Fat12 => (0xFF7, 0xFF8),
            FatType::Fat16 => (0xFFF7, 0xFFF8),
            FatType::Fat32 => (0x0FFF_FFF7, 0x0FFF_FFF8),
        };
        Ok(match v {
            0 => Link::Invalid(v, "marks the cluster free"),
            1 => Link::Invalid(v, "is reserved"),
            _ if v <= self.max_cluster => Link::Next(v),
            _ if v >= eoc => Link::End,
            _ if v == bad => Link::Invalid(v, "marks the cluster bad"),
            _ => Link::Invalid(v, "points outside the volume"),
        })
    }
}
