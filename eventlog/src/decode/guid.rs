//! EFI_GUID: 16 bytes, the first three fields little-endian.
//!
//! Logs store GUIDs in this mixed-endian layout; people and tpm2-tools write them in the
//! registry format (`8be4df61-93ca-11d2-aa0d-00e098032b8c`). A few well-known GUIDs get names
//! so a decoded PCR 7 reads as "x509 signed by ..." rather than a wall of hex.

use std::fmt;

/// An EFI_GUID as stored in a log.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Builds a GUID from its registry-format fields.
    pub const fn from_fields(a: u32, b: u16, c: u16, d: [u8; 8]) -> Self {
        let a = a.to_le_bytes();
        let b = b.to_le_bytes();
        let c = c.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ])
    }

    /// The name of a well-known GUID, if this is one.
    pub fn well_known_name(&self) -> Option<&'static str> {
        WELL_KNOWN
            .iter()
            .find(|(g, _)| g == self)
            .map(|(_, name)| *name)
    }
}

/// EFI_GLOBAL_VARIABLE: SecureBoot, PK, KEK, Boot####, BootOrder.
pub const EFI_GLOBAL_VARIABLE: Guid = Guid::from_fields(
    0x8be4df61,
    0x93ca,
    0x11d2,
    [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
);
/// EFI_IMAGE_SECURITY_DATABASE_GUID: db, dbx.
pub const EFI_IMAGE_SECURITY_DATABASE: Guid = Guid::from_fields(
    0xd719b2cb,
    0x3d3a,
    0x4596,
    [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f],
);
/// EFI_CERT_X509_GUID: a signature list of DER certificates.
pub const EFI_CERT_X509: Guid = Guid::from_fields(
    0xa5c059a1,
    0x94e4,
    0x4aa7,
    [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
);
/// EFI_CERT_SHA256_GUID: a signature list of SHA-256 image hashes.
pub const EFI_CERT_SHA256: Guid = Guid::from_fields(
    0xc1c41626,
    0x504c,
    0x4092,
    [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28],
);

const WELL_KNOWN: &[(Guid, &str)] = &[
    (EFI_GLOBAL_VARIABLE, "EFI_GLOBAL_VARIABLE"),
    (EFI_IMAGE_SECURITY_DATABASE, "EFI_IMAGE_SECURITY_DATABASE"),
    (EFI_CERT_X509, "EFI_CERT_X509"),
    (EFI_CERT_SHA256, "EFI_CERT_SHA256"),
    (
        Guid::from_fields(
            0x826ca512,
            0xcf10,
            0x4ac9,
            [0xb1, 0x87, 0xbe, 0x01, 0x49, 0x66, 0x31, 0xbd],
        ),
        "EFI_CERT_SHA1",
    ),
    (
        Guid::from_fields(
            0x3c5766e8,
            0x269c,
            0x4e34,
            [0xaa, 0x14, 0xed, 0x77, 0x6e, 0x85, 0xb3, 0xb6],
        ),
        "EFI_CERT_RSA2048",
    ),
    (
        Guid::from_fields(
            0x3bd2a492,
            0x96c0,
            0x4079,
            [0xb4, 0x20, 0xfc, 0xf9, 0x8e, 0xf1, 0x03, 0xed],
        ),
        "EFI_CERT_X509_SHA256",
    ),
    (
        Guid::from_fields(
            0x7076876e,
            0x80c2,
            0x4ee6,
            [0xaa, 0xd2, 0x28, 0xb3, 0x49, 0xa6, 0x86, 0x5b],
        ),
        "EFI_CERT_X509_SHA384",
    ),
    (
        Guid::from_fields(
            0x446dbf63,
            0x2502,
            0x4cda,
            [0xbc, 0xfa, 0x24, 0x65, 0xd2, 0xb0, 0xfe, 0x9d],
        ),
        "EFI_CERT_X509_SHA512",
    ),
    (
        Guid::from_fields(
            0x77fa9abd,
            0x0359,
            0x4d32,
            [0xbd, 0x60, 0x28, 0xf4, 0xe7, 0x8f, 0x78, 0x4b],
        ),
        "MICROSOFT",
    ),
    (
        Guid::from_fields(
            0x605dab50,
            0xe046,
            0x4300,
            [0xab, 0xb6, 0x3d, 0xd8, 0x10, 0xdd, 0x8b, 0x23],
        ),
        "SHIM_LOCK",
    ),
];

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        b[10..].iter().try_for_each(|x| write!(f, "{x:02x}"))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_endian_display() {
        let raw: [u8; 16] = hex::decode("61dfe48bca93d211aa0d00e098032b8c")
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(Guid(raw), EFI_GLOBAL_VARIABLE);
        assert_eq!(
            EFI_GLOBAL_VARIABLE.to_string(),
            "8be4df61-93ca-11d2-aa0d-00e098032b8c"
        );
        assert_eq!(EFI_CERT_X509.well_known_name(), Some("EFI_CERT_X509"));
    }
}
