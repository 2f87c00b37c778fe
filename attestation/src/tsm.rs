//! The kernel's configfs-tsm report interface (`/sys/kernel/config/tsm/report`, Linux 6.7+,
//! Documentation/ABI/testing/configfs-tsm-report): one protocol for every confidential-VM
//! platform's attestation report. A requester creates an entry (`mkdir`), checks `provider`
//! (`sev_guest`: an SEV-SNP ATTESTATION_REPORT with the host's certificate table in `auxblob`;
//! `tdx_guest`: a TDX DCAP quote, no `auxblob`), writes up to 64 bytes of its own data to
//! `inblob`, reads `outblob` (and `auxblob`), and removes the entry.
//!
//! `generation` counts the writes to the entry: it is read before `inblob` is written, after it
//! was written (exactly one more: nobody else wrote in between, so `outblob` is made from our
//! `inblob`) and after the blobs were read (unchanged: nobody wrote while we read). Any other
//! value is refused as a race.
//!
//! The protocol is tested against a temporary directory that imitates the kernel's files
//! (tests below). NOT TESTED ON HARDWARE here (no SEV-SNP or TDX machine): what the kernel
//! returns on a real guest was never observed by these tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where configfs-tsm's report entries are created.
pub const REPORT_DIR: &str = "/sys/kernel/config/tsm/report";
/// The `provider` of an SEV-SNP guest.
pub const PROVIDER_SEV_GUEST: &str = "sev_guest";
/// The `provider` of a TDX guest.
pub const PROVIDER_TDX_GUEST: &str = "tdx_guest";

/// What a report request returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsmReport {
    /// The platform's report (SEV-SNP: ATTESTATION_REPORT; TDX: the quote).
    pub outblob: Vec<u8>,
    /// Supplemental data, when the provider has any (SEV-SNP: the host's certificate table);
    /// `None` when the entry has no `auxblob` or it is empty (TDX).
    pub auxblob: Option<Vec<u8>>,
}

/// Entries of this process get distinct names (`nacre-<pid>-<n>`), so two requests of the
/// same process (the init and its peer refresher) never share one.
static NEXT_ENTRY: AtomicU64 = AtomicU64::new(0);

/// A report for `inblob` (at most 64 bytes) from the configfs-tsm report directory `base`
/// ([`REPORT_DIR`] on a node) whose provider must be `provider`. The entry is removed
/// afterwards, whatever happened.
pub fn configfs_report(base: &Path, provider: &str, inblob: &[u8]) -> Result<TsmReport, String> {
    if inblob.len() > 64 {
        return Err(format!(
            "inblob of {} bytes (configfs-tsm takes at most 64)",
            inblob.len()
        ));
    }
    if !base.is_dir() {
        return Err(format!(
            "{} is missing (configfs-tsm, Linux 6.7+, with configfs mounted)",
            base.display()
        ));
    }
    let entry = base.join(format!(
        "nacre-{}-{}",
        std::process::id(),
        NEXT_ENTRY.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&entry).map_err(|e| format!("{}: {e}", entry.display()))?;
    let result = report_in(&entry, provider, inblob);
    let _ = std::fs::remove_dir(&entry);
    result
}

fn attr(entry: &Path, name: &str) -> PathBuf {
    entry.join(name)
}

fn read_generation(entry: &Path) -> Result<u64, String> {
    let p = attr(entry, "generation");
    let s = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    s.trim()
        .parse()
        .map_err(|_| format!("{}: {:?} is not a number", p.display(), s.trim()))
}

/// The protocol on an existing entry (what the kernel made at `mkdir`).
fn report_in(entry: &Path, provider: &str, inblob: &[u8]) -> Result<TsmReport, String> {
    let p = attr(entry, "provider");
    let found = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    if found.trim() != provider {
        return Err(format!(
            "the report provider is {:?}, not {provider:?} (another platform's guest driver)",
            found.trim()
        ));
    }
    let before = read_generation(entry)?;
    let p = attr(entry, "inblob");
    // One write: configfs takes a binary attribute's value from what was written before close.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .and_then(|mut f| std::io::Write::write_all(&mut f, inblob))
        .map_err(|e| format!("{}: {e}", p.display()))?;
    let written = read_generation(entry)?;
    if written != before.wrapping_add(1) {
        return Err(format!(
            "the report request raced with another writer (generation {before} before writing inblob, {written} after)"
        ));
    }
    let p = attr(entry, "outblob");
    let outblob = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    if outblob.is_empty() {
        return Err(format!("{}: empty", p.display()));
    }
    let p = attr(entry, "auxblob");
    let auxblob = match std::fs::read(&p) {
        Ok(b) if b.is_empty() => None,
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    let after = read_generation(entry)?;
    if after != written {
        return Err(format!(
            "the report request raced with another writer (generation {written} when the report was asked, {after} after it was read)"
        ));
    }
    Ok(TsmReport { outblob, auxblob })
}

#[cfg(test)]
mod fake {
    //! A temporary directory that imitates a configfs-tsm report entry: `provider`, `inblob`,
    //! `outblob` and `auxblob` are plain files, `generation` a FIFO served by a thread, so the
    //! value changes between reads as the kernel's does: `41` for the first read, `42 + extra`
    //! once `inblob` was written, `42 + extra + late` for the last read (`extra`, `late`:
    //! writes by someone else before the report was asked and while it was read).

    use std::io::Write;
    use std::path::{Path, PathBuf};

    pub fn entry(
        provider: &str,
        outblob: &[u8],
        auxblob: Option<&[u8]>,
        extra: u64,
        late: u64,
    ) -> PathBuf {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nacre-tsm-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("provider"), format!("{provider}\n")).unwrap();
        std::fs::write(dir.join("inblob"), b"").unwrap();
        std::fs::write(dir.join("outblob"), outblob).unwrap();
        if let Some(a) = auxblob {
            std::fs::write(dir.join("auxblob"), a).unwrap();
        }
        let mkfifo = |p: &Path| {
            let ok = std::process::Command::new("mkfifo")
                .arg(p)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "mkfifo {}", p.display());
        };
        mkfifo(&dir.join("generation"));
        let d = dir.clone();
        // Serves the protocol's three reads, one value each: a new FIFO replaces the one being
        // read before the writer closes it, so the reader's next open finds the new one. A
        // thread still blocked when the test ends does not keep the test binary alive.
        std::thread::spawn(move || {
            for read in 0..3 {
                let Ok(mut w) = std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("generation"))
                else {
                    return;
                };
                let written = std::fs::read(d.join("inblob")).is_ok_and(|b| !b.is_empty());
                let v = match (written, read) {
                    (false, _) => 41,
                    (true, 2) => 42 + extra + late,
                    (true, _) => 42 + extra,
                };
                let _ = writeln!(w, "{v}");
                mkfifo(&d.join("generation.next"));
                let _ = std::fs::rename(d.join("generation.next"), d.join("generation"));
            }
        });
        dir
    }

    pub fn inblob(entry: &Path) -> Vec<u8> {
        std::fs::read(entry.join("inblob")).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_with_and_without_auxblob() {
        let e = fake::entry("tdx_guest", b"QUOTE", None, 0, 0);
        let r = report_in(&e, PROVIDER_TDX_GUEST, &[7; 64]).unwrap();
        assert_eq!(r.outblob, b"QUOTE");
        assert_eq!(r.auxblob, None);
        assert_eq!(fake::inblob(&e), vec![7; 64]);

        let e = fake::entry("sev_guest\n", b"REPORT", Some(b"CERTS"), 0, 0);
        let r = report_in(&e, PROVIDER_SEV_GUEST, b"data").unwrap();
        assert_eq!(r.outblob, b"REPORT");
        assert_eq!(r.auxblob.as_deref(), Some(&b"CERTS"[..]));
        assert_eq!(fake::inblob(&e), b"data");

        // An empty auxblob is no auxblob.
        let e = fake::entry("sev_guest", b"REPORT", Some(b""), 0, 0);
        assert_eq!(report_in(&e, "sev_guest", b"x").unwrap().auxblob, None);
    }

    #[test]
    fn a_race_is_refused() {
        // Someone else wrote the entry too: generation moved by 2, not 1.
        let e = fake::entry("tdx_guest", b"QUOTE", None, 1, 0);
        let err = report_in(&e, PROVIDER_TDX_GUEST, &[1; 64]).unwrap_err();
        assert!(err.contains("raced with another writer"), "{err}");
        assert!(err.contains("41 before writing inblob, 43 after"), "{err}");
        // Someone wrote while the report was read: the blobs may be theirs.
        let e = fake::entry("tdx_guest", b"QUOTE", None, 0, 1);
        let err = report_in(&e, PROVIDER_TDX_GUEST, &[1; 64]).unwrap_err();
        assert!(
            err.contains("42 when the report was asked, 43 after"),
            "{err}"
        );
        // The same entry without the race: the protocol's reads in order.
        let e = fake::entry("tdx_guest", b"QUOTE", None, 0, 0);
        assert!(report_in(&e, PROVIDER_TDX_GUEST, &[1; 64]).is_ok());
        let _ = std::fs::remove_dir_all(&e);
    }

    #[test]
    fn another_provider_is_refused_before_anything_is_written() {
        let e = fake::entry("sev_guest", b"REPORT", Some(b"C"), 0, 0);
        let err = report_in(&e, PROVIDER_TDX_GUEST, &[1; 64]).unwrap_err();
        assert!(err.contains("\"sev_guest\", not \"tdx_guest\""), "{err}");
        assert!(fake::inblob(&e).is_empty());
    }

    #[test]
    fn an_empty_outblob_is_refused() {
        let e = fake::entry("tdx_guest", b"", None, 0, 0);
        let err = report_in(&e, PROVIDER_TDX_GUEST, &[1; 64]).unwrap_err();
        assert!(err.contains("outblob: empty"), "{err}");
    }

    #[test]
    fn entries_are_made_and_removed_under_base() {
        let base = std::env::temp_dir().join(format!("nacre-tsm-base-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let err = configfs_report(&base, PROVIDER_TDX_GUEST, &[0; 64]).unwrap_err();
        assert!(err.contains("configfs-tsm, Linux 6.7+"), "{err}");
        std::fs::create_dir_all(&base).unwrap();
        // A plain directory is not configfs: the new entry has no attributes. The error names
        // the missing file, and the entry is gone afterwards.
        let err = configfs_report(&base, PROVIDER_TDX_GUEST, &[0; 64]).unwrap_err();
        assert!(err.contains("provider"), "{err}");
        assert_eq!(std::fs::read_dir(&base).unwrap().count(), 0);
        let err = configfs_report(&base, PROVIDER_TDX_GUEST, &[0; 65]).unwrap_err();
        assert!(err.contains("at most 64"), "{err}");
        let _ = std::fs::remove_dir_all(&base);
    }
}
