//! A bounds-checked little-endian reader over a byte slice.
//!
//! Every structure in these logs is little-endian with untrusted length fields. All reads go
//! through this cursor, which returns `None` instead of panicking and tracks the absolute
//! offset so errors can name it.

#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    /// Added to `pos` when reporting offsets, for cursors over a slice of a larger buffer.
    base: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self::with_base(data, 0)
    }

    pub(crate) fn with_base(data: &'a [u8], base: usize) -> Self {
        Cursor { data, pos: 0, base }
    }

    /// Absolute offset of the next byte.
    pub(crate) fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or(&[])
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|b| b[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let mut c = Cursor::with_base(&[1, 0, 2, 0, 0, 0, 9], 100);
        assert_eq!(c.u16(), Some(1));
        assert_eq!(c.offset(), 102);
        assert_eq!(c.u32(), Some(2));
        assert_eq!(c.u16(), None);
        assert_eq!(c.take(usize::MAX), None);
        assert_eq!(c.u8(), Some(9));
        assert!(c.is_empty());
        assert_eq!(c.rest(), &[] as &[u8]);
    }
}
