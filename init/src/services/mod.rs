//! What stage 2 runs on the verified root: the node's services (containerd, kubelet) from the
//! `[[service]]` tables of /etc/nacre/init.toml ([`spec`]), supervised by PID 1
//! ([`supervisor`]) until an orderly shutdown ([`shutdown`]). The `ready` phase is measured
//! right before the first service starts.
//!
//! Run by a person, `nacre-init shutdown|poweroff|reboot` asks PID 1 for an orderly shutdown:
//! SIGTERM powers off, SIGINT (also what the kernel sends on ctrl-alt-del) reboots.

pub mod backoff;
pub mod crash_loop;
pub mod shutdown;
pub mod spec;
pub mod supervisor;

use crate::measure::Measurer;
use crate::stage::step;
use crate::{info, warn};
use nacre_eventlog::runtime::Phase;
use nix::mount::{mount, MsFlags};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

pub use shutdown::Action;

/// Signals PID 1 takes through its signalfd (blocked otherwise).
fn signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGPWR,
        Signal::SIGHUP,
    ] {
        s.add(sig);
    }
    s
}

pub fn run(measurer: &mut Measurer, cfg: &toml::Table) -> ! {
    let specs = step("read the services", || spec::from_config(cfg));
    step("prepare the services' file systems", prepare);
    let signals = step("take signals", || -> Result<SignalFd, String> {
        // ctrl-alt-del: the kernel sends SIGINT to PID 1 instead of rebooting at once.
        nix::sys::reboot::set_cad_enabled(false).map_err(|e| format!("ctrl-alt-del: {e}"))?;
        let set = signals();
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
            .map_err(|e| format!("blocking signals: {e}"))?;
        SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| format!("signalfd: {e}"))
    });
    step("measure ready", || measurer.phase(Phase::Ready));
    for alg in crate::tpm::active_banks() {
        if let Some(v) = crate::tpm::read_pcr(alg, 11) {
            info!("PCR 11 ({}) = {}", alg.name(), hex::encode(v));
        }
    }
    supervisor::Supervisor::new(specs, signals).run()
}

fn is_mount_point(path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let parent = std::path::Path::new(path)
        .parent()
        .unwrap_or(std::path::Path::new("/"));
    match (std::fs::metadata(path), std::fs::metadata(parent)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

/// What containerd and kubelet need from the node beyond the verified root: the cgroup v2
/// hierarchy, a writable /tmp, and /var (a tmpfs, lost at power off, until the state disk is
/// mounted there).
fn prepare() -> Result<(), String> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let mounts: [(&str, &str, MsFlags, Option<&str>); 4] = [
        (
            "cgroup2",
            "/sys/fs/cgroup",
            nosuid | MsFlags::MS_NOEXEC,
            Some("nsdelegate"),
        ),
        ("tmpfs", "/tmp", nosuid, Some("mode=1777")),
        ("tmpfs", "/var", nosuid, Some("mode=0755")),
        ("tmpfs", "/dev/shm", nosuid, Some("mode=1777")),
    ];
    for (fstype, target, flags, data) in mounts {
        if is_mount_point(target) {
            continue;
        }
        if target == "/var" {
            warn!("/var is not mounted (no state disk): a tmpfs, lost at power off");
        }
        let _ = std::fs::create_dir_all(target);
        mount(Some(fstype), target, Some(fstype), flags, data)
            .map_err(|e| format!("mounting {fstype} on {target}: {e}"))?;
    }
    Ok(())
}

/// `nacre-init shutdown|poweroff|reboot`, run by a person: ask PID 1.
pub fn request(word: &str) -> Result<(), String> {
    let action = Action::parse(word).ok_or_else(|| format!("unknown action {word:?}"))?;
    let sig = match action {
        Action::Poweroff => Signal::SIGTERM,
        Action::Reboot => Signal::SIGINT,
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(1), sig)
        .map_err(|e| format!("signalling PID 1: {e}"))
}
