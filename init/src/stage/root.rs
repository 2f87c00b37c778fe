//! Finding the root and its verity partitions (Discoverable Partitions Specification), opening
//! the verified root, and switching to it.

use super::verity::{self, Superblock};
use nacre_diskimage::gpt::{types, Gpt, Partition};
use nacre_diskimage::Guid;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("no roothash= on the measured command line: refusing an unverified root")]
    NoRootHash,
    #[error("no disk with a root partition and a root-verity partition appeared within {0} s")]
    NotFound(u64),
    #[error("{0}")]
    Ambiguous(String),
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Verity(#[from] verity::VerityError),
    #[error("mounting the verified root: {0}")]
    Mount(String),
    #[error("the verified root has no {0}: cannot continue on it")]
    NoInit(String),
}

/// The pair of partitions of a verified root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPair {
    pub disk: String,
    pub root: Partition,
    pub verity: Partition,
}

/// The partition UUIDs the DPS derives from a root hash: the root partition's is its first 128
/// bits, the verity partition's its last 128 bits.
pub fn derived_uuids(roothash: &str) -> Option<(Guid, Guid)> {
    let h = hex::decode(roothash).ok()?;
    if h.len() < 32 {
        return None;
    }
    let text = |b: &[u8]| {
        let x = hex::encode(b);
        format!(
            "{}-{}-{}-{}-{}",
            &x[..8],
            &x[8..12],
            &x[12..16],
            &x[16..20],
            &x[20..32]
        )
    };
    let first = text(&h[..16]).parse().ok()?;
    let last = text(&h[h.len() - 16..]).parse().ok()?;
    Some((first, last))
}

/// Pick the root and verity partitions of one disk's GPT. Partitions whose UUIDs are derived
/// from the root hash win; otherwise there must be exactly one of each type.
pub fn pick(disk: &str, gpt: &Gpt, roothash: &str) -> Result<Option<RootPair>, RootError> {
    let roots: Vec<&Partition> = gpt.partitions_of_type(&types::ROOT_X86_64).collect();
    let veritys: Vec<&Partition> = gpt.partitions_of_type(&types::ROOT_VERITY_X86_64).collect();
    if roots.is_empty() || veritys.is_empty() {
        return Ok(None);
    }
    if let Some((r, v)) = derived_uuids(roothash) {
        let root = roots.iter().find(|p| p.unique_guid == r);
        let ver = veritys.iter().find(|p| p.unique_guid == v);
        if let (Some(root), Some(ver)) = (root, ver) {
            return Ok(Some(RootPair {
                disk: disk.into(),
                root: (*root).clone(),
                verity: (*ver).clone(),
            }));
        }
    }
    if roots.len() == 1 && veritys.len() == 1 {
        return Ok(Some(RootPair {
            disk: disk.into(),
            root: roots[0].clone(),
            verity: veritys[0].clone(),
        }));
    }
    Err(RootError::Ambiguous(format!(
        "{disk} has {} root and {} verity partitions and none match the root hash",
        roots.len(),
        veritys.len()
    )))
}

/// Whole disks the kernel knows (no partitions, no device-mapper or loop devices).
fn disks() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/block") else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter(|e| !e.path().join("partition").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("dm-") && !n.starts_with("loop") && !n.starts_with("ram"))
        .collect();
    out.sort();
    out
}

/// The kernel name of a disk's partition (`vda` + 2 = `vda2`, `nvme0n1` + 2 = `nvme0n1p2`).
pub fn partition_name(disk: &str, index: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{index}")
    } else {
        format!("{disk}{index}")
    }
}

/// `major:minor` of a block device from sysfs.
fn devnum(name: &str) -> Result<String, RootError> {
    let path = PathBuf::from(format!("/sys/class/block/{name}/dev"));
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|cause| RootError::Io { path, cause })
}

/// Wait for the disk holding the root (the block driver probes asynchronously).
pub fn find(roothash: &str, timeout_s: u64) -> Result<RootPair, RootError> {
    let start = std::time::Instant::now();
    loop {
        for disk in disks() {
            let dev = format!("/dev/{disk}");
            let Ok(mut f) = std::fs::File::open(&dev) else {
                continue;
            };
            let Ok(len) = f.metadata().map(|_| ()).and_then(|_| {
                use std::io::Seek;
                f.seek(std::io::SeekFrom::End(0))
            }) else {
                continue;
            };
            let Ok(gpt) = Gpt::read(&mut f, len) else {
                continue;
            };
            if let Some(pair) = pick(&disk, &gpt, roothash)? {
                let ready = [pair.root.index, pair.verity.index].iter().all(|i| {
                    Path::new(&format!("/sys/class/block/{}", partition_name(&disk, *i))).exists()
                });
                if ready {
                    return Ok(pair);
                }
            }
        }
        if start.elapsed().as_secs() >= timeout_s {
            return Err(RootError::NotFound(timeout_s));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Open the verity mapping for `pair` and return the mapped device's path.
pub fn open_verified(
    pair: &RootPair,
    roothash: &str,
    on_corruption: &str,
) -> Result<PathBuf, RootError> {
    let verity_dev = PathBuf::from(format!(
        "/dev/{}",
        partition_name(&pair.disk, pair.verity.index)
    ));
    let mut sb = vec![0u8; 4096];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(&verity_dev).map_err(|cause| RootError::Io {
            path: verity_dev.clone(),
            cause,
        })?;
        f.read_exact(&mut sb).map_err(|cause| RootError::Io {
            path: verity_dev.clone(),
            cause,
        })?;
    }
    let sb = Superblock::parse(&sb)?;
    let data = devnum(&partition_name(&pair.disk, pair.root.index))?;
    let hash = devnum(&partition_name(&pair.disk, pair.verity.index))?;
    let params = sb.table_params(&data, &hash, roothash, on_corruption);
    let (major, minor) = verity::create("root", sb.data_sectors(), &params)?;
    crate::info!(
        "dm-verity root {major}:{minor}: {} data blocks of {} bytes, {}",
        sb.data_blocks,
        sb.data_block_size,
        sb.algorithm
    );
    // devtmpfs creates /dev/dm-N for the new device.
    Ok(PathBuf::from(format!("/dev/dm-{minor}")))
}

/// The file system on a device, from its magic: erofs (0xE0F5E1E2 at 1024) or squashfs ("hsqs").
pub fn fs_type(head: &[u8]) -> Option<&'static str> {
    if head.get(..4) == Some(b"hsqs") {
        return Some("squashfs");
    }
    if head.get(1024..1028) == Some(&0xE0F5_E1E2u32.to_le_bytes()[..]) {
        return Some("erofs");
    }
    None
}

/// Mount the verified root read-only at `target`.
pub fn mount_root(dev: &Path, target: &Path) -> Result<(), RootError> {
    use nix::mount::{mount, MsFlags};
    let mut head = vec![0u8; 2048];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(dev).map_err(|cause| RootError::Io {
            path: dev.to_path_buf(),
            cause,
        })?;
        // A corrupted first block fails here, with the kernel's verity error on the console.
        f.read_exact(&mut head).map_err(|cause| RootError::Io {
            path: dev.to_path_buf(),
            cause,
        })?;
    }
    let fs = fs_type(&head).ok_or_else(|| RootError::Mount("neither erofs nor squashfs".into()))?;
    std::fs::create_dir_all(target).map_err(|cause| RootError::Io {
        path: target.to_path_buf(),
        cause,
    })?;
    mount(
        Some(dev),
        target,
        Some(fs),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| RootError::Mount(format!("{fs} on {}: {e}", dev.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names() {
        assert_eq!(partition_name("vda", 2), "vda2");
        assert_eq!(partition_name("nvme0n1", 3), "nvme0n1p3");
    }

    #[test]
    fn uuids_from_the_root_hash() {
        let h = "0011223344556677889900aabbccddeeff00112233445566778899aabbccddee";
        let (r, v) = derived_uuids(h).unwrap();
        assert_eq!(
            r.to_string().to_lowercase(),
            "00112233-4455-6677-8899-00aabbccddee"
        );
        assert_eq!(
            v.to_string().to_lowercase(),
            "ff001122-3344-5566-7788-99aabbccddee"
        );
    }

    #[test]
    fn file_system_magics() {
        assert_eq!(fs_type(b"hsqs...."), Some("squashfs"));
        let mut e = vec![0u8; 2048];
        e[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        assert_eq!(fs_type(&e), Some("erofs"));
        assert_eq!(fs_type(&[0; 2048]), None);
    }
}
