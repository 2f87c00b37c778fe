//! The cpio archives systemd-stub generates at boot from ESP drop-ins (credentials and system
//! extensions), byte for byte as systemd 252's `src/boot/efi/cpio.c` writes them: they are
//! measured whole into PCR 12/13 and appended to the initrd the kernel measures into PCR 9, so a
//! prediction must rebuild them exactly.

/// One kind of drop-in the stub packs: where the files go in the initrd and how they're measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropinKind {
    /// Directory inside the generated initrd.
    pub target_dir: &'static str,
    /// File-name suffix the stub picks up (compared case-insensitively).
    pub suffix: &'static str,
    pub dir_mode: u32,
    pub file_mode: u32,
    pub pcr: u32,
    /// The EV_IPL description the stub logs.
    pub description: &'static str,
}

/// `*.cred` next to the UKI (`\EFI\BOOT\BOOTX64.EFI.extra.d\`).
pub const CREDENTIALS: DropinKind = DropinKind {
    target_dir: ".extra/credentials",
    suffix: ".cred",
    dir_mode: 0o500,
    file_mode: 0o400,
    pcr: 12,
    description: "Credentials initrd",
};
/// `*.cred` in `\loader\credentials\`, shared by all UKIs on the ESP.
pub const GLOBAL_CREDENTIALS: DropinKind = DropinKind {
    target_dir: ".extra/global_credentials",
    suffix: ".cred",
    dir_mode: 0o500,
    file_mode: 0o400,
    pcr: 12,
    description: "Global credentials initrd",
};
/// `*.raw` system extension images next to the UKI.
pub const SYSEXTS: DropinKind = DropinKind {
    target_dir: ".extra/sysext",
    suffix: ".raw",
    dir_mode: 0o555,
    file_mode: 0o444,
    pcr: 13,
    description: "System extension initrd",
};

/// Which directory entries the stub accepts: the same filters as `pack_cpio` (not hidden, ASCII,
/// at most 255 characters, the suffix in any case, no path separators).
pub fn accepts(kind: &DropinKind, name: &str) -> bool {
    !name.starts_with('.')
        && name.is_ascii()
        && name.len() <= 255
        && name.len() >= kind.suffix.len()
        && name[name.len() - kind.suffix.len()..].eq_ignore_ascii_case(kind.suffix)
        && !name.contains(['/', '\\'])
}

/// The archive for these files, or `None` when no file is accepted (the stub then measures
/// nothing). Files are sorted by name as the stub does (`strcmp16` on ASCII names).
pub fn pack(kind: &DropinKind, files: &[(String, Vec<u8>)]) -> Option<Vec<u8>> {
    let mut items: Vec<(&str, &[u8])> = files
        .iter()
        .filter(|(n, _)| accepts(kind, n))
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    if items.is_empty() {
        return None;
    }
    items.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Some(pack_files(
        kind.target_dir,
        kind.dir_mode,
        kind.file_mode,
        &items,
    ))
}

/// A single file under `.extra/` as systemd-stub 257's `pack_cpio_literal` writes it (e.g.
/// `.extra/os-release` from the `.osrel` section): not measured, but part of the initrd the
/// kernel measures into PCR 9.
pub fn literal(name: &str, contents: &[u8]) -> Vec<u8> {
    pack_files(".extra", 0o555, 0o444, &[(name, contents)])
}

/// Directory entries for every prefix of `target_dir` (leading ones 0555, the last `dir_mode`,
/// like `mkdir -p`), the files in the given order, then the trailer.
fn pack_files(target_dir: &str, dir_mode: u32, file_mode: u32, items: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut inode = 1u32;
    for (i, _) in target_dir.match_indices('/').filter(|(i, _)| *i > 0) {
        entry(
            &mut out,
            &mut inode,
            &target_dir[..i],
            0o040000 | 0o555,
            &[],
        );
    }
    entry(&mut out, &mut inode, target_dir, 0o040000 | dir_mode, &[]);
    for (name, contents) in items {
        let full = format!("{target_dir}/{name}");
        entry(&mut out, &mut inode, &full, 0o100000 | file_mode, contents);
    }
    // The trailer: inode 0, nlink 1, "TRAILER!!!" with its NUL, padded to 4.
    out.extend_from_slice(b"070701");
    for w in [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0] {
        out.extend_from_slice(format!("{w:08x}").as_bytes());
    }
    out.extend_from_slice(b"0000000B00000000TRAILER!!!\0\0\0\0");
    out
}

fn entry(out: &mut Vec<u8>, inode: &mut u32, name: &str, mode: u32, contents: &[u8]) {
    out.extend_from_slice(b"070701");
    let words = [
        *inode,
        mode,
        0,
        0,
        1,
        0,
        contents.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    *inode += 1;
    for w in words {
        out.extend_from_slice(format!("{w:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(contents);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The initrd the stub hands to the kernel when it has more than one part: each part padded to
/// 4 bytes, in the stub's order (`combine_initrd`).
pub fn combined_initrd(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 3).sum());
    for p in parts {
        out.extend_from_slice(p);
        pad4(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_layout_matches_systemd_stub() {
        let files = vec![
            ("b.cred".to_string(), b"two".to_vec()),
            ("A.CRED".to_string(), b"one!".to_vec()),
            (".hidden.cred".to_string(), b"x".to_vec()),
            ("notes.txt".to_string(), b"x".to_vec()),
        ];
        let a = pack(&CREDENTIALS, &files).unwrap();
        assert_eq!(a.len() % 4, 0);
        let text = String::from_utf8_lossy(&a);
        // Directories first (inode 1, 2), then files sorted by byte order ("A.CRED" < "b.cred").
        let names: Vec<_> = [
            ".extra\0",
            ".extra/credentials\0",
            ".extra/credentials/A.CRED\0",
            ".extra/credentials/b.cred\0",
            "TRAILER!!!\0",
        ]
        .iter()
        .map(|n| text.find(n).unwrap())
        .collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        assert!(!text.contains("hidden") && !text.contains("notes"));
        // The first header: inode 1, mode S_IFDIR|0555, name size 7 (".extra" + NUL).
        assert_eq!(&a[..6 + 16], b"070701000000010000416d");
        assert_eq!(&a[6 + 11 * 8..6 + 12 * 8], b"00000007");
    }

    #[test]
    fn nothing_accepted_means_no_archive() {
        assert!(pack(&SYSEXTS, &[("x.cred".into(), vec![1])]).is_none());
    }

    #[test]
    fn combined_initrd_pads_the_main_initrd_only() {
        let c = combined_initrd(&[b"12345", b"abcd", b"efgh"]);
        assert_eq!(c, b"12345\0\0\0abcdefgh");
    }
}
