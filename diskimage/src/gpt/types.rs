//! Partition type GUIDs that matter to Nacre, named as in the UAPI Discoverable Partitions
//! Specification (DPS). systemd-repart and mkosi assign these; `nacre-measure` finds the ESP by
//! its type, and `nacre-image inspect` shows the names. Values checked against util-linux's
//! `sfdisk --label gpt --list-types` in the tests.

use crate::guid::Guid;

/// EFI System Partition.
pub const ESP: Guid = Guid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B);
/// Extended Boot Loader Partition (XBOOTLDR).
pub const XBOOTLDR: Guid = Guid::from_u128(0xBC13C2FF_59E6_4262_A352_B275FD6F7172);
/// Root partition, x86-64.
pub const ROOT_X86_64: Guid = Guid::from_u128(0x4F68BCE3_E8CD_4DB1_96E7_FBCAF984B709);
/// dm-verity hash partition for the x86-64 root.
pub const ROOT_VERITY_X86_64: Guid = Guid::from_u128(0x2C7357ED_EBD2_46D9_AEC1_23D437EC2BF5);
/// Signature partition (PKCS#7 over the root hash) for the x86-64 root verity.
pub const ROOT_VERITY_SIG_X86_64: Guid = Guid::from_u128(0x41092B05_9FC8_4523_994F_2DEF0408B176);
/// `/usr` partition, x86-64.
pub const USR_X86_64: Guid = Guid::from_u128(0x8484680C_9521_48C6_9C11_B0720656F69E);
/// dm-verity hash partition for the x86-64 `/usr`.
pub const USR_VERITY_X86_64: Guid = Guid::from_u128(0x77FF5F63_E7B6_4633_ACF4_1565B864C0E6);
/// Signature partition for the x86-64 `/usr` verity.
pub const USR_VERITY_SIG_X86_64: Guid = Guid::from_u128(0xE7BB33FB_06CF_4E81_8273_E543B413E2E2);
/// `/var` partition.
pub const VAR: Guid = Guid::from_u128(0x4D21B016_B534_45C2_A9FB_5C16E091FD2D);
/// `/var/tmp` partition.
pub const TMP: Guid = Guid::from_u128(0x7EC6F557_3BC5_4ACA_B293_16EF5DF639D1);
/// Generic Linux data partition.
pub const LINUX_GENERIC: Guid = Guid::from_u128(0x0FC63DAF_8483_4772_8E79_3D69D8477DE4);
/// Swap.
pub const SWAP: Guid = Guid::from_u128(0x0657FD6D_A4AB_43C4_84E5_0933C84B4F4F);
/// `/home` partition.
pub const HOME: Guid = Guid::from_u128(0x933AC7E1_2EB4_4F13_B844_0E14E2AEF915);
/// `/srv` partition.
pub const SRV: Guid = Guid::from_u128(0x3B8F8425_20E0_4F3B_907F_1A25A76F98E8);
/// BIOS boot partition (GRUB's core image); not DPS, but common on hybrid images.
pub const BIOS_BOOT: Guid = Guid::from_u128(0x21686148_6449_6E6F_744E_656564454649);

/// Every known type with its DPS identifier (the name systemd-repart's `Type=` takes).
pub const KNOWN_TYPES: &[(Guid, &str)] = &[
    (ESP, "esp"),
    (XBOOTLDR, "xbootldr"),
    (ROOT_X86_64, "root-x86-64"),
    (ROOT_VERITY_X86_64, "root-x86-64-verity"),
    (ROOT_VERITY_SIG_X86_64, "root-x86-64-verity-sig"),
    (USR_X86_64, "usr-x86-64"),
    (USR_VERITY_X86_64, "usr-x86-64-verity"),
    (USR_VERITY_SIG_X86_64, "usr-x86-64-verity-sig"),
    (VAR, "var"),
    (TMP, "tmp"),
    (LINUX_GENERIC, "linux-generic"),
    (SWAP, "swap"),
    (HOME, "home"),
    (SRV, "srv"),
    (BIOS_BOOT, "bios-boot"),
];

/// The DPS name of a partition type, or `None` for types Nacre does not know.
pub fn type_name(guid: &Guid) -> Option<&'static str> {
    KNOWN_TYPES
        .iter()
        .find(|(g, _)| g == guid)
        .map(|&(_, name)| name)
}
