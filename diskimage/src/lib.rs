//! Reading raw disk images in user space: the GPT, and files on the FAT EFI System Partition.
//!
//! Nacre builds and measures images on machines where loop devices, partition scanning and
//! vfat mounts are unavailable (and root should not be needed anyway). This crate reads the
//! image file directly through `Read + Seek`, touching only the sectors it needs, so a
//! multi-gigabyte image is never loaded. All parsing treats the image as untrusted input:
//! every failure is a typed error that names the file, offset or field; none panics.
//!
//! - [`gpt`]: protective MBR, primary GPT with CRC checks, 512/4096-byte sector detection.
//! - [`slice`]: a partition as its own `Read + Seek`.
//! - [`fat`]: FAT12/16/32 with long names, UEFI-style case-insensitive paths.
//! - [`esp`]: `open_esp(image)` ties them together.

// Parsers of untrusted images: no indexing that can panic, no unwrap (tests may).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod esp;
pub mod fat;
pub mod gpt;
pub mod guid;
mod io_util;
pub mod slice;

pub use esp::{open_esp, read_gpt, EspError};
pub use fat::{DirEntry, Fat, FatError, FatFile, FatType};
pub use gpt::{Gpt, GptError, Partition};
pub use guid::Guid;
pub use slice::Slice;
