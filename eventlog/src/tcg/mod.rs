//! The TCG PC Client Platform Firmware Profile crypto-agile event log.
//!
//! This is the file Linux exposes as `/sys/kernel/security/tpm0/binary_bios_measurements`:
//! one SHA-1-format TCG_PCR_EVENT whose data is the Spec ID event (see [`spec_id`]), then
//! TCG_PCR_EVENT2 records until the end of the data:
//!
//! ```text
//! TCG_PCR_EVENT2: pcrIndex u32 | eventType u32 | count u32 | count × (algId u16, digest) |
//!                 eventSize u32 | event[eventSize]
//! ```
//!
//! The log has no record count, so where it ends is decided by the data:
//! * The log ends cleanly where a record ends and no bytes follow. A log cut exactly at a
//!   record boundary is therefore indistinguishable from a shorter log and parses fine with
//!   fewer events; replaying it against a quote is what catches that.
//! * Some firmware hands over its whole preallocated log area, so a tail of only 0x00 or only
//!   0xFF bytes is padding and ends the log ([`EventLog::padding`] counts it). Neither can
//!   start a valid record (count 0, or PCR index 0xFFFFFFFF), so this never hides an event.
//!   One consequence, documented and tested: a log cut 1–4 bytes into a record on PCR 0
//!   leaves only zero bytes of that record and reads as padding.
//! * Anything else that does not parse as a complete record is an error.

pub mod error;
pub mod event_type;
pub mod spec_id;

pub use error::{ParseError, ParseErrorKind, WriteError};
pub use event_type::EventType;
pub use spec_id::SpecIdEvent;

use crate::alg::HashAlg;
use crate::bytes::Cursor;

/// Number of PCRs a PC Client TPM has.
pub const PCR_COUNT: usize = 24;

/// One bank's digest in a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// The bank.
    pub alg: HashAlg,
    /// The digest, `alg.digest_size()` bytes.
    pub value: Vec<u8>,
}

/// One TCG_PCR_EVENT2 record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Byte offset of the record in the log it was parsed from (or will be written to).
    pub offset: usize,
    /// pcrIndex, 0..=23.
    pub pcr: u32,
    /// eventType.
    pub event_type: EventType,
    /// One digest per bank of the Spec ID event, in the order the record stores them.
    pub digests: Vec<Digest>,
    /// The event data.
    pub data: Vec<u8>,
}

impl Event {
    /// The digest for one bank, if the record has it.
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|d| d.alg == alg)
            .map(|d| d.value.as_slice())
    }

    /// Size of the record in bytes when serialized.
    pub fn encoded_len(&self) -> usize {
        self.digests
            .iter()
            .fold(16usize, |n, d| {
                n.saturating_add(2).saturating_add(d.value.len())
            })
            .saturating_add(self.data.len())
    }

    /// Human-readable decoding of the event data (never fails).
    pub fn decode(&self) -> crate::decode::EventData {
        crate::decode::decode(self.event_type, &self.data)
    }
}

/// A parsed crypto-agile event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// The header's Spec ID event: the banks every record covers.
    pub spec_id: SpecIdEvent,
    /// The header record's SHA-1 digest field (zero in every log seen; kept to round-trip).
    pub header_digest: [u8; 20],
    /// The TCG_PCR_EVENT2 records, in log order.
    pub events: Vec<Event>,
    /// Number of 0x00 or 0xFF padding bytes after the last record.
    pub padding: usize,
}

/// Size of the fixed part of the header TCG_PCR_EVENT before its data.
const HEADER_FIXED: usize = 4 + 4 + 20 + 4;

impl EventLog {
    /// An empty log over the given banks, with the header OVMF writes.
    pub fn new(banks: Vec<HashAlg>) -> Self {
        EventLog {
            spec_id: SpecIdEvent::new(banks),
            header_digest: [0; 20],
            events: Vec::new(),
            padding: 0,
        }
    }

    /// Parses a crypto-agile log. See the module documentation for where a log ends.
    pub fn parse(data: &[u8]) -> Result<Self, ParseError> {
        let mut c = Cursor::new(data);
        let (spec_id, header_digest) = parse_header(&mut c)?;
        let mut events = Vec::new();
        let mut padding = 0;
        while !c.is_empty() {
            let rest = c.rest();
            if rest.iter().all(|&b| b == 0) || rest.iter().all(|&b| b == 0xFF) {
                padding = rest.len();
                break;
            }
            let record = events.len().saturating_add(1);
            events.push(parse_event2(&mut c, &spec_id.algorithms, record)?);
        }
        Ok(EventLog {
            spec_id,
            header_digest,
            events,
            padding,
        })
    }

    /// The banks every record covers, in header order.
    pub fn banks(&self) -> &[HashAlg] {
        &self.spec_id.algorithms
    }

    /// The header record presented as an event (PCR 0, EV_NO_ACTION, data = Spec ID event),
    /// for listings that show it like tpm2_eventlog's event 0. Its one digest is the SHA-1
    /// header digest.
    pub fn header_event(&self) -> Event {
        Event {
            offset: 0,
            pcr: 0,
            event_type: EventType::NoAction,
            digests: vec![Digest {
                alg: HashAlg::Sha1,
                value: self.header_digest.to_vec(),
            }],
            data: self.spec_id.to_bytes().unwrap_or_default(),
        }
    }

    /// Appends a record with the given digests, after checking it would parse back.
    /// Returns the record's index in `events`.
    pub fn push(
        &mut self,
        pcr: u32,
        event_type: EventType,
        digests: Vec<Digest>,
        data: Vec<u8>,
    ) -> Result<usize, WriteError> {
        let mut ev = Event {
            offset: 0,
            pcr,
            event_type,
            digests,
            data,
        };
        let index = self.events.len();
        self.check_event(index, &ev)?;
        ev.offset = self.encoded_len()?.saturating_sub(self.padding);
        self.events.push(ev);
        Ok(index)
    }

    /// Appends a record whose digest in every bank is the hash of `measured` (what firmware
    /// does for separators and actions, where `measured == data`; for images the measured
    /// bytes are the Authenticode hash input and `data` the UEFI_IMAGE_LOAD_EVENT).
    pub fn push_hashed(
        &mut self,
        pcr: u32,
        event_type: EventType,
        measured: &[u8],
        data: Vec<u8>,
    ) -> Result<usize, WriteError> {
        let digests = self
            .banks()
            .iter()
            .map(|&alg| {
                Ok(Digest {
                    alg,
                    value: alg.hash(measured)?,
                })
            })
            .collect::<Result<Vec<_>, WriteError>>()?;
        self.push(pcr, event_type, digests, data)
    }

    fn check_event(&self, index: usize, ev: &Event) -> Result<(), WriteError> {
        if ev.pcr as usize >= PCR_COUNT {
            return Err(WriteError::PcrIndex { index, pcr: ev.pcr });
        }
        let banks = self.banks();
        let ok = ev.digests.len() == banks.len()
            && banks.iter().all(|&alg| {
                let mut matching = ev.digests.iter().filter(|d| d.alg == alg);
                matches!((matching.next(), matching.next()),
                    (Some(d), None) if d.value.len() == alg.digest_size())
            });
        if !ok {
            return Err(WriteError::Digests { index });
        }
        if u32::try_from(ev.data.len()).is_err() {
            return Err(WriteError::DataTooLong {
                index,
                len: ev.data.len(),
            });
        }
        Ok(())
    }

    /// Size of the serialized log, including padding.
    fn encoded_len(&self) -> Result<usize, WriteError> {
        let header = self.spec_id.to_bytes()?.len().saturating_add(HEADER_FIXED);
        Ok(self
            .events
            .iter()
            .fold(header, |n, e| n.saturating_add(e.encoded_len()))
            .saturating_add(self.padding))
    }

    /// Serializes the log. `parse(to_bytes(log))` gives back the same log, offsets included;
    /// `padding` zero bytes are appended.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WriteError> {
        let spec = self.spec_id.to_bytes()?;
        let mut out = Vec::with_capacity(self.encoded_len()?);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&EventType::NoAction.value().to_le_bytes());
        out.extend_from_slice(&self.header_digest);
        out.extend_from_slice(&len_u32(spec.len()).to_le_bytes());
        out.extend_from_slice(&spec);
        for (index, ev) in self.events.iter().enumerate() {
            self.check_event(index, ev)?;
            out.extend_from_slice(&ev.pcr.to_le_bytes());
            out.extend_from_slice(&ev.event_type.value().to_le_bytes());
            out.extend_from_slice(&len_u32(ev.digests.len()).to_le_bytes());
            for d in &ev.digests {
                out.extend_from_slice(&d.alg.id().to_le_bytes());
                out.extend_from_slice(&d.value);
            }
            out.extend_from_slice(&len_u32(ev.data.len()).to_le_bytes());
            out.extend_from_slice(&ev.data);
        }
        out.resize(out.len().saturating_add(self.padding), 0);
        Ok(out)
    }
}

/// A length already checked to fit (Spec ID at most ~300 bytes, at most 5 digests, data
/// checked by `check_event`).
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Reads `n` bytes or reports which field was cut short, and where.
fn need<'a>(
    c: &mut Cursor<'a>,
    n: usize,
    field: &'static str,
    record: usize,
) -> Result<&'a [u8], ParseError> {
    let offset = c.offset();
    let available = c.remaining();
    c.take(n).ok_or(ParseError {
        offset,
        record: Some(record),
        kind: ParseErrorKind::Truncated {
            field,
            needed: n,
            available,
        },
    })
}

fn need_u32(c: &mut Cursor<'_>, field: &'static str, record: usize) -> Result<u32, ParseError> {
    let b = need(c, 4, field, record)?;
    Ok(b.try_into().map(u32::from_le_bytes).unwrap_or(0))
}

/// Reads eventSize and the event data, checking the size against what is left.
fn event_data<'a>(c: &mut Cursor<'a>, record: usize) -> Result<&'a [u8], ParseError> {
    let size_off = c.offset();
    let size = need_u32(c, "eventSize", record)?;
    let available = c.remaining();
    c.take(size as usize).ok_or(ParseError {
        offset: size_off,
        record: Some(record),
        kind: ParseErrorKind::EventSize { size, available },
    })
}

/// The SHA-1-format TCG_PCR_EVENT carrying the Spec ID event.
fn parse_header(c: &mut Cursor<'_>) -> Result<(SpecIdEvent, [u8; 20]), ParseError> {
    let err = |offset, kind| ParseError {
        offset,
        record: Some(0),
        kind,
    };
    let pcr = need_u32(c, "Spec ID event pcrIndex", 0)?;
    if pcr != 0 {
        return Err(err(0, ParseErrorKind::HeaderPcr(pcr)));
    }
    let event_type = EventType::from_value(need_u32(c, "Spec ID event eventType", 0)?);
    if event_type != EventType::NoAction {
        return Err(err(4, ParseErrorKind::HeaderEventType(event_type)));
    }
    let digest = need(c, 20, "Spec ID event SHA-1 digest", 0)?
        .try_into()
        .unwrap_or([0; 20]);
    let data_off = c.offset().saturating_add(4);
    let data = event_data(c, 0)?;
    Ok((SpecIdEvent::parse(data, data_off)?, digest))
}

/// One TCG_PCR_EVENT2 record; `banks` are the Spec ID event's algorithms.
fn parse_event2(c: &mut Cursor<'_>, banks: &[HashAlg], record: usize) -> Result<Event, ParseError> {
    let err = |offset, kind| ParseError {
        offset,
        record: Some(record),
        kind,
    };
    let offset = c.offset();
    let pcr = need_u32(c, "pcrIndex", record)?;
    if pcr as usize >= PCR_COUNT {
        return Err(err(offset, ParseErrorKind::PcrIndex(pcr)));
    }
    let event_type = EventType::from_value(need_u32(c, "eventType", record)?);
    let count_off = c.offset();
    let count = need_u32(c, "digest count", record)?;
    if count as usize != banks.len() {
        return Err(err(
            count_off,
            ParseErrorKind::DigestCount {
                found: count,
                expected: banks.len(),
            },
        ));
    }
    let mut digests: Vec<Digest> = Vec::with_capacity(banks.len());
    for _ in 0..count {
        let alg_off = c.offset();
        let b = need(c, 2, "digest algorithm id", record)?;
        let id = b.try_into().map(u16::from_le_bytes).unwrap_or(0);
        let alg =
            HashAlg::from_id(id).map_err(|_| err(alg_off, ParseErrorKind::UnknownAlgorithm(id)))?;
        if !banks.contains(&alg) {
            return Err(err(alg_off, ParseErrorKind::AlgorithmNotInHeader(alg)));
        }
        if digests.iter().any(|d| d.alg == alg) {
            return Err(err(alg_off, ParseErrorKind::DuplicateDigest(alg)));
        }
        let value = need(c, alg.digest_size(), "digest", record)?.to_vec();
        digests.push(Digest { alg, value });
    }
    let data = event_data(c, record)?.to_vec();
    Ok(Event {
        offset,
        pcr,
        event_type,
        digests,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EventLog {
        let mut log = EventLog::new(vec![HashAlg::Sha1, HashAlg::Sha256]);
        log.push_hashed(0, EventType::SCrtmVersion, &[0, 0], vec![0, 0])
            .unwrap();
        log.push_hashed(7, EventType::Separator, &[0; 4], vec![0; 4])
            .unwrap();
        log
    }

    #[test]
    fn built_log_round_trips() {
        let log = sample();
        let bytes = log.to_bytes().unwrap();
        let back = EventLog::parse(&bytes).unwrap();
        assert_eq!(back, log);
        assert_eq!(back.to_bytes().unwrap(), bytes);
        let last = back.events.last().unwrap();
        assert_eq!(last.offset + last.encoded_len(), bytes.len());
    }

    #[test]
    fn padding_ends_the_log() {
        let bytes = sample().to_bytes().unwrap();
        for pad in [0x00u8, 0xFF] {
            let mut b = bytes.clone();
            b.extend(std::iter::repeat_n(pad, 1000));
            let log = EventLog::parse(&b).unwrap();
            assert_eq!((log.events.len(), log.padding), (2, 1000));
        }
        let mut b = bytes.clone();
        b.extend([0, 0, 1, 0]);
        let e = EventLog::parse(&b).unwrap_err();
        assert_eq!(e.offset, bytes.len());
        assert_eq!(e.record, Some(3));
    }

    #[test]
    fn push_rejects_what_would_not_parse() {
        let mut log = sample();
        let d = |alg: HashAlg| Digest {
            alg,
            value: vec![0; alg.digest_size()],
        };
        assert!(matches!(
            log.push(
                24,
                EventType::Ipl,
                vec![d(HashAlg::Sha1), d(HashAlg::Sha256)],
                vec![]
            ),
            Err(WriteError::PcrIndex { pcr: 24, .. })
        ));
        assert!(matches!(
            log.push(
                4,
                EventType::Ipl,
                vec![d(HashAlg::Sha1), d(HashAlg::Sha1)],
                vec![]
            ),
            Err(WriteError::Digests { index: 2 })
        ));
        assert!(log
            .push(
                4,
                EventType::Ipl,
                vec![d(HashAlg::Sha256), d(HashAlg::Sha1)],
                vec![]
            )
            .is_ok());
    }
}
