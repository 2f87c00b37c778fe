//! See [`nacre_fuzz::eventlog_tcg`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nacre_fuzz::eventlog_tcg(data);
});
