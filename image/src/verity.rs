//! The dm-verity superblock (veritysetup's on-disk format, version 1) and the root hash it
//! implies: the digest of the top hash block, which veritysetup stores first after the superblock.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::{Read, Seek, SeekFrom};

/// A parsed verity superblock and the root hash computed from the hash partition.
#[derive(Debug, Clone, Serialize)]
pub struct Verity {
    pub version: u32,
    pub hash_type: u32,
    pub uuid: String,
    pub algorithm: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: String,
    /// digest(salt || top hash block) for format 1, digest(top hash block || salt) for format 0.
    pub root_hash: Option<String>,
}

/// Reads the superblock at `offset` (the start of the hash partition) and computes the root hash.
pub fn read<R: Read + Seek>(r: &mut R, offset: u64, len: u64) -> Result<Verity> {
    let mut sb = [0u8; 512];
    r.seek(SeekFrom::Start(offset))?;
    r.read_exact(&mut sb)
        .context("reading the verity superblock")?;
    if &sb[0..8] != b"verity\0\0" {
        bail!("no verity superblock (signature {:02x?})", &sb[0..8]);
    }
    let u32le = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    let version = u32le(8);
    let hash_type = u32le(12);
    let uuid = &sb[16..32];
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        hex::encode(&uuid[0..4]),
        hex::encode(&uuid[4..6]),
        hex::encode(&uuid[6..8]),
        hex::encode(&uuid[8..10]),
        hex::encode(&uuid[10..16])
    );
    let alg_end = sb[32..64].iter().position(|&b| b == 0).unwrap_or(32);
    let algorithm = String::from_utf8_lossy(&sb[32..32 + alg_end]).into_owned();
    let data_block_size = u32le(64);
    let hash_block_size = u32le(68);
    let mut d = [0u8; 8];
    d.copy_from_slice(&sb[72..80]);
    let data_blocks = u64::from_le_bytes(d);
    let salt_size = u16::from_le_bytes([sb[80], sb[81]]) as usize;
    if salt_size > 256 {
        bail!("verity salt size {salt_size} > 256");
    }
    let salt = sb[88..88 + salt_size].to_vec();
    let alg = match algorithm.as_str() {
        "sha256" => Some(&ring::digest::SHA256),
        "sha512" => Some(&ring::digest::SHA512),
        _ => None,
    };
    let hbs = u64::from(hash_block_size);
    let root_hash = match alg {
        Some(alg) if (512..=65536).contains(&hbs) && 2 * hbs <= len => {
            // The superblock takes one hash block (veritysetup pads it to the hash block size).
            let mut top = vec![0u8; hbs as usize];
            r.seek(SeekFrom::Start(offset + hbs))?;
            r.read_exact(&mut top)
                .context("reading the top verity hash block")?;
            let mut ctx = ring::digest::Context::new(alg);
            if hash_type == 1 {
                ctx.update(&salt);
                ctx.update(&top);
            } else {
                ctx.update(&top);
                ctx.update(&salt);
            }
            Some(hex::encode(ctx.finish()))
        }
        _ => None,
    };
    Ok(Verity {
        version,
        hash_type,
        uuid,
        algorithm,
        data_block_size,
        hash_block_size,
        data_blocks,
        salt: hex::encode(salt),
        root_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn superblock_and_root_hash() {
        let mut part = vec![0u8; 3 * 4096];
        part[0..8].copy_from_slice(b"verity\0\0");
        part[8..12].copy_from_slice(&1u32.to_le_bytes());
        part[12..16].copy_from_slice(&1u32.to_le_bytes());
        part[32..38].copy_from_slice(b"sha256");
        part[64..68].copy_from_slice(&4096u32.to_le_bytes());
        part[68..72].copy_from_slice(&4096u32.to_le_bytes());
        part[72..80].copy_from_slice(&10u64.to_le_bytes());
        part[80..82].copy_from_slice(&4u16.to_le_bytes());
        part[88..92].copy_from_slice(&[1, 2, 3, 4]);
        part[4096..4096 + 32].fill(0xab);
        let mut disk = vec![0u8; 512];
        disk.extend_from_slice(&part);
        let v = read(&mut Cursor::new(disk), 512, part.len() as u64).unwrap();
        assert_eq!(
            (v.algorithm.as_str(), v.data_blocks, v.salt.as_str()),
            ("sha256", 10, "01020304")
        );
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&[1, 2, 3, 4]);
        ctx.update(&part[4096..8192]);
        assert_eq!(v.root_hash.unwrap(), hex::encode(ctx.finish()));
        assert!(read(&mut Cursor::new(vec![0u8; 8192]), 0, 8192).is_err());
    }
}
