//! See [`nacre_fuzz::tpm_attest`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nacre_fuzz::tpm_attest(data);
});
