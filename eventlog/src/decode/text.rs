//! Turning event bytes into strings for display, without ever failing.
//!
//! Firmware and boot loaders describe events in ASCII (EV_EFI_ACTION, grub's EV_IPL) or in
//! UTF-16LE (systemd-stub's EV_IPL, EDK2's S-CRTM version), usually NUL-terminated, and nothing
//! in the log says which. These helpers guess conservatively and return `None` for bytes
//! that are not clean text, so the caller can fall back to hex.

use std::fmt::Write;

/// Strips trailing NUL bytes (ASCII) or NUL code units (UTF-16).
fn trim_nul<T: PartialEq + Default>(s: &[T]) -> &[T] {
    let end = s
        .iter()
        .rposition(|c| *c != T::default())
        .map_or(0, |i| i.saturating_add(1));
    s.get(..end).unwrap_or(&[])
}

fn clean(s: &str) -> bool {
    s.chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
}

/// UTF-8 text with optional trailing NULs and no control characters.
pub(crate) fn utf8(data: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(trim_nul(data)).ok()?;
    clean(s).then(|| s.to_owned())
}

/// UTF-16LE text with optional trailing NULs and no control characters.
///
/// With `latin_only`, every code unit must be below 0x100: that rejects ASCII text that
/// happens to have an even length (`"ab"` would otherwise read as U+6261).
pub(crate) fn utf16(data: &[u8], latin_only: bool) -> Option<String> {
    if data.len() % 2 != 0 {
        return None;
    }
    let units = le_u16s(data);
    let units = trim_nul(&units);
    if latin_only && units.iter().any(|&u| u > 0xFF) {
        return None;
    }
    let s = String::from_utf16(units).ok()?;
    clean(&s).then_some(s)
}

/// Little-endian u16 code units; an odd last byte is ignored.
pub(crate) fn le_u16s(data: &[u8]) -> Vec<u16> {
    data.chunks_exact(2)
        .map(|b| {
            u16::from_le_bytes([
                b.first().copied().unwrap_or(0),
                b.get(1).copied().unwrap_or(0),
            ])
        })
        .collect()
}

/// Hex of at most 64 bytes; longer data shows its first 32 bytes and its length.
pub(crate) fn short_hex(data: &[u8]) -> String {
    if data.len() <= 64 {
        return hex::encode(data);
    }
    let mut s = hex::encode(data.get(..32).unwrap_or(data));
    let _ = write!(s, "… ({} bytes)", data.len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses() {
        assert_eq!(utf8(b"Linux initrd\0").as_deref(), Some("Linux initrd"));
        assert_eq!(utf8(b"a\0b"), None);
        assert_eq!(
            utf16(b".\0l\0i\0n\0u\0x\0\0\0", true).as_deref(),
            Some(".linux")
        );
        assert_eq!(utf16(b"ab", true), None);
        assert_eq!(utf16(b"\0\0", true).as_deref(), Some(""));
        assert_eq!(short_hex(&[0xab; 3]), "ababab");
        assert!(short_hex(&[0; 65]).ends_with("(65 bytes)"));
    }
}
