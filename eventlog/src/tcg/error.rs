//! Errors from parsing and writing crypto-agile logs.
//!
//! A parse error always carries the byte offset of the offending field and, once the header
//! is behind us, the number of the record (numbered like tpm2_eventlog's `EventNum`: 0 is the
//! Spec ID header, 1 the first TCG_PCR_EVENT2), so a bad log can be inspected with `xxd -s`.

use std::fmt;

use super::EventType;
use crate::alg::{AlgError, HashAlg};

/// Where and why a log failed to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset of the offending field from the start of the log.
    pub offset: usize,
    /// Record number (0 = Spec ID header), if the error lies inside a record.
    pub record: Option<usize>,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event log byte offset {}", self.offset)?;
        if let Some(r) = self.record {
            write!(f, " (record {r})")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl std::error::Error for ParseError {}

/// The ways a crypto-agile log can be malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// A field runs past the end of the data.
    #[error("truncated {field}: needs {needed} bytes, {available} left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the data.
        available: usize,
    },
    /// The first record is not the EV_NO_ACTION Spec ID event.
    #[error("first record must be EV_NO_ACTION (the Spec ID event), found {0}")]
    HeaderEventType(EventType),
    /// The Spec ID event is not on PCR 0.
    #[error("Spec ID event must be on PCR 0, found PCR {0}")]
    HeaderPcr(u32),
    /// The log is the SHA-1-only format from TPM 1.2 days.
    #[error("log starts with \"Spec ID Event00\": a SHA-1-only log, not crypto-agile")]
    Sha1OnlyLog,
    /// The Spec ID signature is wrong.
    #[error("Spec ID signature is {0:?}, expected \"Spec ID Event03\"")]
    BadSignature(String),
    /// The Spec ID event's size differs from the structure it contains.
    #[error("Spec ID event size is {declared} bytes but its contents take {actual}")]
    SpecIdSize {
        /// eventSize of the header record.
        declared: u32,
        /// Size implied by numberOfAlgorithms and vendorInfoSize.
        actual: usize,
    },
    /// numberOfAlgorithms is 0.
    #[error("Spec ID event lists no hash algorithms")]
    NoAlgorithms,
    /// numberOfAlgorithms is more than there are distinct known algorithms.
    #[error("Spec ID event lists {0} hash algorithms, more than exist")]
    TooManyAlgorithms(u32),
    /// A TPM_ALG_ID this crate does not know.
    #[error("unknown hash algorithm id 0x{0:04x}")]
    UnknownAlgorithm(u16),
    /// The Spec ID event lists an algorithm twice.
    #[error("Spec ID event lists {0} twice")]
    DuplicateAlgorithm(HashAlg),
    /// The Spec ID event declares the wrong digest size for an algorithm.
    #[error("Spec ID event declares {declared}-byte digests for {alg}, which has {expected}")]
    HeaderDigestSize {
        /// The algorithm.
        alg: HashAlg,
        /// Size in the header.
        declared: u16,
        /// The algorithm's real size.
        expected: usize,
    },
    /// A record's digest count differs from the header's number of algorithms.
    #[error("digest count {found} does not match the {expected} algorithms of the Spec ID event")]
    DigestCount {
        /// Count in the record.
        found: u32,
        /// numberOfAlgorithms.
        expected: usize,
    },
    /// A record carries a digest for a bank the header does not list.
    #[error("digest for {0}, which the Spec ID event does not list")]
    AlgorithmNotInHeader(HashAlg),
    /// A record carries two digests for one bank.
    #[error("two digests for {0} in one record")]
    DuplicateDigest(HashAlg),
    /// PCR index outside 0..=23.
    #[error("PCR index {0} is out of range 0..=23")]
    PcrIndex(u32),
    /// eventSize points past the end of the log.
    #[error("event size {size} exceeds the {available} bytes left in the log")]
    EventSize {
        /// eventSize.
        size: u32,
        /// Bytes left after the size field.
        available: usize,
    },
}

/// Why an in-memory log cannot be written (it would not parse back).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The Spec ID event lists no algorithm, or too many, or one twice.
    #[error("Spec ID event must list 1 to 5 distinct algorithms")]
    BadAlgorithmList,
    /// vendorInfo is longer than its u8 size field allows.
    #[error("vendor info is {0} bytes, at most 255 fit")]
    VendorInfoTooLong(usize),
    /// An event's digests are not exactly one of the right size per bank.
    #[error("event {index}: digests must be exactly one of the right size per Spec ID bank")]
    Digests {
        /// Index into `EventLog::events`.
        index: usize,
    },
    /// An event's PCR index is outside 0..=23.
    #[error("event {index}: PCR index {pcr} is out of range 0..=23")]
    PcrIndex {
        /// Index into `EventLog::events`.
        index: usize,
        /// The PCR index.
        pcr: u32,
    },
    /// An event's data does not fit the u32 size field.
    #[error("event {index}: {len} bytes of data do not fit a u32 size")]
    DataTooLong {
        /// Index into `EventLog::events`.
        index: usize,
        /// Data length.
        len: usize,
    },
    /// Hashing failed (an SM3 bank when computing digests).
    #[error(transparent)]
    Alg(#[from] AlgError),
}
