//! Where WireGuard peers come from: one interface, [`PeerSource`]. nacre-init implements it with
//! the attested key service (which also assigns the overlay address); [`crate::exchange`] is a
//! stand-in for tests only.

use crate::cidr::Cidr;
use crate::wg::Key;
use std::net::{IpAddr, SocketAddr};

/// What this node tells a peer source about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// wg0's public key (derived by the kernel from the key generated at boot).
    pub public_key: Key,
    /// The overlay address on wg0 (a host address).
    pub overlay: IpAddr,
    /// The underlay address other nodes reach this node at.
    pub underlay: IpAddr,
    pub listen_port: u16,
    /// This node's own pod range (its CNI bridge `cni0`), if the peer source gave it one: no
    /// peer may claim any of it.
    pub pod_range: Option<Cidr>,
}

/// One WireGuard peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub public_key: Key,
    pub endpoint: Option<SocketAddr>,
    /// What the peer may send from and what is sent to it (each inside a cluster range).
    pub allowed_ips: Vec<Cidr>,
    /// For logs (e.g. its underlay address).
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0}")]
    Source(String),
    #[error("peer {peer}: {reason}")]
    Invalid { peer: String, reason: String },
}

/// What this node announces before it has an overlay address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub public_key: Key,
    pub underlay: IpAddr,
    pub listen_port: u16,
}

pub trait PeerSource {
    /// For logs and errors ("insecure-test-exchange", "key-service").
    fn name(&self) -> &'static str;
    /// The overlay address the source assigns this node (a host CIDR), called once before
    /// [`PeerSource::peers`]; `None`: the configured `wireguard.address`.
    fn assign(&mut self, _me: &Announce, _log: &dyn Fn(&str)) -> Result<Option<Cidr>, PeerError> {
        Ok(None)
    }
    /// The peers of this node; fails (the node stops) if they cannot be had in time.
    fn peers(&mut self, me: &LocalNode, log: &dyn Fn(&str)) -> Result<Vec<Peer>, PeerError>;
    /// This node's own pod range (`10.32.1.0/24`), asked once after [`PeerSource::assign`]:
    /// served by the local bridge `cni0`, never routed into wg0. `None`: the node runs no pods
    /// (no bridge, no forwarding).
    fn pod_range(&self) -> Result<Option<Cidr>, PeerError> {
        Ok(None)
    }
}

/// Checks every peer before it reaches the kernel: a real key, not this node's own, no key
/// twice, endpoints outside the cluster ranges (no loop through wg0), allowed IPs inside the
/// cluster ranges, not this node's overlay address, not overlapping this node's own pod range
/// (a peer could otherwise receive, and send as, this node's pods), and no two peers claiming
/// overlapping ranges (the kernel would silently move the range to the last).
pub fn validate(peers: &[Peer], me: &LocalNode, cluster: &[Cidr]) -> Result<(), PeerError> {
    let bad = |p: &Peer, reason: String| PeerError::Invalid {
        peer: p.name.clone(),
        reason,
    };
    for (i, p) in peers.iter().enumerate() {
        if p.public_key == [0; 32] {
            return Err(bad(p, "all-zero public key".into()));
        }
        if p.public_key == me.public_key {
            return Err(bad(p, "has this node's own public key".into()));
        }
        if let Some(e) = p.endpoint {
            if let Some(r) = cluster.iter().find(|r| r.contains(e.ip())) {
                return Err(bad(
                    p,
                    format!("endpoint {e} is inside the cluster range {r}"),
                ));
            }
        }
        if p.allowed_ips.is_empty() {
            return Err(bad(p, "no allowed IPs".into()));
        }
        for a in &p.allowed_ips {
            if !cluster.iter().any(|r| r.covers(a)) {
                return Err(bad(
                    p,
                    format!("allowed IP {a} is outside the cluster ranges"),
                ));
            }
            if a.contains(me.overlay) {
                return Err(bad(
                    p,
                    format!("allowed IP {a} covers this node's {}", me.overlay),
                ));
            }
            if let Some(own) = me.pod_range.filter(|own| own.overlaps(a)) {
                return Err(bad(
                    p,
                    format!("allowed IP {a} overlaps this node's pod range {own}"),
                ));
            }
        }
        for q in &peers[..i] {
            if q.public_key == p.public_key {
                return Err(bad(p, format!("same public key as {}", q.name)));
            }
            for a in &p.allowed_ips {
                if let Some(b) = q.allowed_ips.iter().find(|b| b.overlaps(a)) {
                    return Err(bad(p, format!("allowed IP {a} overlaps {b} of {}", q.name)));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> LocalNode {
        LocalNode {
            public_key: [1; 32],
            overlay: "10.244.0.1".parse().unwrap(),
            underlay: "192.0.2.1".parse().unwrap(),
            listen_port: 51820,
            pod_range: None,
        }
    }

    fn peer(key: u8, ip: &str) -> Peer {
        Peer {
            public_key: [key; 32],
            endpoint: Some("192.0.2.2:51820".parse().unwrap()),
            allowed_ips: vec![ip.parse().unwrap()],
            name: format!("p{key}"),
        }
    }

    #[test]
    fn peer_rules() {
        let cluster = ["10.244.0.0/16".parse().unwrap()];
        let ok = [peer(2, "10.244.0.2/32"), peer(3, "10.244.1.0/24")];
        validate(&ok, &me(), &cluster).unwrap();
        let cases: Vec<(Vec<Peer>, &str)> = vec![
            (vec![peer(0, "10.244.0.2/32")], "all-zero"),
            (vec![peer(1, "10.244.0.2/32")], "own public key"),
            (vec![peer(2, "10.245.0.2/32")], "outside the cluster"),
            (vec![peer(2, "10.244.0.0/16")], "covers this node"),
            (
                vec![Peer {
                    endpoint: Some("10.244.9.9:51820".parse().unwrap()),
                    ..peer(2, "10.244.0.2/32")
                }],
                "endpoint 10.244.9.9:51820 is inside",
            ),
            (
                vec![peer(2, "10.244.0.2/32"), peer(2, "10.244.0.3/32")],
                "same public key",
            ),
            (
                vec![peer(2, "10.244.1.2/32"), peer(3, "10.244.1.0/24")],
                "overlaps",
            ),
            (
                vec![Peer {
                    allowed_ips: vec![],
                    ..peer(2, "10.244.0.2/32")
                }],
                "no allowed IPs",
            ),
        ];
        for (peers, why) in cases {
            let e = validate(&peers, &me(), &cluster).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn own_pod_range_is_never_a_peers() {
        let cluster = [
            "10.244.0.0/16".parse().unwrap(),
            "10.32.0.0/16".parse().unwrap(),
        ];
        let with_range = LocalNode {
            pod_range: Some("10.32.1.0/24".parse().unwrap()),
            ..me()
        };
        let with_pods = |key: u8, overlay: &str, pods: &str| Peer {
            allowed_ips: vec![overlay.parse().unwrap(), pods.parse().unwrap()],
            ..peer(key, overlay)
        };
        // Another node's range next to ours is fine.
        validate(
            &[with_pods(2, "10.244.0.2/32", "10.32.2.0/24")],
            &with_range,
            &cluster,
        )
        .unwrap();
        // The same range, a part of it, or a range covering it: refused, naming ours.
        for pods in [
            "10.32.1.0/24",
            "10.32.1.128/25",
            "10.32.1.7/32",
            "10.32.0.0/23",
        ] {
            let e = validate(
                &[with_pods(2, "10.244.0.2/32", pods)],
                &with_range,
                &cluster,
            )
            .unwrap_err()
            .to_string();
            assert_eq!(
                e,
                format!("peer p2: allowed IP {pods} overlaps this node's pod range 10.32.1.0/24")
            );
        }
        // Without a pod range of its own the node accepts the same peer.
        validate(
            &[with_pods(2, "10.244.0.2/32", "10.32.1.0/24")],
            &me(),
            &cluster,
        )
        .unwrap();
    }
}
