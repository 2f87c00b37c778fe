//! TCG_EfiSpecIdEvent ("Spec ID Event03"): the data of the first record of a crypto-agile log.
//!
//! It lists the PCR banks the log covers and their digest sizes. Every later record carries
//! exactly one digest per listed bank, and the digest sizes must be known to walk the log at
//! all, so this header is parsed strictly: a wrong size here would misalign everything after.

use super::error::{ParseError, ParseErrorKind, WriteError};
use crate::alg::HashAlg;
use crate::bytes::Cursor;

/// The 16-byte signature of a crypto-agile log's header event.
pub const SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
/// The signature of the TPM 1.2-era SHA-1-only header (TCG_PCClientSpecIdEventStruct).
const SHA1_SIGNATURE: &[u8; 15] = b"Spec ID Event00";

/// The decoded TCG_EfiSpecIdEvent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecIdEvent {
    /// platformClass: 0 client, 1 server.
    pub platform_class: u32,
    /// specVersionMinor.
    pub spec_version_minor: u8,
    /// specVersionMajor (2 for crypto-agile logs).
    pub spec_version_major: u8,
    /// specErrata.
    pub spec_errata: u8,
    /// uintnSize: 1 for 32-bit, 2 for 64-bit UINTN.
    pub uintn_size: u8,
    /// The banks, in header order. Each algorithm's digest size was checked against
    /// [`HashAlg::digest_size`].
    pub algorithms: Vec<HashAlg>,
    /// vendorInfo.
    pub vendor_info: Vec<u8>,
}

impl SpecIdEvent {
    /// The header EDK2 (OVMF) writes, for the given banks.
    pub fn new(algorithms: Vec<HashAlg>) -> Self {
        SpecIdEvent {
            platform_class: 0,
            spec_version_minor: 0,
            spec_version_major: 2,
            spec_errata: 0,
            uintn_size: 2,
            algorithms,
            vendor_info: Vec::new(),
        }
    }

    /// Parses the event data of the header record. `base` is the offset of `data` in the log,
    /// used only for error offsets.
    pub fn parse<'a>(data: &'a [u8], base: usize) -> Result<Self, ParseError> {
        let mut c = Cursor::with_base(data, base);
        let err = |offset, kind| ParseError {
            offset,
            record: Some(0),
            kind,
        };
        let need = |c: &mut Cursor<'a>, n, field| super::need(c, n, field, 0);
        let le32 = |b: &[u8]| b.try_into().map(u32::from_le_bytes).unwrap_or(0);
        let le16 = |b: &[u8]| b.try_into().map(u16::from_le_bytes).unwrap_or(0);

        let sig_off = c.offset();
        let sig = need(&mut c, 16, "Spec ID signature")?;
        if sig.starts_with(SHA1_SIGNATURE) {
            return Err(err(sig_off, ParseErrorKind::Sha1OnlyLog));
        }
        if sig != SIGNATURE {
            return Err(err(
                sig_off,
                ParseErrorKind::BadSignature(String::from_utf8_lossy(sig).into_owned()),
            ));
        }
        let platform_class = le32(need(&mut c, 4, "platformClass")?);
        let v = need(&mut c, 4, "spec version and uintnSize")?;
        let (spec_version_minor, spec_version_major, spec_errata, uintn_size) = match *v {
            [a, b, c, d] => (a, b, c, d),
            _ => (0, 0, 0, 0),
        };
        let n_off = c.offset();
        let n = le32(need(&mut c, 4, "numberOfAlgorithms")?);
        if n == 0 {
            return Err(err(n_off, ParseErrorKind::NoAlgorithms));
        }
        if n as usize > HashAlg::ALL.len() {
            return Err(err(n_off, ParseErrorKind::TooManyAlgorithms(n)));
        }
        let mut algorithms = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let off = c.offset();
            let entry = need(&mut c, 4, "algorithm table entry")?;
            let id = le16(entry.get(..2).unwrap_or(&[]));
            let size = le16(entry.get(2..).unwrap_or(&[]));
            let alg =
                HashAlg::from_id(id).map_err(|_| err(off, ParseErrorKind::UnknownAlgorithm(id)))?;
            if algorithms.contains(&alg) {
                return Err(err(off, ParseErrorKind::DuplicateAlgorithm(alg)));
            }
            if usize::from(size) != alg.digest_size() {
                return Err(err(
                    off,
                    ParseErrorKind::HeaderDigestSize {
                        alg,
                        declared: size,
                        expected: alg.digest_size(),
                    },
                ));
            }
            algorithms.push(alg);
        }
        let vsize = need(&mut c, 1, "vendorInfoSize")?
            .first()
            .copied()
            .unwrap_or(0);
        let vendor_info = need(&mut c, usize::from(vsize), "vendorInfo")?.to_vec();
        if !c.is_empty() {
            return Err(err(
                c.offset(),
                ParseErrorKind::SpecIdSize {
                    declared: u32::try_from(data.len()).unwrap_or(u32::MAX),
                    actual: data.len().saturating_sub(c.remaining()),
                },
            ));
        }
        Ok(SpecIdEvent {
            platform_class,
            spec_version_minor,
            spec_version_major,
            spec_errata,
            uintn_size,
            algorithms,
            vendor_info,
        })
    }

    /// Serializes the structure (the event data of the header record).
    pub fn to_bytes(&self) -> Result<Vec<u8>, WriteError> {
        let n = self.algorithms.len();
        let distinct = self.algorithms.iter().enumerate().all(|(i, a)| {
            !self
                .algorithms
                .get(..i)
                .is_some_and(|prev| prev.contains(a))
        });
        if n == 0 || n > HashAlg::ALL.len() || !distinct {
            return Err(WriteError::BadAlgorithmList);
        }
        let vsize = u8::try_from(self.vendor_info.len())
            .map_err(|_| WriteError::VendorInfoTooLong(self.vendor_info.len()))?;
        let mut out = Vec::with_capacity(64usize.saturating_add(self.vendor_info.len()));
        out.extend_from_slice(SIGNATURE);
        out.extend_from_slice(&self.platform_class.to_le_bytes());
        out.extend_from_slice(&[
            self.spec_version_minor,
            self.spec_version_major,
            self.spec_errata,
            self.uintn_size,
        ]);
        // n <= 5 and digest sizes <= 64 were checked or are constants: the casts are exact.
        out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
        for a in &self.algorithms {
            out.extend_from_slice(&a.id().to_le_bytes());
            let size = u16::try_from(a.digest_size()).unwrap_or(u16::MAX);
            out.extend_from_slice(&size.to_le_bytes());
        }
        out.push(vsize);
        out.extend_from_slice(&self.vendor_info);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let s = SpecIdEvent::new(vec![HashAlg::Sha1, HashAlg::Sha256]);
        let b = s.to_bytes().unwrap();
        assert_eq!(SpecIdEvent::parse(&b, 32).unwrap(), s);

        let mut bad = b.clone();
        bad[24] = 0; // numberOfAlgorithms = 0
        let e = SpecIdEvent::parse(&bad, 32).unwrap_err();
        assert_eq!(
            (e.offset, e.kind.clone()),
            (32 + 24, ParseErrorKind::NoAlgorithms)
        );

        let mut bad = b.clone();
        bad[30] = 21; // sha1 declared as 21 bytes
        let e = SpecIdEvent::parse(&bad, 0).unwrap_err();
        assert_eq!(e.offset, 28);
        assert!(matches!(
            e.kind,
            ParseErrorKind::HeaderDigestSize { declared: 21, .. }
        ));

        let mut bad = b.clone();
        bad.push(0);
        assert!(matches!(
            SpecIdEvent::parse(&bad, 0).unwrap_err().kind,
            ParseErrorKind::SpecIdSize { .. }
        ));

        let mut bad = b.clone();
        bad[14] = b'0';
        assert_eq!(
            SpecIdEvent::parse(&bad, 0).unwrap_err().kind,
            ParseErrorKind::Sha1OnlyLog
        );

        let dup = SpecIdEvent::new(vec![HashAlg::Sha256, HashAlg::Sha256]);
        assert_eq!(dup.to_bytes(), Err(WriteError::BadAlgorithmList));
    }
}
