//! Kernel module metadata as `depmod` writes it under `/lib/modules/<release>/`: which module
//! files a set of wanted modules needs, in an order the kernel accepts (every dependency before
//! its users). Pure logic: the image builder uses it to pick the initrd's modules and nacre-init
//! to load them, so both agree on the closure. Never hard-code a load order: it changes between
//! kernel builds.

use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KmodError {
    #[error("modules.dep line {line}: {reason}")]
    Syntax { line: usize, reason: &'static str },
    #[error("module {0:?} is neither in modules.dep nor built into the kernel")]
    Unknown(String),
    #[error("dependency cycle through module {0:?}")]
    Cycle(String),
}

/// A loadable module: its name (normalized: `-` as `_`) and file path relative to the modules
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub path: String,
    deps: Vec<String>,
}

/// The module database of one kernel release.
#[derive(Debug, Clone, Default)]
pub struct ModuleDb {
    modules: HashMap<String, Module>,
    builtin: BTreeSet<String>,
    /// module -> modules (or aliases) to load before it.
    soft_pre: HashMap<String, Vec<String>>,
    /// exact alias -> modules.
    aliases: HashMap<String, Vec<String>>,
}

/// Module names treat `-` and `_` alike; the kernel reports `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path like `kernel/drivers/md/dm-verity.ko.xz`.
pub fn name_of_path(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

impl ModuleDb {
    /// Parse the text files (any of `builtin`, `softdep`, `alias` may be empty).
    pub fn parse(dep: &str, builtin: &str, softdep: &str, alias: &str) -> Result<Self, KmodError> {
        let mut db = ModuleDb::default();
        for (i, line) in dep.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (path, deps) = line.split_once(':').ok_or(KmodError::Syntax {
                line: i + 1,
                reason: "no ':' after the module path",
            })?;
            let path = path.trim();
            if path.is_empty() || !path.contains(".ko") {
                return Err(KmodError::Syntax {
                    line: i + 1,
                    reason: "the module path does not name a .ko file",
                });
            }
            let name = name_of_path(path);
            let deps = deps.split_whitespace().map(name_of_path).collect();
            db.modules.insert(
                name.clone(),
                Module {
                    name,
                    path: path.to_string(),
                    deps,
                },
            );
        }
        db.builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(name_of_path)
            .collect();
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let mut pre = Vec::new();
            let mut in_pre = false;
            for w in words {
                match w {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    other if in_pre => pre.push(other.to_string()),
                    _ => {}
                }
            }
            if !pre.is_empty() {
                db.soft_pre
                    .entry(normalize(module))
                    .or_default()
                    .extend(pre);
            }
        }
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("alias") {
                continue;
            }
            if let (Some(a), Some(m)) = (words.next(), words.next()) {
                // Only exact aliases: the glob ones (pci:v*...) are for hardware matching.
                if !a.contains(['*', '?', '[']) {
                    db.aliases
                        .entry(a.to_string())
                        .or_default()
                        .push(normalize(m));
                }
            }
        }
        Ok(db)
    }

    /// Read the database of the modules directory `dir` (`/lib/modules/<release>`).
    pub fn read(dir: &std::path::Path) -> std::io::Result<Self> {
        let read = |f: &str| std::fs::read_to_string(dir.join(f));
        let opt = |f: &str| {
            read(f).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(String::new())
                } else {
                    Err(e)
                }
            })
        };
        Self::parse(
            &read("modules.dep")?,
            &opt("modules.builtin")?,
            &opt("modules.softdep")?,
            &opt("modules.alias")?,
        )
        .map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", dir.display()),
            )
        })
    }

    pub fn get(&self, name: &str) -> Option<&Module> {
        self.modules.get(&normalize(name))
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// The modules to load for `wanted`, dependencies first, each once. Built-in modules are
    /// skipped. Soft pre-dependencies (which may name aliases such as `crc32c`) are included
    /// when they resolve to known modules and reported as optional: their load may fail on a
    /// CPU without the instructions a variant needs.
    pub fn load_order(&self, wanted: &[&str]) -> Result<Vec<LoadStep<'_>>, KmodError> {
        let mut order = Vec::new();
        let mut state: BTreeMap<String, bool> = BTreeMap::new(); // false: visiting, true: done
        for w in wanted {
            let n = normalize(w);
            if self.builtin.contains(&n) {
                continue;
            }
            if !self.modules.contains_key(&n) {
                return Err(KmodError::Unknown(w.to_string()));
            }
            self.visit(&n, false, &mut state, &mut order)?;
        }
        Ok(order)
    }

    fn resolve_soft(&self, name: &str) -> Vec<String> {
        let n = normalize(name);
        if self.modules.contains_key(&n) {
            return vec![n];
        }
        self.aliases.get(name).cloned().unwrap_or_default()
    }

    fn visit<'a>(
        &'a self,
        name: &str,
        optional: bool,
        state: &mut BTreeMap<String, bool>,
        order: &mut Vec<LoadStep<'a>>,
    ) -> Result<(), KmodError> {
        match state.get(name) {
            Some(true) => return Ok(()),
            Some(false) => return Err(KmodError::Cycle(name.to_string())),
            None => {}
        }
        let Some(module) = self.modules.get(name) else {
            return if self.builtin.contains(name) || optional {
                Ok(())
            } else {
                Err(KmodError::Unknown(name.to_string()))
            };
        };
        state.insert(name.to_string(), false);
        for soft in self.soft_pre.get(name).into_iter().flatten() {
            for target in self.resolve_soft(soft) {
                if state.get(&target) != Some(&false) {
                    self.visit(&target, true, state, order)?;
                }
            }
        }
        for dep in &module.deps {
            self.visit(dep, optional, state, order)?;
        }
        state.insert(name.to_string(), true);
        order.push(LoadStep { module, optional });
        Ok(())
    }
}

/// One module to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadStep<'a> {
    pub module: &'a Module,
    /// A soft dependency: a failure to load it is a warning, not an error.
    pub optional: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/fs/erofs/erofs.ko: kernel/lib/libcrc32c.ko
kernel/lib/libcrc32c.ko:
kernel/crypto/crc32c_generic.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko kernel/lib/reed_solomon/reed_solomon.ko
kernel/drivers/md/dm-bufio.ko:
kernel/drivers/md/dm-mod.ko:
kernel/lib/reed_solomon/reed_solomon.ko:
";

    fn db() -> ModuleDb {
        ModuleDb::parse(
            DEP,
            "kernel/drivers/char/tpm/tpm_crb.ko\n",
            "softdep libcrc32c pre: crc32c\n",
            "alias crc32c crc32c_generic\nalias pci:v00001AF4d* virtio_pci\n",
        )
        .unwrap()
    }

    fn names(steps: &[LoadStep<'_>]) -> Vec<String> {
        steps.iter().map(|s| s.module.name.clone()).collect()
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let db = db();
        let order = names(
            &db.load_order(&["virtio_blk", "dm-verity", "dm_mod"])
                .unwrap(),
        );
        let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
        assert!(pos("virtio") < pos("virtio_blk") && pos("virtio_ring") < pos("virtio_blk"));
        assert!(pos("dm_mod") < pos("dm_verity") && pos("dm_bufio") < pos("dm_verity"));
        assert_eq!(order.len(), 7);
    }

    #[test]
    fn soft_pre_dependencies_resolve_aliases_and_are_optional() {
        let db = db();
        let steps = db.load_order(&["erofs"]).unwrap();
        assert_eq!(names(&steps), ["crc32c_generic", "libcrc32c", "erofs"]);
        assert!(steps[0].optional && !steps[2].optional);
    }

    #[test]
    fn builtin_is_skipped_unknown_is_an_error() {
        let db = db();
        assert!(db.load_order(&["tpm_crb"]).unwrap().is_empty());
        assert_eq!(
            db.load_order(&["nope"]).unwrap_err(),
            KmodError::Unknown("nope".into())
        );
    }

    #[test]
    fn cycles_are_detected() {
        let db = ModuleDb::parse("a.ko: b.ko\nb.ko: a.ko\n", "", "", "").unwrap();
        assert_eq!(
            db.load_order(&["a"]).unwrap_err(),
            KmodError::Cycle("a".into())
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        assert_eq!(
            ModuleDb::parse("a.ko: b.ko\ngarbage\n", "", "", "").unwrap_err(),
            KmodError::Syntax {
                line: 2,
                reason: "no ':' after the module path"
            }
        );
    }

    #[test]
    fn the_installed_debian_kernel_resolves_what_a_node_needs() {
        let dir = std::fs::read_dir("/lib/modules")
            .expect("linux-image-amd64 (scripts/install-deps.sh)")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.join("modules.dep").exists())
            .expect("a kernel with modules.dep");
        let db = ModuleDb::read(&dir).unwrap();
        let steps = db
            .load_order(&[
                "virtio_blk",
                "virtio_pci",
                "dm-verity",
                "dm-crypt",
                "squashfs",
                "erofs",
                "wireguard",
            ])
            .unwrap();
        let order = names(&steps);
        for m in [
            "virtio_blk",
            "dm_verity",
            "dm_mod",
            "wireguard",
            "udp_tunnel",
        ] {
            assert!(order.contains(&m.to_string()), "{m} in {order:?}");
        }
        for s in &steps {
            assert!(dir.join(&s.module.path).exists(), "{}", s.module.path);
        }
    }
}
