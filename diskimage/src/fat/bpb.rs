//! Boot sector (BPB) parsing and the volume geometry derived from it, following Microsoft's
//! "FAT: General Overview of On-Disk Format" (fatgen103). The FAT type comes from the cluster
//! count, as that document requires; a BPB whose layout disagrees is refused, because that is
//! exactly the volume firmware skips without a word (mkosi's 4096-byte-sector small ESPs).

use super::error::FatError;
use crate::io_util::{le16, le32};

/// FAT variant, by cluster count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    /// Fewer than 4085 clusters; 12-bit entries.
    Fat12,
    /// 4085..65525 clusters; 16-bit entries.
    Fat16,
    /// 65525 clusters or more; 28-bit entries.
    Fat32,
}

impl std::fmt::Display for FatType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        })
    }
}

/// Volume layout. All offsets are volume-relative bytes; every value was range-checked so the
/// `u64` arithmetic in the methods cannot overflow (largest product is below 2^53).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    /// FAT variant.
    pub fat_type: FatType,
    /// Logical sector size: 512, 1024, 2048 or 4096.
    pub bytes_per_sector: u32,
    /// Cluster size in bytes.
    pub cluster_size: u32,
    /// Sectors before the first FAT.
    pub reserved_sectors: u32,
    /// Number of FAT copies.
    pub num_fats: u32,
    /// Sectors per FAT copy.
    pub fat_sectors: u32,
    /// Which FAT copy is read (FAT32 may disable mirroring and name one).
    pub active_fat: u32,
    /// Root directory entries (FAT12/16; 0 on FAT32).
    pub root_entries: u32,
    /// Sectors on the volume.
    pub total_sectors: u32,
    /// Data clusters; valid cluster numbers are 2..=cluster_count+1.
    pub cluster_count: u32,
    /// First cluster of the root directory (FAT32; 0 otherwise).
    pub root_cluster: u32,
}

impl Geometry {
    /// Highest valid cluster number.
    pub fn max_cluster(&self) -> u32 {
        self.cluster_count.saturating_add(1)
    }

    /// Bytes the boot sector says the volume spans.
    pub fn volume_bytes(&self) -> u64 {
        u64::from(self.total_sectors) * u64::from(self.bytes_per_sector)
    }

    /// Offset of the FAT copy in use.
    pub fn fat_offset(&self) -> u64 {
        let sectors = u64::from(self.reserved_sectors)
            + u64::from(self.active_fat) * u64::from(self.fat_sectors);
        sectors * u64::from(self.bytes_per_sector)
    }

    /// Bytes in one FAT copy.
    pub fn fat_bytes(&self) -> u64 {
        u64::from(self.fat_sectors) * u64::from(self.bytes_per_sector)
    }

    /// Offset of the fixed FAT12/16 root directory.
    pub fn root_dir_offset(&self) -> u64 {
        let sectors = u64::from(self.reserved_sectors)
            + u64::from(self.num_fats) * u64::from(self.fat_sectors);
        sectors * u64::from(self.bytes_per_sector)
    }

    /// Bytes of the fixed FAT12/16 root directory.
    pub fn root_dir_bytes(&self) -> u64 {
        u64::from(self.root_entries) * 32
    }

    fn root_dir_sectors(&self) -> u64 {
        self.root_dir_bytes()
            .div_ceil(u64::from(self.bytes_per_sector))
    }

    /// Offset of cluster 2.
    pub fn data_offset(&self) -> u64 {
        self.root_dir_offset() + self.root_dir_sectors() * u64::from(self.bytes_per_sector)
    }

    /// Bytes in the data area (clusters only, not the slack after the last one).
    pub fn data_bytes(&self) -> u64 {
        u64::from(self.cluster_count) * u64::from(self.cluster_size)
    }

    /// Offset of a cluster; callers pass only clusters in 2..=max_cluster.
    pub fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset() + u64::from(cluster.saturating_sub(2)) * u64::from(self.cluster_size)
    }
}

fn bad(reason: String) -> FatError {
    FatError::BadBootSector { reason }
}

/// Parses sector 0 (at least 512 bytes) into a checked geometry.
pub fn parse(bs: &[u8]) -> Result<Geometry, FatError> {
    if bs.len() < 512 || bs.get(510..512) != Some([0x55, 0xAA].as_slice()) {
        return Err(bad("boot signature 55 AA missing at byte 510".into()));
    }
    let bps = u32::from(le16(bs, 11));
    if !matches!(bps, 512 | 1024 | 2048 | 4096) {
        return Err(bad(format!(
            "bytes per sector (offset 11) is {bps}, not 512, 1024, 2048 or 4096"
        )));
    }
    let spc = u32::from(bs.get(13).copied().unwrap_or(0));
    if !spc.is_power_of_two() || spc > 128 {
        return Err(bad(format!(
            "sectors per cluster (offset 13) is {spc}, not a power of two up to 128"
        )));
    }
    let reserved = u32::from(le16(bs, 14));
    if reserved == 0 {
        return Err(bad("reserved sector count (offset 14) is 0".into()));
    }
    let num_fats = u32::from(bs.get(16).copied().unwrap_or(0));
    if num_fats == 0 {
        return Err(bad("number of FATs (offset 16) is 0".into()));
    }
    let media = bs.get(21).copied().unwrap_or(0);
    if media != 0xF0 && media < 0xF8 {
        return Err(bad(format!(
            "media descriptor (offset 21) is {media:#04x}, not 0xF0 or 0xF8..=0xFF"
        )));
    }
    let root_entries = u32::from(le16(bs, 17));
    let tot16 = u32::from(le16(bs, 19));
    let total = if tot16 != 0 { tot16 } else { le32(bs, 32) };
    let fat16_size = u32::from(le16(bs, 22));
    let fat32_layout = fat16_size == 0;
    let fat_sectors = if fat32_layout {
        le32(bs, 36)
    } else {
        fat16_size
    };
    if total == 0 || fat_sectors == 0 {
        return Err(bad(format!(
            "total sectors ({total}) or sectors per FAT ({fat_sectors}) is 0"
        )));
    }
    let root_sectors = (u64::from(root_entries) * 32).div_ceil(u64::from(bps));
    let meta = u64::from(reserved) + u64::from(num_fats) * u64::from(fat_sectors) + root_sectors;
    let data_sectors = u64::from(total).checked_sub(meta).filter(|&d| d > 0);
    let Some(data_sectors) = data_sectors else {
        return Err(bad(format!(
            "reserved, FAT and root directory sectors ({meta}) leave no data area in {total} sectors"
        )));
    };
    // data_sectors < 2^32, so the count fits in u32.
    let clusters = u32::try_from(data_sectors / u64::from(spc)).unwrap_or(u32::MAX);
    let fat_type = match clusters {
        0..4085 => FatType::Fat12,
        4085..65525 => FatType::Fat16,
        _ => FatType::Fat32,
    };
    check_layout(fat_type, fat32_layout, clusters, root_entries)?;
    let mut g = Geometry {
        fat_type,
        bytes_per_sector: bps,
        cluster_size: bps * spc,
        reserved_sectors: reserved,
        num_fats,
        fat_sectors,
        active_fat: 0,
        root_entries,
        total_sectors: total,
        cluster_count: clusters,
        root_cluster: 0,
    };
    if fat_type == FatType::Fat32 {
        fat32_fields(bs, &mut g)?;
    }
    check_fat_size(&g)?;
    Ok(g)
}

fn check_layout(
    t: FatType,
    fat32_layout: bool,
    clusters: u32,
    root_entries: u32,
) -> Result<(), FatError> {
    let by_count = match t {
        FatType::Fat12 => "FAT12",
        FatType::Fat16 => "FAT16",
        FatType::Fat32 => "FAT32",
    };
    if fat32_layout != (t == FatType::Fat32) {
        let layout = if fat32_layout { "FAT32" } else { "FAT12/FAT16" };
        return Err(FatError::TypeMismatch {
            layout,
            clusters,
            by_count,
        });
    }
    if fat32_layout && root_entries != 0 {
        return Err(bad(format!(
            "FAT32 volume has {root_entries} fixed root entries (offset 17), must be 0"
        )));
    }
    if !fat32_layout && root_entries == 0 {
        return Err(bad(format!(
            "{by_count} volume has no root directory entries (offset 17)"
        )));
    }
    Ok(())
}

fn fat32_fields(bs: &[u8], g: &mut Geometry) -> Result<(), FatError> {
    let ext_flags = le16(bs, 40);
    if ext_flags & 0x80 != 0 {
        g.active_fat = u32::from(ext_flags & 0x0F);
        if g.active_fat >= g.num_fats {
            return Err(bad(format!(
                "active FAT {} (offset 40) does not exist: only {} FATs",
                g.active_fat, g.num_fats
            )));
        }
    }
    g.root_cluster = le32(bs, 44);
    if g.root_cluster < 2 || g.root_cluster > g.max_cluster() {
        return Err(bad(format!(
            "root directory cluster (offset 44) is {}, outside 2..={}",
            g.root_cluster,
            g.max_cluster()
        )));
    }
    Ok(())
}

/// The FAT must have an entry for every cluster, or chains could point past its end.
fn check_fat_size(g: &Geometry) -> Result<(), FatError> {
    let entries = u64::from(g.max_cluster()) + 1;
    let needed = match g.fat_type {
        FatType::Fat12 => (entries * 3).div_ceil(2),
        FatType::Fat16 => entries * 2,
        FatType::Fat32 => entries * 4,
    };
    if g.fat_bytes() < needed {
        return Err(bad(format!(
            "a FAT of {} bytes cannot hold {} {} entries ({needed} bytes)",
            g.fat_bytes(),
            entries,
            g.fat_type
        )));
    }
    Ok(())
}
