//! Any bytes through the CEL-JSON-lines reader: no panic; accepted records re-serialize to
//! the same lines and go through the runtime event checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_eventlog::{cel, RuntimeEvent};

fuzz_target!(|data: &[u8]| {
    let Ok(records) = cel::parse(data) else {
        return;
    };
    let lines: Vec<u8> = records.iter().flat_map(|r| r.to_line()).collect();
    assert_eq!(
        cel::parse(&lines).expect("written records must parse"),
        records
    );
    for r in &records {
        let _ = RuntimeEvent::from_cel(r);
    }
});
