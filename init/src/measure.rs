//! Runtime measurements: each event defined in `nacre_eventlog::runtime` (the one definition
//! nacre-measure predicts from) is extended into every active PCR bank and appended to the
//! runtime log, `/run/nacre/runtime.cel`, which a verifier replays after the firmware log.
//!
//! In a TDX guest an event with an RTMR (stage 2's phases `sysinit` and `ready`, the cluster
//! configuration and the cluster id: RTMR[3]) is extended there too, with the SHA-384 of the
//! same content, through the kernel's RTMR extend interface ([`Rtmr`], Linux 6.16+). Fail
//! closed: a TDX node that cannot extend RTMR[3] stops, it never goes on with a phase or a
//! membership only its (host-emulatable) vTPM shows.

use crate::tpm::{Tpm, TpmError};
use nacre_eventlog::runtime::{Phase, RuntimeEvent, RTMR_LEN};
use nacre_eventlog::{CelError, CelWriter};
use std::path::{Path, PathBuf};

pub const RUNTIME_LOG: &str = "/run/nacre/runtime.cel";
/// The tdx-guest driver's measurement registers (Linux 6.16+,
/// Documentation/ABI/testing/sysfs-devices-virtual-misc-tdx_guest): `rtmrN:sha384` reads the
/// register, a 48-byte write extends it.
pub const TDX_MEASUREMENTS: &str = "/sys/devices/virtual/misc/tdx_guest/measurements";

#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error(transparent)]
    Tpm(#[from] TpmError),
    #[error("runtime log: {0}")]
    Log(#[from] CelError),
    #[error("hashing: {0}")]
    Alg(#[from] nacre_eventlog::AlgError),
    #[error("runtime log directory: {0}")]
    Dir(std::io::Error),
    #[error("TDX RTMR[{index}]: {reason}")]
    Rtmr { index: usize, reason: String },
}

/// The kernel's TDX RTMR extend interface: `<dir>/rtmr<N>:sha384` ([`TDX_MEASUREMENTS`] on a
/// node; a test gives a temporary directory). NOT TESTED ON HARDWARE here (no TDX machine): the
/// writes are tested against plain files.
#[derive(Debug, Clone)]
pub struct Rtmr {
    dir: PathBuf,
}

impl Rtmr {
    /// The interface in `dir`, checked now: RTMR[3]'s file must be there, so a kernel without
    /// it stops the boot before the node asks anything of the key service.
    pub fn open(dir: &Path) -> Result<Rtmr, MeasureError> {
        let r = Rtmr {
            dir: dir.to_path_buf(),
        };
        let p = r.path(nacre_eventlog::runtime::CLUSTER_ID_RTMR);
        if !p.exists() {
            return Err(MeasureError::Rtmr {
                index: nacre_eventlog::runtime::CLUSTER_ID_RTMR,
                reason: format!(
                    "this kernel has no RTMR extend interface (Linux 6.16+ needed): {} is missing",
                    p.display()
                ),
            });
        }
        Ok(r)
    }

    fn path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("rtmr{index}:sha384"))
    }

    /// Extend RTMR[`index`] with `digest` (one 48-byte write; the kernel does
    /// TDG.MR.RTMR.EXTEND). The file is never created: missing is an error.
    pub fn extend(&self, index: usize, digest: &[u8; RTMR_LEN]) -> Result<(), MeasureError> {
        use std::io::Write;
        let p = self.path(index);
        let fail = |reason: String| MeasureError::Rtmr { index, reason };
        let mut f = match std::fs::OpenOptions::new().write(true).open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(fail(format!(
                    "this kernel has no RTMR extend interface (Linux 6.16+ needed): {} is missing",
                    p.display()
                )))
            }
            Err(e) => return Err(fail(format!("{}: {e}", p.display()))),
        };
        match f.write(digest) {
            Ok(RTMR_LEN) => Ok(()),
            Ok(n) => Err(fail(format!(
                "{}: the kernel took {n} of {RTMR_LEN} bytes",
                p.display()
            ))),
            Err(e) => Err(fail(format!("extending through {}: {e}", p.display()))),
        }
    }
}

pub struct Measurer {
    tpm: Option<Tpm>,
    log: CelWriter,
    /// In a TDX guest: where events with an RTMR are extended too.
    rtmr: Option<Rtmr>,
}

impl Measurer {
    /// `tpm` is `None` only on an insecure platform without a TPM: events are then logged but
    /// not extended (and the node cannot attest).
    pub fn new(tpm: Option<Tpm>) -> Result<Self, MeasureError> {
        std::fs::create_dir_all(Path::new(RUNTIME_LOG).parent().unwrap_or(Path::new("/run")))
            .map_err(MeasureError::Dir)?;
        Self::with_log(tpm, Path::new(RUNTIME_LOG))
    }

    fn with_log(tpm: Option<Tpm>, log: &Path) -> Result<Self, MeasureError> {
        Ok(Measurer {
            tpm,
            log: CelWriter::open(log)?,
            rtmr: None,
        })
    }

    /// In a TDX guest: events with an RTMR ([`RuntimeEvent::rtmr`]) are extended there too.
    pub fn set_rtmr(&mut self, rtmr: Rtmr) {
        self.rtmr = Some(rtmr);
    }

    pub fn phase(&mut self, phase: Phase) -> Result<(), MeasureError> {
        self.event(RuntimeEvent::Phase(phase))
    }

    pub fn event(&mut self, ev: RuntimeEvent) -> Result<(), MeasureError> {
        let banks = match &self.tpm {
            Some(t) if !t.banks.is_empty() => t.banks.clone(),
            _ => vec![nacre_eventlog::HashAlg::Sha256],
        };
        let mut digests = Vec::new();
        for alg in &banks {
            digests.push((*alg, ev.digest(*alg)?));
        }
        // Extend first: a record in the log must never claim an extension that did not happen.
        // The RTMR before the TPM: a TDX node that cannot extend it changes nothing and stops.
        if let (Some(index), Some(r)) = (ev.rtmr(), &self.rtmr) {
            r.extend(index, &ev.rtmr_digest())?;
        }
        if let Some(t) = &mut self.tpm {
            t.extend(ev.pcr(), &digests)?;
        }
        let rec = ev.to_cel(self.log.next_recnum(), &banks)?;
        self.log.append(&rec)?;
        crate::info!("measured {} into PCR {}", ev.content(), ev.pcr());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nacre-init-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn phases_and_cluster_id_go_to_rtmr3_in_a_tdx_guest() {
        let d = tmp("rtmr");
        let sysfs = d.join("measurements");
        std::fs::create_dir_all(&sysfs).unwrap();
        std::fs::write(sysfs.join("rtmr3:sha384"), b"").unwrap();
        let mut m = Measurer::with_log(None, &d.join("runtime.cel")).unwrap();
        m.set_rtmr(Rtmr::open(&sysfs).unwrap());
        // Stage 1's phases have no RTMR: nothing written.
        m.phase(Phase::LeaveInitrd).unwrap();
        assert_eq!(std::fs::read(sysfs.join("rtmr3:sha384")).unwrap(), b"");
        // `sysinit` goes to RTMR[3]: SHA-384 of the word (a plain file keeps the last write).
        m.phase(Phase::Sysinit).unwrap();
        assert_eq!(
            std::fs::read(sysfs.join("rtmr3:sha384")).unwrap(),
            ring_sha384(b"sysinit")
        );
        let ev = RuntimeEvent::ClusterId([0x11; 32]);
        m.event(ev).unwrap();
        // The 48-byte SHA-384 digest of the content, the one definition the verifier replays.
        let written = std::fs::read(sysfs.join("rtmr3:sha384")).unwrap();
        assert_eq!(written, ev.rtmr_digest());
        assert_eq!(
            written,
            ring_sha384(format!("nacre.cluster-id={}", "11".repeat(32)).as_bytes())
        );
        m.phase(Phase::Ready).unwrap();
        assert_eq!(
            std::fs::read(sysfs.join("rtmr3:sha384")).unwrap(),
            ring_sha384(b"ready")
        );
        let log = nacre_eventlog::cel::read(&d.join("runtime.cel")).unwrap();
        assert_eq!(log.len(), 4);
        // The log's RTMR[3] events, replayed, give the phase nacre-init reached.
        let events: Vec<RuntimeEvent> = log
            .iter()
            .map(|r| RuntimeEvent::from_cel(r).unwrap())
            .collect();
        let state = nacre_eventlog::runtime::rtmr3_state(&events).unwrap();
        assert_eq!(state.phase, Some(Phase::Ready));
        assert_eq!(state.cluster, vec![ev]);
        let _ = std::fs::remove_dir_all(&d);
    }

    fn ring_sha384(b: &[u8]) -> Vec<u8> {
        nacre_eventlog::HashAlg::Sha384.hash(b).unwrap()
    }

    #[test]
    fn no_rtmr_interface_is_fatal_and_nothing_is_logged() {
        let d = tmp("no-rtmr");
        let err = Rtmr::open(&d.join("measurements")).unwrap_err().to_string();
        assert!(
            err.contains("this kernel has no RTMR extend interface (Linux 6.16+ needed)"),
            "{err}"
        );
        assert!(err.contains("rtmr3:sha384"), "{err}");
        // The interface vanished after it was checked (or the write fails): the event fails
        // and is not logged.
        let sysfs = d.join("measurements");
        std::fs::create_dir_all(&sysfs).unwrap();
        std::fs::write(sysfs.join("rtmr3:sha384"), b"").unwrap();
        let mut m = Measurer::with_log(None, &d.join("runtime.cel")).unwrap();
        m.set_rtmr(Rtmr::open(&sysfs).unwrap());
        std::fs::remove_file(sysfs.join("rtmr3:sha384")).unwrap();
        let err = m
            .event(RuntimeEvent::ClusterId([1; 32]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Linux 6.16+ needed"), "{err}");
        assert!(!sysfs.join("rtmr3:sha384").exists(), "never created");
        let log = nacre_eventlog::cel::read(&d.join("runtime.cel")).unwrap_or_default();
        assert!(log.is_empty());
        // A write the kernel refuses (here: a directory in the file's place).
        std::fs::create_dir(sysfs.join("rtmr3:sha384")).unwrap();
        let err = m
            .event(RuntimeEvent::ClusterId([1; 32]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("TDX RTMR[3]"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn without_tdx_no_rtmr_is_touched() {
        let d = tmp("no-tdx");
        let mut m = Measurer::with_log(None, &d.join("runtime.cel")).unwrap();
        m.event(RuntimeEvent::ClusterId([2; 32])).unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }
}
