//! See [`nacre_fuzz::evidence_json`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nacre_fuzz::evidence_json(data);
});
