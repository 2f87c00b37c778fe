//! Loading the kernel modules the image lists, in dependency order from `modules.dep` (computed
//! by `nacre_kmod`, never hard-coded), with `finit_module`.

use nacre_kmod::ModuleDb;
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// The initrd's list of modules stage 1 loads, one name per line.
pub const MODULE_LIST: &str = "/etc/nacre/modules";

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("{path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Resolve(#[from] nacre_kmod::KmodError),
    #[error("loading {path}: {errno}")]
    Load {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
}

/// The modules directory of the running kernel.
pub fn modules_dir() -> Result<PathBuf, ModuleError> {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Path::new("/lib/modules").join(release))
}

/// Load `names` and their dependencies. Returns how many modules were inserted.
pub fn load(names: &[String]) -> Result<usize, ModuleError> {
    let dir = modules_dir()?;
    let db = ModuleDb::read(&dir).map_err(|cause| ModuleError::Read {
        path: dir.join("modules.dep"),
        cause,
    })?;
    let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut loaded = 0;
    for step in db.load_order(&wanted)? {
        let path = dir.join(&step.module.path);
        match insert(&path) {
            Ok(true) => loaded += 1,
            Ok(false) => {}
            Err(e) if step.optional => crate::warn!("optional module {}: {e}", step.module.name),
            Err(e) => return Err(e),
        }
    }
    Ok(loaded)
}

/// `finit_module`; `Ok(false)` if it was already loaded.
fn insert(path: &Path) -> Result<bool, ModuleError> {
    let file = std::fs::File::open(path).map_err(|cause| ModuleError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    let mut flags = nix::kmod::ModuleInitFlags::empty();
    let name = path.to_string_lossy();
    if name.ends_with(".xz") || name.ends_with(".zst") || name.ends_with(".gz") {
        // MODULE_INIT_COMPRESSED_FILE: the kernel decompresses (CONFIG_MODULE_DECOMPRESS).
        flags = nix::kmod::ModuleInitFlags::from_bits_retain(4);
    }
    let params = CString::default();
    match nix::kmod::finit_module(&file, &params, flags) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::EEXIST) => Ok(false),
        Err(errno) => Err(ModuleError::Load {
            path: path.to_path_buf(),
            errno,
        }),
    }
}

/// The module names in the initrd's list (comments and blank lines ignored).
pub fn read_list(path: &Path) -> Result<Vec<String>, ModuleError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(cause) => Err(ModuleError::Read {
            path: path.to_path_buf(),
            cause,
        }),
    }
}
