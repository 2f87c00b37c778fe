//! See [`nacre_fuzz::atls_cert`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nacre_fuzz::atls_cert(data);
});
