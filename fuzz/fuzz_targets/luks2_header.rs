//! See `pid1::luks2_header` (fuzz/src/pid1.rs).
#![no_main]

#[path = "../src/pid1.rs"]
mod pid1;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pid1::luks2_header(data);
});
