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
    WireguardCmd, WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
    WireguardPeerFlags,
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

/// WG_CMD_SET_DEVICE's attributes for the peers, replacing any the device has.
pub fn peer_attributes(
    ifindex: u32,
    peers: &[Peer],
    keepalive_s: Option<u16>,
) -> Vec<WireguardAttribute> {
    let peers = peers
        .iter()
        .map(|p| {
            let mut a = vec![
                WireguardPeerAttribute::PublicKey(p.public_key),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
            ];
            if let Some(e) = p.endpoint {
                a.push(WireguardPeerAttribute::Endpoint(e));
            }
            if let Some(k) = keepalive_s {
                a.push(WireguardPeerAttribute::PersistentKeepalive(k));
            }
            a.push(WireguardPeerAttribute::AllowedIps(
                p.allowed_ips.iter().map(allowed_ip).collect(),
            ));
            WireguardPeer(a)
        })
        .collect();
    vec![
        WireguardAttribute::IfIndex(ifindex),
        WireguardAttribute::Flags(WireguardDeviceFlags::ReplacePeers),
        WireguardAttribute::Peers(peers),
    ]
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

    /// Replace the device's peers with `peers`.
    pub fn set_peers(
        &mut self,
        ifindex: u32,
        peers: &[Peer],
        keepalive_s: Option<u16>,
    ) -> Result<(), NlError> {
        self.nl
            .request(
                self.message(
                    WireguardCmd::SetDevice,
                    peer_attributes(ifindex, peers, keepalive_s),
                ),
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
    fn set_device_replaces_peers() {
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
        let a = peer_attributes(4, std::slice::from_ref(&peer), Some(25));
        assert!(a.contains(&WireguardAttribute::Flags(
            WireguardDeviceFlags::ReplacePeers
        )));
        assert!(!a
            .iter()
            .any(|x| matches!(x, WireguardAttribute::PrivateKey(_))));
        let WireguardAttribute::Peers(ps) = &a[2] else {
            panic!("{a:?}")
        };
        assert!(ps[0].contains(&WireguardPeerAttribute::PersistentKeepalive(25)));
        assert!(ps[0].contains(&WireguardPeerAttribute::Endpoint(peer.endpoint.unwrap())));

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
}
