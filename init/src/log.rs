//! The init's log: one line per event, prefixed with the seconds since boot and the stage, to the
//! console (what an operator sees on the serial port) and to the kernel log (`/dev/kmsg`, kept
//! with the kernel's messages). Logging never fails the boot: a missing console is ignored.

use std::fmt;
use std::io::Write;
use std::sync::Mutex;

/// (file, is the kernel log)
static SINKS: Mutex<Vec<(std::fs::File, bool)>> = Mutex::new(Vec::new());

/// Open `/dev/console` and `/dev/kmsg` (after `/dev` is mounted); earlier lines go to stderr.
pub fn open_sinks() {
    let mut sinks = match SINKS.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    sinks.clear();
    for (path, kmsg) in [("/dev/console", false), ("/dev/kmsg", true)] {
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
            sinks.push((f, kmsg));
        }
    }
    // The init writes many lines at boot: keep the kernel from rate-limiting them.
    let _ = std::fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
}

/// Seconds since boot (CLOCK_BOOTTIME), for the timeline.
pub fn uptime() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

pub fn line(level: &str, args: fmt::Arguments<'_>) {
    let text = format!("[{:9.3}] nacre-init: {level}{args}\n", uptime());
    let mut sinks = match SINKS.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    if sinks.is_empty() {
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
    for (s, kmsg) in sinks.iter_mut() {
        if *kmsg {
            // Priority 7 (debug): kept in the kernel log, not echoed again on the console.
            let _ = s.write_all(format!("<7>nacre-init: {level}{args}\n").as_bytes());
        } else {
            let _ = s.write_all(text.as_bytes());
        }
    }
}

#[macro_export]
macro_rules! info {
    ($($a:tt)*) => { $crate::log::line("", format_args!($($a)*)) };
}

#[macro_export]
macro_rules! warn {
    ($($a:tt)*) => { $crate::log::line("warning: ", format_args!($($a)*)) };
}
