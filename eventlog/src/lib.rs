//! Measured-boot event logs for nacre.
//!
//! * [`tcg`] parses and writes the firmware's TCG PC Client crypto-agile log
//!   (`/sys/kernel/security/tpm0/binary_bios_measurements`).
//! * [`decode`] turns event data into text for listings and diffs.
//! * [`cel`] reads and writes the runtime log (CEL-JSON records, one per line).
//! * [`runtime`] defines the events nacre's PID 1 extends (boot phases on PCR 11, the cluster
//!   identity on PCR 15), shared by the init and the measurement predictor.
//! * [`replay`] computes PCR values from a firmware log plus runtime records, for comparison
//!   with a TPM quote.
//!
//! All parsers take untrusted bytes: they return typed errors naming the byte offset (or line)
//! and never panic; the crate is fuzzed (the top-level `fuzz/`: `eventlog_tcg`, `eventlog_cel`).
//! The lints below keep it that way outside unit tests: no slice indexing, no unchecked
//! arithmetic or truncating casts, no unwrap/expect/panic.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod alg;
mod bytes;
pub mod cel;
pub mod decode;
pub mod replay;
pub mod runtime;
pub mod tcg;

pub use alg::{AlgError, HashAlg};
pub use cel::{CelDigest, CelError, CelRecord, CelWriter};
pub use decode::EventData;
pub use replay::{replay, replay_banks, PcrBank, ReplayError};
pub use runtime::{pcr11_after, Phase, RuntimeEvent};
pub use tcg::{Event, EventLog, EventType, ParseError, SpecIdEvent};
