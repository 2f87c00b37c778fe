//! Human-readable decoding of event data, for listings and for diffs between two boots.
//!
//! The digest, not the data, is what gets extended, so the data is untrusted decoration:
//! decoding never fails. Data that is not what its event type promises shows as hex with a
//! note saying why, so a listing of a hostile log still prints.

pub mod device_path;
pub mod gpt;
pub mod guid;
pub mod image;
pub(crate) mod text;
pub mod variable;

use std::fmt;

pub use gpt::GptData;
pub use guid::Guid;
pub use image::ImageLoad;
pub use variable::{UefiVariable, VariableContents};

use crate::bytes::Cursor;
use crate::tcg::{EventType, SpecIdEvent};

/// Signature of the EV_NO_ACTION event that records the TPM's startup locality.
pub const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";

/// Event data, decoded according to its event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventData {
    /// EV_NO_ACTION "Spec ID Event03".
    SpecId(SpecIdEvent),
    /// EV_NO_ACTION "StartupLocality": PCR 0 starts at this locality instead of zero.
    StartupLocality(u8),
    /// EV_SEPARATOR: 0 normally, 0xFFFFFFFF when the firmware reports an error.
    Separator(u32),
    /// A string (EV_ACTION, EV_EFI_ACTION, EV_IPL, EV_S_CRTM_VERSION, EV_POST_CODE).
    Text {
        /// The string without trailing NULs.
        text: String,
        /// Whether it was stored as UTF-16LE (systemd-stub, EDK2) rather than ASCII.
        utf16: bool,
    },
    /// EV_EFI_VARIABLE_*: UEFI_VARIABLE_DATA.
    Variable(UefiVariable),
    /// EV_EFI_BOOT_SERVICES_APPLICATION/DRIVER, EV_EFI_RUNTIME_SERVICES_DRIVER.
    ImageLoad(ImageLoad),
    /// EV_EVENT_TAG: TCG_PCClientTaggedEvent.
    Tagged {
        /// taggedEventID.
        id: u32,
        /// taggedEventData.
        data: Vec<u8>,
    },
    /// EV_EFI_PLATFORM_FIRMWARE_BLOB(2), EV_POST_CODE blobs.
    FirmwareBlob {
        /// BlobDescription (BLOB2 only).
        description: Option<String>,
        /// BlobBase.
        base: u64,
        /// BlobLength.
        length: u64,
    },
    /// EV_EFI_HANDOFF_TABLES(2): configuration table GUIDs and addresses.
    HandoffTables {
        /// TableDescription (TABLES2 only).
        description: Option<String>,
        /// VendorGuid and VendorTable of each table.
        tables: Vec<(Guid, u64)>,
    },
    /// EV_EFI_GPT_EVENT.
    Gpt(GptData),
    /// Not decoded: the bytes, and why if the type promised something else.
    Raw {
        /// The event data.
        data: Vec<u8>,
        /// Why it was not decoded (None for types this crate does not decode).
        note: Option<String>,
    },
}

/// Decodes `data` according to `event_type`. Never fails.
pub fn decode(event_type: EventType, data: &[u8]) -> EventData {
    let raw = |note: &str| EventData::Raw {
        data: data.to_vec(),
        note: Some(note.to_owned()),
    };
    match event_type {
        EventType::NoAction => no_action(data),
        EventType::Separator => match <[u8; 4]>::try_from(data) {
            Ok(b) => EventData::Separator(u32::from_le_bytes(b)),
            Err(_) => raw("separator is not 4 bytes"),
        },
        EventType::Action | EventType::EfiAction => {
            text_data(data, false).unwrap_or_else(|| raw("action is not text"))
        }
        EventType::Ipl | EventType::SCrtmVersion => {
            text_data(data, true).unwrap_or_else(|| raw("not text"))
        }
        EventType::PostCode => text_data(data, false)
            .or_else(|| blob(data, false))
            .unwrap_or_else(|| raw("neither text nor a firmware blob")),
        EventType::EfiVariableDriverConfig
        | EventType::EfiVariableBoot
        | EventType::EfiVariableBoot2
        | EventType::EfiVariableAuthority => {
            variable::parse(data, event_type == EventType::EfiVariableAuthority)
                .map_or_else(|| raw("malformed UEFI_VARIABLE_DATA"), EventData::Variable)
        }
        EventType::EfiBootServicesApplication
        | EventType::EfiBootServicesDriver
        | EventType::EfiRuntimeServicesDriver => image::parse(data).map_or_else(
            || raw("malformed UEFI_IMAGE_LOAD_EVENT"),
            EventData::ImageLoad,
        ),
        EventType::EventTag => {
            tagged(data).unwrap_or_else(|| raw("malformed TCG_PCClientTaggedEvent"))
        }
        EventType::EfiPlatformFirmwareBlob => {
            blob(data, false).unwrap_or_else(|| raw("malformed UEFI_PLATFORM_FIRMWARE_BLOB"))
        }
        EventType::EfiPlatformFirmwareBlob2 => {
            blob(data, true).unwrap_or_else(|| raw("malformed UEFI_PLATFORM_FIRMWARE_BLOB2"))
        }
        EventType::EfiHandoffTables => {
            handoff(data, false).unwrap_or_else(|| raw("malformed UEFI_HANDOFF_TABLE_POINTERS"))
        }
        EventType::EfiHandoffTables2 => {
            handoff(data, true).unwrap_or_else(|| raw("malformed UEFI_HANDOFF_TABLE_POINTERS2"))
        }
        EventType::EfiGptEvent => {
            gpt::parse(data).map_or_else(|| raw("malformed UEFI_GPT_DATA"), EventData::Gpt)
        }
        _ => EventData::Raw {
            data: data.to_vec(),
            note: None,
        },
    }
}

fn no_action(data: &[u8]) -> EventData {
    let sig = data.get(..16);
    if sig == Some(crate::tcg::spec_id::SIGNATURE) {
        if let Ok(s) = SpecIdEvent::parse(data, 0) {
            return EventData::SpecId(s);
        }
    }
    if sig == Some(STARTUP_LOCALITY_SIGNATURE) {
        if let [locality] = data.get(16..).unwrap_or(&[]) {
            return EventData::StartupLocality(*locality);
        }
    }
    let note = match sig.and_then(text::utf8) {
        Some(s) if !s.is_empty() => format!("EV_NO_ACTION {s:?} not decoded"),
        _ => "unrecognized EV_NO_ACTION".to_owned(),
    };
    EventData::Raw {
        data: data.to_vec(),
        note: Some(note),
    }
}

/// Text in either encoding; UTF-16 first when `utf16_first` (and only Latin-1 UTF-16).
fn text_data(data: &[u8], utf16_first: bool) -> Option<EventData> {
    let as16 = || text::utf16(data, true).map(|text| EventData::Text { text, utf16: true });
    let as8 = || text::utf8(data).map(|text| EventData::Text { text, utf16: false });
    if utf16_first {
        as16().or_else(as8)
    } else {
        as8().or_else(as16)
    }
}

fn tagged(data: &[u8]) -> Option<EventData> {
    let mut c = Cursor::new(data);
    let id = c.u32()?;
    let size = usize::try_from(c.u32()?).ok()?;
    let body = c.take(size)?;
    c.is_empty().then(|| EventData::Tagged {
        id,
        data: body.to_vec(),
    })
}

/// The optional length-prefixed description of the *2 (blob/handoff-table) event forms:
/// `Some(None)` when the form has none, `None` when it is truncated.
fn description(c: &mut Cursor<'_>, described: bool) -> Option<Option<String>> {
    if !described {
        return Some(None);
    }
    let n = usize::from(c.u8()?);
    Some(Some(String::from_utf8_lossy(c.take(n)?).into_owned()))
}

fn blob(data: &[u8], described: bool) -> Option<EventData> {
    let mut c = Cursor::new(data);
    let description = description(&mut c, described)?;
    let base = c.u64()?;
    let length = c.u64()?;
    c.is_empty().then_some(EventData::FirmwareBlob {
        description,
        base,
        length,
    })
}

fn handoff(data: &[u8], described: bool) -> Option<EventData> {
    let mut c = Cursor::new(data);
    let description = description(&mut c, described)?;
    let n = c.u64()?;
    // Each entry takes 24 bytes: bound the count by the data before looping.
    if n > (c.remaining() / 24) as u64 {
        return None;
    }
    let mut tables = Vec::new();
    for _ in 0..n {
        tables.push((Guid(c.array()?), c.u64()?));
    }
    c.is_empty().then_some(EventData::HandoffTables {
        description,
        tables,
    })
}

/// Names of the tags the Linux EFI stub uses on PCR 9.
fn tag_name(id: u32) -> Option<&'static str> {
    match id {
        0x8F3B_22EC => Some("INITRD_EVENT_TAG_ID"),
        0x8F3B_22ED => Some("LOAD_OPTIONS_EVENT_TAG_ID"),
        _ => None,
    }
}

impl fmt::Display for EventData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventData::SpecId(s) => {
                let banks: Vec<&str> = s.algorithms.iter().map(|a| a.name()).collect();
                write!(
                    f,
                    "Spec ID Event03: platform class {}, spec {}.{} errata {}, uintn size {}, banks {}",
                    s.platform_class,
                    s.spec_version_major,
                    s.spec_version_minor,
                    s.spec_errata,
                    s.uintn_size,
                    banks.join(",")
                )?;
                if !s.vendor_info.is_empty() {
                    write!(f, ", vendor info {}", text::short_hex(&s.vendor_info))?;
                }
                Ok(())
            }
            EventData::StartupLocality(l) => write!(f, "StartupLocality {l}"),
            EventData::Separator(0xFFFF_FFFF) => f.write_str("error"),
            EventData::Separator(v) => write!(f, "0x{v:08x}"),
            EventData::Text { text, utf16 } => {
                write!(f, "{text:?}")?;
                if *utf16 {
                    f.write_str(" (UTF-16)")?;
                }
                Ok(())
            }
            EventData::Variable(v) => v.fmt(f),
            EventData::ImageLoad(i) => i.fmt(f),
            EventData::Tagged { id, data } => {
                write!(f, "tag 0x{id:08x}")?;
                if let Some(n) = tag_name(*id) {
                    write!(f, " ({n})")?;
                }
                match text::utf8(data) {
                    Some(s) => write!(f, ": {s:?}"),
                    None => write!(f, ": {}", text::short_hex(data)),
                }
            }
            EventData::FirmwareBlob {
                description,
                base,
                length,
            } => {
                if let Some(d) = description {
                    write!(f, "{d:?} ")?;
                }
                write!(f, "base 0x{base:x} length 0x{length:x}")
            }
            EventData::HandoffTables {
                description,
                tables,
            } => {
                if let Some(d) = description {
                    write!(f, "{d:?} ")?;
                }
                write!(f, "{} tables", tables.len())?;
                for (g, addr) in tables {
                    write!(f, "; {g} at 0x{addr:x}")?;
                }
                Ok(())
            }
            EventData::Gpt(g) => g.fmt(f),
            EventData::Raw { data, note } => {
                if let Some(n) = note {
                    write!(f, "[{n}] ")?;
                }
                if data.is_empty() {
                    f.write_str("(no data)")
                } else {
                    f.write_str(&text::short_hex(data))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_types() {
        let d = |t, b: &[u8]| decode(t, b).to_string();
        assert_eq!(d(EventType::Separator, &[0; 4]), "0x00000000");
        assert_eq!(d(EventType::Separator, &[0xff; 4]), "error");
        assert_eq!(
            d(EventType::Separator, &[0; 3]),
            "[separator is not 4 bytes] 000000"
        );
        assert_eq!(
            d(EventType::EfiAction, b"Exit Boot Services Invocation"),
            "\"Exit Boot Services Invocation\""
        );
        let mut loc = STARTUP_LOCALITY_SIGNATURE.to_vec();
        loc.push(3);
        assert_eq!(
            decode(EventType::NoAction, &loc),
            EventData::StartupLocality(3)
        );
        loc.push(0);
        assert!(d(EventType::NoAction, &loc).starts_with("[EV_NO_ACTION \"StartupLocality\""));
        let tag = hex::decode("ec223b8f0d0000004c696e757820696e6974726400").unwrap();
        assert_eq!(
            d(EventType::EventTag, &tag),
            "tag 0x8f3b22ec (INITRD_EVENT_TAG_ID): \"Linux initrd\""
        );
        assert!(d(EventType::EventTag, &tag[..tag.len() - 1]).starts_with("[malformed"));
        assert_eq!(d(EventType::Ipl, b"grub_cmd: boot\0"), "\"grub_cmd: boot\"");
        let blob = [[0u8; 8], 16u64.to_le_bytes()].concat();
        assert_eq!(
            d(EventType::EfiPlatformFirmwareBlob, &blob),
            "base 0x0 length 0x10"
        );
        assert_eq!(
            d(EventType::EfiHandoffTables, &u64::MAX.to_le_bytes()),
            "[malformed UEFI_HANDOFF_TABLE_POINTERS] ffffffffffffffff"
        );
    }
}
