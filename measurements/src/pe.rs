//! PE/COFF images (Microsoft PE Format specification), parsed as far as measured boot needs:
//! the headers' byte ranges that Authenticode skips, the section table, and the certificate
//! table. Every offset is bounds-checked so a truncated or hostile file gives an error that
//! names the structure and the offset, never a panic.

use std::ops::Range;

/// What is wrong with a PE file, and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeError {
    #[error("not a PE image: no 'MZ' signature at offset 0")]
    NoDosSignature,
    #[error("not a PE image: no 'PE\\0\\0' signature at offset {0:#x} (e_lfanew)")]
    NoPeSignature(usize),
    #[error("truncated PE image: {what} at offset {offset:#x} needs {len} bytes, the file has {file_len}")]
    Truncated {
        what: &'static str,
        offset: usize,
        len: usize,
        file_len: usize,
    },
    #[error("unsupported optional header magic {0:#06x} (expected 0x10b PE32 or 0x20b PE32+)")]
    BadMagic(u16),
    #[error("optional header is {size} bytes, too small for its {needed}-byte data directories")]
    OptionalHeaderTooSmall { size: usize, needed: usize },
    #[error("SizeOfHeaders {size_of_headers:#x} is smaller than the section table's end {table_end:#x} or beyond the file ({file_len:#x} bytes)")]
    BadSizeOfHeaders {
        size_of_headers: usize,
        table_end: usize,
        file_len: usize,
    },
    #[error("section {name:?} (#{index}) raw data {start:#x}..{end:#x} lies outside the file ({file_len:#x} bytes)")]
    SectionOutsideFile {
        name: String,
        index: usize,
        start: u64,
        end: u64,
        file_len: usize,
    },
    #[error("certificate table {start:#x}..{end:#x} lies outside the file ({file_len:#x} bytes)")]
    CertTableOutsideFile {
        start: u64,
        end: u64,
        file_len: usize,
    },
    #[error("malformed WIN_CERTIFICATE at offset {offset:#x}: {reason}")]
    BadCertificate { offset: usize, reason: &'static str },
}

/// One entry of the section table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub size_of_raw_data: u32,
    pub pointer_to_raw_data: u32,
}

impl Section {
    /// The section's bytes as the loader maps them: `VirtualSize` bytes, taken from the raw
    /// data and zero-filled past `SizeOfRawData` (the PE loader zero-fills; systemd-stub
    /// measures exactly `VirtualSize` bytes of the mapped image).
    pub fn mapped<'a>(&self, file: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let vsize = self.virtual_size as usize;
        let raw = self.raw_range();
        let raw = &file[raw];
        if vsize <= raw.len() {
            std::borrow::Cow::Borrowed(&raw[..vsize])
        } else {
            let mut v = Vec::with_capacity(vsize);
            v.extend_from_slice(raw);
            v.resize(vsize, 0);
            std::borrow::Cow::Owned(v)
        }
    }

    /// Byte range of the raw data in the file (validated by [`PeImage::parse`]).
    pub fn raw_range(&self) -> Range<usize> {
        if self.size_of_raw_data == 0 {
            // PointerToRawData is meaningless (and unchecked) for sections without file data.
            return 0..0;
        }
        let start = self.pointer_to_raw_data as usize;
        start..start + self.size_of_raw_data as usize
    }
}

/// A parsed PE image: offsets into the file that it borrows.
#[derive(Debug, Clone)]
pub struct PeImage<'a> {
    pub data: &'a [u8],
    /// `true` for PE32+ (64-bit).
    pub pe32_plus: bool,
    pub machine: u16,
    /// File offset of the optional header's CheckSum field.
    pub checksum_offset: usize,
    /// File offset of the certificate table's data-directory entry, if the image has one.
    pub cert_dir_offset: Option<usize>,
    /// The certificate table as (file offset, size), as the data directory records it.
    pub cert_table: Option<(u32, u32)>,
    pub size_of_headers: usize,
    pub sections: Vec<Section>,
}

/// Certificate table index in the data directories (IMAGE_DIRECTORY_ENTRY_SECURITY).
const DIR_SECURITY: usize = 4;
const SECTION_HEADER_LEN: usize = 40;

fn slice<'a>(
    data: &'a [u8],
    offset: usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], PeError> {
    offset
        .checked_add(len)
        .and_then(|end| data.get(offset..end))
        .ok_or(PeError::Truncated {
            what,
            offset,
            len,
            file_len: data.len(),
        })
}

fn u16_at(data: &[u8], offset: usize, what: &'static str) -> Result<u16, PeError> {
    let b = slice(data, offset, 2, what)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(data: &[u8], offset: usize, what: &'static str) -> Result<u32, PeError> {
    let b = slice(data, offset, 4, what)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl<'a> PeImage<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, PeError> {
        if data.get(0..2) != Some(b"MZ") {
            return Err(PeError::NoDosSignature);
        }
        let pe_off = u32_at(data, 0x3c, "DOS header e_lfanew")? as usize;
        if slice(data, pe_off, 4, "PE signature")? != b"PE\0\0" {
            return Err(PeError::NoPeSignature(pe_off));
        }
        let coff = pe_off + 4;
        slice(data, coff, 20, "COFF file header")?;
        let machine = u16_at(data, coff, "COFF Machine")?;
        let nsections = u16_at(data, coff + 2, "COFF NumberOfSections")? as usize;
        let opt_size = u16_at(data, coff + 16, "COFF SizeOfOptionalHeader")? as usize;
        let opt = coff + 20;
        slice(data, opt, opt_size, "optional header")?;
        let magic = u16_at(data, opt, "optional header magic")?;
        let (pe32_plus, dirs_at) = match magic {
            0x10b => (false, 96),
            0x20b => (true, 112),
            m => return Err(PeError::BadMagic(m)),
        };
        // NumberOfRvaAndSizes is the field right before the data directories.
        if opt_size < dirs_at {
            return Err(PeError::OptionalHeaderTooSmall {
                size: opt_size,
                needed: dirs_at,
            });
        }
        let ndirs = u32_at(data, opt + dirs_at - 4, "NumberOfRvaAndSizes")? as usize;
        let needed = dirs_at.saturating_add(ndirs.saturating_mul(8));
        if opt_size < needed {
            return Err(PeError::OptionalHeaderTooSmall {
                size: opt_size,
                needed,
            });
        }
        let size_of_headers = u32_at(data, opt + 60, "SizeOfHeaders")? as usize;
        let checksum_offset = opt + 64;
        let (cert_dir_offset, cert_table) = if ndirs > DIR_SECURITY {
            let at = opt + dirs_at + DIR_SECURITY * 8;
            let off = u32_at(data, at, "certificate table entry")?;
            let size = u32_at(data, at + 4, "certificate table entry")?;
            (Some(at), (size != 0).then_some((off, size)))
        } else {
            (None, None)
        };

        let table = opt + opt_size;
        let table_len = nsections * SECTION_HEADER_LEN;
        let table_bytes = slice(data, table, table_len, "section table")?;
        let table_end = table + table_len;
        if size_of_headers < table_end || size_of_headers > data.len() {
            return Err(PeError::BadSizeOfHeaders {
                size_of_headers,
                table_end,
                file_len: data.len(),
            });
        }
        let mut sections = Vec::with_capacity(nsections);
        for (index, h) in table_bytes.chunks_exact(SECTION_HEADER_LEN).enumerate() {
            let name_raw = &h[..8];
            let name_len = name_raw.iter().position(|&b| b == 0).unwrap_or(8);
            let name = String::from_utf8_lossy(&name_raw[..name_len]).into_owned();
            let le = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
            let s = Section {
                name,
                virtual_size: le(8),
                virtual_address: le(12),
                size_of_raw_data: le(16),
                pointer_to_raw_data: le(20),
            };
            let start = u64::from(s.pointer_to_raw_data);
            let end = start + u64::from(s.size_of_raw_data);
            if s.size_of_raw_data != 0 && end > data.len() as u64 {
                return Err(PeError::SectionOutsideFile {
                    name: s.name,
                    index,
                    start,
                    end,
                    file_len: data.len(),
                });
            }
            sections.push(s);
        }
        if let Some((off, size)) = cert_table {
            let (start, end) = (u64::from(off), u64::from(off) + u64::from(size));
            if end > data.len() as u64 {
                return Err(PeError::CertTableOutsideFile {
                    start,
                    end,
                    file_len: data.len(),
                });
            }
        }
        Ok(PeImage {
            data,
            pe32_plus,
            machine,
            checksum_offset,
            cert_dir_offset,
            cert_table,
            size_of_headers,
            sections,
        })
    }

    /// The first section with this name.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The PKCS#7 SignedData blobs of the certificate table (WIN_CERT_TYPE_PKCS_SIGNED_DATA
    /// entries), in table order.
    pub fn signatures(&self) -> Result<Vec<&'a [u8]>, PeError> {
        let Some((off, size)) = self.cert_table else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut pos = off as usize;
        let end = pos + size as usize;
        while pos + 8 <= end {
            let len = u32_at(self.data, pos, "WIN_CERTIFICATE dwLength")? as usize;
            let rev = u16_at(self.data, pos + 4, "WIN_CERTIFICATE wRevision")?;
            let typ = u16_at(self.data, pos + 6, "WIN_CERTIFICATE wCertificateType")?;
            if len < 8 || pos + len > end {
                return Err(PeError::BadCertificate {
                    offset: pos,
                    reason: "dwLength is below 8 or runs past the certificate table",
                });
            }
            if rev != 0x0200 && rev != 0x0100 {
                return Err(PeError::BadCertificate {
                    offset: pos,
                    reason: "unknown wRevision",
                });
            }
            if typ == 0x0002 {
                out.push(&self.data[pos + 8..pos + len]);
            }
            // Entries are 8-byte aligned.
            pos += len.div_ceil(8) * 8;
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal PE32+ image with the given sections (name, raw bytes, virtual size).
    pub(crate) fn build_pe(sections: &[(&str, &[u8], u32)], cert: Option<&[u8]>) -> Vec<u8> {
        let mut f = vec![0u8; 0x400];
        f[0..2].copy_from_slice(b"MZ");
        f[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        f[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        f[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        f[coff + 2..coff + 4].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        let opt_size = 112 + 16 * 8;
        f[coff + 16..coff + 18].copy_from_slice(&(opt_size as u16).to_le_bytes());
        let opt = coff + 20;
        f[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        f[opt + 60..opt + 64].copy_from_slice(&0x400u32.to_le_bytes());
        f[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        let mut table = opt + opt_size;
        for (name, data, vsize) in sections {
            let ptr = f.len();
            let raw_len = data.len().div_ceil(0x200) * 0x200;
            f.extend_from_slice(data);
            f.resize(ptr + raw_len, 0);
            let h = &mut f[table..table + 40];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[8..12].copy_from_slice(&vsize.to_le_bytes());
            h[12..16].copy_from_slice(&(ptr as u32).to_le_bytes());
            h[16..20].copy_from_slice(&(raw_len as u32).to_le_bytes());
            h[20..24].copy_from_slice(&(ptr as u32).to_le_bytes());
            table += 40;
        }
        if let Some(c) = cert {
            let off = f.len();
            let len = 8 + c.len();
            f.extend_from_slice(&(len as u32).to_le_bytes());
            f.extend_from_slice(&0x0200u16.to_le_bytes());
            f.extend_from_slice(&2u16.to_le_bytes());
            f.extend_from_slice(c);
            f.resize(off + len.div_ceil(8) * 8, 0);
            let d = opt + 112 + 4 * 8;
            f[d..d + 4].copy_from_slice(&(off as u32).to_le_bytes());
            let table_len = (f.len() - off) as u32;
            f[d + 4..d + 8].copy_from_slice(&table_len.to_le_bytes());
        }
        f
    }

    #[test]
    fn parses_sections_and_certificates() {
        let pe = build_pe(
            &[(".text", b"code", 4), (".osrel", b"ID=nacre\n", 9)],
            Some(b"pkcs7"),
        );
        let img = PeImage::parse(&pe).unwrap();
        assert!(img.pe32_plus);
        assert_eq!(img.sections.len(), 2);
        assert_eq!(&*img.section(".osrel").unwrap().mapped(&pe), b"ID=nacre\n");
        assert_eq!(img.signatures().unwrap(), vec![&b"pkcs7"[..]]);
    }

    #[test]
    fn mapped_zero_fills_past_raw_data() {
        let pe = build_pe(&[(".bss", b"ab", 0x300)], None);
        let img = PeImage::parse(&pe).unwrap();
        let m = img.sections[0].mapped(&pe);
        assert_eq!(m.len(), 0x300);
        assert_eq!(&m[..2], b"ab");
        assert!(m[0x200..].iter().all(|&b| b == 0));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let pe = build_pe(&[(".text", b"code", 4)], Some(b"sig"));
        for cut in 0..pe.len() {
            assert!(PeImage::parse(&pe[..cut]).is_err(), "cut at {cut} parsed");
        }
    }

    #[test]
    fn section_outside_file_names_the_section() {
        let mut pe = build_pe(&[(".linux", b"kernel", 6)], None);
        let table = 0x84 + 20 + 112 + 128;
        pe[table + 16..table + 20].copy_from_slice(&0x10_0000u32.to_le_bytes());
        let err = PeImage::parse(&pe).unwrap_err();
        assert!(
            matches!(&err, PeError::SectionOutsideFile { name, .. } if name == ".linux"),
            "{err}"
        );
        assert!(err.to_string().contains(".linux"));
    }

    #[test]
    fn rejects_non_pe() {
        assert_eq!(PeImage::parse(b"ELF").unwrap_err(), PeError::NoDosSignature);
        let mut pe = build_pe(&[], None);
        pe[0x80] = b'X';
        assert_eq!(
            PeImage::parse(&pe).unwrap_err(),
            PeError::NoPeSignature(0x80)
        );
    }
}
