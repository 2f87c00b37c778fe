//! `nacre-image diff`: where two images differ. The GPT (protective MBR, header fields, each
//! partition entry), each partition as byte ranges, the ESP file by file, every PE file on it (and a
//! bare UKI) section by section, and the bytes outside partitions (gaps, backup GPT).

use anyhow::{Context, Result};
use nacre_diskimage::gpt::{types, Gpt, Partition};
use nacre_diskimage::{Fat, Slice};
use nacre_measure::pe::PeImage;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::inspect::sha256;

/// One place where the images differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// `size`, `mbr`, `gpt header`, `gpt entry 2`, `partition 1 (esp)`,
    /// `esp:/EFI/BOOT/BOOTX64.EFI`, `esp:/EFI/BOOT/BOOTX64.EFI section .cmdline`, `uki section .linux`,
    /// `outside partitions`.
    pub location: String,
    pub detail: String,
    /// Differing byte ranges `[start, end)` relative to the location's start (at most 16 listed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<(u64, u64)>,
}

fn d(location: impl Into<String>, detail: impl Into<String>) -> Difference {
    Difference {
        location: location.into(),
        detail: detail.into(),
        ranges: Vec::new(),
    }
}

const BLOCK: u64 = 4096;
const MAX_RANGES: usize = 16;

/// Compares `len` bytes of `a` at `oa` with `b` at `ob` in 4 KiB blocks; returns the merged
/// differing ranges (block granular, clipped to `len`) and the number of differing blocks.
fn byte_ranges(
    a: &mut File,
    oa: u64,
    b: &mut File,
    ob: u64,
    len: u64,
) -> Result<(Vec<(u64, u64)>, u64)> {
    const CHUNK: u64 = 1 << 20;
    let mut ba = vec![0u8; CHUNK as usize];
    let mut bb = vec![0u8; CHUNK as usize];
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut blocks = 0u64;
    a.seek(SeekFrom::Start(oa))?;
    b.seek(SeekFrom::Start(ob))?;
    let mut pos = 0u64;
    while pos < len {
        let n = (len - pos).min(CHUNK) as usize;
        a.read_exact(&mut ba[..n])?;
        b.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            for (i, (ca, cb)) in ba[..n]
                .chunks(BLOCK as usize)
                .zip(bb[..n].chunks(BLOCK as usize))
                .enumerate()
            {
                if ca != cb {
                    blocks += 1;
                    let s = pos + i as u64 * BLOCK;
                    let e = s + ca.len() as u64;
                    match ranges.last_mut() {
                        Some(last) if last.1 == s => last.1 = e,
                        _ => ranges.push((s, e)),
                    }
                }
            }
        }
        pos += n as u64;
    }
    Ok((ranges, blocks))
}

fn range_diff(
    location: String,
    ranges: Vec<(u64, u64)>,
    blocks: u64,
    len: u64,
) -> Option<Difference> {
    if ranges.is_empty() {
        return None;
    }
    let n = ranges.len();
    let mut ranges = ranges;
    ranges.truncate(MAX_RANGES);
    Some(Difference {
        location,
        detail: format!(
            "{} of {} bytes differ in {} range(s){}",
            (blocks * BLOCK).min(len),
            len,
            n,
            if n > MAX_RANGES {
                format!(" (first {MAX_RANGES} listed)")
            } else {
                String::new()
            }
        ),
        ranges,
    })
}

/// Compares two PE images (UKIs, the stub, any EFI binary) section by section.
pub fn diff_pe(prefix: &str, a: &[u8], b: &[u8]) -> Vec<Difference> {
    let mut out = Vec::new();
    if a == b {
        return out;
    }
    let (pa, pb) = match (PeImage::parse(a), PeImage::parse(b)) {
        (Ok(pa), Ok(pb)) => (pa, pb),
        _ => {
            out.push(d(
                prefix,
                format!(
                    "contents differ ({} vs {} bytes; not both PE)",
                    a.len(),
                    b.len()
                ),
            ));
            return out;
        }
    };
    let ha = a.get(..pa.size_of_headers).unwrap_or(a);
    let hb = b.get(..pb.size_of_headers).unwrap_or(b);
    if ha != hb {
        let mut what = Vec::new();
        if pa.checksum_offset + 4 <= ha.len().min(hb.len())
            && ha[pa.checksum_offset..pa.checksum_offset + 4]
                != hb[pb.checksum_offset..pb.checksum_offset + 4]
        {
            what.push("checksum".to_string());
        }
        if pa.cert_table != pb.cert_table {
            what.push("certificate table entry".to_string());
        }
        if pa.sections.len() != pb.sections.len() {
            what.push("section count".to_string());
        }
        let hdr = |s: &nacre_measure::pe::Section| {
            (
                s.name.clone(),
                s.virtual_address,
                s.virtual_size,
                s.size_of_raw_data,
                s.pointer_to_raw_data,
            )
        };
        let changed: Vec<String> = pa
            .sections
            .iter()
            .zip(pb.sections.iter())
            .filter(|(x, y)| hdr(x) != hdr(y))
            .map(|(x, _)| x.name.clone())
            .collect();
        if !changed.is_empty() {
            what.push(format!("section table: {}", changed.join(" ")));
        }
        out.push(d(
            format!("{prefix} headers"),
            if what.is_empty() {
                "PE headers differ".to_string()
            } else {
                format!("PE headers differ ({})", what.join(", "))
            },
        ));
    }
    let sa: BTreeMap<_, _> = pa.sections.iter().map(|s| (s.name.clone(), s)).collect();
    let sb: BTreeMap<_, _> = pb.sections.iter().map(|s| (s.name.clone(), s)).collect();
    for name in sa.keys().chain(sb.keys().filter(|k| !sa.contains_key(*k))) {
        let loc = format!("{prefix} section {name}");
        match (sa.get(name), sb.get(name)) {
            (Some(x), Some(y)) => {
                let da = a.get(x.raw_range()).unwrap_or(&[]);
                let db = b.get(y.raw_range()).unwrap_or(&[]);
                if da != db {
                    let mut diff = d(
                        loc,
                        format!(
                            "contents differ: {} bytes sha256 {} vs {} bytes sha256 {}",
                            da.len(),
                            &sha256(da)[..16],
                            db.len(),
                            &sha256(db)[..16]
                        ),
                    );
                    if da.len() == db.len() {
                        diff.ranges = first_ranges(da, db);
                    }
                    out.push(diff);
                } else if (x.virtual_address, x.virtual_size) != (y.virtual_address, y.virtual_size)
                {
                    out.push(d(
                        loc,
                        format!(
                            "same contents, placed differently (VA {:#x}+{:#x} vs {:#x}+{:#x})",
                            x.virtual_address, x.virtual_size, y.virtual_address, y.virtual_size
                        ),
                    ));
                }
            }
            (Some(_), None) => out.push(d(loc, "only in A")),
            (None, Some(_)) => out.push(d(loc, "only in B")),
            (None, None) => {}
        }
    }
    let end = |p: &PeImage| {
        p.sections
            .iter()
            .map(|s| s.raw_range().end)
            .max()
            .unwrap_or(p.size_of_headers)
    };
    let ta = a.get(end(&pa)..).unwrap_or(&[]);
    let tb = b.get(end(&pb)..).unwrap_or(&[]);
    if ta != tb {
        let what = if pa.cert_table.is_some() || pb.cert_table.is_some() {
            "signature (certificate table) or trailing data"
        } else {
            "trailing data"
        };
        out.push(d(
            format!("{prefix} {what}"),
            format!("{} vs {} bytes after the last section", ta.len(), tb.len()),
        ));
    }
    if out.is_empty() {
        out.push(d(prefix, "bytes differ outside headers and sections"));
    }
    out
}

fn first_ranges(a: &[u8], b: &[u8]) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (i, (ca, cb)) in a
        .chunks(BLOCK as usize)
        .zip(b.chunks(BLOCK as usize))
        .enumerate()
    {
        if ca != cb {
            let s = i as u64 * BLOCK;
            let e = s + ca.len() as u64;
            let full = ranges.len() >= MAX_RANGES;
            match ranges.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ if full => break,
                _ => ranges.push((s, e)),
            }
        }
    }
    ranges
}

fn open(path: &Path) -> Result<(File, u64)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.seek(SeekFrom::End(0))?;
    Ok((f, len))
}

fn is_pe(path: &Path) -> Result<bool> {
    let mut m = [0u8; 2];
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(f.read(&mut m)? == 2 && &m == b"MZ")
}

/// Where the images (or bare UKIs) at `a` and `b` differ; empty when they are identical.
pub fn diff(a: &Path, b: &Path) -> Result<Vec<Difference>> {
    if is_pe(a)? && is_pe(b)? {
        let da = std::fs::read(a)?;
        let db = std::fs::read(b)?;
        return Ok(diff_pe("uki", &da, &db));
    }
    let (mut fa, la) = open(a)?;
    let (mut fb, lb) = open(b)?;
    let mut out = Vec::new();
    if la != lb {
        out.push(d("size", format!("{la} vs {lb} bytes")));
    }
    let ga = Gpt::read(&mut fa, la);
    let gb = Gpt::read(&mut fb, lb);
    let (ga, gb) = match (ga, gb) {
        (Ok(x), Ok(y)) => (x, y),
        (ea, eb) => {
            if let Err(e) = &ea {
                out.push(d("gpt", format!("A: {e}")));
            }
            if let Err(e) = &eb {
                out.push(d("gpt", format!("B: {e}")));
            }
            let len = la.min(lb);
            let (r, n) = byte_ranges(&mut fa, 0, &mut fb, 0, len)?;
            out.extend(range_diff("whole file".into(), r, n, len));
            return Ok(out);
        }
    };
    // Protective MBR.
    let ss = ga.sector_size;
    let (r, n) = byte_ranges(&mut fa, 0, &mut fb, 0, ss.min(la).min(lb))?;
    out.extend(range_diff("mbr".into(), r, n, ss));
    // Header fields.
    let mut hdr = Vec::new();
    macro_rules! field {
        ($f:ident) => {
            if ga.$f != gb.$f {
                hdr.push(format!("{} {} vs {}", stringify!($f), ga.$f, gb.$f));
            }
        };
    }
    field!(sector_size);
    field!(disk_guid);
    field!(revision);
    field!(first_usable_lba);
    field!(last_usable_lba);
    field!(backup_lba);
    field!(entry_count);
    field!(entry_size);
    if !hdr.is_empty() {
        out.push(d("gpt header", hdr.join(", ")));
    }
    // Entries and partitions, by partition number.
    let pa: BTreeMap<u32, &Partition> = ga.partitions.iter().map(|p| (p.index, p)).collect();
    let pb: BTreeMap<u32, &Partition> = gb.partitions.iter().map(|p| (p.index, p)).collect();
    let label = |p: &Partition| {
        p.type_name()
            .map(str::to_string)
            .unwrap_or_else(|| p.type_guid.to_string())
    };
    for idx in pa.keys().chain(pb.keys().filter(|k| !pa.contains_key(*k))) {
        match (pa.get(idx), pb.get(idx)) {
            (Some(x), Some(y)) => {
                let mut f = Vec::new();
                if x.type_guid != y.type_guid {
                    f.push(format!("type {} vs {}", label(x), label(y)));
                }
                if x.unique_guid != y.unique_guid {
                    f.push(format!("uuid {} vs {}", x.unique_guid, y.unique_guid));
                }
                if (x.first_lba, x.last_lba) != (y.first_lba, y.last_lba) {
                    f.push(format!(
                        "lba {}..{} vs {}..{}",
                        x.first_lba, x.last_lba, y.first_lba, y.last_lba
                    ));
                }
                if x.attributes != y.attributes {
                    f.push(format!(
                        "attributes {:#x} vs {:#x}",
                        x.attributes, y.attributes
                    ));
                }
                if x.name != y.name {
                    f.push(format!("name {:?} vs {:?}", x.name, y.name));
                }
                if !f.is_empty() {
                    out.push(d(format!("gpt entry {idx} ({})", label(x)), f.join(", ")));
                }
                let len = x.byte_len().min(y.byte_len());
                let (r, n) = byte_ranges(&mut fa, x.byte_offset(), &mut fb, y.byte_offset(), len)?;
                if r.is_empty() {
                    continue;
                }
                out.extend(range_diff(
                    format!("partition {idx} ({})", label(x)),
                    r,
                    n,
                    len,
                ));
                if x.type_guid == types::ESP && y.type_guid == types::ESP {
                    out.extend(diff_esp(a, x, b, y).unwrap_or_else(|e| {
                        vec![d("esp", format!("cannot compare files: {e:#}"))]
                    }));
                }
            }
            (Some(x), None) => out.push(d(format!("gpt entry {idx} ({})", label(x)), "only in A")),
            (None, Some(y)) => out.push(d(format!("gpt entry {idx} ({})", label(y)), "only in B")),
            (None, None) => {}
        }
    }
    // Everything outside A's partitions (GPT structures, gaps, backup GPT), except the MBR.
    let mut covered: Vec<(u64, u64)> = ga
        .partitions
        .iter()
        .map(|p| (p.byte_offset(), p.byte_offset() + p.byte_len()))
        .collect();
    covered.sort();
    let len = la.min(lb);
    let mut pos = ss;
    let mut ranges = Vec::new();
    let mut blocks = 0;
    for (s, e) in covered.into_iter().chain(std::iter::once((len, len))) {
        let s = s.min(len);
        if s > pos {
            let (r, n) = byte_ranges(&mut fa, pos, &mut fb, pos, s - pos)?;
            ranges.extend(r.into_iter().map(|(x, y)| (x + pos, (y + pos).min(s))));
            blocks += n;
        }
        pos = pos.max(e);
    }
    out.extend(range_diff(
        "outside partitions (GPT entries, gaps, backup GPT)".into(),
        ranges,
        blocks,
        len,
    ));
    Ok(out)
}

fn open_fat(path: &Path, p: &Partition) -> Result<Fat<Slice<File>>> {
    let f = File::open(path)?;
    let s = Slice::new(f, p.byte_offset(), p.byte_len())?;
    Ok(Fat::new(s)?)
}

const MAX_FILE: u64 = 1 << 30;

fn diff_esp(a: &Path, pa: &Partition, b: &Path, pb: &Partition) -> Result<Vec<Difference>> {
    let mut fa = open_fat(a, pa)?;
    let mut fb = open_fat(b, pb)?;
    let wa: BTreeMap<String, _> = fa.walk()?.into_iter().collect();
    let wb: BTreeMap<String, _> = fb.walk()?.into_iter().collect();
    let mut out = Vec::new();
    for path in wa.keys().chain(wb.keys().filter(|k| !wa.contains_key(*k))) {
        let loc = format!("esp:{path}");
        match (wa.get(path), wb.get(path)) {
            (Some(x), Some(y)) => {
                if x.is_dir || y.is_dir {
                    if x.is_dir != y.is_dir {
                        out.push(d(loc, "directory in one image, file in the other"));
                    }
                    continue;
                }
                let ca = fa.read_file(path, MAX_FILE)?;
                let cb = fb.read_file(path, MAX_FILE)?;
                if ca == cb {
                    if x.attributes != y.attributes {
                        out.push(d(
                            loc,
                            format!("attributes {:#x} vs {:#x}", x.attributes, y.attributes),
                        ));
                    }
                    continue;
                }
                out.push(d(
                    loc.clone(),
                    format!(
                        "contents differ: {} bytes sha256 {} vs {} bytes sha256 {}",
                        ca.len(),
                        &sha256(&ca)[..16],
                        cb.len(),
                        &sha256(&cb)[..16]
                    ),
                ));
                if ca.starts_with(b"MZ") && cb.starts_with(b"MZ") {
                    out.extend(diff_pe(&loc, &ca, &cb));
                }
            }
            (Some(_), None) => out.push(d(loc, "only in A")),
            (None, Some(_)) => out.push(d(loc, "only in B")),
            (None, None) => {}
        }
    }
    Ok(out)
}

/// The human-readable report.
pub fn print(diffs: &[Difference]) {
    for x in diffs {
        println!("{}: {}", x.location, x.detail);
        for (s, e) in &x.ranges {
            println!("    [{s:#x}, {e:#x})");
        }
    }
}
