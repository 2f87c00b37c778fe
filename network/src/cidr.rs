//! IP prefixes (`192.0.2.1/24`): parsing, the network part, containment and overlap. Pure.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address with a prefix length. The address may have host bits set (an interface address
/// such as `192.0.2.1/24`); [`Cidr::network`] clears them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?}: expected ADDRESS/PREFIX (e.g. 192.0.2.1/24)")]
    Syntax(String),
    #[error("{0:?}: prefix length {1} is longer than the address")]
    Prefix(String, u8),
}

fn max_prefix(a: &IpAddr) -> u8 {
    match a {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        if prefix > max_prefix(&addr) {
            return Err(CidrError::Prefix(addr.to_string(), prefix));
        }
        Ok(Cidr { addr, prefix })
    }

    /// The single address `addr` (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Self {
        Cidr {
            prefix: max_prefix(&addr),
            addr,
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The same prefix with the host bits cleared.
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }

    /// No host bits set (`10.244.0.0/16`, not `10.244.0.1/16`).
    pub fn is_network(&self) -> bool {
        self.network().addr == self.addr
    }

    /// `ip` is inside this prefix (same family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && Cidr {
                addr: ip,
                prefix: self.prefix,
            }
            .network()
                == self.network()
    }

    /// Every address of `other` is inside this prefix.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    /// The two prefixes share at least one address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.covers(other) || other.covers(self)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || CidrError::Syntax(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(syntax)?;
        let addr: IpAddr = a.parse().map_err(|_| syntax())?;
        // Decimal digits only: no sign, no leading "+", at most three digits.
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let prefix: u8 = p.parse().map_err(|_| syntax())?;
        Cidr::new(addr, prefix).map_err(|_| CidrError::Prefix(s.to_string(), prefix))
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(c("192.0.2.1/24").to_string(), "192.0.2.1/24");
        assert_eq!(c("fd00::1/64").to_string(), "fd00::1/64");
        assert_eq!(c("0.0.0.0/0").prefix(), 0);
        for bad in [
            "192.0.2.1",
            "192.0.2.1/",
            "192.0.2.1/33",
            "192.0.2.1/-1",
            "192.0.2.1/+8",
            "192.0.2/24",
            "fd00::/129",
            "x/8",
            "192.0.2.1/24/1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn network_contains_covers_overlaps() {
        assert_eq!(c("10.244.3.7/16").network(), c("10.244.0.0/16"));
        assert_eq!(c("10.244.3.7/0").network(), c("0.0.0.0/0"));
        assert_eq!(c("10.244.3.7/32").network(), c("10.244.3.7/32"));
        assert_eq!(c("fd00:1:2:3::9/48").network(), c("fd00:1:2::/48"));
        assert!(c("10.244.0.0/16").is_network());
        assert!(!c("10.244.0.1/16").is_network());
        let cluster = c("10.244.0.0/16");
        assert!(cluster.contains("10.244.255.255".parse().unwrap()));
        assert!(!cluster.contains("10.245.0.0".parse().unwrap()));
        assert!(!cluster.contains("::".parse().unwrap()));
        assert!(c("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert!(cluster.covers(&c("10.244.1.0/24")));
        assert!(cluster.covers(&c("10.244.0.2/32")));
        assert!(!cluster.covers(&c("10.0.0.0/8")));
        assert!(cluster.overlaps(&c("10.0.0.0/8")));
        assert!(c("10.0.0.0/8").overlaps(&cluster));
        assert!(!cluster.overlaps(&c("10.245.0.0/16")));
        assert!(!cluster.overlaps(&c("fd00::/8")));
    }
}
