//! The EFI System Partition of a disk image file, opened in one call: what `nacre-measure`
//! needs to read `\EFI\BOOT\BOOTX64.EFI` and its drop-ins from a built image.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::fat::{Fat, FatError};
use crate::gpt::{types, Gpt, GptError};
use crate::slice::Slice;

/// Why the ESP of an image cannot be opened; every variant names the image.
#[derive(Debug, thiserror::Error)]
pub enum EspError {
    /// The image file cannot be opened or sized.
    #[error("{path}: {source}")]
    Open {
        /// The image.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The partition table is unusable.
    #[error("{path}: {source}")]
    Gpt {
        /// The image.
        path: PathBuf,
        /// What is wrong with the GPT.
        source: GptError,
    },
    /// No partition has the ESP type GUID.
    #[error("{path}: no EFI System Partition (type {})", types::ESP)]
    NoEsp {
        /// The image.
        path: PathBuf,
    },
    /// More than one partition has the ESP type GUID: which one firmware boots is not defined.
    #[error("{path}: {} partitions have the EFI System Partition type: {indices:?}", indices.len())]
    MultipleEsp {
        /// The image.
        path: PathBuf,
        /// 1-based partition numbers.
        indices: Vec<u32>,
    },
    /// The ESP's file system is unusable.
    #[error("{path}: ESP (partition {index}): {source}")]
    Fat {
        /// The image.
        path: PathBuf,
        /// 1-based partition number.
        index: u32,
        /// What is wrong with the FAT.
        source: FatError,
    },
}

/// Reads the GPT of the image file at `path`.
pub fn read_gpt(path: &Path) -> Result<Gpt, EspError> {
    let (mut f, len) = open_image(path)?;
    Gpt::read(&mut f, len).map_err(|source| EspError::Gpt {
        path: path.to_path_buf(),
        source,
    })
}

/// Opens the image at `path`, finds its single ESP and opens the FAT file system in it.
pub fn open_esp(path: &Path) -> Result<(Gpt, Fat<Slice<File>>), EspError> {
    let (mut f, len) = open_image(path)?;
    let gpt = Gpt::read(&mut f, len).map_err(|source| EspError::Gpt {
        path: path.to_path_buf(),
        source,
    })?;
    let esps: Vec<_> = gpt.partitions_of_type(&types::ESP).collect();
    let esp = match esps.as_slice() {
        [] => {
            return Err(EspError::NoEsp {
                path: path.to_path_buf(),
            })
        }
        [one] => (*one).clone(),
        many => {
            return Err(EspError::MultipleEsp {
                path: path.to_path_buf(),
                indices: many.iter().map(|p| p.index).collect(),
            })
        }
    };
    let fat_err = |source| EspError::Fat {
        path: path.to_path_buf(),
        index: esp.index,
        source,
    };
    let slice = Slice::new(f, esp.byte_offset(), esp.byte_len()).map_err(|e| {
        fat_err(FatError::Io {
            context: "the partition".into(),
            offset: 0,
            source: e,
        })
    })?;
    let fat = Fat::new(slice).map_err(fat_err)?;
    Ok((gpt, fat))
}

fn open_image(path: &Path) -> Result<(File, u64), EspError> {
    let open_err = |source| EspError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(open_err)?;
    let len = f.seek(SeekFrom::End(0)).map_err(open_err)?;
    Ok((f, len))
}
