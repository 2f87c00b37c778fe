//! The end of the node, once every process is gone: sync, unmount, close the device-mapper
//! mappings, reboot or power off.
//!
//! The verified root cannot be unmounted while nacre-init runs from it, and its dm-verity
//! mapping cannot be removed while it is mounted. So, like systemd-shutdown returning to an
//! initramfs, PID 1 copies itself (the files it has mapped: the binary, the loader, its
//! libraries) into a fresh tmpfs, makes that the root with pivot_root(2), and executes the copy
//! as `nacre-init --final ACTION`; that process unmounts the old root and everything under it,
//! removes the mappings, reports what is left, and calls reboot(2).
//!
//! Nothing here panics or returns: every failure is logged and the node still goes down.

use crate::{info, warn};
use devicemapper::{DevId, DmOptions, DM};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::reboot::RebootMode;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Poweroff,
    Reboot,
}

impl Action {
    pub fn word(self) -> &'static str {
        match self {
            Action::Poweroff => "poweroff",
            Action::Reboot => "reboot",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "poweroff" | "shutdown" => Some(Action::Poweroff),
            "reboot" => Some(Action::Reboot),
            _ => None,
        }
    }

    fn mode(self) -> RebootMode {
        match self {
            Action::Poweroff => RebootMode::RB_POWER_OFF,
            Action::Reboot => RebootMode::RB_AUTOBOOT,
        }
    }
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
}

/// Mount points are octal-escaped (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `id parent maj:min root mount-point options [optional fields...] - fstype source super-options`
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry {
                mount_point: unescape(fields.get(4)?),
                fstype: fields.get(sep + 1)?.to_string(),
                source: unescape(fields.get(sep + 2)?),
            })
        })
        .collect()
}

/// File systems with no storage behind them: nothing to flush, left mounted in place.
pub fn is_pseudo(fstype: &str) -> bool {
    matches!(
        fstype,
        "proc"
            | "sysfs"
            | "devtmpfs"
            | "devpts"
            | "tmpfs"
            | "ramfs"
            | "rootfs"
            | "securityfs"
            | "cgroup"
            | "cgroup2"
            | "mqueue"
            | "debugfs"
            | "tracefs"
            | "configfs"
            | "pstore"
            | "bpf"
            | "hugetlbfs"
            | "fusectl"
            | "efivarfs"
            | "binfmt_misc"
            | "autofs"
            | "nsfs"
    )
}

/// The mount points of `mounts` (in mount order) that `pick` selects, in the order to unmount
/// them: reverse mount order, and anything below a mount point before it.
pub fn unmount_order(mounts: &[MountEntry], pick: impl Fn(&MountEntry) -> bool) -> Vec<String> {
    let mut v: Vec<String> = mounts
        .iter()
        .rev()
        .filter(|m| pick(m))
        .map(|m| m.mount_point.clone())
        .collect();
    let depth = |p: &str| p.split('/').filter(|c| !c.is_empty()).count();
    v.sort_by_key(|p| std::cmp::Reverse(depth(p)));
    v
}

fn mounts() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

/// Unmount each; one that is busy is detached (it goes once its last user does).
fn unmount_all(points: &[String]) {
    for p in points {
        match umount2(p.as_str(), MntFlags::empty()) {
            Ok(()) => info!("shutdown: unmounted {p}"),
            Err(e) => match umount2(p.as_str(), MntFlags::MNT_DETACH) {
                Ok(()) => warn!("shutdown: {p} is busy ({e}): detached"),
                Err(e2) => warn!("shutdown: unmounting {p}: {e}; detaching: {e2}"),
            },
        }
    }
}

fn dm_opts() -> DmOptions {
    use devicemapper::DmUdevFlags as F;
    DmOptions::default().set_udev_flags(
        F::DM_UDEV_DISABLE_DM_RULES_FLAG
            | F::DM_UDEV_DISABLE_SUBSYSTEM_RULES_FLAG
            | F::DM_UDEV_DISABLE_DISK_RULES_FLAG
            | F::DM_UDEV_DISABLE_OTHER_RULES_FLAG,
    )
}

/// Remove every device-mapper mapping nobody holds open (repeatedly: removing a crypt mapping
/// frees the integrity mapping under it). Returns the names left.
fn close_mappings() -> Vec<String> {
    let Ok(dm) = DM::new() else {
        // No device-mapper in this kernel: nothing can be mapped.
        return Vec::new();
    };
    for _ in 0..8 {
        let list = match dm.list_devices() {
            Ok(l) => l,
            Err(e) => {
                warn!("shutdown: listing device-mapper mappings: {e}");
                return vec!["?".into()];
            }
        };
        let mut removed = false;
        for (name, _, _) in &list {
            let id = DevId::Name(name.as_ref());
            let open = dm.device_info(&id).map(|i| i.open_count()).unwrap_or(1);
            if open > 0 {
                continue;
            }
            match dm.device_remove(&id, dm_opts()) {
                Ok(_) => {
                    info!(
                        "shutdown: closed the device-mapper mapping {}",
                        name.as_ref()
                    );
                    removed = true;
                }
                Err(e) => warn!("shutdown: removing the mapping {}: {e}", name.as_ref()),
            }
        }
        if !removed {
            return list.iter().map(|(n, _, _)| n.to_string()).collect();
        }
    }
    dm.list_devices()
        .map(|l| l.iter().map(|(n, _, _)| n.to_string()).collect())
        .unwrap_or_default()
}

/// Called by the supervisor once every service and every other process is gone.
pub fn finish(action: Action) -> ! {
    info!("shutdown: syncing");
    nix::unistd::sync();
    let storage = unmount_order(&mounts(), |m| m.mount_point != "/" && !is_pseudo(&m.fstype));
    unmount_all(&storage);
    let left = close_mappings();
    if !left.is_empty() {
        info!("shutdown: still mapped (in use): {}", left.join(", "));
    }
    nix::unistd::sync();
    let Err(e) = exec_final(action);
    {
        warn!("shutdown: cannot leave the verified root ({e}): its mapping stays open (read-only)");
    }
    end(action)
}

const FINAL_ROOT: &str = "/run/nacre/final";

/// Copy nacre-init and what it has mapped into a tmpfs, pivot into it and execute the copy.
/// Returns only on failure.
/// Names of the symlinks in `file`'s directory that resolve to it (a library's soname links).
fn links_to(file: &Path) -> Vec<std::ffi::OsString> {
    let (Some(dir), Ok(target)) = (file.parent(), std::fs::canonicalize(file)) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .filter(|e| std::fs::canonicalize(e.path()).is_ok_and(|t| t == target))
        .map(|e| e.file_name())
        .collect()
}

fn exec_final(action: Action) -> Result<std::convert::Infallible, String> {
    let root = Path::new(FINAL_ROOT);
    std::fs::create_dir_all(root).map_err(|e| format!("{FINAL_ROOT}: {e}"))?;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| format!("mounting a tmpfs on {FINAL_ROOT}: {e}"))?;
    let exe = std::fs::read_link("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    let maps =
        std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("/proc/self/maps: {e}"))?;
    let lib = root.join("lib");
    for d in ["lib", "proc", "sys", "dev", "oldroot"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| format!("{d}: {e}"))?;
    }
    std::fs::copy(&exe, root.join("nacre-init"))
        .map_err(|e| format!("copying {}: {e}", exe.display()))?;
    let mut loader = None;
    let mut seen = std::collections::BTreeSet::new();
    for line in maps.lines() {
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let p = Path::new(path);
        if !path.starts_with('/') || p == exe || !seen.insert(path.to_string()) {
            continue;
        }
        let Some(name) = p.file_name() else { continue };
        if !p.is_file() {
            continue;
        }
        std::fs::copy(p, lib.join(name)).map_err(|e| format!("copying {path}: {e}"))?;
        // The loader looks libraries up by soname (libtss2-esys.so.0), while the maps name the
        // file (libtss2-esys.so.0.0.1): recreate the links that point at it.
        for alias in links_to(p) {
            let _ = std::os::unix::fs::symlink(name, lib.join(alias));
        }
        if name.to_string_lossy().starts_with("ld-linux") {
            loader = Some(lib.join(name));
        }
    }
    let loader = loader.ok_or("no dynamic loader among the mapped files")?;
    info!(
        "shutdown: leaving the verified root for a tmpfs copy of nacre-init ({} files)",
        seen.len() + 1
    );
    nix::unistd::chdir(root).map_err(|e| format!("chdir {FINAL_ROOT}: {e}"))?;
    nix::unistd::pivot_root(".", "oldroot").map_err(|e| format!("pivot_root: {e}"))?;
    let _ = nix::unistd::chdir("/");
    let c = |s: &str| std::ffi::CString::new(s).map_err(|e| e.to_string());
    let loader_in_new = format!(
        "/lib/{}",
        loader
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let argv = [
        c(&loader_in_new)?,
        c("--library-path")?,
        c("/lib")?,
        c("/nacre-init")?,
        c("--final")?,
        c(action.word())?,
    ];
    let err = nix::unistd::execv(&argv[0], &argv);
    // Could not execute the copy: go back to the old root to end there.
    let _ = nix::unistd::chroot("/oldroot");
    let _ = nix::unistd::chdir("/");
    Err(format!("executing the copy: {err:?}"))
}

/// `nacre-init --final ACTION`, PID 1 in the tmpfs: the old root is at /oldroot.
pub fn final_stage(args: &[String]) -> ! {
    let action = args
        .iter()
        .skip_while(|a| *a != "--final")
        .nth(1)
        .and_then(|a| Action::parse(a))
        .unwrap_or(Action::Poweroff);
    for (src, target, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
    ] {
        let _ = mount(
            Some(src),
            target,
            Some(fstype),
            MsFlags::MS_NOSUID,
            None::<&str>,
        );
    }
    crate::log::open_sinks();
    info!("shutdown: final stage ({}) from a tmpfs", action.word());
    let old = unmount_order(&mounts(), |m| {
        m.mount_point == "/oldroot" || m.mount_point.starts_with("/oldroot/")
    });
    unmount_all(&old);
    let left = close_mappings();
    nix::unistd::sync();
    // What is left, for the operator and the tests: only this tmpfs and its pseudo file
    // systems should be mounted, and no mapping open.
    let list: Vec<String> = mounts()
        .iter()
        .map(|m| format!("{} ({})", m.mount_point, m.fstype))
        .collect();
    info!("shutdown: mounts left: {}", list.join(", "));
    let mut blocks: Vec<String> = std::fs::read_dir("/sys/block")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    blocks.sort();
    info!("shutdown: block devices: {}", blocks.join(" "));
    if left.is_empty() {
        info!("shutdown: device-mapper mappings left: none");
    } else {
        warn!("shutdown: device-mapper mappings left: {}", left.join(", "));
    }
    end(action)
}

fn end(action: Action) -> ! {
    nix::unistd::sync();
    info!("shutdown: {}", action.word());
    let _ = nix::sys::reboot::reboot(action.mode());
    crate::fail::fatal("shutdown", &"reboot(2) returned")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / ro,relatime - erofs /dev/mapper/root ro
23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=240k
24 22 0:21 / /proc rw,nosuid,nodev,noexec - proc proc rw
25 22 0:22 / /sys rw,nosuid,nodev,noexec - sysfs sysfs rw
26 22 0:23 / /run rw,nosuid,nodev - tmpfs tmpfs rw,mode=755
27 25 0:7 / /sys/kernel/security rw - securityfs securityfs rw
30 22 254:1 / /var rw,relatime - ext4 /dev/mapper/state rw
31 30 0:40 / /var/lib/with\\040space rw - ext4 /dev/vdc rw
32 26 0:41 / /run/containerd/x/rootfs rw - overlay overlay rw,lowerdir=a
28 25 0:24 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_is_parsed_and_unescaped() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 10);
        assert_eq!(
            m[0],
            MountEntry {
                mount_point: "/".into(),
                fstype: "erofs".into(),
                source: "/dev/mapper/root".into()
            }
        );
        assert_eq!(m[1].fstype, "devtmpfs");
        assert_eq!(m[7].mount_point, "/var/lib/with space");
        assert!(parse_mountinfo("garbage\n\n").is_empty());
    }

    #[test]
    fn storage_is_unmounted_children_first_pseudo_left() {
        let m = parse_mountinfo(MOUNTINFO);
        let order = unmount_order(&m, |e| e.mount_point != "/" && !is_pseudo(&e.fstype));
        assert_eq!(
            order,
            ["/run/containerd/x/rootfs", "/var/lib/with space", "/var"]
        );
        let all = unmount_order(&m, |_| true);
        assert_eq!(all.last().map(String::as_str), Some("/"));
        let pos = |p: &str| all.iter().position(|x| x == p).unwrap();
        assert!(pos("/sys/kernel/security") < pos("/sys"));
        assert!(pos("/sys/fs/cgroup") < pos("/sys"));
        assert!(pos("/var/lib/with space") < pos("/var"));
    }

    #[test]
    fn actions() {
        assert_eq!(Action::parse("shutdown"), Some(Action::Poweroff));
        assert_eq!(Action::parse("poweroff"), Some(Action::Poweroff));
        assert_eq!(Action::parse("reboot"), Some(Action::Reboot));
        assert_eq!(Action::parse("halt"), None);
    }
}
