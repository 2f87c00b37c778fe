//! Authenticode image digests, computed the way UEFI firmware measures an image into PCR 4
//! (EDK2 `Tcg2MeasurePeImage` / `HashPeImage`): headers without the CheckSum field and the
//! certificate-table directory entry, then each section's raw data in file order, then any
//! trailing data up to the certificate table. No padding is added: for files whose length is
//! not a multiple of 8, goblin pads and the firmware does not; the real event logs in the boot
//! tests decide, and they agree with this.

use crate::pe::PeImage;
use ring::digest::{Algorithm, Context, Digest};

/// Authenticode digest of `pe` with the given algorithm (SHA-1/256/384/512).
pub fn digest(pe: &PeImage<'_>, alg: &'static Algorithm) -> Digest {
    let data = pe.data;
    let mut ctx = Context::new(alg);
    // 1. Headers up to the CheckSum, then past it up to the certificate directory entry (if
    //    any), then past that entry up to SizeOfHeaders.
    let after_checksum = pe.checksum_offset + 4;
    ctx.update(&data[..pe.checksum_offset]);
    match pe.cert_dir_offset {
        Some(dir) => {
            ctx.update(&data[after_checksum..dir]);
            ctx.update(&data[dir + 8..pe.size_of_headers]);
        }
        None => ctx.update(&data[after_checksum..pe.size_of_headers]),
    }
    // 2. Sections with raw data, in ascending PointerToRawData order.
    let mut sections: Vec<_> = pe
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data != 0)
        .collect();
    sections.sort_by_key(|s| s.pointer_to_raw_data);
    let mut hashed = pe.size_of_headers as u64;
    for s in sections {
        ctx.update(&data[s.raw_range()]);
        hashed += u64::from(s.size_of_raw_data);
    }
    // 3. Data after the last section, except the certificate table (EDK2 assumes the table is
    //    at the end and subtracts its size).
    let file_len = data.len() as u64;
    let cert_size = pe.cert_table.map_or(0, |(_, size)| u64::from(size));
    if file_len > hashed + cert_size {
        ctx.update(&data[hashed as usize..(file_len - cert_size) as usize]);
    }
    ctx.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pe::tests::build_pe;
    use ring::digest::SHA256;

    #[test]
    fn signature_and_checksum_do_not_change_the_digest() {
        let plain = build_pe(&[(".text", b"code", 4)], None);
        let signed = build_pe(&[(".text", b"code", 4)], Some(b"a signature"));
        let d = |b: &[u8]| {
            digest(&PeImage::parse(b).unwrap(), &SHA256)
                .as_ref()
                .to_vec()
        };
        let mut other_checksum = plain.clone();
        other_checksum[0x84 + 20 + 64] ^= 0xff;
        assert_eq!(d(&plain), d(&other_checksum));
        // Signing sets the certificate directory entry and appends the table: both excluded.
        assert_eq!(d(&plain), d(&signed));
        let mut changed = plain.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert_ne!(d(&plain), d(&changed));
    }
}
