//! See [`nacre_fuzz::join_lines`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nacre_fuzz::join_lines(data);
});
