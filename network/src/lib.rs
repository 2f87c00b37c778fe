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
//!
//! Cluster traffic never leaves unencrypted: for every cluster range, a policy rule (priority
//! [`RULE_PRIORITY`], before the main table) sends it to table [`WG_TABLE`], which routes it
//! into wg0 (metric 0) and otherwise answers `unreachable` (metric `u32::MAX`); a second rule
//! right after drops it too, should that table ever be emptied. These are installed before
//! wg0 exists, so there is no moment when cluster traffic could take the underlay. When wg0
//! goes down, the kernel removes its route and the `unreachable` route takes over.

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
/// How long to wait for the underlay interface to appear.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The fail-closed routing for the cluster ranges, installed before wg0 exists.
fn install_drop_rules(rt: &mut Rtnl, ranges: &[Cidr]) -> Result<(), NetError> {
    for r in ranges {
        rt.add_route(rtnl::unreachable_route_message(r, WG_TABLE, u32::MAX))
            .ctx(|| format!("unreachable route for {r} in table {WG_TABLE}"))?;
        rt.add_rule(rtnl::rule_message(r, Some(WG_TABLE), RULE_PRIORITY))
            .ctx(|| format!("rule: to {r} lookup {WG_TABLE}"))?;
        rt.add_rule(rtnl::rule_message(r, None, RULE_PRIORITY + 1))
            .ctx(|| format!("rule: to {r} unreachable"))?;
    }
    Ok(())
}

fn setup_wireguard(
    rt: &mut Rtnl,
    cfg: &WireguardConfig,
    underlay: IpAddr,
    source: &mut dyn PeerSource,
    log: &dyn Fn(&str),
) -> Result<WgSummary, NetError> {
    install_drop_rules(rt, &cfg.cluster_ranges)?;
    rt.create_wireguard(WG_IFNAME)
        .ctx(|| format!("creating {WG_IFNAME} (is the wireguard module loaded?)"))?;
    let link = wait_for_link(rt, &Selector::Name(WG_IFNAME.into()))?;
    let mut wgnl = wg::Wg::open().ctx(|| "opening the wireguard generic netlink family".into())?;
    let key = wg::PrivateKey::generate().map_err(NetError::Key)?;
    wgnl.configure(link.index, &key, cfg.listen_port)
        .ctx(|| format!("setting {WG_IFNAME}'s key and port {}", cfg.listen_port))?;
    drop(key);
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
    };
    let peers = source
        .peers(&me, log)
        .map_err(|err| NetError::Peers { source_name, err })?;
    peers::validate(&peers, &me, &cfg.cluster_ranges)
        .map_err(|err| NetError::Peers { source_name, err })?;
    wgnl.set_peers(link.index, &peers, cfg.persistent_keepalive_s)
        .ctx(|| format!("setting {}'s peers", WG_IFNAME))?;
    for r in &cfg.cluster_ranges {
        rt.add_route(rtnl::device_route_message(r, link.index, WG_TABLE, 0))
            .ctx(|| format!("route {r} dev {WG_IFNAME} table {WG_TABLE}"))?;
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
    Ok(WgSummary {
        me,
        public_key: key_b64(&public_key),
        address: host,
        listen_port: cfg.listen_port,
        peers: names,
        cluster_ranges: cfg.cluster_ranges.clone(),
    })
}

/// Replace wg0's peers with a new set from the peer source (checked like the first set).
pub fn update_peers(
    me: &LocalNode,
    cfg: &WireguardConfig,
    source_name: &'static str,
    peers: &[peers::Peer],
) -> Result<(), NetError> {
    peers::validate(peers, me, &cfg.cluster_ranges)
        .map_err(|err| NetError::Peers { source_name, err })?;
    let (link, mut wgnl) = open_wg0()?;
    wgnl.set_peers(link.index, peers, cfg.persistent_keepalive_s)
        .ctx(|| format!("setting {}'s peers", WG_IFNAME))
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
