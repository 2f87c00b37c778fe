//! UEFI_IMAGE_LOAD_EVENT: the data of EV_EFI_BOOT_SERVICES_APPLICATION/DRIVER and
//! EV_EFI_RUNTIME_SERVICES_DRIVER. The digest is the image's Authenticode hash; the data only
//! says where the image was loaded and from which device path, which is what tells apart
//! the UKI (`\EFI\BOOT\BOOTX64.EFI`) from the kernel systemd-stub loads out of memory.

use std::fmt;

use super::device_path;
use crate::bytes::Cursor;

/// A decoded UEFI_IMAGE_LOAD_EVENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLoad {
    /// ImageLocationInMemory.
    pub location: u64,
    /// ImageLengthInMemory.
    pub length: u64,
    /// ImageLinkTimeAddress.
    pub link_time_address: u64,
    /// The device path as text.
    pub device_path: String,
}

/// Parses UEFI_IMAGE_LOAD_EVENT; `None` if LengthOfDevicePath disagrees with `data`.
pub fn parse(data: &[u8]) -> Option<ImageLoad> {
    let mut c = Cursor::new(data);
    let location = c.u64()?;
    let length = c.u64()?;
    let link_time_address = c.u64()?;
    let path_len = usize::try_from(c.u64()?).ok()?;
    let path = c.take(path_len)?;
    if !c.is_empty() {
        return None;
    }
    Some(ImageLoad {
        location,
        length,
        link_time_address,
        device_path: device_path::to_text(path),
    })
}

impl fmt::Display for ImageLoad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (loaded at 0x{:x}, {} bytes)",
            self.device_path, self.location, self.length
        )
    }
}
