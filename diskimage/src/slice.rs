//! A byte range of a `Read + Seek` as its own `Read + Seek`: a partition of an image file,
//! handed to the FAT reader so it works on partition-relative offsets and can never read
//! outside the partition, whatever its on-disk structures claim.

use std::io::{self, Read, Seek, SeekFrom};

/// `len` bytes of `inner` starting at `start`. Reads past the end return 0 bytes (EOF), like a
/// file; seeking past the end is allowed, as for files.
#[derive(Debug)]
pub struct Slice<R> {
    inner: R,
    start: u64,
    len: u64,
    pos: u64,
}

impl<R> Slice<R> {
    /// A view of `inner[start..start + len]`. Fails only if the range overflows `u64`; whether
    /// `inner` is long enough shows up as EOF on read.
    pub fn new(inner: R, start: u64, len: u64) -> io::Result<Slice<R>> {
        start.checked_add(len).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("slice {start}+{len} overflows"),
            )
        })?;
        Ok(Slice {
            inner,
            start,
            len,
            pos: 0,
        })
    }

    /// Length of the view.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if the view is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset of the view in the underlying reader.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Gives back the underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read + Seek> Read for Slice<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        // pos < len here, and start + len does not overflow (checked in `new`).
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.inner.read(buf.get_mut(..want).unwrap_or_default())?;
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for Slice<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let base_plus = |base: u64, delta: i64| {
            base.checked_add_signed(delta).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "seek to a negative or overflowing position",
                )
            })
        };
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => base_plus(self.len, d)?,
            SeekFrom::Current(d) => base_plus(self.pos, d)?,
        };
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn reads_only_its_range() {
        let data: Vec<u8> = (0..100).collect();
        let mut s = Slice::new(Cursor::new(data), 10, 20).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        assert_eq!(all, (10..30).collect::<Vec<u8>>());
        assert_eq!(s.seek(SeekFrom::End(-5)).unwrap(), 15);
        let mut b = [0u8; 10];
        assert_eq!(s.read(&mut b).unwrap(), 5);
        assert_eq!(&b[..5], &[25, 26, 27, 28, 29]);
        assert!(s.seek(SeekFrom::Current(-100)).is_err());
        s.seek(SeekFrom::Start(1000)).unwrap();
        assert_eq!(s.read(&mut b).unwrap(), 0);
        assert!(Slice::new(Cursor::new(Vec::<u8>::new()), u64::MAX, 1).is_err());
    }
}
