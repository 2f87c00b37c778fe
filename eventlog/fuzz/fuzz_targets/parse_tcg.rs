//! Any bytes through the crypto-agile parser, the decoders and replay: no panic, and a log
//! that parses must serialize and parse back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_eventlog::{replay, EventLog};

fuzz_target!(|data: &[u8]| {
    let Ok(log) = EventLog::parse(data) else {
        return;
    };
    for e in &log.events {
        let _ = e.decode().to_string();
    }
    let _ = log.header_event().decode().to_string();
    let _ = replay(&log, &[]);
    let bytes = log.to_bytes().expect("a parsed log must serialize");
    assert_eq!(EventLog::parse(&bytes).as_ref(), Ok(&log), "round trip");
});
