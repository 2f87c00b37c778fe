//! The state file system: ext4, made by e2fsprogs' `mkfs.ext4` (shipped in the root image; no
//! maintained Rust crate formats ext4), with the LUKS2 UUID as its file system UUID so that an
//! opened disk can be checked to be the one its header names.

use crate::StateDiskError as E;
use std::path::Path;
use std::process::Command;

const SB_OFFSET: usize = 1024;
const MAGIC_AT: usize = 0x38;
const UUID_AT: usize = 0x68;
const EXT4_MAGIC: u16 = 0xEF53;

/// Make the file system on `dev` with file system UUID `uuid`.
pub fn mkfs(mkfs: &Path, dev: &Path, uuid: &str) -> Result<(), E> {
    let out = Command::new(mkfs)
        .env_clear()
        .args([
            "-q",
            "-F",
            "-b",
            "4096",
            "-m",
            "0",
            "-L",
            "nacre-var",
            "-E",
            "nodiscard",
            "-U",
            uuid,
        ])
        .arg(dev)
        .output()
        .map_err(|e| E::io(mkfs, e))?;
    if !out.status.success() {
        return Err(E::Effect(format!(
            "{} {}: {}: {}",
            mkfs.display(),
            dev.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The UUID of the ext4 superblock in the first 2048 bytes of a device, if there is one.
pub fn superblock_uuid(start: &[u8]) -> Option<String> {
    let sb = start.get(SB_OFFSET..SB_OFFSET + 1024)?;
    if u16::from_le_bytes([sb[MAGIC_AT], sb[MAGIC_AT + 1]]) != EXT4_MAGIC {
        return None;
    }
    let u = &sb[UUID_AT..UUID_AT + 16];
    let h = hex::encode(u);
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// The opened disk's file system must carry the header's UUID.
pub fn check_uuid(start: &[u8], uuid: &str) -> Result<(), String> {
    match superblock_uuid(start) {
        Some(u) if u == uuid => Ok(()),
        Some(u) => Err(format!(
            "the opened disk's file system has UUID {u}, its header {uuid}: the header belongs to another disk"
        )),
        None => Err(format!(
            "the disk opened with header {uuid} holds no ext4 file system: the header belongs to another disk, or the data was replaced"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_uuid_from_mkfs() {
        let dir = std::env::temp_dir().join(format!("nacre-ext4-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("fs.img");
        std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
        let uuid = "3f12551b-d978-47d1-a7b5-41cd387d027e";
        let tool = ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mkfs.ext4 (e2fsprogs)");
        mkfs(Path::new(tool), &img, uuid).unwrap();
        let start = std::fs::read(&img).unwrap();
        assert_eq!(superblock_uuid(&start).as_deref(), Some(uuid));
        assert!(check_uuid(&start, uuid).is_ok());
        let e = check_uuid(&start, "00000000-d978-47d1-a7b5-41cd387d027e").unwrap_err();
        assert!(e.contains("another disk"), "{e}");
        assert!(check_uuid(&vec![0u8; 2048], uuid).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
