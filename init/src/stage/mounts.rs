//! The pseudo file systems PID 1 needs before anything else.

use nix::mount::{mount, MsFlags};

pub struct Mount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
}

/// In order; /sys/kernel/security (securityfs) exposes the firmware event log.
pub fn early_mounts() -> Vec<Mount> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    vec![
        Mount {
            source: "proc",
            target: "/proc",
            fstype: "proc",
            flags: nosuid,
            data: None,
        },
        Mount {
            source: "sysfs",
            target: "/sys",
            fstype: "sysfs",
            flags: nosuid,
            data: None,
        },
        Mount {
            source: "devtmpfs",
            target: "/dev",
            fstype: "devtmpfs",
            flags: MsFlags::MS_NOSUID,
            data: Some("mode=0755"),
        },
        Mount {
            source: "tmpfs",
            target: "/run",
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=0755"),
        },
        Mount {
            source: "securityfs",
            target: "/sys/kernel/security",
            fstype: "securityfs",
            flags: nosuid,
            data: None,
        },
    ]
}

/// configfs on /sys/kernel/config, where the kernel's TSM report interface (SEV-SNP reports, TDX
/// quotes: `nacre_attestation::tsm`) lives. Debian builds configfs as a module (`tsm_report`,
/// which the CVM variants' guest drivers pull in, depends on it), so this runs after stage 1
/// loaded its modules. Returns whether it is mounted: false when the kernel has no configfs
/// (no CVM module asked for it); the attestation then names the missing interface.
pub fn mount_configfs() -> Result<bool, String> {
    let fs = std::fs::read_to_string("/proc/filesystems")
        .map_err(|e| format!("/proc/filesystems: {e}"))?;
    if !fs
        .lines()
        .any(|l| l.split_whitespace().next_back() == Some("configfs"))
    {
        return Ok(false);
    }
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_all(&[Mount {
        source: "configfs",
        target: "/sys/kernel/config",
        fstype: "configfs",
        flags: nosuid,
        data: None,
    }])?;
    Ok(true)
}

pub fn mount_all(list: &[Mount]) -> Result<(), String> {
    for m in list {
        let _ = std::fs::create_dir_all(m.target);
        match mount(Some(m.source), m.target, Some(m.fstype), m.flags, m.data) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => return Err(format!("mounting {} on {}: {e}", m.fstype, m.target)),
        }
    }
    Ok(())
}
