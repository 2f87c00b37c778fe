//! FAT reader on arbitrary volumes: open, walk every directory, read every file, and look up
//! the paths nacre-measure uses. Must return Ok or a typed error, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nacre_diskimage::fat::Fat;

fuzz_target!(|data: &[u8]| {
    let Ok(mut fat) = Fat::new(nacre_diskimage_fuzz::device(data)) else {
        return;
    };
    if let Ok(all) = fat.walk() {
        for (path, e) in all {
            if e.is_dir {
                continue;
            }
            // Opening checks the whole chain; reading is capped to keep executions fast.
            let Ok(mut f) = fat.open_entry(&path, &e) else {
                continue;
            };
            if f.len() <= 1 << 20 {
                let bytes = f.read_all().expect("chain was checked at open");
                assert_eq!(bytes.len() as u64, u64::from(e.size));
            }
        }
    }
    let _ = fat.read_file("\\EFI\\BOOT\\BOOTX64.EFI", 1 << 20);
    let _ = fat.read_dir("/EFI/BOOT/BOOTX64.EFI.extra.d");
    let _ = fat.exists("/loader/credentials");
});
