//! See [`nacre_fuzz::eventlog_cel`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nacre_fuzz::eventlog_cel(data);
});
