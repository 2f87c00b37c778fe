//! See [`nacre_fuzz::azure_hcl`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nacre_fuzz::azure_hcl(data);
});
