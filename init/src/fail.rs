//! Failing closed. PID 1 must never exit or panic (the kernel would panic with it, and the
//! reason would be lost): every failure ends here, prints one line that names the stage and the
//! reason, syncs, and powers off or reboots as the measured command line says. Nothing after the
//! failed stage runs.

use crate::cmdline::OnFailure;
use std::sync::atomic::{AtomicBool, Ordering};

static REBOOT_ON_FAILURE: AtomicBool = AtomicBool::new(false);

/// Set from the measured command line once it is parsed (the default, before that, is halt).
pub fn set_policy(p: OnFailure) {
    REBOOT_ON_FAILURE.store(p == OnFailure::Reboot, Ordering::SeqCst);
}

/// Stop the node: `stage` and `reason` go to the console as one line.
pub fn fatal(stage: &str, reason: &dyn std::fmt::Display) -> ! {
    crate::log::line("", format_args!("FATAL: {stage}: {reason}"));
    end()
}

fn end() -> ! {
    nix::unistd::sync();
    let reboot = REBOOT_ON_FAILURE.load(Ordering::SeqCst);
    crate::log::line(
        "",
        format_args!(
            "stopping the node ({})",
            if reboot { "reboot" } else { "power off" }
        ),
    );
    if std::process::id() == 1 {
        let how = if reboot {
            nix::sys::reboot::RebootMode::RB_AUTOBOOT
        } else {
            nix::sys::reboot::RebootMode::RB_POWER_OFF
        };
        let _ = nix::sys::reboot::reboot(how);
    }
    // Not PID 1 (a test run) or reboot(2) failed: never return into the failed boot.
    loop {
        if std::process::id() != 1 {
            std::process::exit(1);
        }
        nix::unistd::pause();
    }
}

/// A panic anywhere is a failure like any other: report it and stop, never unwind out of PID 1.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let loc = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        crate::log::line("", format_args!("FATAL: panic{loc}: {msg}"));
        end()
    }));
}
