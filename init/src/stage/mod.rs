//! The boot, stage by stage. Stage 1 runs from the initrd and ends by executing nacre-init again
//! from the verified root as PID 1; stage 2 runs there. Each step either succeeds or stops the
//! node (`fail::fatal`) naming the step: nothing after a failed step runs.

pub mod modules;
pub mod mounts;
pub mod platform;
pub mod root;
pub mod verity;

use crate::cmdline::BootParams;
use crate::keyservice::KeyService;
use crate::measure::Measurer;
use crate::{fail, info};
use nacre_eventlog::runtime::{Phase, RuntimeEvent};
use nacre_network::config::WireguardConfig;
use nacre_network::peers::{LocalNode, PeerSource};
use nacre_statedisk::KeySource;
use std::path::Path;

/// Where nacre-init lives on the verified root; stage 1 executes it there as PID 1.
pub const STAGE2_INIT: &str = "/usr/lib/nacre/nacre-init";
const SYSROOT: &str = "/sysroot";
/// How long stage 1 waits for the root disk to appear.
const ROOT_TIMEOUT_S: u64 = 30;

/// Runs a step, logs how long it took, and stops the node if it fails.
pub fn step<T, E: std::fmt::Display>(name: &str, f: impl FnOnce() -> Result<T, E>) -> T {
    let start = crate::log::uptime();
    match f() {
        Ok(v) => {
            info!("{name}: done in {:.3} s", crate::log::uptime() - start);
            v
        }
        Err(e) => fail::fatal(name, &e),
    }
}

fn read_cmdline() -> Result<BootParams, String> {
    let text =
        std::fs::read_to_string("/proc/cmdline").map_err(|e| format!("/proc/cmdline: {e}"))?;
    BootParams::parse(&text).map_err(|e| format!("kernel command line: {e}"))
}

/// Stage 1, from the initrd: never returns.
pub fn stage1() -> ! {
    step("mount pseudo file systems", || {
        mounts::mount_all(&mounts::early_mounts())
    });
    crate::log::open_sinks();
    info!("stage 1 (initrd), nacre-init {}", env!("CARGO_PKG_VERSION"));
    let params = step("read the kernel command line", read_cmdline);
    fail::set_policy(params.on_failure);

    // The TPM driver is built into the kernel: measure entering the initrd before anything
    // from the initrd's configuration is acted on.
    let platform = step("detect the platform", || {
        platform::decide(platform::Probe::read(), params.insecure_platform)
    });
    let tpm = step("open the TPM", crate::tpm::Tpm::open);
    if tpm.is_none() {
        crate::warn!("no TPM: this boot is not measured (allowed by nacre.insecure-platform=1)");
    }
    let mut measurer = step("open the runtime log", || Measurer::new(tpm));
    step("measure enter-initrd", || {
        measurer.phase(Phase::EnterInitrd)
    });
    info!(
        "platform: {}{}",
        match platform.tee {
            Some(platform::Tee::SevSnp) => "AMD SEV-SNP",
            Some(platform::Tee::Tdx) => "Intel TDX",
            None => "no confidential computing (insecure platform allowed by the command line)",
        },
        if platform.tpm {
            ", TPM 2.0"
        } else {
            ", no TPM"
        }
    );

    let mut wanted = step("read the module list", || {
        modules::read_list(Path::new(modules::MODULE_LIST))
    });
    wanted.extend(params.extra_modules.iter().cloned());
    let n = step("load kernel modules", || modules::load(&wanted));
    info!("loaded {n} kernel modules");
    if step("mount configfs", mounts::mount_configfs) {
        info!("configfs on /sys/kernel/config (TSM reports)");
    }

    let roothash = step("verified root", || {
        params.roothash.clone().ok_or(root::RootError::NoRootHash)
    });
    let pair = step("find the root partitions", || {
        root::find(&roothash, ROOT_TIMEOUT_S)
    });
    info!(
        "root: {} partition {} (data), {} (verity)",
        pair.disk, pair.root.index, pair.verity.index
    );
    let dev = step("open the dm-verity root", || {
        root::open_verified(&pair, &roothash, params.on_corruption.table_arg())
    });
    step("mount the verified root", || {
        root::mount_root(&dev, Path::new(SYSROOT))
    });
    step("check the verified root", || {
        let init = Path::new(SYSROOT).join(STAGE2_INIT.trim_start_matches('/'));
        if init.is_file() {
            Ok(())
        } else {
            Err(root::RootError::NoInit(STAGE2_INIT.into()))
        }
    });
    info!("root verified: {roothash}");
    step("measure leave-initrd", || {
        measurer.phase(Phase::LeaveInitrd)
    });
    drop(measurer);
    step("switch root", switch_root);
    // switch_root only returns on failure.
    fail::fatal("switch root", &"exec returned")
}

/// Move the pseudo file systems into the new root, make it `/`, and execute nacre-init from it.
fn switch_root() -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    for m in ["/dev", "/proc", "/sys", "/run"] {
        let target = format!("{SYSROOT}{m}");
        mount(
            Some(m),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(|e| format!("moving {m} to {target}: {e}"))?;
    }
    nix::unistd::chdir(SYSROOT).map_err(|e| format!("chdir {SYSROOT}: {e}"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("moving {SYSROOT} to /: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    let path = std::ffi::CString::new(STAGE2_INIT).map_err(|e| e.to_string())?;
    let arg = std::ffi::CString::new("--stage2").map_err(|e| e.to_string())?;
    let err = nix::unistd::execv(&path, &[path.as_c_str(), arg.as_c_str()]);
    Err(format!("executing {STAGE2_INIT}: {err:?}"))
}

/// Stage 2, on the verified root: never returns.
pub fn stage2() -> ! {
    crate::log::open_sinks();
    info!("stage 2 (verified root)");
    let params = step("read the kernel command line", read_cmdline);
    fail::set_policy(params.on_failure);
    let tpm = step("open the TPM", crate::tpm::Tpm::open);
    let mut measurer = step("open the runtime log", || Measurer::new(tpm));
    // In a TDX guest stage 2's phases and the cluster events go into RTMR[3] too (from
    // `sysinit` on): without the kernel's RTMR extend interface the node stops here, before it
    // measures anything of stage 2 or asks the key service for anything.
    let tee = step("detect the platform", || platform::Probe::read().tee());
    if tee == Some(platform::Tee::Tdx) {
        let rtmr = step("open the TDX RTMR extend interface", || {
            crate::measure::Rtmr::open(Path::new(crate::measure::TDX_MEASUREMENTS))
        });
        measurer.set_rtmr(rtmr);
    }
    step("measure sysinit", || measurer.phase(Phase::Sysinit));
    let mut cfg = step("read the configuration", crate::config::read);
    // A release image's cluster configuration, from outside the image: read, parsed strictly
    // and measured into PCR 15 (and RTMR[3] on TDX) before anything acts on it. A cloud's
    // metadata server is reached over the underlay: it comes up first, without wg0 (whose
    // cluster ranges are in the configuration), and the rest of the network after.
    let cluster = step("read [cluster]", || {
        crate::config::section::<crate::cluster::Section>(&cfg, "cluster")
    });
    let mut underlay = None;
    if let Some(c) = cluster {
        if c.source.needs_network() {
            underlay = Some(step("bring up the underlay", || bring_up_underlay(&cfg)));
        }
        let bytes = step("read the cluster configuration", || {
            c.read(&|l| info!("cluster: {l}"))
        });
        let m = step("check the cluster configuration", || {
            nacre_cluster::parse(&bytes)
        });
        step("measure the cluster configuration", || {
            measurer.event(RuntimeEvent::ClusterConfig(m.digest))
        });
        info!(
            "cluster configuration {:?} from {} (sha256 {}): key service {}",
            m.config.name,
            c.source.name(),
            hex::encode(m.digest),
            m.config.key_service.endpoint
        );
        step("apply the cluster configuration", || {
            crate::cluster::write_ca(&m.config, Path::new(crate::cluster::CA_PATH))?;
            crate::cluster::apply(&mut cfg, &m.config, crate::cluster::CA_PATH)
        });
    }
    // The attested key service, if configured: the overlay address and WireGuard peers, then the
    // state disk's key; each request attests this node afresh.
    let mut keys: Option<KeyService> = step("read [key_service]", || {
        crate::config::section::<crate::keyservice::Config>(&cfg, "key_service")
            .map_err(|e| e.to_string())?
            .map(KeyService::new)
            .transpose()
    });
    // The network first: the underlay is how the attested key service (the state disk's key,
    // the WireGuard peers) is reached. wg0 and the fail-closed cluster routing are up before
    // any service starts.
    let mut wg = None;
    if cfg.contains_key("network") {
        wg = step("bring up the network", || {
            bring_up_network(&cfg, underlay.take(), keys.as_mut())
        });
    }
    // The encrypted state disk on /var, before anything that keeps state starts (and before
    // `ready`: the TPM-sealed key is bound to PCR 11 as it is after sysinit).
    if cfg.contains_key("state_disk") {
        step("open the state disk", || {
            open_state_disk(&cfg, keys.as_mut())
        });
    }
    // Joined: the cluster id goes into PCR 15 (a quote now shows this node is a member of this
    // cluster; it can no longer join anything in this boot), and in a TDX guest into RTMR[3],
    // kubelet gets its join data, and the peer set is kept current.
    if let Some(ks) = &keys {
        let joined = step("check the key service join", || {
            ks.joined().cloned().ok_or(
                "[key_service] is configured but nothing joined it (set [network.wireguard] peers = \"key-service\")",
            )
        });
        let id = step("read the cluster id", || {
            let mut id = [0u8; 32];
            hex::decode_to_slice(&joined.cluster_id, &mut id).map(|()| id)
        });
        step("measure the cluster id", || {
            measurer.event(RuntimeEvent::ClusterId(id))
        });
        step("write kubelet's join data", || write_kubelet_join(&joined));
        // The CNI network and kubelet's configuration from the join (crate::kube), before any
        // service starts.
        step("write the node's CNI and kubelet configuration", || {
            crate::kube::write(Path::new("/"), &joined, &|l| info!("{l}"))
        });
        if let Some((me, wgcfg)) = wg {
            if let Some(r) = ks.refresher(me, wgcfg) {
                r.spawn();
            }
        }
    }
    crate::services::run(&mut measurer, &cfg)
}

/// `[network]` without wg0, for a cluster configuration read over it (the cluster ranges are
/// not known yet): loopback and the underlay only.
fn bring_up_underlay(cfg: &toml::Table) -> Result<nacre_network::Underlay, String> {
    let net = crate::cluster::underlay_config(cfg)?;
    let log = |l: &str| info!("network: {l}");
    nacre_network::setup_underlay(&net, &log).map_err(|e| e.to_string())
}

/// `[network]`: the underlay (static or DHCPv4) unless `underlay` is already up, then wg0 with
/// its peers and the cluster routing that drops cluster traffic whenever wg0 cannot carry it.
/// Returns this node's wg0 identity and configuration (for the peer refresher).
fn bring_up_network(
    cfg: &toml::Table,
    underlay: Option<nacre_network::Underlay>,
    keys: Option<&mut KeyService>,
) -> Result<Option<(LocalNode, WireguardConfig)>, String> {
    let net: nacre_network::Config = crate::config::section(cfg, "network")
        .map_err(|e| e.to_string())?
        .ok_or("no [network] table")?;
    let log = |l: &str| info!("network: {l}");
    let source = keys.map(|k| k as &mut dyn PeerSource);
    let underlay = match underlay {
        Some(u) => u,
        None => nacre_network::setup_underlay(&net, &log).map_err(|e| e.to_string())?,
    };
    let s =
        nacre_network::setup_overlay(&net, underlay, source, &log).map_err(|e| e.to_string())?;
    // A DHCP lease is renewed in a thread (T1/T2); it logs and never stops the node.
    if let Some(b) = s.lease.clone() {
        nacre_network::lease::spawn_keeper(b, |l: &str| info!("network: {l}"))
            .map_err(|e| format!("starting the DHCP lease keeper: {e}"))?;
    }
    // wg0's and cni0's routes put back whenever the kernel drops them (a link down/up, cni0
    // recreated by the CNI plugin); the fail-closed rules stay in place meanwhile.
    if let Some(w) = &s.wireguard {
        nacre_network::watch::spawn(w.cluster_ranges.clone(), w.pod_range, |l: &str| {
            info!("network: {l}")
        })
        .map_err(|e| format!("starting the route watcher: {e}"))?;
    }
    match &s.wireguard {
        Some(w) => info!(
            "network: {} {}, wg0 {} with {} peer(s), cluster ranges {} only through wg0",
            s.interface,
            s.address,
            w.address,
            w.peers.len(),
            w.cluster_ranges
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => info!("network: {} {} (no WireGuard)", s.interface, s.address),
    }
    Ok(s.wireguard.map(|w| w.me).zip(net.wireguard))
}

/// kubelet's bootstrap data from the join, on tmpfs, readable by root only.
fn write_kubelet_join(j: &nacre_attestation::join::Joined) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = crate::keyservice::KUBELET_JOIN;
    let text = serde_json::json!({
        "node": j.node,
        "overlay": j.overlay,
        "api_server": j.kubelet.api_server,
        "bootstrap_token": j.kubelet.bootstrap_token,
    });
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    f.write_all(text.to_string().as_bytes())
        .map_err(|e| format!("{path}: {e}"))?;
    info!("kubelet join data for {} in {path}", j.node);
    Ok(())
}

/// `[state_disk]`: find the disk, format it if its first format never completed, validate a
/// detached copy of its LUKS2 header, open it with the key source's key, mount it on /var.
fn open_state_disk(cfg: &toml::Table, service: Option<&mut KeyService>) -> Result<(), String> {
    let mut sd: nacre_statedisk::Config = crate::config::section(cfg, "state_disk")
        .map_err(|e| e.to_string())?
        .ok_or("no [state_disk] table")?;
    sd.default_to_key_service(service.is_some());
    let mut own;
    let keys: &mut dyn KeySource =
        match (sd.key_source(), service) {
            (Some(k), _) => {
                own = k;
                own.as_mut()
            }
            (None, Some(s)) => s,
            (None, None) => return Err(
                "key_source = \"key-service\" needs the key service ([key_service] in init.toml)"
                    .into(),
            ),
        };
    let log = |l: &str| info!("{l}");
    let d = nacre_statedisk::open(&sd, keys, &log).map_err(|e| e.to_string())?;
    info!(
        "state disk {} (LUKS2 {}, key source {}{}) mounted on {}",
        d.device.display(),
        d.uuid,
        keys.name(),
        if d.formatted {
            ", formatted this boot"
        } else {
            ""
        },
        d.mountpoint.display()
    );
    Ok(())
}
