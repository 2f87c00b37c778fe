//! The dm-verity root: the verity superblock (the on-disk header `veritysetup format` and
//! systemd-repart write at the start of the hash partition), the device-mapper table built from
//! it and the measured root hash, and the mapping created through device-mapper ioctls.
//!
//! The superblock is untrusted input, but every field that matters (block sizes, data blocks,
//! salt, algorithm) feeds the hash tree: a wrong value gives a tree whose root is not the
//! measured `roothash`, and the kernel refuses every read.

use devicemapper::{DevId, DmName, DmOptions, DmUdevFlags, DM};

/// Size of the superblock; the hash tree starts at the next hash block.
const SB_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub hash_type: u32,
    pub algorithm: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerityError {
    #[error("the hash partition has no dm-verity superblock (signature 'verity')")]
    NoSuperblock,
    #[error("dm-verity superblock: {0}")]
    BadSuperblock(&'static str),
    #[error("device-mapper: {0}")]
    Dm(String),
}

impl Superblock {
    pub fn parse(b: &[u8]) -> Result<Self, VerityError> {
        let b = b.get(..SB_LEN).ok_or(VerityError::NoSuperblock)?;
        if &b[..8] != b"verity\0\0" {
            return Err(VerityError::NoSuperblock);
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let version = u32_at(8);
        if version != 1 {
            return Err(VerityError::BadSuperblock("version is not 1"));
        }
        let hash_type = u32_at(12);
        if hash_type != 1 {
            return Err(VerityError::BadSuperblock(
                "hash type is not 1 (the only one nacre accepts)",
            ));
        }
        let alg_raw = &b[32..64];
        let alg_len = alg_raw.iter().position(|&c| c == 0).unwrap_or(32);
        let algorithm = std::str::from_utf8(&alg_raw[..alg_len])
            .map_err(|_| VerityError::BadSuperblock("algorithm is not text"))?
            .to_string();
        if !matches!(algorithm.as_str(), "sha256" | "sha512") {
            return Err(VerityError::BadSuperblock(
                "algorithm is not sha256 or sha512",
            ));
        }
        let data_block_size = u32_at(64);
        let hash_block_size = u32_at(68);
        for s in [data_block_size, hash_block_size] {
            if !(512..=65536).contains(&s) || !s.is_power_of_two() {
                return Err(VerityError::BadSuperblock(
                    "block size is not a power of two in 512..65536",
                ));
            }
        }
        let data_blocks = u64::from_le_bytes(b[72..80].try_into().unwrap_or([0; 8]));
        if data_blocks == 0 {
            return Err(VerityError::BadSuperblock("no data blocks"));
        }
        // The data area's size in bytes must fit in 64 bits (`data_sectors` multiplies).
        if data_blocks
            .checked_mul(u64::from(data_block_size))
            .is_none()
        {
            return Err(VerityError::BadSuperblock(
                "data area larger than 2^64 bytes",
            ));
        }
        let salt_size = u16::from_le_bytes([b[80], b[81]]) as usize;
        let salt = b
            .get(88..88 + salt_size)
            .filter(|_| salt_size <= 256)
            .ok_or(VerityError::BadSuperblock("salt size above 256"))?
            .to_vec();
        Ok(Superblock {
            hash_type,
            algorithm,
            data_block_size,
            hash_block_size,
            data_blocks,
            salt,
        })
    }

    /// The data area's length in 512-byte sectors.
    pub fn data_sectors(&self) -> u64 {
        self.data_blocks * u64::from(self.data_block_size) / 512
    }

    /// The `verity` target parameters: `<version> <data dev> <hash dev> <data bs> <hash bs>
    /// <#data blocks> <hash start block> <alg> <root hash> <salt> <#opt> <opts>`.
    pub fn table_params(
        &self,
        data_dev: &str,
        hash_dev: &str,
        roothash: &str,
        on_corruption: &str,
    ) -> String {
        let salt = if self.salt.is_empty() {
            "-".to_string()
        } else {
            hex::encode(&self.salt)
        };
        format!(
            "{} {data_dev} {hash_dev} {} {} {} 1 {} {roothash} {salt} 1 {on_corruption}",
            self.hash_type,
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.algorithm
        )
    }
}

/// Create a read-only verity mapping `name` and return its device number (major, minor).
pub fn create(name: &str, sectors: u64, params: &str) -> Result<(u32, u32), VerityError> {
    let dm_err = |what: &str, e: devicemapper::DmError| VerityError::Dm(format!("{what}: {e}"));
    let dm = DM::new().map_err(|e| dm_err("opening /dev/mapper/control", e))?;
    let dm_name = DmName::new(name).map_err(|e| dm_err("name", e))?;
    let id = DevId::Name(dm_name);
    // Nothing listens for udev events in the initrd: tell device-mapper not to wait for them.
    let opts = || {
        DmOptions::default().set_udev_flags(
            DmUdevFlags::DM_UDEV_DISABLE_DM_RULES_FLAG
                | DmUdevFlags::DM_UDEV_DISABLE_SUBSYSTEM_RULES_FLAG
                | DmUdevFlags::DM_UDEV_DISABLE_DISK_RULES_FLAG
                | DmUdevFlags::DM_UDEV_DISABLE_OTHER_RULES_FLAG,
        )
    };
    dm.device_create(
        dm_name,
        None,
        opts().set_flags(devicemapper::DmFlags::DM_READONLY),
    )
    .map_err(|e| dm_err("create", e))?;
    let table = [(0u64, sectors, "verity".to_string(), params.to_string())];
    let result = dm
        .table_load(
            &id,
            &table,
            opts().set_flags(devicemapper::DmFlags::DM_READONLY),
        )
        .and_then(|_| dm.device_suspend(&id, opts()));
    match result {
        Ok(info) => {
            let dev = info.device();
            Ok((dev.major, dev.minor))
        }
        Err(e) => {
            let _ = dm.device_remove(&id, opts());
            Err(dm_err(
                "loading the verity table (is the root hash right?)",
                e,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[..8].copy_from_slice(b"verity\0\0");
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        b[32..38].copy_from_slice(b"sha256");
        b[64..68].copy_from_slice(&4096u32.to_le_bytes());
        b[68..72].copy_from_slice(&4096u32.to_le_bytes());
        b[72..80].copy_from_slice(&100u64.to_le_bytes());
        b[80..82].copy_from_slice(&4u16.to_le_bytes());
        b[88..92].copy_from_slice(&[1, 2, 3, 4]);
        b
    }

    #[test]
    fn table_from_superblock() {
        let s = Superblock::parse(&sb()).unwrap();
        assert_eq!(s.data_sectors(), 800);
        assert_eq!(
            s.table_params("254:1", "254:2", "ab", "panic_on_corruption"),
            "1 254:1 254:2 4096 4096 100 1 sha256 ab 01020304 1 panic_on_corruption"
        );
    }

    #[test]
    fn hostile_superblocks_are_refused() {
        assert_eq!(Superblock::parse(&[0; 10]), Err(VerityError::NoSuperblock));
        for (at, val) in [(8usize, 2u8), (12, 0), (32, b'm'), (65, 0x11), (80, 0xff)] {
            let mut b = sb();
            b[at] = val;
            if at == 80 {
                b[81] = 0xff;
            }
            assert!(Superblock::parse(&b).is_err(), "byte {at}");
        }
    }

    /// Found by the `verity_superblock` fuzz target: a data block count whose byte size does
    /// not fit in 64 bits made `data_sectors` overflow (a wrong table size in a release build,
    /// a panic of PID 1 in a debug one). Refused at parse; the largest that fits is exact.
    #[test]
    fn a_data_area_beyond_64_bits_is_refused() {
        let mut b = sb();
        b[72..80].copy_from_slice(&(u64::MAX / 4096 + 1).to_le_bytes());
        assert_eq!(
            Superblock::parse(&b),
            Err(VerityError::BadSuperblock(
                "data area larger than 2^64 bytes"
            ))
        );
        b[72..80].copy_from_slice(&(u64::MAX / 4096).to_le_bytes());
        let s = Superblock::parse(&b).unwrap();
        assert_eq!(s.data_sectors(), (u64::MAX / 4096) * 8);
    }
}
