//! Replaying a firmware log plus nacre's runtime records to the PCR values a TPM should hold.
//!
//! A verifier compares these values with a TPM quote: if they match, the log is an honest
//! account of what was measured. The rules follow TPM 2.0 Part 1 and the PC Client profile:
//! * After TPM2_Startup PCRs 0–16 and 23 are all zeros, PCRs 17–22 (the DRTM PCRs) all ones.
//!   SRTM firmware logs do not touch 17–22 and a DRTM launch (which resets them to zero) is
//!   not represented in such a log, so an extend of them is applied to the all-ones value.
//! * The EV_NO_ACTION "StartupLocality" event on PCR 0 says the TPM was started from locality
//!   3 or 4 (H-CRTM): PCR 0 then starts as zeros with the locality in its last byte. It must
//!   come before any extend of PCR 0; a later one is an error, not a silent reset.
//! * Other EV_NO_ACTION events are never extended; every other event extends its own digest
//!   for the bank (`new = H(old || digest)`) — the event data is not re-hashed here.
//! * Runtime (CEL) records follow the firmware log. As with TPM2_PCR_Extend, a record only
//!   extends the banks it has a digest for.

use crate::alg::{AlgError, HashAlg};
use crate::cel::CelRecord;
use crate::decode::{self, EventData};
use crate::tcg::{EventLog, EventType, PCR_COUNT};

/// The PCR values of one bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrBank {
    /// The bank's algorithm.
    pub alg: HashAlg,
    /// PCR 0..=23, each `alg.digest_size()` bytes.
    pub values: [Vec<u8>; PCR_COUNT],
}

/// Why a single extend failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtendError {
    /// PCR index outside 0..=23.
    #[error("PCR index {0} is out of range 0..=23")]
    PcrIndex(u32),
    /// The digest does not have the bank's size.
    #[error("{alg} digest is {found} bytes, expected {expected}")]
    DigestSize {
        /// The bank.
        alg: HashAlg,
        /// The digest's length.
        found: usize,
        /// The bank's digest size.
        expected: usize,
    },
    /// The bank's algorithm cannot be computed.
    #[error(transparent)]
    Alg(#[from] AlgError),
}

/// Why a replay failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// A bank was asked for that the firmware log does not cover.
    #[error("the event log has no {0} bank")]
    MissingBank(HashAlg),
    /// A firmware event could not be extended (numbered like parse errors: 1 = first event).
    #[error("event log record {record} (byte offset {offset}): {source}")]
    Firmware {
        /// Record number.
        record: usize,
        /// Byte offset of the record.
        offset: usize,
        /// What went wrong.
        source: ExtendError,
    },
    /// A StartupLocality event after PCR 0 had already been extended.
    #[error("event log record {record}: StartupLocality event after PCR 0 was extended")]
    LateStartupLocality {
        /// Record number.
        record: usize,
    },
    /// A runtime record could not be extended.
    #[error("runtime record {recnum}: {source}")]
    Runtime {
        /// The record's recnum.
        recnum: u64,
        /// What went wrong.
        source: ExtendError,
    },
}

impl PcrBank {
    /// The bank right after TPM2_Startup(CLEAR) from locality 0.
    pub fn new(alg: HashAlg) -> Self {
        let values = std::array::from_fn(|i| Self::reset_value(alg, i));
        PcrBank { alg, values }
    }

    /// The value a PCR holds after TPM2_Startup: all ones for 17–22, zeros otherwise.
    pub fn reset_value(alg: HashAlg, pcr: usize) -> Vec<u8> {
        let fill = if (17..=22).contains(&pcr) { 0xFF } else { 0 };
        vec![fill; alg.digest_size()]
    }

    /// The value of one PCR.
    pub fn get(&self, pcr: u32) -> Option<&[u8]> {
        self.values.get(pcr as usize).map(Vec::as_slice)
    }

    /// `PCR[pcr] = H(PCR[pcr] || digest)`.
    pub fn extend(&mut self, pcr: u32, digest: &[u8]) -> Result<(), ExtendError> {
        let expected = self.alg.digest_size();
        if digest.len() != expected {
            return Err(ExtendError::DigestSize {
                alg: self.alg,
                found: digest.len(),
                expected,
            });
        }
        let alg = self.alg;
        let slot = self
            .values
            .get_mut(pcr as usize)
            .ok_or(ExtendError::PcrIndex(pcr))?;
        *slot = alg.extend(slot, digest)?;
        Ok(())
    }

    /// Extends a runtime record's digest for this bank, if it has one.
    pub fn extend_cel(&mut self, rec: &CelRecord) -> Result<(), ExtendError> {
        match rec.digest(self.alg) {
            Some(d) => self.extend(rec.pcr, d),
            None => Ok(()),
        }
    }
}

/// Replays every bank of the log, then the runtime records.
pub fn replay(log: &EventLog, runtime: &[CelRecord]) -> Result<Vec<PcrBank>, ReplayError> {
    replay_banks(log, runtime, log.banks())
}

/// Replays the given banks (e.g. only sha256 when the log also has an SM3 bank).
pub fn replay_banks(
    log: &EventLog,
    runtime: &[CelRecord],
    banks: &[HashAlg],
) -> Result<Vec<PcrBank>, ReplayError> {
    let mut out = Vec::with_capacity(banks.len());
    for &alg in banks {
        if !log.banks().contains(&alg) {
            return Err(ReplayError::MissingBank(alg));
        }
        let mut bank = PcrBank::new(alg);
        let mut pcr0_extended = false;
        for (i, ev) in log.events.iter().enumerate() {
            let record = i.saturating_add(1);
            let fail = |source| ReplayError::Firmware {
                record,
                offset: ev.offset,
                source,
            };
            if ev.event_type == EventType::NoAction {
                if ev.pcr == 0 {
                    if let EventData::StartupLocality(l) = decode::decode(ev.event_type, &ev.data) {
                        if pcr0_extended {
                            return Err(ReplayError::LateStartupLocality { record });
                        }
                        let mut v = vec![0; alg.digest_size()];
                        if let Some(last) = v.last_mut() {
                            *last = l;
                        }
                        bank.values[0] = v;
                    }
                }
                continue;
            }
            let digest = ev.digest(alg).ok_or_else(|| {
                fail(ExtendError::DigestSize {
                    alg,
                    found: 0,
                    expected: alg.digest_size(),
                })
            })?;
            bank.extend(ev.pcr, digest).map_err(fail)?;
            pcr0_extended |= ev.pcr == 0;
        }
        for rec in runtime {
            bank.extend_cel(rec)
                .map_err(|source| ReplayError::Runtime {
                    recnum: rec.recnum,
                    source,
                })?;
        }
        out.push(bank);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::STARTUP_LOCALITY_SIGNATURE;

    #[test]
    fn reset_values_and_locality() {
        let b = PcrBank::new(HashAlg::Sha256);
        assert_eq!(b.get(16).unwrap(), &[0; 32]);
        assert_eq!(b.get(17).unwrap(), &[0xFF; 32]);
        assert_eq!(b.get(22).unwrap(), &[0xFF; 32]);
        assert_eq!(b.get(23).unwrap(), &[0; 32]);
        assert_eq!(b.get(24), None);

        let mut log = EventLog::new(vec![HashAlg::Sha256]);
        let mut loc = STARTUP_LOCALITY_SIGNATURE.to_vec();
        loc.push(3);
        let zero = |alg: HashAlg| crate::tcg::Digest {
            alg,
            value: vec![0; alg.digest_size()],
        };
        log.push(
            0,
            EventType::NoAction,
            vec![zero(HashAlg::Sha256)],
            loc.clone(),
        )
        .unwrap();
        log.push_hashed(18, EventType::Action, b"x", b"x".to_vec())
            .unwrap();
        let banks = replay(&log, &[]).unwrap();
        let mut want0 = [0u8; 32];
        want0[31] = 3;
        assert_eq!(banks[0].get(0).unwrap(), &want0);
        let mut pcr18 = PcrBank::new(HashAlg::Sha256);
        pcr18
            .extend(18, &HashAlg::Sha256.hash(b"x").unwrap())
            .unwrap();
        assert_eq!(banks[0].get(18), pcr18.get(18));

        log.push_hashed(0, EventType::SCrtmVersion, b"v", b"v".to_vec())
            .unwrap();
        log.push(0, EventType::NoAction, vec![zero(HashAlg::Sha256)], loc)
            .unwrap();
        assert_eq!(
            replay(&log, &[]),
            Err(ReplayError::LateStartupLocality { record: 4 })
        );
        assert_eq!(
            replay_banks(&log, &[], &[HashAlg::Sha1]),
            Err(ReplayError::MissingBank(HashAlg::Sha1))
        );
    }

    #[test]
    fn extend_checks_sizes() {
        let mut b = PcrBank::new(HashAlg::Sha1);
        assert!(matches!(
            b.extend(0, &[0; 32]),
            Err(ExtendError::DigestSize { .. })
        ));
        assert_eq!(b.extend(24, &[0; 20]), Err(ExtendError::PcrIndex(24)));
        let mut s = PcrBank::new(HashAlg::Sm3_256);
        assert!(matches!(s.extend(0, &[0; 32]), Err(ExtendError::Alg(_))));
    }
}
