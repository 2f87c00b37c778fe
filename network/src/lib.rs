//! nacre's network: the underlay interface (static or DHCPv4) and WireGuard `wg0` with the
//! kernel backend, configured over netlink (small synchronous requests, no async runtime).
//!
//! - [`config`]: the `[network]` table of `/etc/nacre/init.toml`, validated (pure).
//! - [`cidr`]: prefixes (pure).
//! - [`rtnl`]: links, addresses, routes, rules (message builders pure, host-tested).
//! - [`wg`]: WireGuard over generic netlink (key generated in memory at boot).
//! - [`peers`]: the [`peers::PeerSource`] interface; [`exchange`]: the insecure test source.
//! - [`dhcp`]: a DHCPv4 client (renewal, classless routes, MTU, DNS; parsing pure, strict).
//! - [`lease`]: a DHCP lease applied (MTU, address, routes, `/run/nacre/resolv.conf`) and
//!   kept: [`lease::spawn_keeper`] renews it at T1/T2 in a thread.
//! - [`sysctl`]: strict reverse-path filtering and forwarding (ingress filtering, pods).
//! - [`watch`]: a thread that puts the cluster routes back when wg0 or cni0 change
//!   ([`reconcile_routes`]; the kernel drops a link's routes when it goes down), and creates
//!   a deleted wg0 again ([`restore_wg0`]).
//!
//! Peers change in place ([`wg::plan_peers`]): those that stay keep their sessions, and with a
//! new peer only the node with the greater public key starts the handshake at once
//! ([`wg::initiates`]; two initiations crossing cost WireGuard's 5 s rekey timeout).
//!
//! Cluster traffic never leaves unencrypted: for every cluster range, a policy rule (priority
//! [`RULE_PRIORITY`], before the main table) sends it to table [`WG_TABLE`], which routes it
//! into wg0 (metric 0) and otherwise answers `unreachable` (metric `u32::MAX`); a second rule
//! right after drops it too, should that table ever be emptied. These are installed before
//! wg0 exists, so there is no moment when cluster traffic could take the underlay. When wg0
//! goes down, the kernel removes its route and the `unreachable` route takes over.
//!
//! Pods: when the peer source gives this node a pod range ([`PeerSource::pod_range`], inside a
//! cluster range), the range is served by the local bridge [`POD_BRIDGE`] (`cni0`), which this
//! crate creates at bring-up, before any service, with the range's first host as its address
//! (the CNI bridge plugin, configured with the same bridge and gateway, finds it and only adds
//! the pods' veths). [`WG_TABLE`] gets `unreachable <pod range>` (metric `u32::MAX`, longer
//! than the cluster range, so wg0's route never carries it) and `<pod range> dev cni0`
//! (metric 0): the own pods are reached through cni0 or not at all (if cni0 is deleted, the
//! kernel removes its route and `unreachable` answers; nothing goes out wg0 or the underlay).
//! The address is added without a prefix route, so the main table holds no route for it.
//! Peers' allowed IPs must not overlap it ([`peers::validate`]); IPv4 forwarding is enabled.
//!
//! Ingress: a policy rule `iif <underlay> to <cluster range> unreachable` (priority
//! [`UNDERLAY_RULE_PRIORITY`]) keeps the node from forwarding underlay packets into wg0 or to
//! its pods, or taking them itself, and strict reverse-path filtering ([`sysctl`]) drops every packet with a cluster
//! source that arrives other than through wg0 (or, for the own pod range, cni0): the route
//! back to such a source is wg0 (or cni0), never the underlay. Written before wg0 exists.
//!
//! Rule order (`ip rule`), installed before wg0 and cni0 get addresses:
//!
//! | priority | rule | |
//! |---|---|---|
//! | 98 [`UNDERLAY_RULE_PRIORITY`] | `iif <underlay> to R unreachable` | per cluster range R |
//! | 99 [`LOCAL_RULE_PRIORITY`] | `lookup local` | moved from the kernel's 0 |
//! | 100 [`RULE_PRIORITY`] | `to R lookup 51820` | [`WG_TABLE`] |
//! | 101 | `to R unreachable` | |
//! | 32766, 32767 | `lookup main`, `lookup default` | the kernel's |
//!
//! The kernel consults its `lookup local` rule at priority 0, before any other: a packet
//! arriving on the underlay for one of the node's own cluster addresses (the overlay address
//! on wg0, which kubelet serves on, or the pod gateway on cni0) would be delivered, whatever
//! the `iif` rule says, and answered out the underlay in clear (the reverse-path filter only
//! checks sources). So `lookup local` is added at 99 and the kernel's rule at 0 deleted (added
//! first: local delivery never lapses). Only cluster destinations arriving on the underlay
//! are refused before it: the underlay's own address, loopback (`127.0.0.1`), and what
//! arrives on wg0, cni0 or `lo` are still delivered; and it comes before 100, so the node's
//! own cluster addresses are delivered rather than sent to wg0.

// Runs in PID 1: no unwrap/expect/panic outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod cidr;
pub mod config;
pub mod dhcp;
pub mod exchange;
pub mod lease;
pub mod nl;
pub mod peers;
pub mod rtnl;
pub mod sysctl;
pub mod watch;
pub mod wg;

use base64::Engine as _;
use cidr::Cidr;
pub use config::Config;
use config::{Addressing, PeersKind, Selector, WireguardConfig, WG_IFNAME};
use nl::NlError;
use peers::{Announce, LocalNode, PeerSource};
use rtnl::Rtnl;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

/// The routing table holding the cluster routes (wg0 and the unreachable fallback).
pub const WG_TABLE: u32 = 51820;
/// The rule sending cluster destinations to [`WG_TABLE`]; the drop rule is the next priority.
pub const RULE_PRIORITY: u32 = 100;
/// The rules dropping what arrives on the underlay for a cluster destination (before
/// [`LOCAL_RULE_PRIORITY`], so before local delivery).
pub const UNDERLAY_RULE_PRIORITY: u32 = RULE_PRIORITY - 2;
/// `lookup local`, moved here from the kernel's priority 0: after the underlay rules (a
/// packet from the underlay for the node's overlay or pod gateway address is not delivered),
/// before [`RULE_PRIORITY`] (the node's own cluster addresses are delivered, not sent to wg0).
pub const LOCAL_RULE_PRIORITY: u32 = RULE_PRIORITY - 1;
/// The node's pod bridge (the CNI bridge plugin's `bridge`).
pub const POD_BRIDGE: &str = "cni0";
/// How long to wait for the underlay interface to appear.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after adding peers that start the handshake themselves their configured
/// keepalive is set (sooner, its first keepalive would be an initiation crossing theirs).
const DEFERRED_KEEPALIVE: Duration = Duration::from_secs(2);

/// What wg0 was set up with, to create it again if it is deleted ([`restore_wg0`]): its
/// private key (kept in PID 1's memory as the kernel keeps it; wiped on drop), port, overlay
/// address and the peers it has now ([`update_peers`] keeps them current).
struct Wg0State {
    /// wg0's interface index (a link named wg0 with another index is not this node's).
    ifindex: u32,
    key: wg::PrivateKey,
    public_key: wg::Key,
    listen_port: u16,
    overlay: Cidr,
    peers: Vec<peers::Peer>,
    keepalive_s: Option<u16>,
}

/// wg0 as [`setup_overlay`] made it (None: no wg0 in this process).
static WG0: std::sync::Mutex<Option<Wg0State>> = std::sync::Mutex::new(None);

fn wg0_state() -> std::sync::MutexGuard<'static, Option<Wg0State>> {
    match WG0.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{what}: {err}")]
    Netlink { what: String, err: NlError },
    #[error("no interface {0} (after {1} s)")]
    NoInterface(String, u64),
    #[error("{0}")]
    Dhcp(String),
    #[error("{0}")]
    DhcpClient(#[from] dhcp::DhcpError),
    #[error("{0}")]
    Lease(#[from] lease::LeaseError),
    #[error("{0}")]
    Key(String),
    #[error("pod range {range}: {reason}")]
    PodRange { range: String, reason: String },
    #[error("{0}")]
    Sysctl(#[from] sysctl::SysctlError),
    #[error("peers from {source_name}: {err}")]
    Peers {
        source_name: &'static str,
        err: peers::PeerError,
    },
}

trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, NetError>;
}

impl<T> Context<T> for Result<T, NlError> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, NetError> {
        self.map_err(|err| NetError::Netlink { what: what(), err })
    }
}

/// What [`setup`] configured.
#[derive(Debug, Clone)]
pub struct Summary {
    pub interface: String,
    pub address: Cidr,
    pub gateway: Option<IpAddr>,
    pub dhcp: bool,
    /// The DHCP lease, for [`lease::spawn_keeper`] (which renews it).
    pub lease: Option<lease::Bound>,
    pub wireguard: Option<WgSummary>,
}

#[derive(Debug, Clone)]
pub struct WgSummary {
    /// This node as peers see it (for [`update_peers`]).
    pub me: LocalNode,
    pub public_key: String,
    pub address: Cidr,
    pub listen_port: u16,
    pub peers: Vec<String>,
    pub cluster_ranges: Vec<Cidr>,
    /// This node's pod range on [`POD_BRIDGE`], if the peer source gave one.
    pub pod_range: Option<Cidr>,
}

pub fn key_b64(k: &wg::Key) -> String {
    base64::engine::general_purpose::STANDARD.encode(k)
}

fn wait_for_link(rt: &mut Rtnl, sel: &Selector) -> Result<rtnl::Link, NetError> {
    let start = Instant::now();
    loop {
        if let Some(l) = rt.find(sel).ctx(|| "listing interfaces".into())? {
            return Ok(l);
        }
        if start.elapsed() >= LINK_TIMEOUT {
            return Err(NetError::NoInterface(
                sel.to_string(),
                LINK_TIMEOUT.as_secs(),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The underlay as [`setup_underlay`] left it, for [`setup_overlay`].
#[derive(Debug, Clone)]
pub struct Underlay {
    pub interface: String,
    pub address: Cidr,
    pub gateway: Option<IpAddr>,
    /// The DHCP lease (its `cluster_ranges` are filled in by [`setup_overlay`]).
    pub lease: Option<lease::Bound>,
}

/// Bring up loopback and the underlay, then wg0 if configured: [`setup_underlay`] then
/// [`setup_overlay`]. Validates the whole configuration first; any failure leaves the node to
/// stop (the caller fails closed).
///
/// `source`: where wg0's peers come from when `peers = "key-service"` (the caller's attested
/// key-service client); the test exchange is built here from its own table.
pub fn setup(
    cfg: &Config,
    source: Option<&mut dyn PeerSource>,
    log: &dyn Fn(&str),
) -> Result<Summary, NetError> {
    let underlay = setup_underlay(cfg, log)?;
    setup_overlay(cfg, underlay, source, log)
}

/// Loopback and the underlay (static or DHCPv4), nothing else. `cfg.wireguard` may be absent:
/// a node that learns its cluster ranges over the underlay (a cluster configuration from the
/// cloud's metadata server) brings the underlay up first and passes the ranges to
/// [`setup_overlay`], which checks the underlay against them. With `cfg.wireguard`, the
/// underlay is checked against its ranges here already, before it is configured.
pub fn setup_underlay(cfg: &Config, log: &dyn Fn(&str)) -> Result<Underlay, NetError> {
    cfg.validate()?;
    let sel = cfg.selector()?;
    let addressing = cfg.addressing()?;
    let mut rt = Rtnl::open().ctx(|| "opening rtnetlink".into())?;

    let lo = wait_for_link(&mut rt, &Selector::Name("lo".into()))?;
    rt.set_up(lo.index).ctx(|| "setting lo up".into())?;

    let link = wait_for_link(&mut rt, &sel)?;
    rt.set_up(link.index)
        .ctx(|| format!("setting {} up", link.name))?;
    let cluster_ranges = cluster_ranges(cfg);
    let (address, gateway, bound) = match addressing {
        Addressing::Static { address, gateway } => {
            check_underlay(&address, &cluster_ranges)?;
            rt.add_address(link.index, &address, true)
                .ctx(|| format!("adding {address} to {}", link.name))?;
            if let Some(g) = gateway {
                let default = Cidr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0)
                    .map_err(|e| NetError::Dhcp(e.to_string()))?;
                rt.add_route(rtnl::gateway_route_message(
                    &default,
                    g,
                    link.index,
                    rtnl::TABLE_MAIN,
                    0,
                ))
                .ctx(|| format!("default route via {g}"))?;
            }
            (address, gateway, None)
        }
        Addressing::Dhcp { timeout_s } => {
            let mac = link
                .mac
                .ok_or_else(|| NetError::Dhcp(format!("{} has no MAC address", link.name)))?;
            let (lease, at) = dhcp::acquire(&link.name, mac.0, Duration::from_secs(timeout_s))?;
            log(&format!("DHCP: {}", lease.describe()));
            let address = lease::address_of(&lease)?;
            // A DHCP lease may land inside a cluster range: refuse it like a static one.
            check_underlay(&address, &cluster_ranges)?;
            let resolv_conf = std::path::PathBuf::from(lease::RESOLV_CONF);
            let changed =
                lease::apply(&mut rt, link.index, &link.name, &lease, None, &resolv_conf)?;
            log(&format!("DHCP: applied {}", changed.join("; ")));
            let gateway = lease.router.map(IpAddr::V4);
            let bound = lease::Bound {
                ifname: link.name.clone(),
                index: link.index,
                mac: mac.0,
                lease,
                at,
                cluster_ranges: cluster_ranges.clone(),
                resolv_conf,
            };
            (address, gateway, Some(bound))
        }
    };
    log(&format!(
        "underlay {} ({}): {address}{}{}",
        link.name,
        link.mac.map(|m| m.to_string()).unwrap_or_default(),
        gateway
            .map(|g| format!(", gateway {g}"))
            .unwrap_or_default(),
        if bound.is_some() {
            " (DHCP)"
        } else {
            " (static)"
        }
    ));
    Ok(Underlay {
        interface: link.name,
        address,
        gateway,
        lease: bound,
    })
}

fn cluster_ranges(cfg: &Config) -> Vec<Cidr> {
    cfg.wireguard
        .as_ref()
        .map(|w| w.cluster_ranges.clone())
        .unwrap_or_default()
}

/// wg0 (if `cfg.wireguard`) on an underlay [`setup_underlay`] brought up: first the underlay
/// is checked against the cluster ranges (now known), and the DHCP lease keeper will refuse a
/// renewal inside them; then the fail-closed routing, wg0, its peers from `source`.
/// `cfg` is the whole `[network]` (the same selector and addressing as the underlay's).
pub fn setup_overlay(
    cfg: &Config,
    underlay: Underlay,
    source: Option<&mut dyn PeerSource>,
    log: &dyn Fn(&str),
) -> Result<Summary, NetError> {
    cfg.validate()?;
    let Underlay {
        interface,
        address,
        gateway,
        lease: mut bound,
    } = underlay;
    let ranges = cluster_ranges(cfg);
    check_underlay(&address, &ranges)?;
    if let Some(b) = bound.as_mut() {
        b.cluster_ranges = ranges;
    }
    let wireguard = match &cfg.wireguard {
        Some(wg) => {
            let mut rt = Rtnl::open().ctx(|| "opening rtnetlink".into())?;
            let mut exchange;
            let source: &mut dyn PeerSource = match (wg.peers, &wg.insecure_test_exchange, source) {
                (PeersKind::InsecureTestExchange, Some(x), _) => {
                    exchange = exchange::TestExchange::new(x);
                    &mut exchange
                }
                (PeersKind::KeyService, _, Some(s)) => s,
                (PeersKind::InsecureTestExchange, None, _) => {
                    return Err(
                        config::ConfigError("no insecure_test_exchange table".into()).into(),
                    )
                }
                (PeersKind::KeyService, _, None) => return Err(config::ConfigError(
                    "peers = \"key-service\" needs the key service ([key_service] in init.toml)"
                        .into(),
                )
                .into()),
            };
            // Ingress filtering before wg0 exists (and before any service runs).
            let proc_sys = std::path::Path::new(sysctl::PROC_SYS);
            let set = sysctl::strict_rp_filter(proc_sys, &interface)?;
            log(&set.join(", "));
            install_cluster_routing(&mut rt, &wg.cluster_ranges, &interface)?;
            Some(setup_wireguard(&mut rt, wg, address.addr(), source, log)?)
        }
        None => None,
    };
    Ok(Summary {
        interface,
        address,
        gateway,
        dhcp: bound.is_some(),
        lease: bound,
        wireguard,
    })
}

/// The underlay must not lie in a cluster range (cluster traffic only goes through wg0).
fn check_underlay(address: &Cidr, cluster_ranges: &[Cidr]) -> Result<(), NetError> {
    match cluster_ranges
        .iter()
        .find(|r| r.overlaps(&address.network()))
    {
        Some(r) => Err(NetError::Dhcp(format!(
            "the underlay {address} overlaps the cluster range {r}"
        ))),
        None => Ok(()),
    }
}

/// The fail-closed routing for the cluster ranges, installed before wg0 exists: `to R lookup
/// WG_TABLE` with `unreachable R` there, `to R unreachable` after it, and `iif <underlay> to R
/// unreachable` before it (nothing from the underlay is forwarded into the cluster ranges),
/// then `lookup local` moved between them ([`move_local_rule`]: nothing from the underlay is
/// delivered to the node's cluster addresses either).
pub fn install_cluster_routing(
    rt: &mut Rtnl,
    ranges: &[Cidr],
    underlay: &str,
) -> Result<(), NetError> {
    for r in ranges {
        rt.add_rule(rtnl::iif_unreachable_rule_message(
            r,
            underlay,
            UNDERLAY_RULE_PRIORITY,
        ))
        .ctx(|| format!("rule: iif {underlay} to {r} unreachable"))?;
        rt.add_route(rtnl::unreachable_route_message(r, WG_TABLE, u32::MAX))
            .ctx(|| format!("unreachable route for {r} in table {WG_TABLE}"))?;
        rt.add_rule(rtnl::rule_message(r, Some(WG_TABLE), RULE_PRIORITY))
            .ctx(|| format!("rule: to {r} lookup {WG_TABLE}"))?;
        rt.add_rule(rtnl::rule_message(r, None, RULE_PRIORITY + 1))
            .ctx(|| format!("rule: to {r} unreachable"))?;
    }
    move_local_rule(rt, ranges)?;
    if let Ok(mut u) = INSTALLED_UNDERLAY.lock() {
        *u = Some(underlay.to_string());
    }
    Ok(())
}

/// The underlay [`install_cluster_routing`] filtered, for [`reconcile_routes`] (whose
/// callers do not know it) to put its rules back.
static INSTALLED_UNDERLAY: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Move `lookup local` from the kernel's priority 0 to [`LOCAL_RULE_PRIORITY`], for each
/// family of `ranges`: add it there first (an existing one is kept), then delete the one at 0
/// (an absent one is fine), so local delivery never lapses and a second run changes nothing.
pub fn move_local_rule(rt: &mut Rtnl, ranges: &[Cidr]) -> Result<(), NetError> {
    for ipv6 in [false, true] {
        if !ranges.iter().any(|r| r.is_ipv4() != ipv6) {
            continue;
        }
        let fam = if ipv6 { "IPv6" } else { "IPv4" };
        ignore_errno(
            rt.add_rule(rtnl::local_rule_message(ipv6, LOCAL_RULE_PRIORITY, true)),
            libc::EEXIST,
        )
        .ctx(|| format!("rule: {fam} priority {LOCAL_RULE_PRIORITY} lookup local"))?;
        ignore_errno(
            rt.del_rule(rtnl::local_rule_message(ipv6, 0, false)),
            libc::ENOENT,
        )
        .ctx(|| format!("deleting the {fam} rule: priority 0 lookup local"))?;
    }
    Ok(())
}

fn ignore_errno(r: Result<(), NlError>, errno: i32) -> Result<(), NlError> {
    match r {
        Err(e) if e.errno() == Some(errno) => Ok(()),
        other => other,
    }
}

fn setup_wireguard(
    rt: &mut Rtnl,
    cfg: &WireguardConfig,
    underlay: IpAddr,
    source: &mut dyn PeerSource,
    log: &dyn Fn(&str),
) -> Result<WgSummary, NetError> {
    rt.create_wireguard(WG_IFNAME)
        .ctx(|| format!("creating {WG_IFNAME} (is the wireguard module loaded?)"))?;
    let link = wait_for_link(rt, &Selector::Name(WG_IFNAME.into()))?;
    let mut wgnl = wg::Wg::open().ctx(|| "opening the wireguard generic netlink family".into())?;
    let key = wg::PrivateKey::generate().map_err(NetError::Key)?;
    wgnl.configure(link.index, &key, cfg.listen_port)
        .ctx(|| format!("setting {WG_IFNAME}'s key and port {}", cfg.listen_port))?;
    let dev = wgnl
        .device(link.index)
        .ctx(|| format!("reading {WG_IFNAME} back"))?;
    let public_key = dev
        .public_key
        .ok_or_else(|| NetError::Key(format!("{WG_IFNAME} reports no public key")))?;
    if dev.listen_port != cfg.listen_port {
        return Err(NetError::Key(format!(
            "{WG_IFNAME} listens on {} instead of {}",
            dev.listen_port, cfg.listen_port
        )));
    }
    log(&format!(
        "{WG_IFNAME}: public key {}, port {}",
        key_b64(&public_key),
        cfg.listen_port
    ));
    let source_name = source.name();
    let announce = Announce {
        public_key,
        underlay,
        listen_port: cfg.listen_port,
    };
    let assigned = source
        .assign(&announce, log)
        .map_err(|err| NetError::Peers { source_name, err })?;
    let overlay = match (assigned, cfg.address) {
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => {
            return Err(config::ConfigError(format!(
                "{source_name} assigned no overlay address and wireguard.address is not set"
            ))
            .into())
        }
    };
    cfg.check_overlay(&overlay)?;
    let pod_range = source
        .pod_range()
        .map_err(|err| NetError::Peers { source_name, err })?;
    if let Some(p) = pod_range {
        check_pod_range(&p, &cfg.cluster_ranges, overlay.addr())?;
        install_pod_range(rt, &p)?;
        sysctl::enable_forwarding(std::path::Path::new(sysctl::PROC_SYS))?;
        log(&format!(
            "pods: {p} on {POD_BRIDGE} (gateway {}), net.ipv4.ip_forward = 1",
            pod_gateway(&p)
        ));
    }
    // The overlay address without a prefix route: the cluster routes live in WG_TABLE.
    let host = Cidr::host(overlay.addr());
    rt.add_address(link.index, &host, false)
        .ctx(|| format!("adding {host} to {WG_IFNAME}"))?;
    rt.set_up(link.index)
        .ctx(|| format!("setting {WG_IFNAME} up"))?;

    let me = LocalNode {
        public_key,
        overlay: overlay.addr(),
        underlay,
        listen_port: cfg.listen_port,
        pod_range,
    };
    let peers = source
        .peers(&me, log)
        .map_err(|err| NetError::Peers { source_name, err })?;
    peers::validate(&peers, &me, &cfg.cluster_ranges)
        .map_err(|err| NetError::Peers { source_name, err })?;
    let initiated = apply_peers(
        &mut wgnl,
        link.index,
        &public_key,
        &peers,
        cfg.persistent_keepalive_s,
        false,
    )?;
    route_cluster_via(rt, &cfg.cluster_ranges, link.index)?;
    if initiated > 0 {
        log(&format!(
            "{WG_IFNAME}: handshake started with {initiated} of {} peer(s) (the greater key starts)",
            peers.len()
        ));
    }
    let names: Vec<String> = peers
        .iter()
        .map(|p| {
            format!(
                "{} {} ({})",
                p.name,
                key_b64(&p.public_key),
                p.allowed_ips
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    for n in &names {
        log(&format!("{WG_IFNAME}: peer {n}"));
    }
    *wg0_state() = Some(Wg0State {
        ifindex: link.index,
        key,
        public_key,
        listen_port: cfg.listen_port,
        overlay: host,
        peers,
        keepalive_s: cfg.persistent_keepalive_s,
    });
    Ok(WgSummary {
        me,
        public_key: key_b64(&public_key),
        address: host,
        listen_port: cfg.listen_port,
        peers: names,
        cluster_ranges: cfg.cluster_ranges.clone(),
        pod_range,
    })
}

/// The cluster ranges through wg0 (link `index`) in [`WG_TABLE`], metric 0.
pub fn route_cluster_via(rt: &mut Rtnl, ranges: &[Cidr], index: u32) -> Result<(), NetError> {
    for r in ranges {
        rt.add_route(rtnl::device_route_message(r, index, WG_TABLE, 0))
            .ctx(|| format!("route {r} dev {WG_IFNAME} table {WG_TABLE}"))?;
    }
    Ok(())
}

/// The pod bridge's address: the pod range's first host (the pods' gateway).
pub fn pod_gateway(pod_range: &Cidr) -> Cidr {
    let net = pod_range.network();
    let addr = match net.addr() {
        IpAddr::V4(a) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a).wrapping_add(1))),
        IpAddr::V6(a) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a).wrapping_add(1))),
    };
    // Same family and prefix as a valid Cidr: cannot fail; fall back to the network itself.
    Cidr::new(addr, net.prefix()).unwrap_or(net)
}

/// A pod range the node can serve: an IPv4 network (no host bits) with room for the gateway
/// and pods (`/30` or wider), inside a cluster range (so it is routed only through wg0 on the
/// other nodes and covered by the ingress filtering), not holding the overlay address.
pub fn check_pod_range(pod: &Cidr, cluster: &[Cidr], overlay: IpAddr) -> Result<(), NetError> {
    let bad = |reason: String| {
        Err(NetError::PodRange {
            range: pod.to_string(),
            reason,
        })
    };
    if !pod.is_ipv4() {
        return bad("only IPv4 pod ranges are supported".into());
    }
    if !pod.is_network() {
        return bad(format!(
            "has host bits set (the network is {})",
            pod.network()
        ));
    }
    if pod.prefix() > 30 {
        return bad("is narrower than /30 (no room for the gateway and a pod)".into());
    }
    if !cluster.iter().any(|r| r.covers(pod)) {
        return bad(format!(
            "is not inside a cluster range ({})",
            cluster
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if pod.contains(overlay) {
        return bad(format!("holds this node's overlay address {overlay}"));
    }
    Ok(())
}

/// The own pod range on [`POD_BRIDGE`]: `unreachable <pod>` in [`WG_TABLE`] first (so wg0's
/// cluster route never carries it), then the bridge, created, its gateway address (no prefix
/// route) and up, then `<pod> dev cni0` in [`WG_TABLE`]. Returns the bridge's index.
/// The range must have passed [`check_pod_range`].
pub fn install_pod_range(rt: &mut Rtnl, pod: &Cidr) -> Result<u32, NetError> {
    rt.add_route(rtnl::unreachable_route_message(pod, WG_TABLE, u32::MAX))
        .ctx(|| format!("unreachable route for {pod} in table {WG_TABLE}"))?;
    rt.create_bridge(POD_BRIDGE)
        .ctx(|| format!("creating the pod bridge {POD_BRIDGE}"))?;
    let link = wait_for_link(rt, &Selector::Name(POD_BRIDGE.into()))?;
    let gateway = pod_gateway(pod);
    rt.add_address(link.index, &gateway, false)
        .ctx(|| format!("adding {gateway} to {POD_BRIDGE}"))?;
    rt.set_up(link.index)
        .ctx(|| format!("setting {POD_BRIDGE} up"))?;
    rt.add_route(rtnl::device_route_message(pod, link.index, WG_TABLE, 0))
        .ctx(|| format!("route {pod} dev {POD_BRIDGE} table {WG_TABLE}"))?;
    Ok(link.index)
}

/// Set wg0's peers to `next` ([`wg::plan_peers`]): peers that stay keep their sessions, gone
/// ones are removed, and with new ones this node starts the handshake at once where its key
/// is the greater ([`wg::initiates`]). Returns how many handshakes it started.
fn apply_peers(
    wgnl: &mut wg::Wg,
    index: u32,
    me: &wg::Key,
    next: &[peers::Peer],
    keepalive_s: Option<u16>,
    initiate_all: bool,
) -> Result<usize, NetError> {
    let current: Vec<wg::Key> = wgnl
        .device(index)
        .ctx(|| format!("reading {WG_IFNAME}'s peers"))?
        .peers
        .iter()
        .map(|p| p.public_key)
        .collect();
    let plan = wg::plan_peers(me, &current, next, keepalive_s, initiate_all);
    wgnl.apply(index, &plan.now)
        .ctx(|| format!("setting {WG_IFNAME}'s peers"))?;
    wgnl.apply(index, &plan.after)
        .ctx(|| format!("setting {WG_IFNAME}'s keepalives back to none"))?;
    if !plan.deferred.is_empty() {
        let deferred = plan.deferred;
        // A best effort: the peers only miss keepalives until the next change if it fails.
        let _ = spawn_quiet("wg-keepalive", move || {
            std::thread::sleep(DEFERRED_KEEPALIVE);
            if let Ok(mut w) = wg::Wg::open() {
                let _ = w.apply(index, &deferred);
            }
        });
    }
    Ok(plan.initiated)
}

/// Start a thread with every signal blocked (in PID 1 the main thread takes them all on its
/// signalfd; a signal handed to this thread instead would be lost).
pub(crate) fn spawn_quiet(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<(), std::io::Error> {
    // SAFETY: sigfillset and pthread_sigmask on signal sets owned by this function.
    let (rc, old) = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        (libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old), old)
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    let spawned = std::thread::Builder::new().name(name.into()).spawn(f);
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    spawned.map(|_| ())
}

/// Create wg0 again if it was deleted (by anyone: nothing in a node deletes it), as
/// [`setup_overlay`] made it: the same key (so peers and the key service know it), port,
/// overlay address and the current peers, then up; this node starts the handshake with every
/// peer (theirs still hold sessions with the old wg0 and would not). A link named wg0 that is
/// not this node's (another interface index) is deleted first. Returns what it did, or `None`
/// when wg0 is this node's or was never set up in this process. If a step fails, the link just
/// made is deleted again, so the watcher's next notification (that deletion) tries again, a
/// second later. The caller puts the routes back ([`reconcile_routes`]); until then the
/// fail-closed fallbacks answer.
pub fn restore_wg0(rt: &mut Rtnl) -> Result<Option<String>, NetError> {
    let mut guard = wg0_state();
    let Some(st) = guard.as_mut() else {
        return Ok(None);
    };
    let sel = Selector::Name(WG_IFNAME.into());
    let mut replaced = String::new();
    if let Some(l) = rt.find(&sel).ctx(|| "listing interfaces".into())? {
        if l.index == st.ifindex {
            return Ok(None);
        }
        rt.delete_link(l.index)
            .ctx(|| format!("deleting a {WG_IFNAME} that is not this node's"))?;
        replaced = format!(" (a {WG_IFNAME} made by someone else was deleted)");
    }
    rt.create_wireguard(WG_IFNAME)
        .ctx(|| format!("creating {WG_IFNAME} again"))?;
    let link = wait_for_link(rt, &sel)?;
    let made = (|| {
        let mut wgnl =
            wg::Wg::open().ctx(|| "opening the wireguard generic netlink family".into())?;
        wgnl.configure(link.index, &st.key, st.listen_port)
            .ctx(|| format!("setting {WG_IFNAME}'s key and port {}", st.listen_port))?;
        let dev = wgnl
            .device(link.index)
            .ctx(|| format!("reading {WG_IFNAME} back"))?;
        if dev.public_key != Some(st.public_key) || dev.listen_port != st.listen_port {
            return Err(NetError::Key(format!(
                "{WG_IFNAME} created again reports another key or port"
            )));
        }
        rt.add_address(link.index, &st.overlay, false)
            .ctx(|| format!("adding {} to {WG_IFNAME}", st.overlay))?;
        rt.set_up(link.index)
            .ctx(|| format!("setting {WG_IFNAME} up"))?;
        apply_peers(
            &mut wgnl,
            link.index,
            &st.public_key,
            &st.peers,
            st.keepalive_s,
            true,
        )
    })();
    match made {
        Ok(initiated) => {
            st.ifindex = link.index;
            Ok(Some(format!(
                "{WG_IFNAME} was deleted: created again with its key, {}, port {} and {} peer(s) ({initiated} handshake(s) started){replaced}",
                st.overlay,
                st.listen_port,
                st.peers.len()
            )))
        }
        Err(e) => {
            std::thread::sleep(Duration::from_secs(1));
            let _ = rt.delete_link(link.index);
            Err(e)
        }
    }
}

/// Replace wg0's peers with a new set from the peer source (checked like the first set). The
/// peers in both sets keep their sessions.
pub fn update_peers(
    me: &LocalNode,
    cfg: &WireguardConfig,
    source_name: &'static str,
    peers: &[peers::Peer],
) -> Result<(), NetError> {
    peers::validate(peers, me, &cfg.cluster_ranges)
        .map_err(|err| NetError::Peers { source_name, err })?;
    let mut state = wg0_state();
    // Recorded first: if wg0 is gone now, the restore makes it with this set (never with
    // peers the source no longer vouches for).
    if let Some(st) = state.as_mut() {
        st.peers = peers.to_vec();
    }
    let (link, mut wgnl) = open_wg0()?;
    apply_peers(
        &mut wgnl,
        link.index,
        &me.public_key,
        peers,
        cfg.persistent_keepalive_s,
        false,
    )?;
    drop(state);
    // The routes that went with wg0 (and cni0) may have gone with a link change since.
    let mut rt = Rtnl::open().ctx(|| "opening rtnetlink".into())?;
    reconcile_routes(&mut rt, &cfg.cluster_ranges, me.pod_range.as_ref())?;
    Ok(())
}

/// Put back the cluster routing the kernel removes with a link: when wg0 (or cni0) goes down,
/// or is deleted and created again, its routes in [`WG_TABLE`] are gone for good. Installs
/// (replacing, so it can run any time) the `unreachable` fallbacks, the rules per cluster
/// range (the underlay's, if [`install_cluster_routing`] ran in this process, and the two to
/// [`WG_TABLE`]; an existing rule is kept) and `lookup local` at [`LOCAL_RULE_PRIORITY`]
/// ([`move_local_rule`]), then `<range> dev wg0` if wg0 exists and is up,
/// and `<pod range> dev cni0` if cni0 exists and is up. Until then the fallbacks answer: no
/// moment sends cluster traffic elsewhere. Returns the link routes it installed.
pub fn reconcile_routes(
    rt: &mut Rtnl,
    ranges: &[Cidr],
    pod_range: Option<&Cidr>,
) -> Result<Vec<String>, NetError> {
    let exists_ok = |r: Result<(), NlError>| ignore_errno(r, libc::EEXIST);
    let underlay = INSTALLED_UNDERLAY.lock().ok().and_then(|u| u.clone());
    for r in ranges {
        if let Some(u) = &underlay {
            exists_ok(rt.add_rule(rtnl::iif_unreachable_rule_message(
                r,
                u,
                UNDERLAY_RULE_PRIORITY,
            )))
            .ctx(|| format!("rule: iif {u} to {r} unreachable"))?;
        }
        rt.replace_route(rtnl::unreachable_route_message(r, WG_TABLE, u32::MAX))
            .ctx(|| format!("unreachable route for {r} in table {WG_TABLE}"))?;
        exists_ok(rt.add_rule(rtnl::rule_message(r, Some(WG_TABLE), RULE_PRIORITY)))
            .ctx(|| format!("rule: to {r} lookup {WG_TABLE}"))?;
        exists_ok(rt.add_rule(rtnl::rule_message(r, None, RULE_PRIORITY + 1)))
            .ctx(|| format!("rule: to {r} unreachable"))?;
    }
    move_local_rule(rt, ranges)?;
    if let Some(p) = pod_range {
        rt.replace_route(rtnl::unreachable_route_message(p, WG_TABLE, u32::MAX))
            .ctx(|| format!("unreachable route for {p} in table {WG_TABLE}"))?;
    }
    let mut done = Vec::new();
    let links = rt.links().ctx(|| "listing interfaces".into())?;
    let up = |name: &str| links.iter().find(|l| l.name == name && l.up);
    if let Some(wg0) = up(WG_IFNAME) {
        for r in ranges {
            rt.replace_route(rtnl::device_route_message(r, wg0.index, WG_TABLE, 0))
                .ctx(|| format!("route {r} dev {WG_IFNAME} table {WG_TABLE}"))?;
            done.push(format!("{r} dev {WG_IFNAME}"));
        }
    }
    if let (Some(p), Some(br)) = (pod_range, up(POD_BRIDGE)) {
        rt.replace_route(rtnl::device_route_message(p, br.index, WG_TABLE, 0))
            .ctx(|| format!("route {p} dev {POD_BRIDGE} table {WG_TABLE}"))?;
        done.push(format!("{p} dev {POD_BRIDGE}"));
    }
    Ok(done)
}

/// wg0's link and a WireGuard netlink socket (wg0 must exist).
fn open_wg0() -> Result<(rtnl::Link, wg::Wg), NetError> {
    let mut rt = Rtnl::open().ctx(|| "opening rtnetlink".into())?;
    let link = rt
        .find(&Selector::Name(WG_IFNAME.into()))
        .ctx(|| "listing interfaces".into())?
        .ok_or_else(|| NetError::NoInterface(WG_IFNAME.into(), 0))?;
    let wgnl = wg::Wg::open().ctx(|| "opening the wireguard generic netlink family".into())?;
    Ok((link, wgnl))
}

/// `wg show`-like lines for wg0 (for operators and tests).
pub fn status() -> Result<Vec<String>, NetError> {
    let (link, mut wgnl) = open_wg0()?;
    let d = wgnl
        .device(link.index)
        .ctx(|| format!("reading {WG_IFNAME}"))?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut out = vec![format!(
        "interface {WG_IFNAME} {} public-key {} listen-port {} peers {}",
        if link.up { "up" } else { "down" },
        d.public_key.as_ref().map(key_b64).unwrap_or_default(),
        d.listen_port,
        d.peers.len()
    )];
    for p in &d.peers {
        out.push(format!(
            "peer {} endpoint {} allowed-ips {} latest-handshake {} rx-bytes {} tx-bytes {}",
            key_b64(&p.public_key),
            p.endpoint.map(|e| e.to_string()).unwrap_or("(none)".into()),
            p.allowed_ips
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(","),
            match p.last_handshake {
                Some(t) => format!("{}s-ago", now.saturating_sub(t).as_secs()),
                None => "never".into(),
            },
            p.rx_bytes,
            p.tx_bytes
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn pod_gateway_is_the_first_host() {
        assert_eq!(pod_gateway(&c("10.32.1.0/24")), c("10.32.1.1/24"));
        assert_eq!(pod_gateway(&c("10.32.0.0/16")), c("10.32.0.1/16"));
        assert_eq!(pod_gateway(&c("10.32.255.252/30")), c("10.32.255.253/30"));
    }

    #[test]
    fn pod_range_checks() {
        let cluster = [c("10.244.0.0/16"), c("10.32.0.0/16")];
        let overlay: IpAddr = "10.244.0.3".parse().unwrap();
        check_pod_range(&c("10.32.1.0/24"), &cluster, overlay).unwrap();
        check_pod_range(&c("10.32.0.0/16"), &cluster, overlay).unwrap();
        let cases = [
            (
                "10.33.1.0/24",
                "is not inside a cluster range (10.244.0.0/16, 10.32.0.0/16)",
            ),
            // Straddles the cluster range's edge: not covered.
            ("10.32.0.0/15", "is not inside a cluster range"),
            (
                "10.32.1.1/24",
                "has host bits set (the network is 10.32.1.0/24)",
            ),
            ("10.32.1.4/31", "narrower than /30"),
            (
                "10.244.0.0/24",
                "holds this node's overlay address 10.244.0.3",
            ),
            ("fd00:10::/64", "only IPv4"),
        ];
        for (range, why) in cases {
            let e = check_pod_range(&c(range), &cluster, overlay)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("pod range {range}: ")), "{e}");
            assert!(e.contains(why), "{range}: {e}");
        }
    }
}
