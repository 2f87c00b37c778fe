//! `nacre-image inspect`: partitions (DPS type names), the UKI (sections, stub version, cmdline,
//! root hash), the verity superblock and the root hash it gives, and the predicted measurements.

use anyhow::{Context, Result};
use nacre_diskimage::gpt::types;
use nacre_measure::predict::{self, BootConfig, Prediction};
use nacre_measure::source::BootFiles;
use nacre_measure::uki::Uki;
use serde::Serialize;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;

use crate::verity::{self, Verity};

#[derive(Debug, Serialize)]
pub struct PartitionInfo {
    pub index: u32,
    pub name: String,
    /// DPS name of the type (`esp`, `root-x86-64`, ...), or the type GUID when unknown.
    pub type_name: String,
    pub type_guid: String,
    pub uuid: String,
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct SectionInfo {
    pub name: String,
    pub file_offset: u32,
    pub raw_size: u32,
    pub virtual_size: u32,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct UkiInfo {
    pub size: u64,
    pub sha256: String,
    pub stub_version: Option<String>,
    pub cmdline: Option<String>,
    pub roothash: Option<String>,
    pub signed: bool,
    pub sections: Vec<SectionInfo>,
}

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub size: u64,
    pub disk_guid: Option<String>,
    pub sector_size: Option<u64>,
    pub partitions: Vec<PartitionInfo>,
    pub uki: UkiInfo,
    pub verity: Option<Verity>,
    /// `true` when the UKI's roothash= equals the root hash computed from the verity partition.
    pub roothash_matches: Option<bool>,
    /// Predicted PCRs for a first boot with Secure Boot off (`nacre-measure predict` for others).
    pub prediction: Prediction,
}

pub(crate) fn sha256(d: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, d))
}

/// Inspects a disk image or a bare UKI.
pub fn inspect(path: &Path) -> Result<Inspection> {
    let files = BootFiles::open(path)?;
    let size = std::fs::metadata(path)?.len();
    let uki = Uki::parse(&files.uki).with_context(|| format!("{}: UKI", path.display()))?;
    let sections = uki
        .pe
        .sections
        .iter()
        .map(|s| SectionInfo {
            name: s.name.clone(),
            file_offset: s.pointer_to_raw_data,
            raw_size: s.size_of_raw_data,
            virtual_size: s.virtual_size,
            sha256: sha256(files.uki.get(s.raw_range()).unwrap_or(&[])),
        })
        .collect();
    let uki_info = UkiInfo {
        size: files.uki.len() as u64,
        sha256: sha256(&files.uki),
        stub_version: uki.stub_version.clone(),
        cmdline: uki.cmdline()?,
        roothash: uki.roothash()?,
        signed: uki.pe.cert_table.is_some(),
        sections,
    };
    let cfg = BootConfig {
        dropins: files.dropins.clone(),
        ..BootConfig::default()
    };
    let prediction = predict::predict(&files.uki, &cfg)
        .with_context(|| format!("predicting {}", path.display()))?;
    let mut out = Inspection {
        size,
        disk_guid: None,
        sector_size: None,
        partitions: Vec::new(),
        uki: uki_info,
        verity: None,
        roothash_matches: None,
        prediction,
    };
    if !files.from_disk {
        return Ok(out);
    }
    let gpt = nacre_diskimage::read_gpt(path)?;
    out.disk_guid = Some(gpt.disk_guid.to_string());
    out.sector_size = Some(gpt.sector_size);
    for p in &gpt.partitions {
        out.partitions.push(PartitionInfo {
            index: p.index,
            name: p.name.clone(),
            type_name: p
                .type_name()
                .map(str::to_string)
                .unwrap_or_else(|| p.type_guid.to_string()),
            type_guid: p.type_guid.to_string(),
            uuid: p.unique_guid.to_string(),
            offset: p.byte_offset(),
            size: p.byte_len(),
        });
    }
    if let Some(vp) = gpt.partitions_of_type(&types::ROOT_VERITY_X86_64).next() {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(0))?;
        let v = verity::read(&mut f, vp.byte_offset(), vp.byte_len())
            .with_context(|| format!("{}: partition {} (verity)", path.display(), vp.index))?;
        if let (Some(a), Some(b)) = (&v.root_hash, &out.uki.roothash) {
            out.roothash_matches = Some(a == b);
        }
        out.verity = Some(v);
    }
    Ok(out)
}

/// The human-readable report.
pub fn print(i: &Inspection) {
    println!("size           {} bytes", i.size);
    if let Some(g) = &i.disk_guid {
        println!(
            "disk GUID      {g} (sector size {})",
            i.sector_size.unwrap_or(0)
        );
    }
    for p in &i.partitions {
        println!(
            "partition {:<2}   {:<22} {:>12} bytes at {:>10}  {} uuid {}",
            p.index, p.type_name, p.size, p.offset, p.name, p.uuid
        );
    }
    let u = &i.uki;
    println!(
        "UKI            {} bytes sha256 {}{}",
        u.size,
        u.sha256,
        if u.signed { " (signed)" } else { "" }
    );
    println!(
        "stub version   {}",
        u.stub_version.as_deref().unwrap_or("-")
    );
    println!("cmdline        {}", u.cmdline.as_deref().unwrap_or("-"));
    for s in &u.sections {
        println!(
            "  section {:<10} {:>10} bytes at {:>10}  sha256 {}",
            s.name, s.raw_size, s.file_offset, s.sha256
        );
    }
    println!("roothash (UKI) {}", u.roothash.as_deref().unwrap_or("-"));
    if let Some(v) = &i.verity {
        println!(
            "verity         {} format {}, data {} x {} B, hash block {} B, salt {}, uuid {}",
            v.algorithm,
            v.hash_type,
            v.data_blocks,
            v.data_block_size,
            v.hash_block_size,
            v.salt,
            v.uuid
        );
        println!(
            "roothash (hash partition) {}",
            v.root_hash.as_deref().unwrap_or("-")
        );
    }
    match i.roothash_matches {
        Some(true) => println!("roothash       UKI and verity partition agree"),
        Some(false) => println!("roothash       MISMATCH between the UKI and the verity partition"),
        None => {}
    }
    let p = &i.prediction;
    println!(
        "predicted      {:?}, stub profile {}, Secure Boot {}",
        p.alg,
        p.stub.name(),
        if p.secure_boot { "on" } else { "off" }
    );
    for (pcr, v) in &p.pcrs {
        println!("  PCR {pcr:<2} {}", hex::encode(v));
    }
}
