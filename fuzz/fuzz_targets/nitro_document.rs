//! See [`nacre_fuzz::nitro_document`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nacre_fuzz::nitro_document(data);
});
