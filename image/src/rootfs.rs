//! The node's root tree: what it must keep (the programs the node runs and their library
//! closure), what it holds once cut down (size, executables: the root report), and which
//! package versions it was built from (the package lock).

use crate::elf::{ClosureError, Root};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Closure(#[from] ClosureError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a mkosi manifest: {why}")]
    Manifest { path: PathBuf, why: String },
    #[error("{path}: line {line}: {why}")]
    Lock {
        path: PathBuf,
        line: usize,
        why: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The union of the library closures of `programs` (paths inside `root`), plus the `dlopen`
/// sonames (found in the root's /usr/lib/x86_64-linux-gnu) and theirs: what the root must keep
/// for them to run. Sorted, paths as the loader names them.
pub fn libraries(
    root: &Path,
    programs: &[String],
    dlopen: &[String],
) -> Result<Vec<String>, RootfsError> {
    let r = Root::new(root)?;
    let mut all = BTreeSet::new();
    for (i, p) in programs.iter().enumerate() {
        // The dlopen set is loaded by the first program (nacre-init); listing it once is enough.
        let d: &[String] = if i == 0 { dlopen } else { &[] };
        all.extend(r.libraries(p, d)?);
    }
    Ok(all.into_iter().collect())
}

/// What a finished root holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootReport {
    /// Bytes of regular files (each inode once) and symlink targets.
    pub bytes: u64,
    pub files: u64,
    pub symlinks: u64,
    pub directories: u64,
    /// ELF programs (EXEC, or DYN with an interpreter and no soname) and scripts (`#!` with an
    /// execute bit), by path; shared libraries are not counted.
    pub executables: Vec<String>,
    /// Shared libraries (ELF files that are not executables).
    pub libraries: Vec<String>,
}

/// Walk `root`, skipping the given paths (relative, e.g. `usr/lib/modules`: kept in the build
/// tree for the UKI, excluded from the root partition).
pub fn report(root: &Path, skip: &[&str]) -> Result<RootReport, RootfsError> {
    let mut rep = RootReport {
        bytes: 0,
        files: 0,
        symlinks: 0,
        directories: 0,
        executables: Vec::new(),
        libraries: Vec::new(),
    };
    let mut seen = BTreeSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .collect::<Result<_, _>>()
            .map_err(io(&dir))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let rel = rel.join(e.file_name());
            let rel_s = rel.to_string_lossy().into_owned();
            if skip.iter().any(|s| rel_s == *s) {
                continue;
            }
            let path = root.join(&rel);
            let md = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            let ft = md.file_type();
            if ft.is_dir() {
                rep.directories += 1;
                stack.push(rel);
            } else if ft.is_symlink() {
                rep.symlinks += 1;
                rep.bytes += md.len();
            } else if ft.is_file() {
                rep.files += 1;
                if seen.insert((md.dev(), md.ino())) {
                    rep.bytes += md.len();
                }
                match classify(&path, md.mode())? {
                    Kind::Executable => rep.executables.push(format!("/{rel_s}")),
                    Kind::Library => rep.libraries.push(format!("/{rel_s}")),
                    Kind::Other => {}
                }
            }
        }
    }
    rep.executables.sort();
    rep.libraries.sort();
    Ok(rep)
}

enum Kind {
    Executable,
    Library,
    Other,
}

fn classify(path: &Path, mode: u32) -> Result<Kind, RootfsError> {
    use std::io::Read;
    let mut head = [0u8; 64];
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]).map_err(io(path))? {
            0 => break,
            k => n += k,
        }
    }
    let head = &head[..n];
    if head.starts_with(b"\x7fELF") {
        // e_type at 16 (little-endian): 2 EXEC, 3 DYN. A DYN is a PIE program when it has an
        // interpreter and no soname (libc.so.6 has both: it runs, but it is a library).
        let e_type = head.get(16..18).map(|b| u16::from_le_bytes([b[0], b[1]]));
        return Ok(match e_type {
            Some(2) => Kind::Executable,
            Some(3) => {
                let data = std::fs::read(path).map_err(io(path))?;
                match crate::elf::parse(&data) {
                    Ok(info) if info.interp.is_some() && info.soname.is_none() => Kind::Executable,
                    _ => Kind::Library,
                }
            }
            _ => Kind::Other,
        });
    }
    if mode & 0o111 != 0 && head.starts_with(b"#!") {
        return Ok(Kind::Executable);
    }
    Ok(Kind::Other)
}

/// One package as mkosi's manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub name: String,
    pub architecture: String,
    pub version: String,
}

/// The packages of a mkosi `ManifestFormat=json` manifest (`packages[]`: name, architecture,
/// version).
pub fn manifest_packages(path: &Path) -> Result<Vec<Package>, RootfsError> {
    let bad = |why: String| RootfsError::Manifest {
        path: path.to_path_buf(),
        why,
    };
    let data = std::fs::read(path).map_err(io(path))?;
    let v: serde_json::Value = serde_json::from_slice(&data).map_err(|e| bad(e.to_string()))?;
    let list = v
        .get("packages")
        .and_then(|p| p.as_array())
        .ok_or_else(|| bad("no \"packages\" list".into()))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let field = |k: &str| {
            p.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| bad(format!("packages[{i}] has no string \"{k}\"")))
        };
        out.push(Package {
            name: field("name")?,
            architecture: field("architecture")?,
            version: field("version")?,
        });
    }
    out.sort();
    Ok(out)
}

/// The lock file: `name:architecture version`, one package a line, sorted; `#` comments.
pub fn lock_text(packages: &[Package]) -> String {
    let mut s = String::from(
        "# nacre package lock: the Debian packages (name:architecture version) the image was built\n\
         # from. scripts/build-image.sh --lock checks a build against it (nacre-image lock check).\n",
    );
    for p in packages {
        s.push_str(&format!("{}:{} {}\n", p.name, p.architecture, p.version));
    }
    s
}

pub fn read_lock(path: &Path) -> Result<BTreeMap<String, String>, RootfsError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |why: &str| RootfsError::Lock {
            path: path.to_path_buf(),
            line: i + 1,
            why: why.to_string(),
        };
        let (name, version) = line
            .split_once(' ')
            .ok_or_else(|| err("expected \"name:architecture version\""))?;
        if !name.contains(':') || version.trim().is_empty() || version.contains(' ') {
            return Err(err("expected \"name:architecture version\""));
        }
        if out.insert(name.to_string(), version.to_string()).is_some() {
            return Err(err("package listed twice"));
        }
    }
    Ok(out)
}

/// How a build differs from its lock.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct LockDrift {
    /// (package, locked version, built version)
    pub changed: Vec<(String, String, String)>,
    /// In the build, not in the lock.
    pub added: Vec<(String, String)>,
    /// In the lock, not in the build.
    pub removed: Vec<(String, String)>,
}

impl LockDrift {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.added.is_empty() && self.removed.is_empty()
    }
}

pub fn lock_drift(lock: &BTreeMap<String, String>, built: &[Package]) -> LockDrift {
    let mut d = LockDrift::default();
    let mut built_map = BTreeMap::new();
    for p in built {
        built_map.insert(format!("{}:{}", p.name, p.architecture), p.version.clone());
    }
    for (name, v) in &built_map {
        match lock.get(name) {
            None => d.added.push((name.clone(), v.clone())),
            Some(lv) if lv != v => d.changed.push((name.clone(), lv.clone(), v.clone())),
            Some(_) => {}
        }
    }
    for (name, lv) in lock {
        if !built_map.contains_key(name) {
            d.removed.push((name.clone(), lv.clone()));
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(n: &str, v: &str) -> Package {
        Package {
            name: n.into(),
            architecture: "amd64".into(),
            version: v.into(),
        }
    }

    #[test]
    fn lock_round_trip_and_drift() {
        let dir = tempfile::tempdir().unwrap();
        let pkgs = vec![
            pkg("containerd", "1.7.24~ds1-6"),
            pkg("runc", "1.1.15+ds1-2"),
        ];
        let p = dir.path().join("packages.lock");
        std::fs::write(&p, lock_text(&pkgs)).unwrap();
        let lock = read_lock(&p).unwrap();
        assert!(lock_drift(&lock, &pkgs).is_empty());
        let newer = vec![pkg("containerd", "1.7.24~ds1-7"), pkg("libc6", "2.41-12")];
        let d = lock_drift(&lock, &newer);
        assert_eq!(
            d.changed,
            vec![(
                "containerd:amd64".into(),
                "1.7.24~ds1-6".into(),
                "1.7.24~ds1-7".into()
            )]
        );
        assert_eq!(d.added, vec![("libc6:amd64".into(), "2.41-12".into())]);
        assert_eq!(
            d.removed,
            vec![("runc:amd64".into(), "1.1.15+ds1-2".into())]
        );
        for bad in ["runc", "runc 1.0", "runc:amd64  ", "a:b 1\na:b 2"] {
            std::fs::write(&p, bad).unwrap();
            assert!(
                matches!(read_lock(&p), Err(RootfsError::Lock { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn manifest_packages_are_read_and_bad_manifests_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("manifest.json");
        std::fs::write(
            &p,
            r#"{"manifest_version":1,"packages":[{"type":"deb","name":"runc","version":"1.1","architecture":"amd64"},{"type":"deb","name":"base-files","version":"13.8","architecture":"amd64"}]}"#,
        )
        .unwrap();
        let pk = manifest_packages(&p).unwrap();
        assert_eq!(pk[0].name, "base-files");
        std::fs::write(&p, r#"{"packages":[{"name":"x"}]}"#).unwrap();
        assert!(matches!(
            manifest_packages(&p),
            Err(RootfsError::Manifest { why, .. }) if why.contains("architecture") || why.contains("version")
        ));
        std::fs::write(&p, "{}").unwrap();
        assert!(manifest_packages(&p).is_err());
    }

    #[test]
    fn report_counts_executables_not_libraries() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::create_dir_all(r.join("usr/lib/modules/6.12")).unwrap();
        std::fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu")).unwrap();
        // Real ELF files of this machine: a PIE program and a shared library.
        std::fs::copy("/usr/bin/ls", r.join("usr/bin/ls")).unwrap();
        let libc = std::fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        std::fs::copy(&libc, r.join("usr/lib/x86_64-linux-gnu/libc.so.6")).unwrap();
        std::fs::write(r.join("usr/bin/script"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(
            r.join("usr/bin/script"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(r.join("usr/lib/modules/6.12/x.ko"), "not counted").unwrap();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        let rep = report(r, &["usr/lib/modules"]).unwrap();
        assert_eq!(rep.executables, vec!["/usr/bin/ls", "/usr/bin/script"]);
        assert_eq!(rep.libraries, vec!["/usr/lib/x86_64-linux-gnu/libc.so.6"]);
        assert_eq!(rep.files, 3);
        assert_eq!(rep.symlinks, 1);
        let ls = std::fs::metadata("/usr/bin/ls").unwrap().len();
        assert!(rep.bytes > ls);
    }
}
