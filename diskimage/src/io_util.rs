//! Positioned reads on `Read + Seek`, the only I/O primitive the parsers use.

use std::io::{self, Read, Seek, SeekFrom};

/// Reads exactly `buf.len()` bytes at `offset`. A short read surfaces as `UnexpectedEof`, which
/// callers turn into an error naming the offset: on a truncated image that is the useful fact.
pub(crate) fn read_exact_at<R: Read + Seek>(
    r: &mut R,
    offset: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    r.seek(SeekFrom::Start(offset))?;
    r.read_exact(buf)
}

/// Little-endian field readers over a fixed buffer; out-of-range offsets read as zero instead
/// of panicking (every caller passes constant offsets inside buffers it sized itself).
pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    match b.get(off..off.saturating_add(2)) {
        Some(&[a, c]) => u16::from_le_bytes([a, c]),
        _ => 0,
    }
}

pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    match b.get(off..off.saturating_add(4)) {
        Some(&[a, c, d, e]) => u32::from_le_bytes([a, c, d, e]),
        _ => 0,
    }
}

pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    let lo = u64::from(le32(b, off));
    let hi = u64::from(le32(b, off.saturating_add(4)));
    lo | (hi << 32)
}

/// `N` bytes at `off`, zero-filled when out of range.
pub(crate) fn array<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = b.get(off..off.saturating_add(N)) {
        out.copy_from_slice(src);
    }
    out
}
