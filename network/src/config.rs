//! `[network]` in `/etc/nacre/init.toml` (measured with the root): typed, strict (unknown keys
//! are errors) and validated before anything is configured. Pure.
//!
//! ```toml
//! [network]
//! interface = "eth0"            # or: mac = "52:54:00:00:00:01" (exactly one of the two)
//! address = "192.0.2.1/24"      # static; or: dhcp = true (exactly one of the two)
//! gateway = "192.0.2.254"       # optional, static only: the default route
//!
//! [network.wireguard]           # optional: wg0
//! listen_port = 51820
//! address = "10.244.0.1/32"     # this node's overlay address on wg0 (not with peers = "key-service":
//!                               # the key service assigns it)
//! cluster_ranges = ["10.244.0.0/16"]
//! peers = "insecure-test-exchange"   # or "key-service" (the attested key service, [key_service])
//!
//! [network.wireguard.insecure_test_exchange]   # only with peers = "insecure-test-exchange"
//! nodes = ["192.0.2.2"]         # the other nodes' underlay addresses
//! port = 51819                  # UDP, on the underlay (default 51819)
//! timeout_s = 60                # default 60
//! ```

use crate::cidr::Cidr;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The WireGuard interface nacre creates.
pub const WG_IFNAME: &str = "wg0";

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The underlay interface by kernel name (no udev: `eth0`, `eth1`, … in probe order).
    pub interface: Option<String>,
    /// The underlay interface by MAC address (stable whatever the probe order).
    pub mac: Option<Mac>,
    /// Static address and prefix on the underlay interface.
    pub address: Option<Cidr>,
    /// Static default gateway (on-link: inside `address`'s prefix).
    pub gateway: Option<IpAddr>,
    /// DHCPv4 on the underlay interface instead of a static address.
    #[serde(default)]
    pub dhcp: bool,
    /// How long DHCP may take before the node stops (default 30 s).
    pub dhcp_timeout_s: Option<u64>,
    pub wireguard: Option<WireguardConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireguardConfig {
    pub listen_port: u16,
    /// This node's overlay address on wg0 (`10.244.0.1/32`; added without a prefix route: the
    /// cluster ranges are routed explicitly). Absent with `peers = "key-service"`, which
    /// assigns it.
    pub address: Option<Cidr>,
    /// The ranges that must only ever travel through wg0.
    pub cluster_ranges: Vec<Cidr>,
    /// Where the peers (public keys, endpoints, allowed IPs) come from.
    pub peers: PeersKind,
    /// Seconds between keepalives to each peer (absent: none).
    pub persistent_keepalive_s: Option<u16>,
    pub insecure_test_exchange: Option<TestExchangeConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeersKind {
    /// Test only, not secure: nodes tell each other their keys over plain UDP on the underlay
    /// (stands in for the attested key service).
    InsecureTestExchange,
    /// The attested key service (nacre-init's `[key_service]`): it assigns the overlay address
    /// and hands out the peers of the cluster.
    KeyService,
}

impl PeersKind {
    pub fn name(&self) -> &'static str {
        match self {
            PeersKind::InsecureTestExchange => "insecure-test-exchange",
            PeersKind::KeyService => "key-service",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestExchangeConfig {
    /// The other nodes' underlay addresses.
    pub nodes: Vec<IpAddr>,
    #[serde(default = "default_exchange_port")]
    pub port: u16,
    #[serde(default = "default_exchange_timeout")]
    pub timeout_s: u64,
}

fn default_exchange_port() -> u16 {
    51819
}
fn default_exchange_timeout() -> u64 {
    60
}

/// A MAC address, `52:54:00:12:34:56` (case-insensitive).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected a MAC address like 52:54:00:12:34:56");
        let mut m = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        for (b, p) in m.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(Mac(m))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How the underlay interface is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Name(String),
    Mac(Mac),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Name(n) => write!(f, "{n}"),
            Selector::Mac(m) => write!(f, "the interface with MAC {m}"),
        }
    }
}

/// How the underlay interface gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    Static {
        address: Cidr,
        gateway: Option<IpAddr>,
    },
    Dhcp {
        timeout_s: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[network]: {0}")]
pub struct ConfigError(pub String);

fn err<T>(s: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(s.into()))
}

impl Config {
    pub fn selector(&self) -> Result<Selector, ConfigError> {
        match (&self.interface, &self.mac) {
            (Some(n), None) => {
                // An interface name: at most IFNAMSIZ-1 bytes, no '/', no whitespace.
                if n.is_empty()
                    || n.len() > 15
                    || n.contains('/')
                    || n.chars().any(char::is_whitespace)
                {
                    return err(format!("interface {n:?} is not an interface name"));
                }
                if n == WG_IFNAME || n == "lo" {
                    return err(format!("interface {n:?} cannot be the underlay"));
                }
                Ok(Selector::Name(n.clone()))
            }
            (None, Some(m)) => Ok(Selector::Mac(*m)),
            _ => err("set exactly one of `interface` and `mac`"),
        }
    }

    pub fn addressing(&self) -> Result<Addressing, ConfigError> {
        match (self.address, self.dhcp) {
            (Some(address), false) => {
                if !address.is_ipv4() {
                    return err("address: only IPv4 underlays are supported");
                }
                if address.prefix() < 31 && (address.is_network() || address.prefix() == 0) {
                    return err(format!(
                        "address {address} is a network, not a host address"
                    ));
                }
                if let Some(g) = self.gateway {
                    if !address.contains(g) || g == address.addr() {
                        return err(format!(
                            "gateway {g} is not another address on {}",
                            address.network()
                        ));
                    }
                }
                if self.dhcp_timeout_s.is_some() {
                    return err("dhcp_timeout_s is only for dhcp = true");
                }
                Ok(Addressing::Static {
                    address,
                    gateway: self.gateway,
                })
            }
            (None, true) => {
                if self.gateway.is_some() {
                    return err("gateway is only for a static address (DHCP gives its own)");
                }
                let timeout_s = self.dhcp_timeout_s.unwrap_or(30);
                if timeout_s == 0 {
                    return err("dhcp_timeout_s must be at least 1");
                }
                Ok(Addressing::Dhcp { timeout_s })
            }
            _ => err("set exactly one of `address` (static) and `dhcp = true`"),
        }
    }

    /// Every rule below, checked before the node is touched.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.selector()?;
        let addressing = self.addressing()?;
        if let Some(wg) = &self.wireguard {
            wg.validate()?;
            if let Addressing::Static { address, gateway } = addressing {
                for r in &wg.cluster_ranges {
                    if r.contains(address.addr()) || r.overlaps(&address.network()) {
                        return err(format!(
                            "the underlay {address} overlaps the cluster range {r}: WireGuard's own packets would be routed into wg0"
                        ));
                    }
                    if let Some(g) = gateway.filter(|g| r.contains(*g)) {
                        return err(format!("gateway {g} is inside the cluster range {r}"));
                    }
                }
            }
        }
        Ok(())
    }
}

impl WireguardConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen_port == 0 {
            return err("wireguard.listen_port must not be 0");
        }
        if self.cluster_ranges.is_empty() {
            return err("wireguard.cluster_ranges is empty: nothing would be routed through wg0");
        }
        for (i, r) in self.cluster_ranges.iter().enumerate() {
            if !r.is_network() {
                return err(format!(
                    "wireguard.cluster_ranges: {r} has host bits set (did you mean {}?)",
                    r.network()
                ));
            }
            if r.prefix() == 0 {
                return err(format!(
                    "wireguard.cluster_ranges: {r} would route everything, the underlay too, into wg0"
                ));
            }
            // Ingress filtering (strict rp_filter, see `sysctl`) exists for IPv4 only: an IPv6
            // range could be injected from the underlay.
            if !r.is_ipv4() {
                return err(format!(
                    "wireguard.cluster_ranges: {r} is IPv6; the node filters cluster sources arriving outside wg0 for IPv4 only"
                ));
            }
            if let Some(o) = self.cluster_ranges[..i].iter().find(|o| o.overlaps(r)) {
                return err(format!("wireguard.cluster_ranges: {r} overlaps {o}"));
            }
        }
        match (self.peers, self.address) {
            (PeersKind::KeyService, Some(a)) => {
                return err(format!(
                    "wireguard.address {a} is set, but peers = \"key-service\" assigns the overlay address"
                ))
            }
            (PeersKind::KeyService, None) => {}
            (_, None) => return err("wireguard.address is missing"),
            (_, Some(a)) => self.check_overlay(&a)?,
        }
        match (self.peers, &self.insecure_test_exchange) {
            (PeersKind::InsecureTestExchange, Some(x)) => {
                if x.nodes.is_empty() {
                    return err("wireguard.insecure_test_exchange.nodes is empty");
                }
                if x.port == 0 || x.port == self.listen_port {
                    return err(
                        "wireguard.insecure_test_exchange.port must be set and differ from listen_port",
                    );
                }
                if x.timeout_s == 0 {
                    return err("wireguard.insecure_test_exchange.timeout_s must be at least 1");
                }
                for n in &x.nodes {
                    if let Some(r) = self.cluster_ranges.iter().find(|r| r.contains(*n)) {
                        return err(format!(
                            "wireguard.insecure_test_exchange.nodes: {n} is inside the cluster range {r} (use underlay addresses)"
                        ));
                    }
                }
            }
            (PeersKind::InsecureTestExchange, None) => {
                return err("peers = \"insecure-test-exchange\" needs [network.wireguard.insecure_test_exchange]")
            }
            (PeersKind::KeyService, Some(_)) => {
                return err("[network.wireguard.insecure_test_exchange] is set, but peers = \"key-service\"")
            }
            (PeersKind::KeyService, None) => {}
        }
        Ok(())
    }

    /// An overlay address (configured, or assigned by the key service): a host address inside
    /// a cluster range.
    pub fn check_overlay(&self, address: &Cidr) -> Result<(), ConfigError> {
        if !self
            .cluster_ranges
            .iter()
            .any(|r| r.contains(address.addr()))
        {
            return err(format!(
                "wireguard.address {address} is not inside a cluster range"
            ));
        }
        if address.prefix() < 31 && address.is_network() {
            return err(format!(
                "wireguard.address {address} is a network, not a host address"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
interface = "eth0"
address = "192.0.2.1/24"
gateway = "192.0.2.254"

[wireguard]
listen_port = 51820
address = "10.244.0.1/32"
cluster_ranges = ["10.244.0.0/16", "10.96.0.0/12"]
peers = "insecure-test-exchange"

[wireguard.insecure_test_exchange]
nodes = ["192.0.2.2"]
"#;

    fn parse(s: &str) -> Result<Config, String> {
        toml::from_str::<Config>(s).map_err(|e| e.to_string())
    }

    fn invalid(s: &str) -> String {
        let c = parse(s).unwrap();
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn good_config() {
        let c = parse(GOOD).unwrap();
        c.validate().unwrap();
        assert_eq!(c.selector().unwrap(), Selector::Name("eth0".into()));
        assert_eq!(
            c.addressing().unwrap(),
            Addressing::Static {
                address: "192.0.2.1/24".parse().unwrap(),
                gateway: Some("192.0.2.254".parse().unwrap())
            }
        );
        let wg = c.wireguard.unwrap();
        let x = wg.insecure_test_exchange.unwrap();
        assert_eq!((x.port, x.timeout_s), (51819, 60));
        assert_eq!(wg.peers.name(), "insecure-test-exchange");

        let by_mac = parse("mac = \"52:54:00:AB:cd:01\"\ndhcp = true\n").unwrap();
        by_mac.validate().unwrap();
        assert_eq!(
            by_mac.selector().unwrap(),
            Selector::Mac(Mac([0x52, 0x54, 0, 0xab, 0xcd, 1]))
        );
        assert_eq!(
            by_mac.addressing().unwrap(),
            Addressing::Dhcp { timeout_s: 30 }
        );
    }

    #[test]
    fn strict_keys_and_values() {
        assert!(parse("interface = \"eth0\"\nadress = \"192.0.2.1/24\"\n")
            .unwrap_err()
            .contains("adress"));
        assert!(parse(&GOOD.replace("listen_port", "listenport")).is_err());
        assert!(parse(&GOOD.replace("insecure-test-exchange", "key-service-x")).is_err());
        // The key service assigns the overlay address and needs no exchange table.
        let ks = GOOD.replace("insecure-test-exchange", "key-service");
        assert!(invalid(&ks).contains("assigns the overlay address"));
        let no_addr: String = ks
            .lines()
            .filter(|l| !l.starts_with("address = \"10.244"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(invalid(&no_addr).contains("insecure_test_exchange] is set"));
        let clean = no_addr
            .split("[wireguard.insecure_test_exchange]")
            .next()
            .unwrap()
            .to_string();
        parse(&clean).unwrap().validate().unwrap();
        let exchange_without_address: String = GOOD
            .lines()
            .filter(|l| !l.starts_with("address = \"10.244"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(invalid(&exchange_without_address).contains("wireguard.address is missing"));
        assert!(parse(&GOOD.replace("192.0.2.1/24", "192.0.2.1")).is_err());
        assert!(parse("mac = \"52:54:00:ab:cd\"\ndhcp = true\n").is_err());
        assert!(parse("mac = \"52:54:00:ab:cd:0g\"\ndhcp = true\n").is_err());
    }

    #[test]
    fn validation_rules() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "interface = \"eth0\"\n",
                "interface = \"eth0\"\nmac = \"52:54:00:00:00:01\"\n",
                "exactly one of `interface`",
            ),
            ("interface = \"eth0\"\n", "", "exactly one of `interface`"),
            (
                "interface = \"eth0\"\n",
                "interface = \"wg0\"\n",
                "cannot be the underlay",
            ),
            (
                "interface = \"eth0\"\n",
                "interface = \"a/b\"\n",
                "not an interface name",
            ),
            (
                "address = \"192.0.2.1/24\"\n",
                "",
                "exactly one of `address`",
            ),
            (
                "address = \"192.0.2.1/24\"\n",
                "address = \"192.0.2.1/24\"\ndhcp = true\n",
                "exactly one of `address`",
            ),
            (
                "address = \"192.0.2.1/24\"\n",
                "address = \"192.0.2.0/24\"\n",
                "is a network",
            ),
            (
                "address = \"192.0.2.1/24\"\n",
                "address = \"fd00::1/64\"\n",
                "only IPv4",
            ),
            (
                "gateway = \"192.0.2.254\"\n",
                "gateway = \"198.51.100.1\"\n",
                "not another address",
            ),
            (
                "gateway = \"192.0.2.254\"\n",
                "gateway = \"192.0.2.1\"\n",
                "not another address",
            ),
            (
                "address = \"192.0.2.1/24\"\ngateway = \"192.0.2.254\"\n",
                "address = \"10.96.0.5/24\"\n",
                "overlaps the cluster range",
            ),
            (
                "listen_port = 51820",
                "listen_port = 0",
                "listen_port must not be 0",
            ),
            (
                "\"10.244.0.0/16\", \"10.96.0.0/12\"",
                "",
                "cluster_ranges is empty",
            ),
            (
                "\"10.244.0.0/16\", \"10.96.0.0/12\"",
                "\"10.244.0.1/16\"",
                "host bits",
            ),
            (
                "\"10.244.0.0/16\", \"10.96.0.0/12\"",
                "\"10.244.0.0/16\", \"0.0.0.0/0\"",
                "route everything",
            ),
            (
                "\"10.244.0.0/16\", \"10.96.0.0/12\"",
                "\"10.244.0.0/16\", \"10.244.3.0/24\"",
                "overlaps 10.244.0.0/16",
            ),
            (
                "\"10.244.0.0/16\", \"10.96.0.0/12\"",
                "\"10.244.0.0/16\", \"fd00:10::/64\"",
                "fd00:10::/64 is IPv6; the node filters cluster sources arriving outside wg0 for IPv4 only",
            ),
            (
                "address = \"10.244.0.1/32\"",
                "address = \"10.245.0.1/32\"",
                "not inside a cluster range",
            ),
            ("nodes = [\"192.0.2.2\"]", "nodes = []", "nodes is empty"),
            (
                "nodes = [\"192.0.2.2\"]",
                "nodes = [\"10.244.0.2\"]",
                "use underlay addresses",
            ),
            (
                "nodes = [\"192.0.2.2\"]",
                "nodes = [\"192.0.2.2\"]\nport = 51820",
                "differ from listen_port",
            ),
            (
                "nodes = [\"192.0.2.2\"]",
                "nodes = [\"192.0.2.2\"]\ntimeout_s = 0",
                "at least 1",
            ),
            (
                "[wireguard.insecure_test_exchange]\nnodes = [\"192.0.2.2\"]\n",
                "",
                "needs [network.wireguard.insecure_test_exchange]",
            ),
        ];
        for (from, to, why) in cases {
            assert!(GOOD.contains(from), "{from}");
            let e = invalid(&GOOD.replacen(from, to, 1));
            assert!(e.contains(why), "{from:?} -> {to:?}: {e}");
        }
        let e = invalid("interface = \"eth0\"\ndhcp = true\ngateway = \"192.0.2.1\"\n");
        assert!(e.contains("only for a static address"), "{e}");
        let e = invalid("interface = \"eth0\"\ndhcp = true\ndhcp_timeout_s = 0\n");
        assert!(e.contains("at least 1"), "{e}");
    }
}
