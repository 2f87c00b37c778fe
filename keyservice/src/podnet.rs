//! The cluster's pod network: each node's pod range is one slice of the cluster's pod CIDR,
//! picked by the node's overlay host index (host `n` of the overlay gets slice `n` of the pod
//! CIDR split into `/pod_prefix` ranges). Host indices are handed out once and never reused
//! while the node's record exists, so neither are pod ranges. Slice 0 (the pod CIDR's first
//! range) is never handed out, as overlay host 0 is not.
//!
//! IPv4 only (as the overlay): the pod and service CIDRs, the cluster DNS address.
//!
//! Also: the checks `nacre-keyservice init` applies to the pod and service ranges, the cluster
//! DNS address and the API server's CA ([`PodSettings::new`], [`check_api_server_ca`]).

use crate::overlay::OverlayRange;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The longest per-node range: a /28 leaves the bridge's gateway and 13 pods.
pub const MAX_POD_PREFIX: u8 = 28;
/// The default per-node range (254 addresses: the gateway and 253 pods).
pub const DEFAULT_POD_PREFIX: u8 = 24;
/// At most this many certificates in the API server's CA bundle.
pub const MAX_CA_CERTIFICATES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodNetError {
    #[error("{what} {value:?}: {reason}")]
    Malformed {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("{a_what} {a} and {b_what} {b} overlap")]
    Overlap {
        a_what: &'static str,
        a: Cidr4,
        b_what: &'static str,
        b: Cidr4,
    },
    #[error("--pod-prefix {prefix}: must be longer than the pod CIDR's /{cidr_prefix} and at most /{MAX_POD_PREFIX}")]
    PodPrefix { prefix: u8, cidr_prefix: u8 },
    #[error("--cluster-dns {dns} is not inside the service CIDR {service}")]
    DnsOutside { dns: Ipv4Addr, service: Cidr4 },
    #[error("--cluster-dns {dns} is the service CIDR's network or broadcast address")]
    DnsEdge { dns: Ipv4Addr },
    #[error("{0} needs {1}")]
    Needs(&'static str, &'static str),
    #[error("API server CA: {0}")]
    Ca(String),
}

/// An IPv4 network `ADDRESS/PREFIX` with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr4 {
    network: Ipv4Addr,
    prefix: u8,
}

impl Cidr4 {
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Number of addresses.
    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    fn first(&self) -> u64 {
        u64::from(u32::from(self.network))
    }

    fn last(&self) -> u64 {
        self.first() + self.size() - 1
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        (self.first()..=self.last()).contains(&u64::from(u32::from(a)))
    }

    pub fn overlaps(&self, other: &Cidr4) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }

    /// The `index`th range of `self` split into `/prefix` ranges; `None` past the last one or
    /// when `prefix` is not longer than `self`'s.
    pub fn subnet(&self, prefix: u8, index: u32) -> Option<Cidr4> {
        if prefix <= self.prefix || prefix > 32 {
            return None;
        }
        if u64::from(index) >= self.subnets(prefix) {
            return None;
        }
        let size = 1u64 << (32 - u32::from(prefix));
        let start = self.first() + u64::from(index) * size;
        Some(Cidr4 {
            network: Ipv4Addr::from(u32::try_from(start).ok()?),
            prefix,
        })
    }

    /// How many `/prefix` ranges `self` holds (0 if `prefix` is not longer).
    pub fn subnets(&self, prefix: u8) -> u64 {
        if prefix <= self.prefix || prefix > 32 {
            return 0;
        }
        1u64 << (prefix - self.prefix)
    }
}

impl FromStr for Cidr4 {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| "expected an IPv4 CIDR like 10.32.0.0/16".to_string())?;
        let network: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address (IPv4 only)"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("prefix {p:?} is not a number"))?;
        if !(8..=30).contains(&prefix) {
            return Err(format!("prefix /{prefix}: must be between /8 and /30"));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        if u32::from(network) & !mask != 0 {
            return Err(format!(
                "host bits are set (the network is {}/{prefix})",
                Ipv4Addr::from(u32::from(network) & mask)
            ));
        }
        Ok(Cidr4 { network, prefix })
    }
}

impl fmt::Display for Cidr4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl From<OverlayRange> for Cidr4 {
    fn from(o: OverlayRange) -> Self {
        // OverlayRange's Display is ADDRESS/PREFIX with the same checks (prefix 8..=30, no
        // host bits); it always parses.
        o.to_string().parse().unwrap_or(Cidr4 {
            network: Ipv4Addr::UNSPECIFIED,
            prefix: 32,
        })
    }
}

/// The cluster's pod network settings (`nacre-keyservice init --pod-cidr ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSettings {
    pub pod_cidr: Cidr4,
    /// Each node's range is a `/pod_prefix`.
    pub pod_prefix: u8,
    pub service_cidr: Option<Cidr4>,
    /// kubelet's `clusterDNS` (inside the service CIDR).
    pub cluster_dns: Option<Ipv4Addr>,
}

fn parse_cidr(what: &'static str, s: &str) -> Result<Cidr4, PodNetError> {
    s.parse().map_err(|reason| PodNetError::Malformed {
        what,
        value: s.to_string(),
        reason,
    })
}

impl PodSettings {
    /// Parse and check the settings against each other and the overlay range: the pod CIDR,
    /// the service CIDR and the overlay must not overlap; the per-node prefix must be longer
    /// than the pod CIDR's; the cluster DNS address must be a host of the service CIDR.
    pub fn new(
        overlay: OverlayRange,
        pod_cidr: &str,
        pod_prefix: u8,
        service_cidr: Option<&str>,
        cluster_dns: Option<&str>,
    ) -> Result<Self, PodNetError> {
        let pod = parse_cidr("--pod-cidr", pod_cidr)?;
        if pod_prefix <= pod.prefix || pod_prefix > MAX_POD_PREFIX {
            return Err(PodNetError::PodPrefix {
                prefix: pod_prefix,
                cidr_prefix: pod.prefix,
            });
        }
        let overlay = Cidr4::from(overlay);
        if pod.overlaps(&overlay) {
            return Err(PodNetError::Overlap {
                a_what: "the pod CIDR",
                a: pod,
                b_what: "the overlay range",
                b: overlay,
            });
        }
        let service = service_cidr
            .map(|s| parse_cidr("--service-cidr", s))
            .transpose()?;
        if let Some(svc) = service {
            for (what, other) in [("the overlay range", overlay), ("the pod CIDR", pod)] {
                if svc.overlaps(&other) {
                    return Err(PodNetError::Overlap {
                        a_what: "the service CIDR",
                        a: svc,
                        b_what: what,
                        b: other,
                    });
                }
            }
        }
        let dns = match (cluster_dns, service) {
            (None, _) => None,
            (Some(_), None) => return Err(PodNetError::Needs("--cluster-dns", "--service-cidr")),
            (Some(d), Some(svc)) => {
                let dns: Ipv4Addr = d.parse().map_err(|_| PodNetError::Malformed {
                    what: "--cluster-dns",
                    value: d.to_string(),
                    reason: "not an IPv4 address".into(),
                })?;
                if !svc.contains(dns) {
                    return Err(PodNetError::DnsOutside { dns, service: svc });
                }
                let a = u64::from(u32::from(dns));
                if a == svc.first() || a == svc.last() {
                    return Err(PodNetError::DnsEdge { dns });
                }
                Some(dns)
            }
        };
        Ok(PodSettings {
            pod_cidr: pod,
            pod_prefix,
            service_cidr: service,
            cluster_dns: dns,
        })
    }

    /// The pod range of the node with overlay host index `host_index`; `None` when the pod
    /// CIDR has no range left for it (index 0 is never a node's).
    pub fn range_for(&self, host_index: u32) -> Option<Cidr4> {
        if host_index == 0 {
            return None;
        }
        self.pod_cidr.subnet(self.pod_prefix, host_index)
    }

    /// How many nodes can get a pod range (the first range is not handed out).
    pub fn capacity(&self) -> u64 {
        self.pod_cidr.subnets(self.pod_prefix).saturating_sub(1)
    }
}

/// The ranges `cluster.toml` lists as routed only through wg0: the overlay, the pod CIDR, the
/// service CIDR, then `extra` (`init --cluster-range`), each once, in that order.
pub fn cluster_ranges(
    overlay: OverlayRange,
    pods: Option<&PodSettings>,
    extra: Vec<String>,
) -> Vec<String> {
    let mut out = vec![overlay.to_string()];
    if let Some(p) = pods {
        out.push(p.pod_cidr.to_string());
        out.extend(p.service_cidr.map(|c| c.to_string()));
    }
    for r in extra {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// Check the API server's CA bundle: one or more PEM `CERTIFICATE` blocks (at most
/// [`MAX_CA_CERTIFICATES`]), each an X.509 certificate that parses completely, with nothing
/// but whitespace around them. Returns the number of certificates.
pub fn check_api_server_ca(pem: &str) -> Result<usize, PodNetError> {
    use x509_parser::prelude::FromDer;
    const BEGIN: &str = "-----BEGIN ";
    let mut rest = pem;
    let mut n = 0usize;
    loop {
        let Some(at) = rest.find(BEGIN) else {
            if n == 0 {
                return Err(PodNetError::Ca(format!(
                    "no PEM CERTIFICATE block (the file starts {:?})",
                    rest.trim().chars().take(40).collect::<String>()
                )));
            }
            if !rest.trim().is_empty() {
                return Err(PodNetError::Ca(format!(
                    "text after certificate {n}: {:?}",
                    rest.trim().chars().take(40).collect::<String>()
                )));
            }
            break;
        };
        if !rest[..at].trim().is_empty() {
            return Err(PodNetError::Ca(format!(
                "text before certificate {}: {:?}",
                n + 1,
                rest[..at].trim().chars().take(40).collect::<String>()
            )));
        }
        n += 1;
        if n > MAX_CA_CERTIFICATES {
            return Err(PodNetError::Ca(format!(
                "more than {MAX_CA_CERTIFICATES} certificates"
            )));
        }
        let (left, block) = x509_parser::pem::parse_x509_pem(&rest.as_bytes()[at..])
            .map_err(|e| PodNetError::Ca(format!("PEM block {n}: {e}")))?;
        if block.label != "CERTIFICATE" {
            return Err(PodNetError::Ca(format!(
                "PEM block {n} is a {:?}, not a CERTIFICATE",
                block.label
            )));
        }
        match x509_parser::certificate::X509Certificate::from_der(&block.contents) {
            Ok(([], _)) => {}
            Ok(_) => {
                return Err(PodNetError::Ca(format!(
                    "certificate {n}: bytes after the DER certificate"
                )))
            }
            Err(e) => {
                return Err(PodNetError::Ca(format!(
                    "certificate {n} is not an X.509 certificate: {e}"
                )))
            }
        }
        let consumed = rest[at..].len() - left.len();
        rest = &rest[at + consumed..];
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay() -> OverlayRange {
        "10.244.0.0/16".parse().unwrap()
    }

    fn settings(pod: &str, prefix: u8) -> PodSettings {
        PodSettings::new(overlay(), pod, prefix, None, None).unwrap()
    }

    #[test]
    fn first_and_last_ranges_and_exhaustion() {
        let s = settings("10.32.0.0/16", 24);
        assert_eq!(s.capacity(), 255);
        assert_eq!(s.range_for(0), None, "range 0 is nobody's");
        assert_eq!(s.range_for(1).unwrap().to_string(), "10.32.1.0/24");
        assert_eq!(s.range_for(2).unwrap().to_string(), "10.32.2.0/24");
        assert_eq!(s.range_for(255).unwrap().to_string(), "10.32.255.0/24");
        assert_eq!(s.range_for(256), None, "exhausted");
        assert_eq!(s.range_for(u32::MAX), None);

        // Ranges that cross octets: /26 in a /22.
        let s = settings("10.40.0.0/22", 26);
        assert_eq!(s.capacity(), 15);
        assert_eq!(s.range_for(1).unwrap().to_string(), "10.40.0.64/26");
        assert_eq!(s.range_for(5).unwrap().to_string(), "10.40.1.64/26");
        assert_eq!(s.range_for(15).unwrap().to_string(), "10.40.3.192/26");
        assert_eq!(s.range_for(16), None);

        // The top of the address space does not overflow.
        let s = PodSettings::new(overlay(), "255.255.255.0/24", 28, None, None).unwrap();
        assert_eq!(s.range_for(15).unwrap().to_string(), "255.255.255.240/28");
        assert_eq!(s.range_for(16), None);
    }

    #[test]
    fn ranges_are_disjoint() {
        let s = settings("10.32.0.0/20", 25);
        let all: Vec<Cidr4> = (1..=s.capacity() as u32)
            .map(|i| s.range_for(i).unwrap())
            .collect();
        for (i, a) in all.iter().enumerate() {
            assert!(s.pod_cidr.overlaps(a) && s.pod_cidr.contains(a.network()));
            for b in &all[i + 1..] {
                assert!(!a.overlaps(b), "{a} {b}");
            }
        }
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let o = overlay();
        let e = |pod: &str, prefix: u8, svc: Option<&str>, dns: Option<&str>| {
            PodSettings::new(o, pod, prefix, svc, dns)
                .unwrap_err()
                .to_string()
        };
        assert!(e("10.32.0.1/16", 24, None, None).contains("host bits"));
        assert!(e("10.32.0.0", 24, None, None).contains("--pod-cidr"));
        assert!(e("fd00::/64", 24, None, None).contains("IPv4 only"));
        assert!(e("10.32.0.0/16", 16, None, None).contains("--pod-prefix 16"));
        assert!(e("10.32.0.0/16", 12, None, None).contains("longer than"));
        assert!(e("10.32.0.0/16", 29, None, None).contains("at most /28"));
        let x = e("10.0.0.0/8", 24, None, None);
        assert!(
            x.contains("pod CIDR 10.0.0.0/8 and the overlay range 10.244.0.0/16"),
            "{x}"
        );
        let x = e("10.32.0.0/16", 24, Some("10.32.128.0/20"), None);
        assert!(
            x.contains("service CIDR 10.32.128.0/20 and the pod CIDR"),
            "{x}"
        );
        let x = e("10.32.0.0/16", 24, Some("10.244.0.0/24"), None);
        assert!(x.contains("and the overlay range"), "{x}");
        let x = e(
            "10.32.0.0/16",
            24,
            Some("10.96.0.0/12"),
            Some("10.112.0.10"),
        );
        assert!(
            x.contains("not inside the service CIDR 10.96.0.0/12"),
            "{x}"
        );
        assert!(e("10.32.0.0/16", 24, None, Some("10.96.0.10")).contains("needs --service-cidr"));
        assert!(
            e("10.32.0.0/16", 24, Some("10.96.0.0/12"), Some("10.96.0.0"))
                .contains("network or broadcast")
        );
        assert!(e("10.32.0.0/16", 24, Some("10.96.0.0/12"), Some("dns")).contains("not an IPv4"));

        let ok = PodSettings::new(
            o,
            "10.32.0.0/16",
            24,
            Some("10.96.0.0/12"),
            Some("10.96.0.10"),
        )
        .unwrap();
        assert_eq!(ok.cluster_dns, Some(Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(ok.service_cidr.unwrap().to_string(), "10.96.0.0/12");
    }

    #[test]
    fn cluster_ranges_are_overlay_pods_services_then_extra() {
        let pods =
            PodSettings::new(overlay(), "10.32.0.0/16", 24, Some("10.96.0.0/12"), None).unwrap();
        assert_eq!(
            cluster_ranges(
                overlay(),
                Some(&pods),
                vec!["10.32.0.0/16".into(), "192.168.50.0/24".into()]
            ),
            [
                "10.244.0.0/16",
                "10.32.0.0/16",
                "10.96.0.0/12",
                "192.168.50.0/24"
            ]
        );
        assert_eq!(cluster_ranges(overlay(), None, vec![]), ["10.244.0.0/16"]);
    }

    #[test]
    fn overlap_is_symmetric_and_exact_at_the_edges() {
        let a: Cidr4 = "10.0.0.0/24".parse().unwrap();
        let b: Cidr4 = "10.0.1.0/24".parse().unwrap();
        let c: Cidr4 = "10.0.0.128/25".parse().unwrap();
        assert!(!a.overlaps(&b) && !b.overlaps(&a));
        assert!(a.overlaps(&c) && c.overlaps(&a));
        assert!(a.contains(Ipv4Addr::new(10, 0, 0, 255)));
        assert!(!a.contains(Ipv4Addr::new(10, 0, 1, 0)));
    }
}
