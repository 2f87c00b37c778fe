//! The cluster's overlay range (IPv4), from which the service hands each node a host address.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayRange {
    network: Ipv4Addr,
    prefix: u8,
}

impl OverlayRange {
    /// Host `n` of the range (1 = the first host); `None` past the last host (the broadcast
    /// address is never handed out).
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        if n == 0 || u64::from(n) >= size.saturating_sub(1) {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.network) + n))
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(a) & mask == u32::from(self.network)
    }
}

impl FromStr for OverlayRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected an IPv4 CIDR like 10.244.0.0/16"))?;
        let network: Ipv4Addr = a.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = p.parse().map_err(|e| format!("{s:?}: prefix: {e}"))?;
        if !(8..=30).contains(&prefix) {
            return Err(format!("{s:?}: prefix must be between 8 and 30"));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        if u32::from(network) & !mask != 0 {
            return Err(format!("{s:?}: host bits are set"));
        }
        Ok(OverlayRange { network, prefix })
    }
}

impl fmt::Display for OverlayRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_stay_inside_the_range() {
        let r: OverlayRange = "10.244.0.0/30".parse().unwrap();
        assert_eq!(r.host(0), None);
        assert_eq!(r.host(1), Some(Ipv4Addr::new(10, 244, 0, 1)));
        assert_eq!(r.host(2), Some(Ipv4Addr::new(10, 244, 0, 2)));
        assert_eq!(r.host(3), None, "broadcast");
        let big: OverlayRange = "10.244.0.0/16".parse().unwrap();
        assert_eq!(big.host(256), Some(Ipv4Addr::new(10, 244, 1, 0)));
        assert!(big.contains(Ipv4Addr::new(10, 244, 9, 9)));
        assert!(!big.contains(Ipv4Addr::new(10, 245, 0, 1)));
        for bad in ["10.244.0.1/16", "10.244.0.0", "10.244.0.0/31", "x/16"] {
            assert!(bad.parse::<OverlayRange>().is_err(), "{bad}");
        }
    }
}
