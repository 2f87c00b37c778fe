//! Runtime measurements: each event defined in `nacre_eventlog::runtime` (the one definition
//! nacre-measure predicts from) is extended into every active PCR bank and appended to the
//! runtime log, `/run/nacre/runtime.cel`, which a verifier replays after the firmware log.

use crate::tpm::{Tpm, TpmError};
use nacre_eventlog::runtime::{Phase, RuntimeEvent};
use nacre_eventlog::{CelError, CelWriter};
use std::path::Path;

pub const RUNTIME_LOG: &str = "/run/nacre/runtime.cel";

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
}

pub struct Measurer {
    tpm: Option<Tpm>,
    log: CelWriter,
}

impl Measurer {
    /// `tpm` is `None` only on an insecure platform without a TPM: events are then logged but
    /// not extended (and the node cannot attest).
    pub fn new(tpm: Option<Tpm>) -> Result<Self, MeasureError> {
        std::fs::create_dir_all(Path::new(RUNTIME_LOG).parent().unwrap_or(Path::new("/run")))
            .map_err(MeasureError::Dir)?;
        Ok(Measurer {
            tpm,
            log: CelWriter::open(Path::new(RUNTIME_LOG))?,
        })
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
        if let Some(t) = &mut self.tpm {
            t.extend(ev.pcr(), &digests)?;
        }
        let rec = ev.to_cel(self.log.next_recnum(), &banks)?;
        self.log.append(&rec)?;
        crate::info!("measured {} into PCR {}", ev.content(), ev.pcr());
        Ok(())
    }
}
