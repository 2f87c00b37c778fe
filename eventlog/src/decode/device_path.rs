//! EFI_DEVICE_PATH_PROTOCOL to text, following the UEFI "Device Path to Text" forms for the
//! nodes firmware logs actually contain (PciRoot, Pci, Sata, NVMe, HD, file paths, firmware
//! volume files, vendor nodes, offsets).
//!
//! The text is what users compare against `efibootmgr -v` and tpm2_eventlog output; any node
//! not listed is shown generically as `Path(type,subtype,hex)`, and a malformed node ends the
//! text with `<malformed: hex>` instead of failing, since decoding is for display only.

use std::fmt::Write;

use super::guid::Guid;
use super::text;
use crate::bytes::Cursor;

/// Renders a device path (a sequence of nodes ending with End Entire) as text.
pub fn to_text(data: &[u8]) -> String {
    let mut out = String::new();
    let mut c = Cursor::new(data);
    let mut sep = "";
    while !c.is_empty() {
        let start = c.rest();
        let node = (|| {
            let kind = c.u8()?;
            let sub = c.u8()?;
            let len = usize::from(c.u16()?);
            let body = c.take(len.checked_sub(4)?)?;
            Some((kind, sub, body))
        })();
        let Some((kind, sub, body)) = node else {
            let _ = write!(out, "{sep}<malformed: {}>", text::short_hex(start));
            break;
        };
        match (kind, sub) {
            (0x7f, 0xff) => break,
            (0x7f, 0x01) => {
                out.push(',');
                sep = "";
                continue;
            }
            _ => {}
        }
        out.push_str(sep);
        out.push_str(&node_text(kind, sub, body));
        sep = "/";
    }
    out
}

fn guid(b: Option<&[u8]>) -> Option<Guid> {
    Some(Guid(b?.try_into().ok()?))
}

fn node_text(kind: u8, sub: u8, body: &[u8]) -> String {
    let mut c = Cursor::new(body);
    let known = match (kind, sub) {
        (0x01, 0x01) => (|| {
            let func = c.u8()?;
            let dev = c.u8()?;
            Some(format!("Pci(0x{dev:X},0x{func:X})"))
        })(),
        (0x01, 0x04) | (0x03, 0x0a) | (0x04, 0x03) => (|| {
            let g = guid(c.take(16))?;
            let prefix = match kind {
                0x01 => "VenHw",
                0x03 => "VenMsg",
                _ => "VenMedia",
            };
            let rest = c.rest();
            Some(if rest.is_empty() {
                format!("{prefix}({g})")
            } else {
                format!("{prefix}({g},{})", text::short_hex(rest))
            })
        })(),
        (0x02, 0x01) => (|| {
            let hid = c.u32()?;
            let uid = c.u32()?;
            Some(match hid {
                0x0a03_41d0 => format!("PciRoot(0x{uid:X})"),
                0x0a08_41d0 => format!("PcieRoot(0x{uid:X})"),
                _ => format!("Acpi(0x{hid:08X},0x{uid:X})"),
            })
        })(),
        (0x03, 0x02) => (|| Some(format!("Scsi(0x{:X},0x{:X})", c.u16()?, c.u16()?)))(),
        (0x03, 0x12) => (|| {
            Some(format!(
                "Sata(0x{:X},0x{:X},0x{:X})",
                c.u16()?,
                c.u16()?,
                c.u16()?
            ))
        })(),
        (0x03, 0x17) => (|| {
            let nsid = c.u32()?;
            let eui = c.take(8)?;
            Some(format!("NVMe(0x{nsid:X},{})", hex::encode(eui)))
        })(),
        (0x04, 0x01) => (|| {
            let part = c.u32()?;
            let start = c.u64()?;
            let size = c.u64()?;
            let sig = c.take(16)?;
            let _mbr_type = c.u8()?;
            let sig_type = c.u8()?;
            Some(match sig_type {
                2 => format!("HD({part},GPT,{},0x{start:X},0x{size:X})", guid(Some(sig))?),
                1 => {
                    let mbr = u32::from_le_bytes(sig.get(..4)?.try_into().ok()?);
                    format!("HD({part},MBR,0x{mbr:08X},0x{start:X},0x{size:X})")
                }
                _ => format!("HD({part},0x{start:X},0x{size:X})"),
            })
        })(),
        (0x04, 0x04) => text::utf16(body, false),
        (0x04, 0x06) => guid(c.take(16)).map(|g| format!("FvFile({g})")),
        (0x04, 0x07) => guid(c.take(16)).map(|g| format!("Fv({g})")),
        (0x04, 0x08) => (|| {
            let _reserved = c.u32()?;
            Some(format!("Offset(0x{:X},0x{:X})", c.u64()?, c.u64()?))
        })(),
        _ => None,
    };
    known.unwrap_or_else(|| format!("Path({kind},{sub},{})", text::short_hex(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ovmf_paths() {
        // The UKI's path in the fixtures (PCR 4, EV_EFI_BOOT_SERVICES_APPLICATION).
        let p = hex::decode(concat!(
            "02010c00d041030a0000000001010600021f03120a000000ffff0000",
            "040430005c004500460049005c0042004f004f0054005c0042004f004f00540058003600",
            "34002e0045004600490000007fff0400"
        ))
        .unwrap();
        assert_eq!(
            to_text(&p),
            r"PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x0,0xFFFF,0x0)/\EFI\BOOT\BOOTX64.EFI"
        );
        // The kernel systemd-stub 252 loads from memory.
        let p = hex::decode("04031400f8d1c555cd04b5468a20e56cbb3052d07fff0400").unwrap();
        assert_eq!(
            to_text(&p),
            "VenMedia(55c5d1f8-04cd-46b5-8a20-e56cbb3052d0)"
        );
        // Malformed: a node claiming length 2.
        assert_eq!(to_text(&[1, 1, 2, 0]), "<malformed: 01010200>");
        assert_eq!(to_text(&[9, 9, 5, 0, 0xaa]), "Path(9,9,aa)");
    }
}
