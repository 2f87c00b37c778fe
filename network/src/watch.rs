//! Keeps the cluster routing in place when wg0 or the pod bridge change: the kernel removes a
//! link's routes when it goes down or is deleted and never puts them back. A thread listens to
//! the kernel's link notifications (`RTMGRP_LINK`) and calls [`crate::reconcile_routes`]
//! whenever wg0 or [`crate::POD_BRIDGE`] appears, changes (up, down) or disappears; until the
//! routes are back, the `unreachable` fallbacks answer (cluster traffic never takes the
//! underlay in between). A lost notification (the socket's buffer overran) reconciles too.
//! A deleted wg0 is first created again as it was ([`crate::restore_wg0`]: same key, address,
//! port and peers), so the node does not stay cut off from its cluster.

use crate::cidr::Cidr;
use crate::config::WG_IFNAME;
use crate::nl::NlError;
use crate::rtnl::Rtnl;
use crate::{NetError, POD_BRIDGE};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// `RTMGRP_LINK`: link notifications.
const RTMGRP_LINK: u32 = 1;

/// The names of the links in a buffer of link notifications (new or deleted links).
pub fn link_names(data: &[u8]) -> Result<Vec<String>, NlError> {
    let mut names = Vec::new();
    let mut off = 0;
    while off + 16 <= data.len() {
        let len =
            u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        if len < 16 || off + len > data.len() {
            return Err(NlError::Decode(format!(
                "message length {len} at offset {off} of {}",
                data.len()
            )));
        }
        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..off + len])
            .map_err(|e| NlError::Decode(e.to_string()))?;
        off += (len + 3) & !3;
        if let NetlinkPayload::InnerMessage(
            RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l),
        ) = m.payload
        {
            names.extend(l.attributes.into_iter().filter_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n),
                _ => None,
            }));
        }
    }
    Ok(names)
}

/// Whether a notification about these links calls for a reconcile.
fn concerns_us(names: &[String]) -> bool {
    names.iter().any(|n| n == WG_IFNAME || n == POD_BRIDGE)
}

/// Start the watcher for `ranges` and `pod_range` (in the calling thread's network
/// namespace). The subscription is made here, so an error is the caller's; the thread then
/// runs for the node's life, logging through `log`.
pub fn spawn(
    ranges: Vec<Cidr>,
    pod_range: Option<Cidr>,
    log: impl Fn(&str) + Send + 'static,
) -> Result<(), NetError> {
    let sock = || -> Result<Socket, std::io::Error> {
        let mut s = Socket::new(NETLINK_ROUTE)?;
        s.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
        Ok(s)
    };
    let socket = sock().map_err(|e| NetError::Netlink {
        what: "subscribing to link notifications".into(),
        err: NlError::Io(e),
    })?;
    let mut rt = Rtnl::open().map_err(|err| NetError::Netlink {
        what: "opening rtnetlink".into(),
        err,
    })?;
    // The thread starts with every signal blocked: in PID 1 the main thread takes them all on
    // its signalfd (as the DHCP lease keeper does).
    let spawned = crate::spawn_quiet("route-watch", move || loop {
        let names = match socket.recv_from_full() {
            Ok((data, _)) => match link_names(&data) {
                Ok(n) => n,
                Err(e) => {
                    log(&format!("link notification: {e}"));
                    continue;
                }
            },
            // ENOBUFS: notifications were lost; look at the links as they are now.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => vec![WG_IFNAME.into()],
            Err(e) => {
                log(&format!("link notifications: {e} (watcher stops)"));
                return;
            }
        };
        if !concerns_us(&names) {
            continue;
        }
        match crate::restore_wg0(&mut rt) {
            Ok(Some(done)) => log(&done),
            Ok(None) => {}
            Err(e) => log(&format!("{WG_IFNAME} deleted, creating it again: {e}")),
        }
        match crate::reconcile_routes(&mut rt, &ranges, pod_range.as_ref()) {
            Ok(done) if done.is_empty() => {
                log("cluster routes: no link up, the unreachable fallbacks answer")
            }
            Ok(done) => log(&format!("cluster routes in place: {}", done.join(", "))),
            Err(e) => log(&format!("cluster routes: {e}")),
        }
    });
    spawned.map(|_| ()).map_err(|e| NetError::Netlink {
        what: "starting the route watcher".into(),
        err: NlError::Io(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_route::link::LinkMessage;

    fn notification(m: RouteNetlinkMessage) -> Vec<u8> {
        let mut msg = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(m));
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    fn link(name: &str) -> LinkMessage {
        let mut l = LinkMessage::default();
        l.attributes.push(LinkAttribute::IfName(name.into()));
        l
    }

    #[test]
    fn names_from_notifications() {
        let mut data = notification(RouteNetlinkMessage::NewLink(link("veth1234")));
        data.extend(notification(RouteNetlinkMessage::DelLink(link("wg0"))));
        let names = link_names(&data).unwrap();
        assert_eq!(names, ["veth1234", "wg0"]);
        assert!(concerns_us(&names));
        assert!(!concerns_us(&names[..1]));
        assert!(concerns_us(&["cni0".to_string()]));
        // A truncated buffer is an error, not a silently empty list.
        let e = link_names(&data[..data.len() - 4]).unwrap_err().to_string();
        assert!(e.contains("message length"), "{e}");
    }
}
