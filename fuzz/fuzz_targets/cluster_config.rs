//! See [`nacre_fuzz::cluster_config`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = nacre_fuzz::cluster_config(data);
});
