//! What stage 2 runs on the verified root. For now: the `ready` measurement, then the payload
//! named in `/etc/nacre/payload` (kubelet's stand-in in tests), whose exit powers the node off.
//! The full supervisor (containerd, kubelet, restarts, orderly shutdown) comes with the rest of
//! the init issue.

use crate::measure::Measurer;
use crate::stage::step;
use crate::{fail, info};
use nacre_eventlog::runtime::Phase;

pub const PAYLOAD: &str = "/etc/nacre/payload";

pub fn run(measurer: &mut Measurer) -> ! {
    step("measure ready", || measurer.phase(Phase::Ready));
    for alg in crate::tpm::active_banks() {
        if let Some(v) = crate::tpm::read_pcr(alg, 11) {
            info!("PCR 11 ({}) = {}", alg.name(), hex::encode(v));
        }
    }
    let cmd = step("read the payload", || {
        std::fs::read_to_string(PAYLOAD)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("{PAYLOAD}: {e}"))
    });
    info!("starting {cmd}");
    let status = step("run the payload", || {
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .status()
            .map_err(|e| format!("{cmd}: {e}"))
    });
    info!("payload exited with {status}; powering off");
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    fail::fatal("power off", &"reboot(2) returned")
}
