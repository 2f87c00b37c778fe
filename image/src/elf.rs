//! The shared libraries an ELF program loads, computed without running it (no `ldd`, no chroot):
//! its `PT_INTERP`, `DT_NEEDED` entries, `DT_RUNPATH`/`DT_RPATH`, resolved inside a root tree the
//! way glibc's loader would resolve them when that tree is `/`.
//!
//! Search order for a soname (glibc `_dl_map_object`): the object's `DT_RPATH` (and the main
//! program's) when it has no `DT_RUNPATH`, then its `DT_RUNPATH`, then the directories of the
//! root's `/etc/ld.so.conf` (with its `include`s; the cache ldconfig builds from them), then the
//! default directories. A library already loaded under a name (or whose `DT_SONAME` is that name)
//! is reused. Symlinks are followed inside the root and never out of it: an absolute link target
//! means the root's `/`, `..` stops at the root.

use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::Endianness;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

/// The x86-64 loader's name (what `ldd` prints for it, and its `PT_INTERP` on Debian).
pub const DEFAULT_INTERP: &str = "/lib64/ld-linux-x86-64.so.2";

/// The loader's own directories after `ld.so.conf` (Debian's multiarch layout).
pub const DEFAULT_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("not an ELF file (bad magic)")]
    BadMagic,
    #[error("not a 64-bit ELF file")]
    NotElf64,
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("dynamic entry {tag} names offset {offset} past the string table ({size} bytes)")]
    StringOffset {
        tag: &'static str,
        offset: u64,
        size: u64,
    },
    #[error("the dynamic string table (address {addr:#x}, {size} bytes) is in no loaded segment")]
    StringTable { addr: u64, size: u64 },
    #[error("{0} entries but no DT_STRTAB/DT_STRSZ")]
    NoStringTable(&'static str),
    #[error("a dynamic string is not UTF-8")]
    NotUtf8,
}

/// What the loader reads from one ELF object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfInfo {
    pub machine: u16,
    pub interp: Option<String>,
    pub soname: Option<String>,
    pub needed: Vec<String>,
    pub runpath: Vec<String>,
    pub rpath: Vec<String>,
}

fn malformed(e: object::Error) -> ElfError {
    ElfError::Malformed(e.to_string())
}

/// Parse the dynamic-linking facts of an ELF64 file. Never panics on bad input.
pub fn parse(data: &[u8]) -> Result<ElfInfo, ElfError> {
    if data.len() < 4 || &data[..4] != b"\x7fELF" {
        return Err(ElfError::BadMagic);
    }
    if data.len() < 5 || data[4] != elf::ELFCLASS64 {
        return Err(ElfError::NotElf64);
    }
    if data.len() < std::mem::size_of::<elf::FileHeader64<Endianness>>() {
        return Err(ElfError::Truncated("ELF header"));
    }
    let hdr = elf::FileHeader64::<Endianness>::parse(data).map_err(malformed)?;
    let e = hdr.endian().map_err(malformed)?;
    let phoff: u64 = hdr.e_phoff(e);
    let phnum = hdr.e_phnum(e);
    // (PN_XNUM: the count is in section 0; object reads it from there.)
    if phnum != elf::PN_XNUM
        && phoff
            .checked_add(u64::from(phnum) * u64::from(hdr.e_phentsize(e)))
            .is_none_or(|end| end > data.len() as u64)
    {
        return Err(ElfError::Truncated("program header table"));
    }
    let phdrs = hdr.program_headers(e, data).map_err(malformed)?;
    let mut info = ElfInfo {
        machine: hdr.e_machine(e),
        ..Default::default()
    };
    let mut dynamic = None;
    for ph in phdrs {
        let (off, size) = ph.file_range(e);
        let ty = ph.p_type(e);
        if (ty == elf::PT_INTERP || ty == elf::PT_DYNAMIC)
            && off
                .checked_add(size)
                .is_none_or(|end| end > data.len() as u64)
        {
            return Err(ElfError::Truncated(if ty == elf::PT_INTERP {
                "PT_INTERP segment"
            } else {
                "PT_DYNAMIC segment"
            }));
        }
        if let Some(i) = ph.interpreter(e, data).map_err(malformed)? {
            info.interp = Some(String::from_utf8(i.to_vec()).map_err(|_| ElfError::NotUtf8)?);
        }
        if let Some(d) = ph.dynamic(e, data).map_err(malformed)? {
            dynamic = Some(d);
        }
    }
    let Some(dynamic) = dynamic else {
        return Ok(info); // static
    };
    let (mut strtab, mut strsz) = (None, None);
    let mut strings: Vec<(&'static str, u64)> = Vec::new();
    for d in dynamic {
        let Ok(tag) = u32::try_from(d.d_tag(e)) else {
            continue; // OS- or processor-specific tags above 32 bits
        };
        let val = d.d_val(e);
        match tag {
            elf::DT_NULL => break,
            elf::DT_STRTAB => strtab = Some(val),
            elf::DT_STRSZ => strsz = Some(val),
            elf::DT_NEEDED => strings.push(("DT_NEEDED", val)),
            elf::DT_SONAME => strings.push(("DT_SONAME", val)),
            elf::DT_RUNPATH => strings.push(("DT_RUNPATH", val)),
            elf::DT_RPATH => strings.push(("DT_RPATH", val)),
            _ => {}
        }
    }
    if strings.is_empty() {
        return Ok(info);
    }
    let (Some(addr), Some(size)) = (strtab, strsz) else {
        return Err(ElfError::NoStringTable(strings[0].0));
    };
    // DT_STRTAB is a virtual address: find the loaded segment holding it.
    let mut table = None;
    for ph in phdrs.iter().filter(|p| p.p_type(e) == elf::PT_LOAD) {
        let (off, fsz) = ph.file_range(e);
        if off
            .checked_add(fsz)
            .is_none_or(|end| end > data.len() as u64)
        {
            return Err(ElfError::Truncated("PT_LOAD segment"));
        }
        if let Some(t) = ph
            .data_range(e, data, addr, size)
            .map_err(|()| ElfError::Malformed("PT_LOAD segment".into()))?
        {
            table = Some(t);
            break;
        }
    }
    let table = table.ok_or(ElfError::StringTable { addr, size })?;
    for (tag, offset) in strings {
        let s = usize::try_from(offset)
            .ok()
            .and_then(|o| table.get(o..))
            .ok_or(ElfError::StringOffset { tag, offset, size })?;
        let end = s
            .iter()
            .position(|&b| b == 0)
            .ok_or(ElfError::StringOffset { tag, offset, size })?;
        let s = std::str::from_utf8(&s[..end])
            .map_err(|_| ElfError::NotUtf8)?
            .to_string();
        match tag {
            "DT_NEEDED" => info.needed.push(s),
            "DT_SONAME" => info.soname = Some(s),
            "DT_RUNPATH" => info.runpath.extend(split_path(&s)),
            _ => info.rpath.extend(split_path(&s)),
        }
    }
    Ok(info)
}

fn split_path(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(':').filter(|p| !p.is_empty()).map(str::to_string)
}

#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    #[error("{path}: {source}")]
    Elf { path: String, source: ElfError },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{soname} (needed by {by}) is not found in the root")]
    NotFound { soname: String, by: String },
}

/// A root tree, as the loader inside it would see it.
#[derive(Debug, Clone)]
pub struct Root {
    root: PathBuf,
    conf_dirs: Vec<String>,
}

fn io_err(path: &str) -> impl FnOnce(std::io::Error) -> ClosureError + '_ {
    move |source| ClosureError::Io {
        path: path.to_string(),
        source,
    }
}

impl Root {
    /// Read the root's `/etc/ld.so.conf` (if any).
    pub fn new(root: &Path) -> Result<Self, ClosureError> {
        let mut r = Root {
            root: root.to_path_buf(),
            conf_dirs: Vec::new(),
        };
        let mut dirs = Vec::new();
        r.read_conf("/etc/ld.so.conf", &mut dirs, 0)?;
        let mut seen = HashSet::new();
        r.conf_dirs = dirs
            .into_iter()
            .filter(|d| seen.insert(d.clone()))
            .collect();
        Ok(r)
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The `ld.so.conf` directories, in order.
    pub fn conf_dirs(&self) -> &[String] {
        &self.conf_dirs
    }

    fn read_conf(
        &self,
        file: &str,
        dirs: &mut Vec<String>,
        depth: u32,
    ) -> Result<(), ClosureError> {
        if depth > 8 {
            return Ok(());
        }
        let Ok(real) = self.resolve(file) else {
            return Ok(());
        };
        let text = match std::fs::read_to_string(self.host(&real)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => return Ok(()),
            Err(e) => return Err(io_err(file)(e)),
        };
        let base = file
            .rsplit_once('/')
            .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(pats) = line
                .strip_prefix("include")
                .filter(|r| r.starts_with([' ', '\t']))
            {
                for pat in pats.split_whitespace() {
                    let pat = if pat.starts_with('/') {
                        pat.to_string()
                    } else {
                        format!("{}/{pat}", base.trim_end_matches('/'))
                    };
                    for f in self.glob(&pat)? {
                        self.read_conf(&f, dirs, depth + 1)?;
                    }
                }
                continue;
            }
            if line.starts_with("hwcap") {
                continue;
            }
            for d in line.split([' ', '\t', ':', ',']).filter(|d| !d.is_empty()) {
                let d = d.split('=').next().unwrap_or(d).trim_end_matches('/');
                if d.starts_with('/') {
                    dirs.push(d.to_string());
                }
            }
        }
        Ok(())
    }

    /// Files matching PATTERN (wildcards `*` and `?` in the last component only), sorted.
    fn glob(&self, pattern: &str) -> Result<Vec<String>, ClosureError> {
        let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern));
        if !name.contains(['*', '?']) {
            return Ok(vec![pattern.to_string()]);
        }
        let Ok(real) = self.resolve(if dir.is_empty() { "/" } else { dir }) else {
            return Ok(Vec::new());
        };
        let Ok(rd) = std::fs::read_dir(self.host(&real)) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.') && wildcard(name.as_bytes(), n.as_bytes()))
            .map(|n| format!("{dir}/{n}"))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The host path of PATH inside the root (no resolution).
    pub fn host(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Resolve every symlink of PATH (absolute, inside the root) within the root; the result is
    /// the real path inside the root. Fails if a component is missing.
    pub fn resolve(&self, path: &str) -> std::io::Result<String> {
        let mut pending: VecDeque<String> = path.split('/').map(str::to_string).collect();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = pending.pop_front() {
            match c.as_str() {
                "" | "." => {}
                ".." => {
                    cur.pop();
                }
                name => {
                    let mut host = self.root.clone();
                    host.extend(&cur);
                    host.push(name);
                    let md = std::fs::symlink_metadata(&host)?;
                    if md.file_type().is_symlink() {
                        hops += 1;
                        if hops > 40 {
                            return Err(std::io::Error::other(format!(
                                "{path}: too many levels of symbolic links"
                            )));
                        }
                        let target = std::fs::read_link(&host)?;
                        let target = target.to_str().ok_or_else(|| {
                            std::io::Error::other(format!("{path}: link target is not UTF-8"))
                        })?;
                        if target.starts_with('/') {
                            cur.clear();
                        }
                        for t in target.split('/').rev() {
                            pending.push_front(t.to_string());
                        }
                    } else {
                        if !md.is_dir() && pending.iter().any(|p| !p.is_empty()) {
                            return Err(std::io::Error::from(std::io::ErrorKind::NotADirectory));
                        }
                        cur.push(name.to_string());
                    }
                }
            }
        }
        Ok(format!("/{}", cur.join("/")))
    }

    fn read_elf(&self, path: &str) -> Result<(String, ElfInfo), ClosureError> {
        let real = self.resolve(path).map_err(io_err(path))?;
        let data = std::fs::read(self.host(&real)).map_err(io_err(path))?;
        let info = parse(&data).map_err(|source| ClosureError::Elf {
            path: path.to_string(),
            source,
        })?;
        Ok((real, info))
    }

    /// The libraries OBJECT (a path inside the root) loads, as `ldd` run inside the root lists
    /// them: paths as the loader names them (search directory + soname, and the interpreter),
    /// sorted. The object itself is not listed.
    pub fn closure(&self, object: &str) -> Result<BTreeSet<String>, ClosureError> {
        let (real, main) = self.read_elf(object)?;
        let mut out = BTreeSet::new();
        // name -> loaded; real paths loaded.
        let mut names: HashMap<String, ()> = HashMap::new();
        let mut reals: HashSet<String> = HashSet::from([real]);
        let interp = main
            .interp
            .clone()
            .unwrap_or_else(|| DEFAULT_INTERP.to_string());
        let (ireal, iinfo) = self.read_elf(&interp)?;
        reals.insert(ireal);
        names.insert(interp.clone(), ());
        if let Some(s) = iinfo.soname {
            names.insert(s, ());
        }
        out.insert(interp);
        if let Some(s) = &main.soname {
            names.insert(s.clone(), ());
        }
        let main_rpath = if main.runpath.is_empty() {
            main.rpath.clone()
        } else {
            Vec::new()
        };
        let mut queue = VecDeque::from([(object.to_string(), main)]);
        while let Some((path, info)) = queue.pop_front() {
            let origin = path.rsplit_once('/').map_or("/", |(d, _)| d).to_string();
            for soname in &info.needed {
                if names.contains_key(soname) {
                    continue;
                }
                let found = if soname.contains('/') {
                    Some(self.read_elf(soname).map(|(r, i)| (soname.clone(), r, i))?)
                } else {
                    let mut dirs: Vec<String> = Vec::new();
                    if info.runpath.is_empty() {
                        dirs.extend(info.rpath.iter().cloned());
                        dirs.extend(main_rpath.iter().cloned());
                    }
                    dirs.extend(info.runpath.iter().cloned());
                    let dirs = dirs
                        .iter()
                        .filter_map(|d| expand_origin(d, &origin))
                        .chain(self.conf_dirs.iter().cloned())
                        .chain(DEFAULT_DIRS.iter().map(|d| d.to_string()));
                    self.search(soname, dirs, info.machine)?
                };
                let Some((name, real, linfo)) = found else {
                    return Err(ClosureError::NotFound {
                        soname: soname.clone(),
                        by: path.clone(),
                    });
                };
                names.insert(soname.clone(), ());
                if let Some(s) = &linfo.soname {
                    names.insert(s.clone(), ());
                }
                if !reals.insert(real) {
                    continue; // the same file under another name: loaded once
                }
                out.insert(name.clone());
                queue.push_back((name, linfo));
            }
        }
        Ok(out)
    }

    fn search(
        &self,
        soname: &str,
        dirs: impl Iterator<Item = String>,
        machine: u16,
    ) -> Result<Option<(String, String, ElfInfo)>, ClosureError> {
        for d in dirs {
            let cand = format!("{}/{soname}", d.trim_end_matches('/'));
            let Ok(real) = self.resolve(&cand) else {
                continue;
            };
            let Ok(data) = std::fs::read(self.host(&real)) else {
                continue;
            };
            // The loader skips files of another class or machine and keeps searching.
            match parse(&data) {
                Ok(i) if i.machine == machine => return Ok(Some((cand, real, i))),
                _ => continue,
            }
        }
        Ok(None)
    }

    /// The library set of a program and the objects it loads at run time (`dlopen`), found by
    /// soname in the root's `/usr/lib/x86_64-linux-gnu`: those paths themselves plus the union
    /// of every closure, sorted (what `make-initrd.sh --print-libraries` printed).
    pub fn libraries(&self, program: &str, dlopen: &[String]) -> Result<Vec<String>, ClosureError> {
        let mut all = self.closure(program)?;
        for so in dlopen {
            let p = format!("/usr/lib/x86_64-linux-gnu/{so}");
            if self.resolve(&p).is_err() {
                return Err(ClosureError::NotFound {
                    soname: so.clone(),
                    by: "--dlopen (looked for in /usr/lib/x86_64-linux-gnu)".into(),
                });
            }
            all.extend(self.closure(&p)?);
            all.insert(p);
        }
        Ok(all.into_iter().collect())
    }
}

fn expand_origin(dir: &str, origin: &str) -> Option<String> {
    let d = dir.replace("${ORIGIN}", origin).replace("$ORIGIN", origin);
    // $LIB and $PLATFORM are not expanded: such a directory is skipped.
    (!d.contains('$') && d.starts_with('/')).then_some(d)
}

/// Shell-style match of `*` and `?` (no classes).
fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&p[1..], s) || (!s.is_empty() && wildcard(p, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => wildcard(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// `ldd PATH` on this machine: the paths it lists.
    fn ldd(path: &str) -> BTreeSet<String> {
        let out = Command::new("ldd").arg(path).output().expect("ldd");
        assert!(out.status.success(), "ldd {path}");
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
            .map(str::to_string)
            .collect()
    }

    fn host_root() -> Root {
        Root::new(Path::new("/")).unwrap()
    }

    #[test]
    fn closures_of_real_programs_equal_ldd() {
        let root = host_root();
        let mut objects = vec!["/usr/bin/ls".to_string(), "/usr/bin/bash".to_string()];
        for so in [
            "libtss2-esys.so.0",
            "libcryptsetup.so.12",
            "libtss2-tcti-device.so.0",
        ] {
            let p = format!("/usr/lib/x86_64-linux-gnu/{so}");
            if Path::new(&p).exists() {
                objects.push(p);
            }
        }
        // tpm2-tools; DT_RUNPATH (busctl, expr); DT_RPATH with $ORIGIN (a JDK's java, by its
        // real path: ldd expands $ORIGIN from the path as given, unnormalized).
        for p in ["/usr/bin/tpm2_pcrread", "/usr/bin/busctl", "/usr/bin/expr"] {
            if Path::new(p).exists() {
                objects.push(p.into());
            }
        }
        if let Ok(java) = std::fs::canonicalize("/usr/bin/java") {
            objects.push(java.to_str().unwrap().to_string());
            // Through the /usr/bin link, $ORIGIN/../lib is /usr/lib: ldd says "not found".
            assert!(matches!(
                root.closure("/usr/bin/java"),
                Err(ClosureError::NotFound { soname, .. }) if soname == "libjli.so"
            ));
        }
        assert!(
            objects.len() >= 4,
            "libtss2-esys and tpm2-tools are installed"
        );
        for o in &objects {
            assert_eq!(root.closure(o).unwrap(), ldd(o), "{o}");
        }
    }

    #[test]
    fn parses_interp_needed_and_soname() {
        let ls = parse(&std::fs::read("/usr/bin/ls").unwrap()).unwrap();
        assert_eq!(ls.interp.as_deref(), Some(DEFAULT_INTERP));
        assert!(ls.needed.contains(&"libc.so.6".to_string()));
        assert_eq!(ls.machine, elf::EM_X86_64);
        let libc = parse(&std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap()).unwrap();
        assert_eq!(libc.soname.as_deref(), Some("libc.so.6"));
        assert!(libc.interp.is_some()); // glibc's libc.so.6 is executable
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let ls = std::fs::read("/usr/bin/ls").unwrap();
        assert_eq!(parse(b""), Err(ElfError::BadMagic));
        assert_eq!(parse(b"\x7fELG\x02"), Err(ElfError::BadMagic));
        let mut c32 = ls.clone();
        c32[4] = elf::ELFCLASS32;
        assert_eq!(parse(&c32), Err(ElfError::NotElf64));
        assert!(matches!(parse(&ls[..40]), Err(ElfError::Truncated(_))));
        assert!(matches!(parse(&ls[..100]), Err(ElfError::Truncated(_))));
        // Every truncation is an error or (before the dynamic segment is needed) a result,
        // never a panic.
        for n in (0..ls.len().min(64 * 1024)).step_by(97) {
            let _ = parse(&ls[..n]);
        }
        // A DT_NEEDED offset past the string table.
        let info = parse(&ls).unwrap();
        assert!(!info.needed.is_empty());
        let bad = corrupt_needed(&ls);
        assert!(
            matches!(
                parse(&bad),
                Err(ElfError::StringOffset {
                    tag: "DT_NEEDED",
                    ..
                })
            ),
            "{:?}",
            parse(&bad)
        );
        // Single corrupted bytes in the headers and the dynamic section: errors or results.
        for i in (0..ls.len().min(16 * 1024)).step_by(7) {
            for v in [0x00, 0xff, 0x7f] {
                let mut m = ls.clone();
                m[i] = v;
                let _ = parse(&m);
            }
        }
        // Random bytes after a valid ident.
        let mut junk = ls[..64].to_vec();
        junk.extend((0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        let _ = parse(&junk);
    }

    /// Set the first DT_NEEDED's value of a little-endian ELF64 to u32::MAX.
    fn corrupt_needed(data: &[u8]) -> Vec<u8> {
        let mut d = data.to_vec();
        let hdr = elf::FileHeader64::<Endianness>::parse(data).unwrap();
        let e = hdr.endian().unwrap();
        for ph in hdr.program_headers(e, data).unwrap() {
            if ph.p_type(e) != elf::PT_DYNAMIC {
                continue;
            }
            let (off, size) = ph.file_range(e);
            for i in (off..off + size).step_by(16) {
                let i = i as usize;
                let tag = u64::from_le_bytes(d[i..i + 8].try_into().unwrap());
                if tag == u64::from(elf::DT_NEEDED) {
                    d[i + 8..i + 16].copy_from_slice(&u64::from(u32::MAX).to_le_bytes());
                    return d;
                }
            }
        }
        panic!("no DT_NEEDED");
    }

    #[test]
    fn resolution_stays_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::os::unix::fs::symlink("usr/lib", r.join("lib")).unwrap();
        std::fs::write(r.join("usr/lib/x86_64-linux-gnu/real"), b"x").unwrap();
        std::os::unix::fs::symlink("/lib/x86_64-linux-gnu/real", r.join("usr/lib/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/passwd", r.join("usr/lib/up")).unwrap();
        let root = Root::new(r).unwrap();
        assert_eq!(
            root.resolve("/usr/lib/abs").unwrap(),
            "/usr/lib/x86_64-linux-gnu/real"
        );
        assert_eq!(
            root.resolve("/lib/x86_64-linux-gnu/../x86_64-linux-gnu/real")
                .unwrap(),
            "/usr/lib/x86_64-linux-gnu/real"
        );
        assert!(root.resolve("/usr/lib/up").is_err()); // /etc/passwd of the root: absent
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert!(root.resolve("/loop").is_err());
    }

    #[test]
    fn ld_so_conf_includes_are_followed_in_order() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("etc/ld.so.conf.d")).unwrap();
        std::fs::write(
            r.join("etc/ld.so.conf"),
            "include /etc/ld.so.conf.d/*.conf\n/opt/last\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/ld.so.conf.d/b.conf"), "# c\n/b1:/b2/\n").unwrap();
        std::fs::write(r.join("etc/ld.so.conf.d/a.conf"), "/a\n").unwrap();
        std::fs::write(r.join("etc/ld.so.conf.d/a.txt"), "/no\n").unwrap();
        let root = Root::new(r).unwrap();
        assert_eq!(root.conf_dirs(), ["/a", "/b1", "/b2", "/opt/last"]);
    }
}
