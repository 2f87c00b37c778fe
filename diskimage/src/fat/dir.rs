//! Directory entries: 8.3 names, VFAT long names, and the entry fields Nacre needs.
//!
//! Long names are accepted only when their sequence numbers run down without gaps to the short
//! entry and every part carries the checksum of that short name: a long name left over from a
//! deleted file, or torn by a crash, is then ignored and the 8.3 name used, as Windows and
//! UEFI's FAT driver do.

const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_LONG_NAME: u8 = 0x0F;
/// Largest sequence number: 20 parts × 13 units covers the 255-character maximum.
const MAX_LFN_PARTS: u8 = 20;

/// One file or directory as listed by [`super::Fat::read_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Long name if a valid one precedes the entry, else the 8.3 name.
    pub name: String,
    /// The 8.3 name (`BOOTX64.EFI`), which lookups also match, as UEFI's do.
    pub short_name: String,
    /// True for subdirectories.
    pub is_dir: bool,
    /// Size in bytes (0 for directories).
    pub size: u32,
    /// First cluster (0 for an empty file).
    pub first_cluster: u32,
    /// Raw attribute byte (read-only 0x01, hidden 0x02, system 0x04, archive 0x20).
    pub attributes: u8,
}

/// A long name being collected, last part first (as stored).
#[derive(Debug)]
struct Lfn {
    checksum: u8,
    /// Sequence number the next part must have; 0 once part 1 was seen.
    expect: u8,
    units: Vec<u16>,
}

/// Incremental parser: directories arrive a cluster at a time and a long name may span
/// clusters, so state lives across calls to [`Parser::feed`].
#[derive(Debug)]
pub struct Parser {
    fat32: bool,
    lfn: Option<Lfn>,
    /// Entries so far.
    pub entries: Vec<DirEntry>,
    /// An end-of-directory marker (first byte 0) was seen: stop reading.
    pub done: bool,
}

impl Parser {
    pub fn new(fat32: bool) -> Parser {
        Parser {
            fat32,
            lfn: None,
            entries: Vec::new(),
            done: false,
        }
    }

    /// Parses whole 32-byte entries of `chunk`; a trailing partial entry is ignored.
    pub fn feed(&mut self, chunk: &[u8]) {
        for raw in chunk.chunks_exact(32) {
            if self.done {
                return;
            }
            self.entry(raw);
        }
    }

    fn entry(&mut self, raw: &[u8]) {
        let first = raw.first().copied().unwrap_or(0);
        let attr = raw.get(11).copied().unwrap_or(0);
        if first == 0 {
            self.done = true;
            return;
        }
        if first == 0xE5 {
            self.lfn = None;
            return;
        }
        if attr & 0x3F == ATTR_LONG_NAME {
            self.long_part(raw);
            return;
        }
        let lfn = self.lfn.take();
        if attr & ATTR_VOLUME_ID != 0 {
            return;
        }
        let mut name11 = [0u8; 11];
        name11.iter_mut().zip(raw).for_each(|(d, s)| *d = *s);
        if name11 == *b".          " || name11 == *b"..         " {
            return;
        }
        let short_name = short_name(&name11, raw.get(12).copied().unwrap_or(0));
        let name = lfn
            .and_then(|l| long_name(l, checksum(&name11)))
            .unwrap_or_else(|| short_name.clone());
        let lo = u32::from(crate::io_util::le16(raw, 26));
        let hi = if self.fat32 {
            u32::from(crate::io_util::le16(raw, 20))
        } else {
            0
        };
        let is_dir = attr & ATTR_DIRECTORY != 0;
        self.entries.push(DirEntry {
            name,
            short_name,
            is_dir,
            size: if is_dir {
                0
            } else {
                crate::io_util::le32(raw, 28)
            },
            first_cluster: (hi << 16) | lo,
            attributes: attr,
        });
    }

    fn long_part(&mut self, raw: &[u8]) {
        let ord = raw.first().copied().unwrap_or(0);
        let seq = ord & 0x1F;
        let sum = raw.get(13).copied().unwrap_or(0);
        if seq == 0 || seq > MAX_LFN_PARTS {
            self.lfn = None;
            return;
        }
        if ord & 0x40 != 0 {
            self.lfn = Some(Lfn {
                checksum: sum,
                expect: seq,
                units: vec![0xFFFF; usize::from(seq) * 13],
            });
        }
        let Some(l) = self.lfn.as_mut() else { return };
        if l.expect != seq || l.checksum != sum {
            self.lfn = None;
            return;
        }
        let base = usize::from(seq - 1) * 13;
        let offsets = (1..11)
            .step_by(2)
            .chain((14..26).step_by(2))
            .chain((28..32).step_by(2));
        for (i, off) in offsets.enumerate() {
            if let Some(u) = l.units.get_mut(base + i) {
                *u = crate::io_util::le16(raw, off);
            }
        }
        l.expect = seq - 1;
    }
}

/// The long name if the sequence is complete and matches the short entry's checksum; it ends at
/// the first NUL. Invalid UTF-16 falls back to the short name rather than guessing.
fn long_name(l: Lfn, sum: u8) -> Option<String> {
    if l.expect != 0 || l.checksum != sum {
        return None;
    }
    let end = l
        .units
        .iter()
        .position(|&u| u == 0)
        .unwrap_or(l.units.len());
    let name = String::from_utf16(l.units.get(..end)?).ok()?;
    (!name.is_empty()).then_some(name)
}

/// Checksum of an 8.3 name stored in each long-name part (fatgen103, "ChkSum").
pub fn checksum(name11: &[u8; 11]) -> u8 {
    name11.iter().fold(0u8, |sum, &b| {
        ((sum & 1) << 7).wrapping_add(sum >> 1).wrapping_add(b)
    })
}

/// `BASE.EXT` from the 11-byte field. NT's lower-case flags (byte 12, bits 3 and 4, written by
/// Linux and mtools for names like `readme.txt`) are honoured. Bytes above 0x7F are taken as
/// Latin-1: the OEM code page is unknown, and a 1:1 mapping keeps distinct names distinct.
fn short_name(name11: &[u8; 11], nt_flags: u8) -> String {
    let mut n = *name11;
    if n[0] == 0x05 {
        n[0] = 0xE5; // 0x05 stands for a real 0xE5 (KANJI lead byte)
    }
    let part = |bytes: &[u8], lower: bool| -> String {
        let trimmed = bytes
            .iter()
            .rposition(|&b| b != b' ')
            .map_or(&[][..], |p| bytes.get(..=p).unwrap_or_default());
        trimmed
            .iter()
            .map(|&b| char::from(if lower { b.to_ascii_lowercase() } else { b }))
            .collect()
    };
    let (base, ext) = n.split_at(8);
    let base = part(base, nt_flags & 0x08 != 0);
    let ext = part(ext, nt_flags & 0x10 != 0);
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(name: &[u8; 11], attr: u8, cluster: u16, size: u32) -> [u8; 32] {
        let mut e = [0u8; 32];
        e[..11].copy_from_slice(name);
        e[11] = attr;
        e[26..28].copy_from_slice(&cluster.to_le_bytes());
        e[28..32].copy_from_slice(&size.to_le_bytes());
        e
    }

    fn lfn_part(ord: u8, sum: u8, chars: &[u16]) -> [u8; 32] {
        let mut e = [0u8; 32];
        e[0] = ord;
        e[11] = ATTR_LONG_NAME;
        e[13] = sum;
        let offs = (1..11)
            .step_by(2)
            .chain((14..26).step_by(2))
            .chain((28..32).step_by(2));
        for (i, off) in offs.enumerate() {
            let u = chars
                .get(i)
                .copied()
                .unwrap_or(if i == chars.len() { 0 } else { 0xFFFF });
            e[off..off + 2].copy_from_slice(&u.to_le_bytes());
        }
        e
    }

    #[test]
    fn long_name_needs_matching_checksum() {
        let sn = *b"LONGFI~1TXT";
        let name: Vec<u16> = "Long file name.txt".encode_utf16().collect();
        let good = checksum(&sn);
        for (sum, expect) in [(good, "Long file name.txt"), (good ^ 1, "LONGFI~1.TXT")] {
            let mut p = Parser::new(false);
            p.feed(&lfn_part(0x42, sum, &name[13..]));
            p.feed(&lfn_part(0x01, sum, &name[..13]));
            p.feed(&short(&sn, 0x20, 5, 10));
            assert_eq!(p.entries[0].name, expect);
            assert_eq!(p.entries[0].short_name, "LONGFI~1.TXT");
        }
    }

    #[test]
    fn gap_in_sequence_falls_back() {
        let sn = *b"LONGFI~1TXT";
        let sum = checksum(&sn);
        let mut p = Parser::new(false);
        p.feed(&lfn_part(0x43, sum, &[b'a' as u16; 13]));
        p.feed(&lfn_part(0x01, sum, &[b'b' as u16; 13]));
        p.feed(&short(&sn, 0x20, 5, 10));
        assert_eq!(p.entries[0].name, "LONGFI~1.TXT");
    }

    #[test]
    fn lower_case_flags_and_dots() {
        let mut p = Parser::new(false);
        p.feed(&short(b".          ", 0x10, 3, 0));
        let mut e = short(b"README  TXT", 0x20, 4, 1);
        e[12] = 0x18;
        p.feed(&e);
        p.feed(&[0u8; 32]);
        p.feed(&short(b"AFTER   END", 0x20, 4, 1));
        assert!(p.done);
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.entries[0].name, "readme.txt");
    }
}
