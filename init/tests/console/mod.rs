//! Reading a guest's serial console as the tests see it.
//!
//! nacre-init writes its lines to `/dev/console` while the kernel prints its own messages to the
//! same serial port, so a kernel message can land in the middle of an init line:
//! `[   10.950] nacre-init: measured nacre.clu[   10.951234] EXT4-fs (dm-1): mounted ...\r\nster-id=...`.
//! The kernel's records carry a six-digit timestamp (the init's carry three), so they can be cut
//! out again; what is left is the init's own lines, whole.

/// The console log at `path` as the tests search it: first the init's lines untangled from the
/// kernel's records, then the whole log as it was (carriage returns removed), so that a line is
/// found whether it is the init's (possibly cut by a kernel record) or the kernel's own.
pub fn read(path: &std::path::Path) -> String {
    let raw = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).replace('\r', "");
    format!(
        "{}\n---- the console as written ----\n{raw}",
        untangle(&raw)
    )
}

pub fn untangle(raw: &str) -> String {
    let text = raw.replace('\r', "");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match kernel_record_len(tail) {
            Some(n) => rest = &tail[n..],
            None => {
                out.push('[');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `[ *\d+\.\d{6}\] ` up to and including the record's newline.
fn kernel_record_len(s: &str) -> Option<usize> {
    let close = s.find(']')?;
    let stamp = s[1..close].trim_start();
    let (secs, frac) = stamp.split_once('.')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs) || frac.len() != 6 || !digits(frac) {
        return None;
    }
    Some(s.find('\n').map_or(s.len(), |n| n + 1))
}

#[test]
fn a_kernel_record_inside_an_init_line_is_cut_out() {
    let raw = "[   10.950] nacre-init: measured nacre.clu[   10.951234] EXT4-fs (dm-1): mounted\r\nster-id=ab into PCR 15\r\n[    1.000000] x\r\n[payload] [1.5] ok\r\n";
    assert_eq!(
        untangle(raw),
        "[   10.950] nacre-init: measured nacre.cluster-id=ab into PCR 15\n[payload] [1.5] ok\n"
    );
}
