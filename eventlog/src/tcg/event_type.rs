//! Event types of the TCG PC Client Platform Firmware Profile (section 10.4.1).
//!
//! The numeric value is what the log stores; the spec's name is what tpm2-tools prints and
//! what people search for, so `Display` gives the name. Values this crate does not know are
//! kept as [`EventType::Other`] and shown in hex: a newer firmware must not break parsing.

use std::fmt;

macro_rules! event_types {
    ($( $(#[$doc:meta])* $variant:ident = $value:literal => $name:literal, )*) => {
        /// A TCG PC Client event type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType {
            $( $(#[$doc])* $variant, )*
            /// A value not defined by the spec revisions this crate knows.
            Other(u32),
        }

        impl EventType {
            /// Every named event type, in value order.
            pub const NAMED: &'static [EventType] = &[ $( EventType::$variant, )* ];

            /// The value stored in the log.
            pub const fn value(self) -> u32 {
                match self {
                    $( EventType::$variant => $value, )*
                    EventType::Other(v) => v,
                }
            }

            /// The event type for a value from the log; never fails.
            pub const fn from_value(v: u32) -> Self {
                match v {
                    $( $value => EventType::$variant, )*
                    other => EventType::Other(other),
                }
            }

            /// The spec's name ("EV_SEPARATOR"), or `None` for [`EventType::Other`].
            pub const fn name(self) -> Option<&'static str> {
                match self {
                    $( EventType::$variant => Some($name), )*
                    EventType::Other(_) => None,
                }
            }
        }
    };
}

event_types! {
    /// Deprecated; kept for old logs.
    PrebootCert = 0x0000_0000 => "EV_PREBOOT_CERT",
    /// POST code or embedded firmware.
    PostCode = 0x0000_0001 => "EV_POST_CODE",
    /// Reserved ("EV_UNUSED").
    Unused = 0x0000_0002 => "EV_UNUSED",
    /// Information only: never extended (Spec ID, StartupLocality, ...).
    NoAction = 0x0000_0003 => "EV_NO_ACTION",
    /// Marks the end of the pre-OS phase for a PCR.
    Separator = 0x0000_0004 => "EV_SEPARATOR",
    /// An ASCII action string.
    Action = 0x0000_0005 => "EV_ACTION",
    /// A TCG_PCClientTaggedEvent (the Linux EFI stub uses it on PCR 9).
    EventTag = 0x0000_0006 => "EV_EVENT_TAG",
    /// S-CRTM contents.
    SCrtmContents = 0x0000_0007 => "EV_S_CRTM_CONTENTS",
    /// S-CRTM version string.
    SCrtmVersion = 0x0000_0008 => "EV_S_CRTM_VERSION",
    /// CPU microcode update.
    CpuMicrocode = 0x0000_0009 => "EV_CPU_MICROCODE",
    /// Platform configuration flags.
    PlatformConfigFlags = 0x0000_000A => "EV_PLATFORM_CONFIG_FLAGS",
    /// Table of devices.
    TableOfDevices = 0x0000_000B => "EV_TABLE_OF_DEVICES",
    /// Compact hash.
    CompactHash = 0x0000_000C => "EV_COMPACT_HASH",
    /// Initial program load: boot loaders and systemd-stub log descriptions here.
    Ipl = 0x0000_000D => "EV_IPL",
    /// IPL partition data.
    IplPartitionData = 0x0000_000E => "EV_IPL_PARTITION_DATA",
    /// Non-host code (e.g. a management engine).
    NonhostCode = 0x0000_000F => "EV_NONHOST_CODE",
    /// Non-host configuration.
    NonhostConfig = 0x0000_0010 => "EV_NONHOST_CONFIG",
    /// Non-host information.
    NonhostInfo = 0x0000_0011 => "EV_NONHOST_INFO",
    /// Boot device events are omitted.
    OmitBootDeviceEvents = 0x0000_0012 => "EV_OMIT_BOOT_DEVICE_EVENTS",
    /// Base of the EFI event range (not an event itself).
    EfiEventBase = 0x8000_0000 => "EV_EFI_EVENT_BASE",
    /// A UEFI variable that configures the platform (PCR 7: SecureBoot, PK, KEK, db, dbx).
    EfiVariableDriverConfig = 0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
    /// A boot variable (PCR 1: BootOrder, Boot####).
    EfiVariableBoot = 0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
    /// A UEFI application loaded by boot services (PCR 4: Authenticode hash).
    EfiBootServicesApplication = 0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
    /// A boot services driver (PCR 2).
    EfiBootServicesDriver = 0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
    /// A runtime services driver.
    EfiRuntimeServicesDriver = 0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
    /// The GPT of the boot disk (PCR 5).
    EfiGptEvent = 0x8000_0006 => "EV_EFI_GPT_EVENT",
    /// An ASCII action string from firmware.
    EfiAction = 0x8000_0007 => "EV_EFI_ACTION",
    /// A firmware volume (PCR 0): base and length.
    EfiPlatformFirmwareBlob = 0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    /// EFI configuration tables handed to the OS.
    EfiHandoffTables = 0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
    /// A firmware blob with a description.
    EfiPlatformFirmwareBlob2 = 0x8000_000A => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    /// Handoff tables with a description.
    EfiHandoffTables2 = 0x8000_000B => "EV_EFI_HANDOFF_TABLES2",
    /// A boot variable measured with its full data.
    EfiVariableBoot2 = 0x8000_000C => "EV_EFI_VARIABLE_BOOT2",
    /// H-CRTM event.
    EfiHcrtmEvent = 0x8000_0010 => "EV_EFI_HCRTM_EVENT",
    /// The db/MokList entry that authorized a loaded image (PCR 7, Secure Boot on).
    EfiVariableAuthority = 0x8000_00E0 => "EV_EFI_VARIABLE_AUTHORITY",
    /// SPDM firmware blob.
    EfiSpdmFirmwareBlob = 0x8000_00E1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
    /// SPDM firmware configuration.
    EfiSpdmFirmwareConfig = 0x8000_00E2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
    /// SPDM device policy.
    EfiSpdmDevicePolicy = 0x8000_00E3 => "EV_EFI_SPDM_DEVICE_POLICY",
    /// SPDM device authority.
    EfiSpdmDeviceAuthority = 0x8000_00E4 => "EV_EFI_SPDM_DEVICE_AUTHORITY",
}

impl From<u32> for EventType {
    fn from(v: u32) -> Self {
        EventType::from_value(v)
    }
}

impl From<EventType> for u32 {
    fn from(t: EventType) -> u32 {
        t.value()
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "EV_UNKNOWN(0x{:08x})", self.value()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_are_unique() {
        for (i, t) in EventType::NAMED.iter().enumerate() {
            assert_eq!(EventType::from_value(t.value()), *t);
            for u in &EventType::NAMED[i + 1..] {
                assert_ne!(t.value(), u.value());
            }
        }
        assert_eq!(
            EventType::from_value(0x8000_0003),
            EventType::EfiBootServicesApplication
        );
        assert_eq!(EventType::from_value(0x1234), EventType::Other(0x1234));
        assert_eq!(
            EventType::Other(0x1234).to_string(),
            "EV_UNKNOWN(0x00001234)"
        );
        assert_eq!(
            EventType::EfiVariableAuthority.to_string(),
            "EV_EFI_VARIABLE_AUTHORITY"
        );
        assert_eq!(EventType::CompactHash.value(), 0xC);
    }
}
