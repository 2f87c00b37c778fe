//! See [`nacre_fuzz::snp_report`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nacre_fuzz::snp_report(data);
});
