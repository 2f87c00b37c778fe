//! Reading built nacre images back, without root: `inspect` (what is in an image) and `diff`
//! (where two images differ, down to the GPT field, the partition byte range, the ESP file and
//! the UKI's PE section: what a reproducibility failure needs); and building the initrd from a
//! root tree (`initrd`, with the ELF library closure of `elf`).

pub mod diff;
pub mod elf;
pub mod initrd;
pub mod inspect;
pub mod rootfs;
pub mod verity;
