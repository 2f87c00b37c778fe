//! UEFI_VARIABLE_DATA (the data of EV_EFI_VARIABLE_* events) and what variables contain:
//! EFI_SIGNATURE_LIST for the Secure Boot databases, EFI_SIGNATURE_DATA for the db entry that
//! authorized an image, EFI_LOAD_OPTION for Boot####, and BootOrder.
//!
//! PCR 7 is where a Secure Boot policy shows, and its events are kilobytes of certificates:
//! this module reduces them to what a person comparing two boots needs (which list types,
//! how many entries, whose).

use std::fmt;

use super::device_path;
use super::guid::Guid;
use super::text;
use crate::bytes::Cursor;

/// A decoded UEFI_VARIABLE_DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UefiVariable {
    /// VariableName: the vendor GUID.
    pub guid: Guid,
    /// UnicodeName.
    pub name: String,
    /// VariableData, decoded as far as this crate understands it.
    pub contents: VariableContents,
}

/// What a variable's data was recognized as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariableContents {
    /// PK, KEK, db, dbx, MokList...: a sequence of EFI_SIGNATURE_LIST (empty if unset).
    SignatureLists(Vec<SignatureList>),
    /// EV_EFI_VARIABLE_AUTHORITY: the EFI_SIGNATURE_DATA that verified an image.
    SignatureData {
        /// SignatureOwner.
        owner: Guid,
        /// The signature data (usually a DER certificate).
        data: Vec<u8>,
    },
    /// BootOrder: boot option numbers.
    BootOrder(Vec<u16>),
    /// Boot####: an EFI_LOAD_OPTION.
    LoadOption(LoadOption),
    /// Text (e.g. shim's SbatLevel).
    Text(String),
    /// Anything else, raw.
    Bytes(Vec<u8>),
}

/// One EFI_SIGNATURE_LIST, summarized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureList {
    /// SignatureType (EFI_CERT_X509, EFI_CERT_SHA256, ...).
    pub sig_type: Guid,
    /// Number of EFI_SIGNATURE_DATA entries.
    pub count: usize,
    /// Distinct SignatureOwner GUIDs, in order of first appearance.
    pub owners: Vec<Guid>,
}

/// An EFI_LOAD_OPTION (Boot####).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOption {
    /// Attributes (bit 0: LOAD_OPTION_ACTIVE).
    pub attributes: u32,
    /// Description.
    pub description: String,
    /// FilePathList as text.
    pub device_path: String,
    /// Length of OptionalData.
    pub optional_data_len: usize,
}

/// Parses UEFI_VARIABLE_DATA; `None` if its lengths are inconsistent with `data`.
pub fn parse(data: &[u8], authority: bool) -> Option<UefiVariable> {
    let mut c = Cursor::new(data);
    let guid = Guid(c.array()?);
    let name_chars = usize::try_from(c.u64()?).ok()?;
    let data_len = usize::try_from(c.u64()?).ok()?;
    let name = c.take(name_chars.checked_mul(2)?)?;
    let value = c.take(data_len)?;
    if !c.is_empty() {
        return None;
    }
    let name = String::from_utf16_lossy(&text::le_u16s(name));
    let contents = contents(&name, value, authority);
    Some(UefiVariable {
        guid,
        name,
        contents,
    })
}

fn contents(name: &str, value: &[u8], authority: bool) -> VariableContents {
    let bytes = || VariableContents::Bytes(value.to_vec());
    if authority {
        // db/MokList entries carry an owner GUID before the DER certificate (0x30 SEQUENCE);
        // shim's SbatLevel is text.
        return match (value.get(..16), value.get(16)) {
            (Some(owner), Some(0x30)) => VariableContents::SignatureData {
                owner: Guid(owner.try_into().unwrap_or([0; 16])),
                data: value.get(16..).unwrap_or(&[]).to_vec(),
            },
            _ => text::utf8(value).map_or_else(bytes, VariableContents::Text),
        };
    }
    match name {
        "PK" | "KEK" | "db" | "dbx" | "dbt" | "dbr" | "MokList" | "MokListRT" | "MokListX"
        | "MokListXRT" | "MokListTrusted" => {
            signature_lists(value).map_or_else(bytes, VariableContents::SignatureLists)
        }
        "BootOrder" if value.len() % 2 == 0 => VariableContents::BootOrder(text::le_u16s(value)),
        n if n.len() == 8
            && n.starts_with("Boot")
            && n.get(4..)
                .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())) =>
        {
            load_option(value).map_or_else(bytes, VariableContents::LoadOption)
        }
        _ => bytes(),
    }
}

/// A sequence of EFI_SIGNATURE_LIST filling `data` exactly.
fn signature_lists(data: &[u8]) -> Option<Vec<SignatureList>> {
    let mut c = Cursor::new(data);
    let mut lists = Vec::new();
    while !c.is_empty() {
        let sig_type = Guid(c.array()?);
        let list_size = usize::try_from(c.u32()?).ok()?;
        let header_size = usize::try_from(c.u32()?).ok()?;
        let sig_size = usize::try_from(c.u32()?).ok()?;
        let body = c.take(list_size.checked_sub(28)?)?;
        let entries = body.get(header_size..)?;
        // sig_size >= 16 also rules out a division by zero below.
        if sig_size < 16 || entries.len().checked_rem(sig_size) != Some(0) {
            return None;
        }
        let mut owners: Vec<Guid> = Vec::new();
        for e in entries.chunks_exact(sig_size) {
            let owner = Guid(e.get(..16)?.try_into().ok()?);
            if !owners.contains(&owner) {
                owners.push(owner);
            }
        }
        lists.push(SignatureList {
            sig_type,
            count: entries.len().checked_div(sig_size)?,
            owners,
        });
    }
    Some(lists)
}

fn load_option(data: &[u8]) -> Option<LoadOption> {
    let mut c = Cursor::new(data);
    let attributes = c.u32()?;
    let path_len = usize::from(c.u16()?);
    let mut desc = Vec::new();
    loop {
        match c.u16()? {
            0 => break,
            u => desc.push(u),
        }
    }
    let path = c.take(path_len)?;
    Some(LoadOption {
        attributes,
        description: String::from_utf16_lossy(&desc),
        device_path: device_path::to_text(path),
        optional_data_len: c.remaining(),
    })
}

fn guid_name(g: &Guid) -> String {
    g.well_known_name()
        .map_or_else(|| g.to_string(), |n| n.to_owned())
}

impl fmt::Display for UefiVariable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.name,
            guid_name(&self.guid),
            self.contents
        )
    }
}

impl fmt::Display for VariableContents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VariableContents::SignatureLists(l) if l.is_empty() => f.write_str("empty"),
            VariableContents::SignatureLists(lists) => {
                for (i, l) in lists.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "; " };
                    write!(f, "{sep}{} x{}", guid_name(&l.sig_type), l.count)?;
                    let owners: Vec<String> = l.owners.iter().map(guid_name).collect();
                    if !owners.is_empty() {
                        write!(f, " owner {}", owners.join(","))?;
                    }
                }
                Ok(())
            }
            VariableContents::SignatureData { owner, data } => {
                write!(f, "owner {}, {} bytes", guid_name(owner), data.len())
            }
            VariableContents::BootOrder(o) => {
                let s: Vec<String> = o.iter().map(|n| format!("{n:04X}")).collect();
                f.write_str(&s.join(","))
            }
            VariableContents::LoadOption(o) => {
                write!(f, "{:?} {}", o.description, o.device_path)?;
                if o.attributes & 1 == 0 {
                    f.write_str(" (inactive)")?;
                }
                if o.optional_data_len > 0 {
                    write!(f, " +{} bytes optional data", o.optional_data_len)?;
                }
                Ok(())
            }
            VariableContents::Text(t) => write!(f, "{t:?}"),
            VariableContents::Bytes(b) if b.is_empty() => f.write_str("(no data)"),
            VariableContents::Bytes(b) => f.write_str(&text::short_hex(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, value: &[u8]) -> Vec<u8> {
        let mut v = super::super::guid::EFI_GLOBAL_VARIABLE.0.to_vec();
        v.extend((name.len() as u64).to_le_bytes());
        v.extend((value.len() as u64).to_le_bytes());
        name.encode_utf16().for_each(|u| v.extend(u.to_le_bytes()));
        v.extend(value);
        v
    }

    #[test]
    fn boot_order_and_lengths() {
        let v = parse(&var("BootOrder", &[1, 0, 2, 0]), false).unwrap();
        assert_eq!(v.to_string(), "BootOrder (EFI_GLOBAL_VARIABLE): 0001,0002");
        let mut bad = var("SecureBoot", &[1]);
        bad.push(0);
        assert_eq!(parse(&bad, false), None);
        assert_eq!(parse(&bad[..bad.len() - 2], false), None);
    }

    #[test]
    fn bad_signature_list_falls_back_to_bytes() {
        let mut list = super::super::guid::EFI_CERT_SHA256.0.to_vec();
        list.extend(28u32.to_le_bytes()); // list size: header only
        list.extend(0u32.to_le_bytes());
        list.extend(0u32.to_le_bytes()); // signature size 0: invalid
        let v = parse(&var("db", &list), false).unwrap();
        assert!(matches!(v.contents, VariableContents::Bytes(_)));
        list[24] = 48; // signature size 48 = owner + sha256, 0 entries
        let v = parse(&var("db", &list), false).unwrap();
        assert_eq!(
            v.to_string(),
            "db (EFI_GLOBAL_VARIABLE): EFI_CERT_SHA256 x0"
        );
    }
}
