//! The initrd builder on a small root assembled from this machine's real files: nacre-init (or,
//! without a built one, tpm2_pcrread in its place) with the libraries `ldd` lists, ld.so.conf and
//! an ld.so.cache, and a few real modules of the installed Debian kernel with its index files.
//! Checks: two builds byte-identical; the archive's list against `cpio -t`; its headers (what the
//! kernel's unpacker reads); and, as root with a real nacre-init, byte equality with the shell
//! implementation (ldd inside a chroot + GNU cpio) kept as the oracle in tests/make-initrd-shell.sh
//! (its directories' nlink, which GNU cpio takes from the staging file system, set to 2 first).

use nacre_image::initrd::{self, Options};
use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Copy host PATH into ROOT at the same place, its parent directories as on the host
/// (canonicalized: /lib/x -> /usr/lib/x, the root has the merged-/usr links) and symlinks kept,
/// made relative so that they resolve the same inside ROOT from the host too.
fn copy_host(root: &Path, path: &Path) {
    let mut path = path.to_path_buf();
    for _ in 0..10 {
        let parent = std::fs::canonicalize(path.parent().unwrap()).unwrap();
        let name = path.file_name().unwrap();
        let host = parent.join(name);
        let inside = root.join(host.strip_prefix("/").unwrap());
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        let md = std::fs::symlink_metadata(&host).unwrap();
        if md.file_type().is_symlink() {
            let target = std::fs::read_link(&host).unwrap();
            let abs = if target.is_absolute() {
                target.clone()
            } else {
                parent.join(&target)
            };
            if std::fs::symlink_metadata(&inside).is_err() {
                let rel = if target.is_absolute() {
                    let depth = parent.components().count() - 1;
                    let mut r = PathBuf::new();
                    for _ in 0..depth {
                        r.push("..");
                    }
                    r.join(target.strip_prefix("/").unwrap())
                } else {
                    target
                };
                symlink(rel, &inside).unwrap();
            }
            path = abs;
        } else {
            if !inside.exists() {
                std::fs::copy(&host, &inside).unwrap();
            }
            return;
        }
    }
    panic!("symlink chain too long at {}", path.display());
}

fn ldd(path: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(path).output().unwrap();
    assert!(out.status.success(), "ldd {}", path.display());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

fn nacre_init() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NACRE_INIT") {
        return Some(p.into());
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("nacre-init"))
        .find(|p| p.is_file())
}

fn kernel() -> PathBuf {
    std::fs::read_dir("/usr/lib/modules")
        .expect("linux-image-amd64 (scripts/install-deps.sh)")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("modules.dep").is_file())
        .min()
        .expect("a kernel with modules.dep in /usr/lib/modules")
}

const MODULES: &[&str] = &["virtio_pci", "virtio_blk", "dm-verity", "erofs"];
const DLOPEN: &str = "libtss2-tcti-device.so.0";

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    real_init: bool,
    rel: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for d in [
        "usr/bin",
        "usr/sbin",
        "usr/lib/x86_64-linux-gnu",
        "usr/lib64",
        "etc",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for l in ["bin", "sbin", "lib", "lib64"] {
        symlink(format!("usr/{l}"), root.join(l)).unwrap();
    }
    let (init, real_init) = match nacre_init() {
        Some(p) => (p, true),
        None => (PathBuf::from("/usr/bin/tpm2_pcrread"), false),
    };
    std::fs::create_dir_all(root.join("usr/lib/nacre")).unwrap();
    std::fs::copy(&init, root.join("usr/lib/nacre/nacre-init")).unwrap();
    let tcti = Path::new("/usr/lib/x86_64-linux-gnu").join(DLOPEN);
    // bash and ldd: the shell oracle runs ldd inside the root.
    for p in [Path::new("/usr/bin/bash"), Path::new("/usr/bin/ldd"), &tcti] {
        copy_host(&root, p);
    }
    for p in [&init, Path::new("/usr/bin/bash"), &tcti] {
        for lib in ldd(p) {
            copy_host(&root, &lib);
        }
    }
    copy_host(&root, Path::new("/etc/ld.so.conf"));
    for e in std::fs::read_dir("/etc/ld.so.conf.d").unwrap() {
        copy_host(&root, &e.unwrap().path());
    }
    let st = Command::new("ldconfig").arg("-r").arg(&root).status();
    assert!(st.is_ok_and(|s| s.success()), "ldconfig -r");

    let kdir = kernel();
    let rel = kdir.file_name().unwrap().to_str().unwrap().to_string();
    let kroot = root.join("usr/lib/modules").join(&rel);
    std::fs::create_dir_all(&kroot).unwrap();
    for f in initrd::MODULE_INDEXES {
        if kdir.join(f).is_file() {
            std::fs::copy(kdir.join(f), kroot.join(f)).unwrap();
        }
    }
    let db = nacre_kmod::ModuleDb::read(&kdir).unwrap();
    // The stage 1 closure and, not wanted, wireguard's: it must stay out of the initrd.
    let mut wanted: Vec<&str> = MODULES.to_vec();
    wanted.push("wireguard");
    for s in db.load_order(&wanted).unwrap() {
        let dst = kroot.join(&s.module.path);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(kdir.join(&s.module.path), dst).unwrap();
    }
    Fixture {
        _dir: dir,
        root,
        real_init,
        rel,
    }
}

fn options() -> Options {
    Options {
        modules: MODULES.iter().map(|s| s.to_string()).collect(),
        dlopen: vec![DLOPEN.to_string()],
        kernel_release: None,
    }
}

fn archive(root: &Path, opts: &Options) -> Vec<u8> {
    let built = initrd::build(root, opts).unwrap();
    let mut v = Vec::new();
    built.tree.write_newc(&mut v).unwrap();
    v
}

struct Entry {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    dev: [u32; 4],
    check: u32,
    name: String,
    data: Vec<u8>,
}

/// A strict newc reader (what the kernel's initramfs unpacker reads).
fn read_newc(mut v: &[u8]) -> Vec<Entry> {
    let total = v.len();
    assert_eq!(total % 512, 0);
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let h = &v[..110];
        assert_eq!(&h[..6], b"070701", "magic at {pos}");
        let f = |i: usize| {
            u32::from_str_radix(std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                .unwrap()
        };
        let namesize = f(11) as usize;
        let size = f(6) as usize;
        let name = std::str::from_utf8(&v[110..110 + namesize - 1])
            .unwrap()
            .to_string();
        assert_eq!(v[110 + namesize - 1], 0);
        let data_at = (110 + namesize).next_multiple_of(4);
        let data = v[data_at..data_at + size].to_vec();
        let next = (data_at + size).next_multiple_of(4);
        let e = Entry {
            ino: f(0),
            mode: f(1),
            uid: f(2),
            gid: f(3),
            nlink: f(4),
            mtime: f(5),
            dev: [f(7), f(8), f(9), f(10)],
            check: f(12),
            name,
            data,
        };
        pos += next;
        v = &v[next..];
        let end = e.name == "TRAILER!!!";
        out.push(e);
        if end {
            assert!(v.iter().all(|&b| b == 0) && v.len() < 512);
            return out;
        }
    }
}

fn cpio_list(archive: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.cpio");
    std::fs::write(&f, archive).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("cpio -t --quiet < \"$0\"")
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success(), "cpio -t");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn initrd_is_deterministic_complete_and_minimal() {
    let fx = fixture();
    let opts = options();
    let a = archive(&fx.root, &opts);
    let b = archive(&fx.root, &opts);
    assert!(a == b, "two builds differ");

    let entries = read_newc(&a);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    // cpio as the oracle for the list (it omits the trailer).
    assert_eq!(cpio_list(&a), names[..names.len() - 1]);
    let mut sorted = names[..names.len() - 1].to_vec();
    sorted.sort();
    assert_eq!(sorted, names[..names.len() - 1], "byte order");

    for (i, e) in entries[..entries.len() - 1].iter().enumerate() {
        assert_eq!(e.ino, i as u32, "{}", e.name);
        assert_eq!(
            (e.uid, e.gid, e.mtime, e.dev, e.check),
            (0, 0, 0, [0; 4], 0),
            "{}",
            e.name
        );
        match e.mode & 0o170000 {
            0o040000 => {
                assert_eq!((e.mode, e.nlink), (0o040755, 2), "{}", e.name);
                assert!(e.data.is_empty());
            }
            0o100000 | 0o120000 => assert_eq!(e.nlink, 1, "{}", e.name),
            m => panic!("{}: unexpected type {m:o}", e.name),
        }
        // Every parent comes before its children.
        if let Some((d, _)) = e.name.rsplit_once('/') {
            assert!(names[..i].contains(&d), "{} before its parent", e.name);
        }
    }
    let get = |n: &str| {
        entries
            .iter()
            .find(|e| e.name == n)
            .unwrap_or_else(|| panic!("no {n}"))
    };
    let init = get("init");
    assert_eq!(init.mode, 0o100755);
    assert_eq!(
        init.data,
        std::fs::read(fx.root.join("usr/lib/nacre/nacre-init")).unwrap()
    );
    assert_eq!(get("lib").data, b"usr/lib");
    assert_eq!(get("lib64").data, b"usr/lib64");
    assert_eq!(
        get("etc/nacre/modules").data,
        b"virtio_pci\nvirtio_blk\ndm-verity\nerofs\n"
    );
    for d in ["dev", "proc", "sys", "run", "sysroot"] {
        assert_eq!(get(d).mode, 0o040755);
    }
    // The loader's name of the interpreter is a link to the real file.
    let ld = get("usr/lib64/ld-linux-x86-64.so.2");
    assert_eq!(ld.mode, 0o120777);
    assert_eq!(ld.data, b"/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
    assert_eq!(
        get("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").mode & 0o170000,
        0o100000
    );
    assert!(names.contains(&"usr/lib/x86_64-linux-gnu/libc.so.6"));
    assert!(names.iter().any(|n| n.ends_with(DLOPEN)));
    // bash's own libraries (libtinfo) are not nacre-init's.
    assert!(!names.iter().any(|n| n.contains("libtinfo")));

    // Modules: exactly the closure, with the index files.
    let moddir = format!("usr/lib/modules/{}", fx.rel);
    let kos: BTreeSet<&str> = names
        .iter()
        .filter(|n| n.contains(".ko"))
        .map(|n| n.strip_prefix(&format!("{moddir}/")).unwrap())
        .collect();
    let db = nacre_kmod::ModuleDb::read(&fx.root.join(&moddir)).unwrap();
    let want: BTreeSet<String> = db
        .load_order(MODULES)
        .unwrap()
        .iter()
        .map(|s| s.module.path.clone())
        .collect();
    assert_eq!(kos, want.iter().map(String::as_str).collect());
    assert!(kos.iter().any(|k| k.contains("dm-verity")));
    assert!(!kos.iter().any(|k| k.contains("wireguard")));
    assert!(names.contains(&format!("{moddir}/modules.dep").as_str()));
    for e in &entries {
        if e.name.contains(".ko") || e.name.starts_with(&format!("{moddir}/modules.")) {
            assert_eq!(e.mode, 0o100644, "{}", e.name);
        }
    }

    // The library set equals ldd's inside the root (plus the dlopen'd path itself).
    let libs = initrd::libraries(&fx.root, &opts.dlopen).unwrap();
    let mut from_ldd: BTreeSet<String> = BTreeSet::new();
    for p in [
        fx.root.join("usr/lib/nacre/nacre-init"),
        fx.root.join("usr/lib/x86_64-linux-gnu").join(DLOPEN),
    ] {
        // On the host, the same libraries at the same paths (the root was copied from it).
        for l in ldd(&p) {
            from_ldd.insert(l.to_str().unwrap().to_string());
        }
    }
    from_ldd.insert(format!("/usr/lib/x86_64-linux-gnu/{DLOPEN}"));
    assert_eq!(libs, from_ldd.into_iter().collect::<Vec<_>>());

    // Other module lists and no dlopen.
    let small = Options {
        modules: vec!["dm_mod".into()],
        dlopen: vec![],
        kernel_release: Some(fx.rel.clone()),
    };
    let s = read_newc(&archive(&fx.root, &small));
    assert!(!s.iter().any(|e| e.name.contains("tcti-device")));
    assert_eq!(s.iter().filter(|e| e.name.contains(".ko")).count(), 1);
    let _ = fx.real_init;
}

/// Rewrite the nlink field of every directory entry of a newc archive to 2.
fn set_dir_nlink_2(v: &mut [u8]) {
    let mut pos = 0;
    loop {
        let field = |v: &[u8], i: usize| {
            let h = &v[pos + 6 + 8 * i..pos + 14 + 8 * i];
            usize::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap()
        };
        let (mode, size, namesize) = (field(v, 1), field(v, 6), field(v, 11));
        let name = &v[pos + 110..pos + 110 + namesize - 1];
        if name == b"TRAILER!!!" {
            return;
        }
        if mode & 0o170000 == 0o040000 {
            v[pos + 38..pos + 46].copy_from_slice(b"00000002");
        }
        let data = (pos + 110 + namesize).next_multiple_of(4);
        pos = (data + size).next_multiple_of(4);
    }
}

#[test]
fn missing_pieces_are_errors() {
    let fx = fixture();
    let bad = Options {
        modules: vec!["no_such_module".into()],
        ..options()
    };
    assert!(initrd::build(&fx.root, &bad).is_err());
    let bad = Options {
        dlopen: vec!["libnope.so.9".into()],
        ..options()
    };
    assert!(initrd::build(&fx.root, &bad).is_err());
    let bad = Options {
        kernel_release: Some("0.0-none".into()),
        ..options()
    };
    assert!(initrd::build(&fx.root, &bad).is_err());
    std::fs::remove_file(fx.root.join("usr/lib/x86_64-linux-gnu/libc.so.6")).unwrap();
    let e = initrd::build(&fx.root, &options()).unwrap_err().to_string();
    assert!(e.contains("libc.so.6"), "{e}");
    std::fs::remove_file(fx.root.join("usr/lib/nacre/nacre-init")).unwrap();
    assert!(initrd::build(&fx.root, &options()).is_err());
}

/// The shell implementation (ldd in a chroot, nacre-init --module-closure, GNU cpio) on the
/// same root gives the same bytes. Needs root (chroot) and a real nacre-init.
#[test]
fn equals_the_shell_implementation() {
    let fx = fixture();
    if !fx.real_init {
        eprintln!("skipped: no built nacre-init (target/*/nacre-init or NACRE_INIT)");
        return;
    }
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipped: chroot needs root");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/make-initrd-shell.sh");
    let out = fx.root.parent().unwrap().join("shell.cpio");
    for (modules, dlopen) in [
        ("virtio_pci virtio_blk dm-verity erofs", DLOPEN),
        ("dm-verity", ""),
    ] {
        let st = Command::new(&script)
            .arg(&fx.root)
            .arg(&out)
            .args(["--modules", modules, "--dlopen", dlopen])
            .env_remove("IN_ROOT")
            .status()
            .unwrap();
        assert!(st.success(), "{}", script.display());
        let opts = Options {
            modules: initrd::split_list(modules),
            dlopen: initrd::split_list(dlopen),
            kernel_release: None,
        };
        let rust = archive(&fx.root, &opts);
        let mut shell = std::fs::read(&out).unwrap();
        // GNU cpio copies the staging directories' st_nlink (2 + subdirectories on ext4 and
        // tmpfs, 2 in mkosi's sandbox): the one file-system-dependent field of the shell
        // version. Both are read the same by the kernel; nacre-image writes 2, as
        // gen_init_cpio does. Set them to 2, then every byte must agree.
        set_dir_nlink_2(&mut shell);
        if rust != shell {
            let (r, s) = (read_newc(&rust), read_newc(&shell));
            for (x, y) in r.iter().zip(&s) {
                assert_eq!(
                    (&x.name, x.ino, x.mode, x.nlink, x.data.len()),
                    (&y.name, y.ino, y.mode, y.nlink, y.data.len()),
                    "first differing entry (rust, shell)"
                );
            }
            assert_eq!(r.len(), s.len());
            panic!("archives differ in content");
        }
        let listed = Command::new(&script)
            .arg(&fx.root)
            .args(["--print-libraries", "--dlopen", dlopen])
            .output()
            .unwrap();
        assert!(listed.status.success());
        // The shell printed the dlopen'd paths first, then the sorted closure: the same set.
        let shell_libs: BTreeSet<String> = String::from_utf8(listed.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let rust_libs = initrd::libraries(&fx.root, &opts.dlopen).unwrap();
        assert!(rust_libs.is_sorted());
        assert_eq!(rust_libs.into_iter().collect::<BTreeSet<_>>(), shell_libs);
    }
}
