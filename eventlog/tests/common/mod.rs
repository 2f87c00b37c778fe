//! Helpers shared by the integration tests: the real firmware logs in `tests/fixtures/`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use nacre_eventlog::EventLog;

/// The fixture boots (see tests/fixtures/README.md).
pub const FIXTURES: [&str; 3] = ["plain", "extra", "sb-custom"];

pub fn fixture_path(name: &str, suffix: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.{suffix}"))
}

pub fn log_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name, "eventlog.bin")).unwrap()
}

pub fn log(name: &str) -> EventLog {
    EventLog::parse(&log_bytes(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The sha256 PCRs the guest read from sysfs: PCR index -> value.
pub fn pcrs(name: &str) -> BTreeMap<u32, Vec<u8>> {
    let text = std::fs::read_to_string(fixture_path(name, "pcrs.json")).unwrap();
    let map: BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
    map.into_iter()
        .map(|(k, v)| (k.parse().unwrap(), hex::decode(v).unwrap()))
        .collect()
}
