//! Where the boot files come from: a UKI file, or a whole raw disk image whose ESP is read in
//! user space (no loop device, no mount, no root).

use crate::predict::EspDropins;
use nacre_diskimage::{open_esp, EspError, FatError};
use std::path::{Path, PathBuf};

/// Upper bound for any file read from an ESP (a UKI is tens of MB).
const MAX_ESP_FILE: u64 = 1 << 30;

/// The UKI the firmware boots by default on x86-64, and its drop-in directory.
pub const DEFAULT_UKI_PATH: &str = "/EFI/BOOT/BOOTX64.EFI";
pub const EXTRA_D: &str = "/EFI/BOOT/BOOTX64.EFI.extra.d";
pub const LOADER_CREDENTIALS: &str = "/loader/credentials";

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {cause}")]
    Disk { path: PathBuf, cause: Box<EspError> },
    #[error("{path}: reading {file} from the ESP: {cause}")]
    Fat {
        path: PathBuf,
        file: String,
        cause: FatError,
    },
}

/// A UKI's bytes: mapped from a UKI file (no copy of a 100 MB image), or read from an ESP.
#[derive(Debug)]
pub enum UkiBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for UkiBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            UkiBytes::Mapped(m) => m,
            UkiBytes::Owned(v) => v,
        }
    }
}

/// The files a direct UKI boot reads.
#[derive(Debug)]
pub struct BootFiles {
    pub uki: UkiBytes,
    pub dropins: EspDropins,
    /// `true` when read from a disk image (drop-ins are then known); `false` for a bare UKI.
    pub from_disk: bool,
}

impl BootFiles {
    /// Open a UKI (a file starting with "MZ") or a GPT disk image.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let io = |cause| SourceError::Io {
            path: path.to_path_buf(),
            cause,
        };
        let mut magic = [0u8; 2];
        let file = std::fs::File::open(path).map_err(io)?;
        {
            use std::io::Read;
            let _ = (&file).read(&mut magic).map_err(io)?;
        }
        if &magic == b"MZ" {
            // SAFETY: the mapping is read-only and private to this process. If another process
            // truncates the file meanwhile, reads may fault; that is the same hazard every
            // mmap-based reader (ripgrep, git) accepts, and a file changing under a measurement
            // tool gives a wrong result either way.
            let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(io)?;
            return Ok(BootFiles {
                uki: UkiBytes::Mapped(map),
                dropins: EspDropins::default(),
                from_disk: false,
            });
        }
        let (_gpt, mut fat) = open_esp(path).map_err(|cause| SourceError::Disk {
            path: path.to_path_buf(),
            cause: Box::new(cause),
        })?;
        let fat_err = |file: &str, cause| SourceError::Fat {
            path: path.to_path_buf(),
            file: file.to_string(),
            cause,
        };
        let uki = fat
            .read_file(DEFAULT_UKI_PATH, MAX_ESP_FILE)
            .map_err(|e| fat_err(DEFAULT_UKI_PATH, e))?;
        let mut dir_files = |dir: &str| -> Result<Vec<(String, Vec<u8>)>, SourceError> {
            if !fat.exists(dir).map_err(|e| fat_err(dir, e))? {
                return Ok(Vec::new());
            }
            let mut out = Vec::new();
            for entry in fat.read_dir(dir).map_err(|e| fat_err(dir, e))? {
                if entry.is_dir {
                    continue;
                }
                let file = format!("{dir}/{}", entry.name);
                let data = fat
                    .read_file(&file, MAX_ESP_FILE)
                    .map_err(|e| fat_err(&file, e))?;
                out.push((entry.name.clone(), data));
            }
            Ok(out)
        };
        let dropins = EspDropins {
            extra_d: dir_files(EXTRA_D)?,
            loader_credentials: dir_files(LOADER_CREDENTIALS)?,
        };
        Ok(BootFiles {
            uki: UkiBytes::Owned(uki),
            dropins,
            from_disk: true,
        })
    }
}
