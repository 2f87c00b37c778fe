//! The kernel's WireGuard over generic netlink: set the device (private key, port, peers) and
//! read it back (public key, handshakes, counters).

use crate::cidr::Cidr;
use crate::nl::{Netlink, NlError};
use crate::peers::Peer;
use netlink_packet_core::NLM_F_DUMP;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};
use std::net::SocketAddr;
use std::time::Duration;
use zeroize::Zeroize;

pub const KEY_LEN: usize = 32;
pub type Key = [u8; KEY_LEN];

/// A private key generated in memory from the kernel's RNG (ring's SystemRandom) and clamped
/// as X25519 wants it (the kernel clamps again and derives the public key). Wiped on drop.
pub struct PrivateKey(Key);

impl PrivateKey {
    pub fn generate() -> Result<Self, String> {
        use ring::rand::SecureRandom;
        let mut k = [0u8; KEY_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut k)
            .map_err(|_| "the system random number generator failed".to_string())?;
        k[0] &= 248;
        k[31] &= 127;
        k[31] |= 64;
        Ok(PrivateKey(k))
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// One peer as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub public_key: Key,
    pub endpoint: Option<SocketAddr>,
    /// Since the epoch; `None` if no handshake yet.
    pub last_handshake: Option<Duration>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub allowed_ips: Vec<Cidr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceStatus {
    pub public_key: Option<Key>,
    pub listen_port: u16,
    pub peers: Vec<PeerStatus>,
}

fn allowed_ip(c: &Cidr) -> WireguardAllowedIp {
    let c = c.network();
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(if c.is_ipv4() {
            WireguardAddressFamily::Ipv4
        } else {
            WireguardAddressFamily::Ipv6
        }),
        WireguardAllowedIpAttr::IpAddr(c.addr()),
        WireguardAllowedIpAttr::Cidr(c.prefix()),
    ])
}

/// WG_CMD_SET_DEVICE's attributes for the device itself: private key and listen port.
pub fn device_attributes(
    ifindex: u32,
    key: &PrivateKey,
    listen_port: u16,
) -> Vec<WireguardAttribute> {
    vec![
        WireguardAttribute::IfIndex(ifindex),
        WireguardAttribute::PrivateKey(key.0),
        WireguardAttribute::ListenPort(listen_port),
    ]
}

/// One change to a device's peers (WG_CMD_SET_DEVICE without `ReplacePeers`: the peers not
/// named keep their sessions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerOp {
    /// Add the peer or update it in place (endpoint; allowed IPs replaced). The keepalive
    /// interval if `Some` (a change from 0 sends a keepalive at once, which starts the
    /// handshake); left as it is if `None` (0 for a new peer).
    Set(Peer, Option<u16>),
    /// Remove the peer (and its session).
    Remove(Key),
    /// Only the keepalive interval of a peer the device has (never adds one).
    Keepalive(Key, u16),
}

/// WG_CMD_SET_DEVICE's attributes for these peer changes.
pub fn peer_op_attributes(ifindex: u32, ops: &[PeerOp]) -> Vec<WireguardAttribute> {
    let peers = ops
        .iter()
        .map(|op| match op {
            PeerOp::Set(p, keepalive_s) => {
                let mut a = vec![
                    WireguardPeerAttribute::PublicKey(p.public_key),
                    WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
                ];
                if let Some(e) = p.endpoint {
                    a.push(WireguardPeerAttribute::Endpoint(e));
                }
                if let Some(k) = keepalive_s {
                    a.push(WireguardPeerAttribute::PersistentKeepalive(*k));
                }
                a.push(WireguardPeerAttribute::AllowedIps(
                    p.allowed_ips.iter().map(allowed_ip).collect(),
                ));
                WireguardPeer(a)
            }
            PeerOp::Remove(k) => WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(*k),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ]),
            PeerOp::Keepalive(k, s) => WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(*k),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::UpdateOnly),
                WireguardPeerAttribute::PersistentKeepalive(*s),
            ]),
        })
        .collect();
    vec![
        WireguardAttribute::IfIndex(ifindex),
        WireguardAttribute::Peers(peers),
    ]
}

/// Whether this node starts the handshake with a peer: the greater public key does. When two
/// nodes initiate at the same moment (both just learnt of each other and send their first
/// packets), each answers the other's initiation, which overwrites its own handshake state, so
/// both responses are dropped and WireGuard retries only after its 5 s rekey timeout. With one
/// side starting as soon as it has the peer and the other waiting for traffic, the first
/// session needs one round trip.
pub fn initiates(me: &Key, peer: &Key) -> bool {
    me > peer
}

/// How wg0's peers change from `current` (the keys the device has) to `next`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerPlan {
    /// Removals, updates in place, additions (one request).
    pub now: Vec<PeerOp>,
    /// Right after: the keepalive that started a handshake set back to 0 (no keepalive
    /// configured).
    pub after: Vec<PeerOp>,
    /// A moment later: the configured keepalive for new peers that start the handshake
    /// themselves (a keepalive now would be a second initiation crossing theirs).
    pub deferred: Vec<PeerOp>,
    /// New peers this node starts the handshake with.
    pub initiated: usize,
}

/// Plan the change of wg0's peers: peers no longer in `next` removed, the others updated in
/// place (their sessions and keepalive kept), new ones added; with new peers this node
/// [`initiates`] with (every new peer if `initiate_all`: wg0 re-created, its peers still hold
/// sessions with the old one and will not start), a keepalive (the configured interval, or 1 s
/// set back to 0 right after) starts the handshake at once.
pub fn plan_peers(
    me: &Key,
    current: &[Key],
    next: &[Peer],
    keepalive_s: Option<u16>,
    initiate_all: bool,
) -> PeerPlan {
    let mut plan = PeerPlan::default();
    for k in current {
        if !next.iter().any(|p| &p.public_key == k) {
            plan.now.push(PeerOp::Remove(*k));
        }
    }
    for p in next {
        let key = p.public_key;
        if current.contains(&key) {
            // The keepalive is left as it is: set from 0 now, it would start a handshake that
            // could cross one the peer starts (a peer still waiting for its deferred one).
            plan.now.push(PeerOp::Set(p.clone(), None));
        } else if initiate_all || initiates(me, &key) {
            plan.now
                .push(PeerOp::Set(p.clone(), Some(keepalive_s.unwrap_or(1))));
            if keepalive_s.is_none() {
                plan.after.push(PeerOp::Keepalive(key, 0));
            }
            plan.initiated += 1;
        } else {
            plan.now.push(PeerOp::Set(p.clone(), None));
            if let Some(k) = keepalive_s {
                plan.deferred.push(PeerOp::Keepalive(key, k));
            }
        }
    }
    plan
}

/// Parse WG_CMD_GET_DEVICE replies (one device may span several messages).
pub fn parse_device(msgs: &[WireguardMessage]) -> DeviceStatus {
    let mut d = DeviceStatus::default();
    for m in msgs {
        for a in &m.attributes {
            match a {
                WireguardAttribute::PublicKey(k) => d.public_key = Some(*k),
                WireguardAttribute::ListenPort(p) => d.listen_port = *p,
                WireguardAttribute::Peers(ps) => {
                    for p in ps {
                        let mut s = PeerStatus {
                            public_key: [0; KEY_LEN],
                            endpoint: None,
                            last_handshake: None,
                            rx_bytes: 0,
                            tx_bytes: 0,
                            allowed_ips: vec![],
                        };
                        for pa in p.iter() {
                            match pa {
                                WireguardPeerAttribute::PublicKey(k) => s.public_key = *k,
                                WireguardPeerAttribute::Endpoint(e) => s.endpoint = Some(*e),
                                WireguardPeerAttribute::LastHandshake(t)
                                    if t.seconds > 0 || t.nano_seconds > 0 =>
                                {
                                    s.last_handshake = Some(Duration::new(
                                        t.seconds.max(0) as u64,
                                        t.nano_seconds.clamp(0, 999_999_999) as u32,
                                    ));
                                }
                                WireguardPeerAttribute::RxBytes(n) => s.rx_bytes = *n,
                                WireguardPeerAttribute::TxBytes(n) => s.tx_bytes = *n,
                                WireguardPeerAttribute::AllowedIps(ips) => {
                                    for ip in ips {
                                        let mut addr = None;
                                        let mut prefix = None;
                                        for x in ip.iter() {
                                            match x {
                                                WireguardAllowedIpAttr::IpAddr(a) => {
                                                    addr = Some(*a)
                                                }
                                                WireguardAllowedIpAttr::Cidr(c) => {
                                                    prefix = Some(*c)
                                                }
                                                _ => {}
                                            }
                                        }
                                        if let (Some(a), Some(p)) = (addr, prefix) {
                                            if let Ok(c) = Cidr::new(a, p) {
                                                s.allowed_ips.push(c);
                                            }
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                        // A peer with many allowed IPs continues in the next message.
                        match d.peers.iter_mut().find(|x| x.public_key == s.public_key) {
                            Some(x) => x.allowed_ips.extend(s.allowed_ips),
                            None => d.peers.push(s),
                        }
                    }
                }
                _ => {}
            }
        }
    }
    d
}

/// A generic netlink socket bound to the "wireguard" family.
pub struct Wg {
    nl: Netlink,
    family: u16,
}

impl Wg {
    pub fn open() -> Result<Self, NlError> {
        let mut nl = Netlink::open(netlink_sys::protocols::NETLINK_GENERIC)?;
        let req = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName("wireguard".into())],
        });
        let family = nl
            .request(req, 0)?
            .iter()
            .flat_map(|m| m.payload.nlas.iter())
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| NlError::Decode("no family id for \"wireguard\"".into()))?;
        Ok(Wg { nl, family })
    }

    fn message(
        &self,
        cmd: WireguardCmd,
        attributes: Vec<WireguardAttribute>,
    ) -> GenlMessage<WireguardMessage> {
        let mut m = GenlMessage::from_payload(WireguardMessage { cmd, attributes });
        m.set_resolved_family_id(self.family);
        m
    }

    /// Give the device its private key and listen port.
    pub fn configure(
        &mut self,
        ifindex: u32,
        key: &PrivateKey,
        listen_port: u16,
    ) -> Result<(), NlError> {
        let mut attrs = device_attributes(ifindex, key, listen_port);
        let r = self
            .nl
            .request(self.message(WireguardCmd::SetDevice, attrs.clone()), 0);
        for a in attrs.iter_mut() {
            if let WireguardAttribute::PrivateKey(k) = a {
                k.zeroize();
            }
        }
        r.map(|_| ())
    }

    /// Apply peer changes (nothing to do: no request).
    pub fn apply(&mut self, ifindex: u32, ops: &[PeerOp]) -> Result<(), NlError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.nl
            .request(
                self.message(WireguardCmd::SetDevice, peer_op_attributes(ifindex, ops)),
                0,
            )
            .map(|_| ())
    }

    pub fn device(&mut self, ifindex: u32) -> Result<DeviceStatus, NlError> {
        let replies = self.nl.request(
            self.message(
                WireguardCmd::GetDevice,
                vec![WireguardAttribute::IfIndex(ifindex)],
            ),
            NLM_F_DUMP,
        )?;
        let mut msgs: Vec<WireguardMessage> = replies.into_iter().map(|m| m.payload).collect();
        let d = parse_device(&msgs);
        // GET_DEVICE returns the private key too: wipe the parsed copies.
        for m in msgs.iter_mut() {
            for a in m.attributes.iter_mut() {
                if let WireguardAttribute::PrivateKey(k) = a {
                    k.zeroize();
                }
            }
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_wireguard::WireguardTimeSpec;

    #[test]
    fn generated_keys_are_clamped_and_differ() {
        let a = PrivateKey::generate().unwrap();
        let b = PrivateKey::generate().unwrap();
        assert_ne!(a.0, b.0);
        assert_eq!(a.0[0] & 7, 0);
        assert_eq!(a.0[31] & 0xc0, 0x40);
    }

    #[test]
    fn set_device_and_peer_changes() {
        let key = PrivateKey([9; 32]);
        let d = device_attributes(4, &key, 51820);
        assert!(d.contains(&WireguardAttribute::PrivateKey([9; 32])));
        assert!(d.contains(&WireguardAttribute::ListenPort(51820)));
        let peer = Peer {
            public_key: [1; 32],
            endpoint: Some("192.0.2.2:51820".parse().unwrap()),
            allowed_ips: vec!["10.244.0.2/32".parse().unwrap()],
            name: "n2".into(),
        };
        let a = peer_op_attributes(
            4,
            &[
                PeerOp::Set(peer.clone(), Some(25)),
                PeerOp::Remove([3; 32]),
                PeerOp::Keepalive([5; 32], 0),
            ],
        );
        // Never ReplacePeers: the peers not named keep their sessions.
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(!a.iter().any(|x| matches!(
            x,
            WireguardAttribute::PrivateKey(_) | WireguardAttribute::Flags(_)
        )));
        let WireguardAttribute::Peers(ps) = &a[1] else {
            panic!("{a:?}")
        };
        assert!(ps[0].contains(&WireguardPeerAttribute::PersistentKeepalive(25)));
        assert!(ps[0].contains(&WireguardPeerAttribute::Endpoint(peer.endpoint.unwrap())));
        assert!(ps[0].contains(&WireguardPeerAttribute::Flags(
            WireguardPeerFlags::ReplaceAllowedIps
        )));
        assert_eq!(
            ps[1].0,
            [
                WireguardPeerAttribute::PublicKey([3; 32]),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe)
            ]
        );
        assert_eq!(
            ps[2].0,
            [
                WireguardPeerAttribute::PublicKey([5; 32]),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::UpdateOnly),
                WireguardPeerAttribute::PersistentKeepalive(0)
            ]
        );
        assert!(peer_op_attributes(4, &[]).len() == 2);

        // What the kernel would report back for it, parsed.
        let reply = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![
                WireguardAttribute::PublicKey([2; 32]),
                WireguardAttribute::ListenPort(51820),
                WireguardAttribute::Peers(vec![WireguardPeer(vec![
                    WireguardPeerAttribute::PublicKey([1; 32]),
                    WireguardPeerAttribute::LastHandshake(WireguardTimeSpec {
                        seconds: 1000,
                        nano_seconds: 5,
                    }),
                    WireguardPeerAttribute::RxBytes(92),
                    WireguardPeerAttribute::AllowedIps(vec![allowed_ip(&peer.allowed_ips[0])]),
                ])]),
            ],
        };
        let d = parse_device(&[reply]);
        assert_eq!(d.public_key, Some([2; 32]));
        assert_eq!(d.peers.len(), 1);
        assert_eq!(d.peers[0].last_handshake, Some(Duration::new(1000, 5)));
        assert_eq!(d.peers[0].rx_bytes, 92);
        assert_eq!(d.peers[0].allowed_ips, peer.allowed_ips);
    }

    fn peer(k: u8) -> Peer {
        Peer {
            public_key: [k; 32],
            endpoint: Some(format!("192.0.2.{k}:51820").parse().unwrap()),
            allowed_ips: vec![format!("10.244.0.{k}/32").parse().unwrap()],
            name: format!("n{k}"),
        }
    }

    #[test]
    fn the_greater_key_starts_the_handshake_and_only_it() {
        let (a, b) = ([7; 32], [9; 32]);
        assert!(initiates(&b, &a) && !initiates(&a, &b));
        // Two fresh nodes planning each other: exactly one starts (a keepalive from 0), the
        // other adds the peer with none.
        let pa = plan_peers(&a, &[], &[peer(9)], None, false);
        let pb = plan_peers(&b, &[], &[peer(7)], None, false);
        assert_eq!(pa.initiated + pb.initiated, 1);
        assert_eq!(pa.now, [PeerOp::Set(peer(9), None)]);
        assert!(pa.after.is_empty() && pa.deferred.is_empty());
        assert_eq!(pb.now, [PeerOp::Set(peer(7), Some(1))]);
        assert_eq!(pb.after, [PeerOp::Keepalive([7; 32], 0)]);
        // With a configured keepalive, the initiator uses it at once, the other side later.
        let pa = plan_peers(&a, &[], &[peer(9)], Some(25), false);
        let pb = plan_peers(&b, &[], &[peer(7)], Some(25), false);
        assert_eq!(pb.now, [PeerOp::Set(peer(7), Some(25))]);
        assert!(pb.after.is_empty() && pb.deferred.is_empty());
        assert_eq!(pa.now, [PeerOp::Set(peer(9), None)]);
        assert_eq!(pa.deferred, [PeerOp::Keepalive([9; 32], 25)]);
    }

    #[test]
    fn a_new_peer_set_keeps_the_sessions_of_the_peers_it_keeps() {
        let me = [8; 32];
        // The device has peers 3 and 5; the new set is 5 (moved) and 9 (new, greater key).
        let mut moved = peer(5);
        moved.endpoint = Some("192.0.2.55:51820".parse().unwrap());
        let plan = plan_peers(
            &me,
            &[[3; 32], [5; 32]],
            &[moved.clone(), peer(9)],
            None,
            false,
        );
        assert_eq!(
            plan.now,
            [
                PeerOp::Remove([3; 32]),
                PeerOp::Set(moved, None),
                PeerOp::Set(peer(9), None)
            ]
        );
        assert_eq!(plan.initiated, 0);
        // The same set again changes nothing but the peers' fields (no removal, no keepalive,
        // even with one configured: the peers have theirs).
        let again = plan_peers(
            &me,
            &[[5; 32], [9; 32]],
            &[peer(5), peer(9)],
            Some(25),
            false,
        );
        assert!(again.now.iter().all(|o| matches!(o, PeerOp::Set(_, None))));
        assert!(again.after.is_empty() && again.deferred.is_empty());
        // wg0 re-created: this node starts with every peer, whatever the keys.
        let restored = plan_peers(&me, &[], &[peer(5), peer(9)], None, true);
        assert_eq!(restored.initiated, 2);
        assert_eq!(
            restored.after,
            [PeerOp::Keepalive([5; 32], 0), PeerOp::Keepalive([9; 32], 0)]
        );
        // Every peer gone: removals only.
        let gone = plan_peers(&me, &[[5; 32]], &[], Some(25), false);
        assert_eq!(gone.now, [PeerOp::Remove([5; 32])]);
    }
}
