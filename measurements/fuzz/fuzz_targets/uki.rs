//! Any bytes as a UKI: PE parsing, section access, certificate table, Authenticode and the whole
//! prediction must return errors, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nacre_measure::predict::{predict, BootConfig};
use nacre_measure::uki::{StubProfile, Uki};

fuzz_target!(|data: &[u8]| {
    if let Ok(uki) = Uki::parse(data) {
        let _ = uki.cmdline();
        let _ = uki.roothash();
        let _ = uki.os_release();
        let _ = uki.pe.signatures();
        let _ = nacre_measure::authenticode::digest(&uki.pe, &ring::digest::SHA256);
    }
    let cfg = BootConfig {
        stub: Some(StubProfile::V252),
        ..BootConfig::default()
    };
    let _ = predict(data, &cfg);
});
