//! See `pid1::ext4_superblock` (fuzz/src/pid1.rs).
#![no_main]

#[path = "../src/pid1.rs"]
mod pid1;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pid1::ext4_superblock(data);
});
