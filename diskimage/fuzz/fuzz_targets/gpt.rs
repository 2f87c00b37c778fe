//! GPT parser on arbitrary disks: must return Ok or a typed error, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_diskimage::gpt::Gpt;

fuzz_target!(|data: &[u8]| {
    let mut dev = nacre_diskimage_fuzz::device(data);
    let len = dev.len();
    if let Ok(gpt) = Gpt::read(&mut dev, len) {
        for p in &gpt.partitions {
            assert!(p.first_lba <= p.last_lba && p.byte_offset() + p.byte_len() <= len);
            let _ = p.type_name();
        }
    }
});
