//! See [`nacre_fuzz::snp_cert_table`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nacre_fuzz::snp_cert_table(data);
});
