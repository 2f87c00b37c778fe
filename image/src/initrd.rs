//! nacre's initrd, built from a finished root tree: nacre-init as `/init`, the shared libraries
//! it loads (its ELF closure inside the tree plus what it loads at run time, such as the TPM
//! TCTI module, and their closures: [`crate::elf`]), exactly the kernel modules stage 1 loads
//! (closure and order from [`nacre_kmod`], as `nacre-init --module-closure` computes them) with
//! the module index files nacre-init reads, and `/etc/nacre/modules` naming what stage 1 loads.
//!
//! Layout (what `scripts/lib/make-initrd.sh` made before this module did it):
//! `/init`; `dev proc sys run sysroot etc/nacre usr/lib`; `lib -> usr/lib`, `lib64 -> usr/lib64`;
//! each library at its real path inside the tree, and under the name the loader asks for (with
//! `/lib`, `/lib64`, `/bin`, `/sbin` read as `/usr/...`) as a symlink to that real path when the
//! two differ; `/usr/lib/modules/REL/{modules.dep,modules.builtin,modules.softdep,modules.alias}`
//! and the modules' files. The archive is newc (`070701`), deterministic: entries sorted by path
//! bytes, inode numbers 0, 1, ... in that order, mtime 0, uid/gid 0, device numbers 0,
//! directories 0755 with nlink 2 (as the kernel's `gen_init_cpio` writes them), files with nlink 1
//! and their modes from the tree (0755 for `/init`, 0644 for modules and index files), symlinks
//! kept; padded to 512 bytes after `TRAILER!!!`, as GNU cpio `-o -H newc --reproducible -R 0:0`
//! writes it from a tree staged on a file system whose directories report 2 links (the shell
//! version's output depended on that file system: ext4 and tmpfs count subdirectories).

use crate::elf::{ClosureError, Root};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where the image has nacre-init.
pub const INIT: &str = "/usr/lib/nacre/nacre-init";
/// What stage 1 loads unless a variant says otherwise.
pub const DEFAULT_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "dm-verity", "erofs"];
/// What nacre-init loads at run time: tss-esapi's TCTI loader dlopens the device TCTI.
pub const DEFAULT_DLOPEN: &[&str] = &["libtss2-tcti-device.so.0"];
/// The module index files nacre-init reads (those present are copied).
pub const MODULE_INDEXES: &[&str] = &[
    "modules.dep",
    "modules.builtin",
    "modules.softdep",
    "modules.alias",
];

#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    #[error(transparent)]
    Closure(#[from] ClosureError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Layout(String),
    #[error("modules: {0}")]
    Modules(String),
}

fn io(path: impl Into<String>) -> impl FnOnce(std::io::Error) -> InitrdError {
    let path = path.into();
    move |source| InitrdError::Io { path, source }
}

/// What goes into the initrd besides nacre-init.
#[derive(Debug, Clone)]
pub struct Options {
    pub modules: Vec<String>,
    pub dlopen: Vec<String>,
    /// The kernel release under `/usr/lib/modules`; None: the only one there.
    pub kernel_release: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            modules: DEFAULT_MODULES.iter().map(|s| s.to_string()).collect(),
            dlopen: DEFAULT_DLOPEN.iter().map(|s| s.to_string()).collect(),
            kernel_release: None,
        }
    }
}

/// Split a list given as words separated by commas and/or white space.
pub fn split_list(s: &str) -> Vec<String> {
    s.split([',', ' ', '\t', '\n'])
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// One entry of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    /// A regular file: permission bits and where its bytes come from.
    File {
        mode: u32,
        src: PathBuf,
    },
    /// A regular file with its bytes.
    Data {
        mode: u32,
        bytes: Vec<u8>,
    },
    Symlink(String),
}

/// The initrd's file tree: paths without the leading `/`, in archive (byte) order.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    /// Resolve PATH's symlinks inside the tree (relative to the tree's root). Components that do
    /// not exist are kept as they are.
    fn resolve(&self, path: &str) -> Result<String, InitrdError> {
        let mut pending: Vec<String> = path.split('/').rev().map(str::to_string).collect();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = pending.pop() {
            match c.as_str() {
                "" | "." => {}
                ".." => {
                    cur.pop();
                }
                name => {
                    cur.push(name.to_string());
                    if let Some(Node::Symlink(t)) = self.nodes.get(&cur.join("/")) {
                        hops += 1;
                        if hops > 40 {
                            return Err(InitrdError::Layout(format!("{path}: symlink loop")));
                        }
                        cur.pop();
                        if t.starts_with('/') {
                            cur.clear();
                        }
                        pending.extend(t.split('/').rev().map(str::to_string));
                    }
                }
            }
        }
        Ok(cur.join("/"))
    }

    /// `mkdir -p DIR` (symlinks in the tree followed); the resolved path.
    pub fn mkdir_p(&mut self, dir: &str) -> Result<String, InitrdError> {
        let dir = self.resolve(dir)?;
        let mut cur = String::new();
        for c in dir.split('/').filter(|c| !c.is_empty()) {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(c);
            match self.nodes.get(&cur) {
                None => {
                    self.nodes.insert(cur.clone(), Node::Dir);
                }
                Some(Node::Dir) => {}
                Some(_) => return Err(InitrdError::Layout(format!("/{cur} is not a directory"))),
            }
        }
        Ok(dir)
    }

    /// Put NODE at PATH, creating its parents (a file replaces a file, as `cp` would).
    pub fn add(&mut self, path: &str, node: Node) -> Result<(), InitrdError> {
        let path = path.trim_start_matches('/');
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let dir = self.mkdir_p(dir)?;
        let full = if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        };
        if let Some(Node::Dir) = self.nodes.get(&full) {
            return Err(InitrdError::Layout(format!("/{full} is a directory")));
        }
        self.nodes.insert(full, node);
        Ok(())
    }

    /// Whether PATH exists, symlinks followed (`test -e`).
    pub fn exists(&self, path: &str) -> bool {
        self.resolve(path)
            .is_ok_and(|p| p.is_empty() || self.nodes.contains_key(&p))
    }

    /// The newc archive.
    pub fn write_newc(&self, w: &mut impl Write) -> Result<u64, InitrdError> {
        let mut out = CountingWriter { w, n: 0 };
        for (ino, (path, node)) in self.nodes.iter().enumerate() {
            let owned;
            let (mode, nlink, data): (u32, u32, &[u8]) = match node {
                // nlink 2 for every directory, as the kernel's usr/gen_init_cpio writes it (the
                // unpacker reads nlink only for regular files, to find hard links). GNU cpio
                // copies st_nlink, which depends on the file system the tree was staged on.
                Node::Dir => (0o040000 | 0o755, 2, &[]),
                Node::File { mode, src } => {
                    owned = std::fs::read(src).map_err(io(src.display().to_string()))?;
                    (0o100000 | mode, 1, &owned)
                }
                Node::Data { mode, bytes } => (0o100000 | mode, 1, bytes),
                Node::Symlink(t) => (0o120777, 1, t.as_bytes()),
            };
            let ino =
                u32::try_from(ino).map_err(|_| InitrdError::Layout("too many entries".into()))?;
            write_entry(&mut out, ino, mode, nlink, path, data)?;
        }
        write_entry(&mut out, 0, 0, 1, "TRAILER!!!", &[])?;
        let pad = (512 - out.n % 512) % 512;
        out.write_all(&vec![0; pad as usize])
            .map_err(io("archive"))?;
        Ok(out.n)
    }

    /// Write the archive to OUT (through OUT.tmp, renamed when complete).
    pub fn write_file(&self, out: &Path) -> Result<u64, InitrdError> {
        if let Some(d) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(io(d.display().to_string()))?;
        }
        let mut tmp = out.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let f = std::fs::File::create(&tmp).map_err(io(tmp.display().to_string()))?;
        let mut w = std::io::BufWriter::new(f);
        let n = self.write_newc(&mut w)?;
        w.flush().map_err(io(tmp.display().to_string()))?;
        drop(w);
        std::fs::rename(&tmp, out).map_err(io(out.display().to_string()))?;
        Ok(n)
    }
}

struct CountingWriter<'a, W: Write> {
    w: &'a mut W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.w.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

fn write_entry<W: Write>(
    out: &mut CountingWriter<'_, W>,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
) -> Result<(), InitrdError> {
    let size = u32::try_from(data.len())
        .map_err(|_| InitrdError::Layout(format!("/{name}: larger than 4 GiB")))?;
    let namesize = name.len() as u32 + 1;
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
    // rdevminor, namesize, check
    let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0];
    let mut h = String::with_capacity(110);
    h.push_str("070701");
    for f in fields {
        h.push_str(&format!("{f:08X}"));
    }
    let e = io(format!("archive entry /{name}"));
    let mut buf = h.into_bytes();
    buf.extend_from_slice(name.as_bytes());
    buf.push(0);
    buf.resize(buf.len().next_multiple_of(4), 0);
    let res = (|| {
        out.write_all(&buf)?;
        out.write_all(data)?;
        out.write_all(&[0; 3][..(4 - data.len() % 4) % 4])
    })();
    res.map_err(e)
}

/// Libraries nacre-init loads in ROOT (`--print-libraries`).
pub fn libraries(root: &Path, dlopen: &[String]) -> Result<Vec<String>, InitrdError> {
    let r = Root::new(root)?;
    check_init(&r)?;
    Ok(r.libraries(INIT, dlopen)?)
}

fn check_init(r: &Root) -> Result<PathBuf, InitrdError> {
    let host = r
        .resolve(INIT)
        .map(|p| r.host(&p))
        .map_err(|_| InitrdError::Layout(format!("no {INIT} in {}", r.path().display())))?;
    let md = std::fs::metadata(&host).map_err(io(INIT))?;
    if !md.is_file() || md.permissions().mode() & 0o111 == 0 {
        return Err(InitrdError::Layout(format!(
            "{INIT} in {} is not an executable file",
            r.path().display()
        )));
    }
    Ok(host)
}

/// The kernel release: the given one, or the only one with a `modules.dep` in ROOT.
pub fn kernel_release(root: &Path, given: Option<&str>) -> Result<String, InitrdError> {
    if let Some(r) = given {
        return Ok(r.to_string());
    }
    let dir = root.join("usr/lib/modules");
    let mut rels: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("modules.dep").is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    if rels.len() != 1 {
        return Err(InitrdError::Layout(format!(
            "need exactly one kernel in {} (or --kernel-release); found {}",
            dir.display(),
            rels.len()
        )));
    }
    Ok(rels.remove(0))
}

/// What [`build`] put in.
#[derive(Debug, Clone)]
pub struct Built {
    pub tree: Tree,
    pub libraries: Vec<String>,
    /// Module files relative to the modules directory, in load order.
    pub modules: Vec<String>,
    pub kernel_release: String,
}

/// Assemble the initrd tree from ROOT.
pub fn build(root: &Path, opts: &Options) -> Result<Built, InitrdError> {
    let r = Root::new(root)?;
    let init_host = check_init(&r)?;
    let rel = kernel_release(root, opts.kernel_release.as_deref())?;
    let moddir = format!("/usr/lib/modules/{rel}");
    let moddir_host = r
        .resolve(&moddir)
        .map(|p| r.host(&p))
        .map_err(io(moddir.clone()))?;
    if !moddir_host.join("modules.dep").is_file() {
        return Err(InitrdError::Layout(format!(
            "no {moddir}/modules.dep in {}",
            root.display()
        )));
    }

    let mut t = Tree::default();
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "sysroot",
        "etc/nacre",
        "usr/lib",
    ] {
        t.mkdir_p(d)?;
    }
    // Merged /usr, as in the root: ELF interpreters and the loader's paths say /lib64, /lib.
    t.add("lib", Node::Symlink("usr/lib".into()))?;
    t.add("lib64", Node::Symlink("usr/lib64".into()))?;
    t.add(
        "init",
        Node::File {
            mode: 0o755,
            src: init_host,
        },
    )?;

    let libraries = r.libraries(INIT, &opts.dlopen)?;
    for lib in &libraries {
        copy_in(&r, &mut t, lib)?;
    }

    let mut list = opts.modules.join("\n");
    list.push('\n');
    t.add(
        "etc/nacre/modules",
        Node::Data {
            mode: 0o644,
            bytes: list.into_bytes(),
        },
    )?;
    for f in MODULE_INDEXES {
        let src = moddir_host.join(f);
        if src.is_file() {
            t.add(&format!("{moddir}/{f}"), Node::File { mode: 0o644, src })?;
        }
    }
    let db = nacre_kmod::ModuleDb::read(&moddir_host)
        .map_err(|e| InitrdError::Modules(e.to_string()))?;
    let wanted: Vec<&str> = opts.modules.iter().map(String::as_str).collect();
    let modules: Vec<String> = db
        .load_order(&wanted)
        .map_err(|e| InitrdError::Modules(e.to_string()))?
        .iter()
        .map(|s| s.module.path.clone())
        .collect();
    for m in &modules {
        let p = format!("{moddir}/{m}");
        let real = r.resolve(&p).map_err(io(p.clone()))?;
        let src = r.host(&real);
        if !src.is_file() {
            return Err(InitrdError::Layout(format!("{p} is not a file")));
        }
        t.add(&p, Node::File { mode: 0o644, src })?;
    }
    Ok(Built {
        tree: t,
        libraries,
        modules,
        kernel_release: rel,
    })
}

/// Copy library P (as the loader names it) at its real path, and keep the loader's name, below
/// the merged-/usr links, as a link to it.
fn copy_in(r: &Root, t: &mut Tree, p: &str) -> Result<(), InitrdError> {
    let real = r.resolve(p).map_err(io(p))?;
    let src = r.host(&real);
    let md = std::fs::metadata(&src).map_err(io(p))?;
    if !md.is_file() {
        return Err(InitrdError::Layout(format!(
            "{p} resolves to no file in the root"
        )));
    }
    t.add(
        &real,
        Node::File {
            mode: md.permissions().mode() & 0o7777,
            src,
        },
    )?;
    let canon = ["lib", "lib64", "bin", "sbin"]
        .iter()
        .find_map(|d| {
            p.strip_prefix(&format!("/{d}/"))
                .map(|rest| format!("/usr/{d}/{rest}"))
        })
        .unwrap_or_else(|| p.to_string());
    if canon != real && !t.exists(&canon) {
        t.add(&canon, Node::Symlink(real))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout_matches_gnu_cpio_fields() {
        let mut t = Tree::default();
        t.add(
            "a/f",
            Node::Data {
                mode: 0o644,
                bytes: b"hi\n".to_vec(),
            },
        )
        .unwrap();
        t.mkdir_p("a/b").unwrap();
        t.mkdir_p("c").unwrap();
        t.add("l", Node::Symlink("/x/y".into())).unwrap();
        let mut v = Vec::new();
        let n = t.write_newc(&mut v).unwrap();
        assert_eq!(n, 1024);
        assert_eq!(v.len(), 1024);
        // a: inode 0, dir 0755, nlink 2, name "a"
        assert_eq!(
            &v[..112],
            b"07070100000000000041ED0000000000000000000000020000000000000000000000000000000000000000000000000000000200000000a\0"
        );
        let s = String::from_utf8_lossy(&v);
        assert!(s.contains("TRAILER!!!"));
        assert!(s.contains("l\0/x/y"));
    }

    #[test]
    fn parents_follow_the_trees_own_symlinks() {
        let mut t = Tree::default();
        t.mkdir_p("usr/lib").unwrap();
        t.add("lib", Node::Symlink("usr/lib".into())).unwrap();
        t.add(
            "lib/x86_64-linux-gnu/libz.so.1",
            Node::Data {
                mode: 0o644,
                bytes: vec![],
            },
        )
        .unwrap();
        assert!(t.nodes().contains_key("usr/lib/x86_64-linux-gnu/libz.so.1"));
        assert!(t.exists("/lib/x86_64-linux-gnu/libz.so.1"));
        assert!(!t.exists("/lib64/nothing"));
    }

    #[test]
    fn lists_split_on_commas_and_spaces() {
        assert_eq!(split_list("a, b  c,,d"), ["a", "b", "c", "d"]);
        assert!(split_list("").is_empty());
    }
}
