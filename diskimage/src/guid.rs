//! GUIDs as GPT stores them.
//!
//! The on-disk layout is "mixed-endian": the first three fields are little-endian, the last
//! eight bytes are stored as written. Keeping the raw bytes and converting only for display and
//! parsing means comparisons between a type GUID read from disk and a constant can never be
//! wrong about byte order.

use std::fmt;
use std::str::FromStr;

/// A GUID in on-disk (mixed-endian) byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 16]);

/// Why a string is not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a GUID of the form XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX")]
pub struct ParseGuidError {
    /// The rejected input.
    pub input: String,
}

impl Guid {
    /// The all-zero GUID, which marks an unused GPT entry.
    pub const NIL: Guid = Guid([0; 16]);

    /// Builds a GUID from its canonical text read as one big-endian number, so constants can be
    /// written as `Guid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B)` and read like the spec.
    pub const fn from_u128(v: u128) -> Guid {
        let be = v.to_be_bytes();
        Guid([
            be[3], be[2], be[1], be[0], be[5], be[4], be[7], be[6], be[8], be[9], be[10], be[11],
            be[12], be[13], be[14], be[15],
        ])
    }

    /// The canonical text as one big-endian number (inverse of [`Guid::from_u128`]).
    pub const fn to_u128(self) -> u128 {
        let b = self.0;
        u128::from_be_bytes([
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ])
    }

    /// True for the all-zero GUID.
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.to_u128();
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xFFFF_FFFF_FFFF
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl FromStr for Guid {
    type Err = ParseGuidError;

    /// Accepts the canonical form in either case, optionally in braces (as UEFI tools print it).
    fn from_str(s: &str) -> Result<Guid, ParseGuidError> {
        let err = || ParseGuidError {
            input: s.to_string(),
        };
        let inner = s
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(s);
        let bytes = inner.as_bytes();
        if bytes.len() != 36 {
            return Err(err());
        }
        let mut v: u128 = 0;
        for (i, &c) in bytes.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return Err(err());
                }
                continue;
            }
            let digit = char::from(c).to_digit(16).ok_or_else(err)?;
            v = (v << 4) | u128::from(digit);
        }
        Ok(Guid::from_u128(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_round_trip_and_layout() {
        let g: Guid = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b".parse().unwrap();
        assert_eq!(g.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        // On-disk bytes of the ESP type GUID, as they appear in every GPT.
        assert_eq!(
            g.0,
            [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
                0xC9, 0x3B
            ]
        );
        assert_eq!(g, Guid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B));
        assert_eq!(
            "{C12A7328-F81F-11D2-BA4B-00A0C93EC93B}".parse::<Guid>(),
            Ok(g)
        );
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "C12A7328F81F11D2BA4B00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93",
            "C12A7328-F81F-11D2-BA4B+00A0C93EC93B",
            "G12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC9é",
        ] {
            assert!(s.parse::<Guid>().is_err(), "{s}");
        }
    }
}
