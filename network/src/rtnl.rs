//! rtnetlink: links, addresses, routes and policy rules. The message builders are pure (host
//! tested); [`Rtnl`] sends them.

use crate::cidr::Cidr;
use crate::config::{Mac, Selector};
use crate::nl::{Netlink, NlError, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_core::NLM_F_DUMP;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::IpAddr;

/// The main routing table.
pub const TABLE_MAIN: u32 = 254;
/// The local table (the node's own addresses: what is delivered to the node itself).
pub const TABLE_LOCAL: u32 = 255;

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// One interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<Mac>,
    pub up: bool,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Link {
        let mut name = String::new();
        let mut mac = None;
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => name = n.clone(),
                LinkAttribute::Address(a) if a.len() == 6 => {
                    let mut b = [0u8; 6];
                    b.copy_from_slice(a);
                    mac = Some(Mac(b));
                }
                _ => {}
            }
        }
        Link {
            index: m.header.index,
            name,
            mac,
            up: m.header.flags.contains(LinkFlags::Up),
        }
    }

    pub fn matches(&self, sel: &Selector) -> bool {
        match sel {
            Selector::Name(n) => &self.name == n,
            Selector::Mac(m) => self.mac.as_ref() == Some(m) && self.name != "lo",
        }
    }
}

/// Set a link administratively up.
pub fn link_up_message(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m
}

/// Create a WireGuard link named `name`.
pub fn new_wireguard_message(name: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes = vec![
        LinkAttribute::IfName(name.to_string()),
        LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Wireguard)]),
    ];
    m
}

/// Create a bridge named `name` (the node's pod bridge).
pub fn new_bridge_message(name: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes = vec![
        LinkAttribute::IfName(name.to_string()),
        LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
    ];
    m
}

/// `addr` on link `index`; `prefix_route: false` adds it without the kernel's prefix route
/// (`noprefixroute`).
pub fn address_message(index: u32, addr: &Cidr, prefix_route: bool) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(&addr.addr());
    m.header.prefix_len = addr.prefix();
    m.header.index = index;
    m.attributes = vec![
        AddressAttribute::Local(addr.addr()),
        AddressAttribute::Address(addr.addr()),
    ];
    if !prefix_route {
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
    }
    m
}

fn route_base(dst: &Cidr, table: u32, metric: u32, kind: RouteType) -> RouteMessage {
    let mut m = RouteMessage::default();
    let dst = dst.network();
    m.header.address_family = family(&dst.addr());
    m.header.destination_prefix_length = dst.prefix();
    m.header.protocol = RouteProtocol::Static;
    m.header.kind = kind;
    m.header.scope = RouteScope::Universe;
    // Tables past 255 only fit the RTA_TABLE attribute (as iproute2 does it).
    m.header.table = if table < 256 {
        table as u8
    } else {
        RouteHeader::RT_TABLE_UNSPEC
    };
    if dst.prefix() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst.addr())));
    }
    m.attributes.push(RouteAttribute::Table(table));
    m.attributes.push(RouteAttribute::Priority(metric));
    m
}

/// `dst dev <oif> table T metric M` (scope link: no gateway).
pub fn device_route_message(dst: &Cidr, oif: u32, table: u32, metric: u32) -> RouteMessage {
    let mut m = route_base(dst, table, metric, RouteType::Unicast);
    m.header.scope = RouteScope::Link;
    m.attributes.push(RouteAttribute::Oif(oif));
    m
}

/// `dst via gw dev <oif> table T metric M`.
pub fn gateway_route_message(
    dst: &Cidr,
    gateway: IpAddr,
    oif: u32,
    table: u32,
    metric: u32,
) -> RouteMessage {
    let mut m = route_base(dst, table, metric, RouteType::Unicast);
    m.attributes
        .push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
    m.attributes.push(RouteAttribute::Oif(oif));
    m
}

/// A route from a DHCP lease in the main table (`proto dhcp`, metric 0): `dst via gw dev oif
/// src S`, or on-link (`scope link`) without a gateway.
pub fn dhcp_route_message(
    dst: &Cidr,
    gateway: Option<IpAddr>,
    oif: u32,
    src: Option<IpAddr>,
) -> RouteMessage {
    let mut m = route_base(dst, TABLE_MAIN, 0, RouteType::Unicast);
    m.header.protocol = RouteProtocol::Dhcp;
    match gateway {
        Some(g) => m
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(g))),
        None => m.header.scope = RouteScope::Link,
    }
    if let Some(s) = src {
        m.attributes
            .push(RouteAttribute::PrefSource(RouteAddress::from(s)));
    }
    m.attributes.push(RouteAttribute::Oif(oif));
    m
}

/// Set a link's MTU.
pub fn link_mtu_message(index: u32, mtu: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes = vec![LinkAttribute::Mtu(mtu)];
    m
}

/// `unreachable dst table T metric M`: matches when nothing better does, drops the packet and
/// tells the sender (EHOSTUNREACH locally, ICMP host unreachable when forwarding).
pub fn unreachable_route_message(dst: &Cidr, table: u32, metric: u32) -> RouteMessage {
    route_base(dst, table, metric, RouteType::Unreachable)
}

/// A policy rule for destination `dst`: `to dst lookup T` (`Some(T)`) or `to dst unreachable`
/// (`None`), at `priority`.
pub fn rule_message(dst: &Cidr, table: Option<u32>, priority: u32) -> RuleMessage {
    let mut m = RuleMessage::default();
    let dst = dst.network();
    m.header.family = family(&dst.addr());
    m.header.dst_len = dst.prefix();
    m.attributes.push(RuleAttribute::Destination(dst.addr()));
    m.attributes.push(RuleAttribute::Priority(priority));
    m.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::Static));
    match table {
        Some(t) => {
            m.header.action = RuleAction::ToTable;
            m.header.table = if t < 256 { t as u8 } else { 0 };
            m.attributes.push(RuleAttribute::Table(t));
        }
        None => m.header.action = RuleAction::Unreachable,
    }
    m
}

/// `iif <iif> to dst unreachable` at `priority`: a packet that arrived on `iif` (the underlay)
/// for a cluster destination is not forwarded anywhere (locally generated packets have iif
/// `lo` and do not match; reverse-path lookups neither).
pub fn iif_unreachable_rule_message(dst: &Cidr, iif: &str, priority: u32) -> RuleMessage {
    let mut m = rule_message(dst, None, priority);
    m.attributes.push(RuleAttribute::Iifname(iif.to_string()));
    m
}

/// `lookup local` (table 255: the node's own addresses, broadcast) at `priority` for IPv4
/// (`ipv6: false`) or IPv6. `ours: true` marks it `proto static` (the rule nacre adds);
/// `ours: false` leaves the protocol out, so a delete matches the kernel's own rule (`proto
/// kernel`). The priority is always given: with it the kernel deletes only that priority.
pub fn local_rule_message(ipv6: bool, priority: u32, ours: bool) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = if ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.action = RuleAction::ToTable;
    m.header.table = TABLE_LOCAL as u8;
    m.attributes.push(RuleAttribute::Table(TABLE_LOCAL));
    m.attributes.push(RuleAttribute::Priority(priority));
    if ours {
        m.attributes
            .push(RuleAttribute::Protocol(RouteProtocol::Static));
    }
    m
}

/// A NETLINK_ROUTE socket with the few operations the init needs.
pub struct Rtnl(Netlink);

impl Rtnl {
    pub fn open() -> Result<Self, NlError> {
        Ok(Rtnl(Netlink::open(netlink_sys::protocols::NETLINK_ROUTE)?))
    }

    fn ack(&mut self, m: RouteNetlinkMessage, flags: u16) -> Result<(), NlError> {
        self.0.request(m, flags).map(|_| ())
    }

    pub fn links(&mut self) -> Result<Vec<Link>, NlError> {
        let replies = self.0.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .collect())
    }

    pub fn find(&mut self, sel: &Selector) -> Result<Option<Link>, NlError> {
        Ok(self.links()?.into_iter().find(|l| l.matches(sel)))
    }

    pub fn set_up(&mut self, index: u32) -> Result<(), NlError> {
        self.ack(RouteNetlinkMessage::NewLink(link_up_message(index)), 0)
    }

    pub fn create_wireguard(&mut self, name: &str) -> Result<(), NlError> {
        self.ack(
            RouteNetlinkMessage::NewLink(new_wireguard_message(name)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn delete_link(&mut self, index: u32) -> Result<(), NlError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.ack(RouteNetlinkMessage::DelLink(m), 0)
    }

    pub fn create_bridge(&mut self, name: &str) -> Result<(), NlError> {
        self.ack(
            RouteNetlinkMessage::NewLink(new_bridge_message(name)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn add_address(
        &mut self,
        index: u32,
        addr: &Cidr,
        prefix_route: bool,
    ) -> Result<(), NlError> {
        self.ack(
            RouteNetlinkMessage::NewAddress(address_message(index, addr, prefix_route)),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Add a route; an identical one already there is an error (fail closed).
    pub fn add_route(&mut self, m: RouteMessage) -> Result<(), NlError> {
        self.ack(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Add or replace a route (same destination, table and metric): for DHCP routes, which
    /// a renewal may change.
    pub fn replace_route(&mut self, m: RouteMessage) -> Result<(), NlError> {
        self.ack(
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    pub fn del_route(&mut self, m: RouteMessage) -> Result<(), NlError> {
        self.ack(RouteNetlinkMessage::DelRoute(m), 0)
    }

    pub fn del_address(&mut self, index: u32, addr: &Cidr) -> Result<(), NlError> {
        self.ack(
            RouteNetlinkMessage::DelAddress(address_message(index, addr, true)),
            0,
        )
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NlError> {
        self.ack(
            RouteNetlinkMessage::SetLink(link_mtu_message(index, mtu)),
            0,
        )
    }

    pub fn add_rule(&mut self, m: RuleMessage) -> Result<(), NlError> {
        self.ack(RouteNetlinkMessage::NewRule(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    pub fn del_rule(&mut self, m: RuleMessage) -> Result<(), NlError> {
        self.ack(RouteNetlinkMessage::DelRule(m), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    /// Emitting and parsing back gives the same message (what the kernel will read).
    fn roundtrip_route(m: &RouteMessage) -> RouteMessage {
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        RouteMessage::parse(&buf[..]).unwrap()
    }

    #[test]
    fn cluster_routes() {
        let r = device_route_message(&c("10.244.0.0/16"), 7, 51820, 0);
        assert_eq!(roundtrip_route(&r), r);
        assert_eq!(r.header.kind, RouteType::Unicast);
        assert_eq!(r.header.scope, RouteScope::Link);
        assert_eq!(r.header.destination_prefix_length, 16);
        assert_eq!(r.header.table, 0, "tables past 255 go in RTA_TABLE");
        assert!(r.attributes.contains(&RouteAttribute::Table(51820)));
        assert!(r.attributes.contains(&RouteAttribute::Oif(7)));
        assert!(r
            .attributes
            .contains(&RouteAttribute::Destination(RouteAddress::Inet(
                "10.244.0.0".parse().unwrap()
            ))));

        let u = unreachable_route_message(&c("10.244.0.0/16"), 51820, u32::MAX);
        assert_eq!(roundtrip_route(&u), u);
        assert_eq!(u.header.kind, RouteType::Unreachable);
        assert!(u.attributes.contains(&RouteAttribute::Priority(u32::MAX)));
        assert!(!u
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Oif(_))));

        // Host bits of the destination are cleared; a default route has no RTA_DST.
        let h = device_route_message(&c("10.244.3.4/16"), 7, TABLE_MAIN, 0);
        assert_eq!(h.header.table, 254);
        assert!(h
            .attributes
            .contains(&RouteAttribute::Destination(RouteAddress::Inet(
                "10.244.0.0".parse().unwrap()
            ))));
        let d = gateway_route_message(
            &c("0.0.0.0/0"),
            "192.0.2.254".parse().unwrap(),
            2,
            TABLE_MAIN,
            0,
        );
        assert_eq!(roundtrip_route(&d), d);
        assert!(!d
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Destination(_))));
        assert!(d
            .attributes
            .contains(&RouteAttribute::Gateway(RouteAddress::Inet(
                "192.0.2.254".parse().unwrap()
            ))));
    }

    #[test]
    fn dhcp_routes() {
        let on_link = dhcp_route_message(
            &c("10.128.0.1/32"),
            None,
            2,
            Some("10.128.0.5".parse().unwrap()),
        );
        assert_eq!(roundtrip_route(&on_link), on_link);
        assert_eq!(on_link.header.scope, RouteScope::Link);
        assert_eq!(on_link.header.protocol, RouteProtocol::Dhcp);
        assert_eq!(on_link.header.table, 254);
        assert_eq!(on_link.header.destination_prefix_length, 32);
        assert!(on_link
            .attributes
            .contains(&RouteAttribute::PrefSource(RouteAddress::Inet(
                "10.128.0.5".parse().unwrap()
            ))));
        assert!(!on_link
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Gateway(_))));
        let default = dhcp_route_message(
            &c("0.0.0.0/0"),
            Some("10.128.0.1".parse().unwrap()),
            2,
            None,
        );
        assert_eq!(roundtrip_route(&default), default);
        assert_eq!(default.header.scope, RouteScope::Universe);
        assert!(default
            .attributes
            .contains(&RouteAttribute::Gateway(RouteAddress::Inet(
                "10.128.0.1".parse().unwrap()
            ))));
        let mtu = link_mtu_message(2, 1460);
        let mut buf = vec![0u8; mtu.buffer_len()];
        mtu.emit(&mut buf);
        assert_eq!(LinkMessage::parse(&buf[..]).unwrap(), mtu);
        assert!(mtu.attributes.contains(&LinkAttribute::Mtu(1460)));
        assert_eq!(mtu.header.change_mask, LinkFlags::empty());
    }

    #[test]
    fn rules() {
        let to = rule_message(&c("10.244.0.0/16"), Some(51820), 100);
        assert_eq!(to.header.action, RuleAction::ToTable);
        assert_eq!(to.header.dst_len, 16);
        assert!(to.attributes.contains(&RuleAttribute::Table(51820)));
        assert!(to.attributes.contains(&RuleAttribute::Priority(100)));
        let mut buf = vec![0u8; to.buffer_len()];
        to.emit(&mut buf);
        assert_eq!(RuleMessage::parse(&buf[..]).unwrap(), to);

        let underlay = iif_unreachable_rule_message(&c("10.32.0.0/16"), "eth0", 99);
        assert_eq!(underlay.header.action, RuleAction::Unreachable);
        assert_eq!(underlay.header.dst_len, 16);
        assert!(underlay
            .attributes
            .contains(&RuleAttribute::Iifname("eth0".into())));
        assert!(underlay
            .attributes
            .contains(&RuleAttribute::Destination("10.32.0.0".parse().unwrap())));
        assert!(underlay.attributes.contains(&RuleAttribute::Priority(99)));
        let mut buf = vec![0u8; underlay.buffer_len()];
        underlay.emit(&mut buf);
        assert_eq!(RuleMessage::parse(&buf[..]).unwrap(), underlay);

        let local = local_rule_message(false, 99, true);
        assert_eq!(local.header.action, RuleAction::ToTable);
        assert_eq!(local.header.family, AddressFamily::Inet);
        assert_eq!(local.header.table, 255);
        assert!(local.attributes.contains(&RuleAttribute::Table(255)));
        assert!(local.attributes.contains(&RuleAttribute::Priority(99)));
        assert!(local
            .attributes
            .contains(&RuleAttribute::Protocol(RouteProtocol::Static)));
        let mut buf = vec![0u8; local.buffer_len()];
        local.emit(&mut buf);
        assert_eq!(RuleMessage::parse(&buf[..]).unwrap(), local);
        // The kernel's rule (proto kernel) is matched only without a protocol; priority 0
        // is sent explicitly (without it the kernel would take the first `lookup local`).
        let kernels = local_rule_message(true, 0, false);
        assert_eq!(kernels.header.family, AddressFamily::Inet6);
        assert!(kernels.attributes.contains(&RuleAttribute::Priority(0)));
        assert!(!kernels
            .attributes
            .iter()
            .any(|a| matches!(a, RuleAttribute::Protocol(_))));

        let drop = rule_message(&c("fd00:10::/64"), None, 101);
        assert_eq!(drop.header.action, RuleAction::Unreachable);
        assert_eq!(drop.header.family, AddressFamily::Inet6);
        assert!(!drop
            .attributes
            .iter()
            .any(|a| matches!(a, RuleAttribute::Table(_))));
    }

    #[test]
    fn links_and_addresses() {
        let a = address_message(3, &c("10.244.0.1/32"), false);
        assert_eq!(a.header.prefix_len, 32);
        assert!(a
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Noprefixroute)));
        let b = address_message(2, &c("192.0.2.1/24"), true);
        assert!(!b
            .attributes
            .iter()
            .any(|x| matches!(x, AddressAttribute::Flags(_))));
        let up = link_up_message(2);
        assert_eq!(up.header.change_mask, LinkFlags::Up);
        let br = new_bridge_message("cni0");
        assert!(br
            .attributes
            .contains(&LinkAttribute::IfName("cni0".into())));
        assert!(br
            .attributes
            .contains(&LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge
            )])));
        let wg = new_wireguard_message("wg0");
        assert!(wg.attributes.contains(&LinkAttribute::IfName("wg0".into())));
        let l = Link {
            index: 2,
            name: "eth0".into(),
            mac: Some(Mac([0x52, 0x54, 0, 0, 0, 1])),
            up: false,
        };
        assert!(l.matches(&Selector::Name("eth0".into())));
        assert!(l.matches(&Selector::Mac(Mac([0x52, 0x54, 0, 0, 0, 1]))));
        assert!(!l.matches(&Selector::Mac(Mac([0x52, 0x54, 0, 0, 0, 2]))));
    }
}
