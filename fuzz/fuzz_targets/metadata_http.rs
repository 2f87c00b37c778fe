//! See [`nacre_fuzz::metadata_http`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nacre_fuzz::metadata_http(data);
});
