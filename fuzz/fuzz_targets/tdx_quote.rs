//! See [`nacre_fuzz::tdx_quote`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nacre_fuzz::tdx_quote(data);
});
