//! What stage 2 runs on the verified root. For now: the `ready` measurement, then the payload
//! of the configuration's `[payload]` table (kubelet's stand-in in tests), whose exit powers the
//! node off. The full supervisor (containerd, kubelet, restarts, orderly shutdown) comes with
//! the rest of the init issue.

use crate::config;
use crate::measure::Measurer;
use crate::stage::step;
use crate::{fail, info};
use nacre_eventlog::runtime::Phase;

/// `[payload] command = "..."`: run with /bin/sh once services would start.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub command: String,
}

pub fn run(measurer: &mut Measurer, cfg: &toml::Table) -> ! {
    step("measure ready", || measurer.phase(Phase::Ready));
    for alg in crate::tpm::active_banks() {
        if let Some(v) = crate::tpm::read_pcr(alg, 11) {
            info!("PCR 11 ({}) = {}", alg.name(), hex::encode(v));
        }
    }
    let cmd = step("read the payload", || {
        config::section::<Payload>(cfg, "payload")
            .map_err(|e| e.to_string())?
            .map(|p| p.command)
            .ok_or_else(|| format!("{}: no [payload] command", config::CONFIG))
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
