//! A minimal DHCPv4 client (RFC 2131): DISCOVER, OFFER, REQUEST, ACK on one interface, over a
//! UDP socket bound to port 68 on that device (broadcast flag set, so replies need no address
//! on the interface yet). Message building and parsing are pure and host-tested.
//!
//! Not done: lease renewal (the address is kept past the lease; a node that must renew needs
//! a task in the supervisor loop), DHCP options beyond mask, router, lease, server id.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;

/// What the server gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_s: Option<u32>,
}

/// A parsed server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: u8,
    pub xid: u32,
    pub yiaddr: Ipv4Addr,
    pub mask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub server: Option<Ipv4Addr>,
    pub lease_s: Option<u32>,
}

/// A DISCOVER (`request: None`) or a REQUEST for `(address, server)`.
pub fn build(xid: u32, mac: [u8; 6], request: Option<(Ipv4Addr, Ipv4Addr)>) -> Vec<u8> {
    let mut m = vec![0u8; 236];
    m[0] = 1; // BOOTREQUEST
    m[1] = 1; // Ethernet
    m[2] = 6;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[10..12].copy_from_slice(&0x8000u16.to_be_bytes()); // broadcast replies
    m[28..34].copy_from_slice(&mac);
    m.extend_from_slice(&MAGIC);
    match request {
        None => m.extend_from_slice(&[53, 1, DISCOVER]),
        Some((addr, server)) => {
            m.extend_from_slice(&[53, 1, REQUEST, 50, 4]);
            m.extend_from_slice(&addr.octets());
            m.extend_from_slice(&[54, 4]);
            m.extend_from_slice(&server.octets());
        }
    }
    // Parameter request list: subnet mask, router, lease time, server id.
    m.extend_from_slice(&[55, 4, 1, 3, 51, 54, 255]);
    // Some servers drop messages shorter than a BOOTP packet (300 bytes).
    if m.len() < 300 {
        m.resize(300, 0);
    }
    m
}

fn ip4(v: &[u8]) -> Option<Ipv4Addr> {
    (v.len() >= 4).then(|| Ipv4Addr::new(v[0], v[1], v[2], v[3]))
}

/// Parse a server reply for `xid` and `mac`; `None` for anything else.
pub fn parse(b: &[u8], xid: u32, mac: [u8; 6]) -> Option<Reply> {
    if b.len() < 240 || b[0] != 2 || b[4..8] != xid.to_be_bytes() || b[28..34] != mac {
        return None;
    }
    if b[236..240] != MAGIC {
        return None;
    }
    let mut r = Reply {
        kind: 0,
        xid,
        yiaddr: ip4(&b[16..20])?,
        mask: None,
        router: None,
        server: None,
        lease_s: None,
    };
    let mut i = 240;
    while i < b.len() {
        let code = b[i];
        if code == 255 {
            break;
        }
        if code == 0 {
            i += 1;
            continue;
        }
        let len = *b.get(i + 1)? as usize;
        let v = b.get(i + 2..i + 2 + len)?;
        match code {
            53 if len == 1 => r.kind = v[0],
            1 => r.mask = ip4(v),
            3 => r.router = ip4(v),
            54 => r.server = ip4(v),
            51 if len == 4 => r.lease_s = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
            _ => {}
        }
        i += 2 + len;
    }
    (r.kind != 0).then_some(r)
}

/// The prefix length of a contiguous netmask.
pub fn mask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let p = m.leading_ones();
    (m.checked_shl(p).unwrap_or(0) == 0).then_some(p as u8)
}

fn lease_from(r: &Reply) -> Result<Lease, String> {
    let mask = r.mask.ok_or("the ACK has no subnet mask")?;
    let prefix = mask_prefix(mask).ok_or(format!("netmask {mask} is not contiguous"))?;
    if r.yiaddr.is_unspecified() || r.yiaddr.is_broadcast() || r.yiaddr.is_multicast() {
        return Err(format!("unusable address {}", r.yiaddr));
    }
    Ok(Lease {
        address: r.yiaddr,
        prefix,
        router: r.router.filter(|g| !g.is_unspecified()),
        server: r.server.ok_or("the ACK has no server identifier")?,
        lease_s: r.lease_s,
    })
}

/// A UDP socket on port 68 bound to `ifname`, allowed to broadcast.
fn socket(ifname: &str) -> Result<std::net::UdpSocket, String> {
    use std::os::fd::FromRawFd;
    let err = |what: &str| format!("DHCP socket: {what}: {}", std::io::Error::last_os_error());
    // SAFETY: plain socket calls on a descriptor this function owns; sizes match the types.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(err("socket"));
        }
        let sock = std::net::UdpSocket::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for (opt, what) in [
            (libc::SO_REUSEADDR, "SO_REUSEADDR"),
            (libc::SO_BROADCAST, "SO_BROADCAST"),
        ] {
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) != 0
            {
                return Err(err(what));
            }
        }
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            ifname.as_ptr() as *const libc::c_void,
            ifname.len() as libc::socklen_t,
        ) != 0
        {
            return Err(err("SO_BINDTODEVICE"));
        }
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 68u16.to_be(),
            sin_addr: libc::in_addr { s_addr: 0 },
            sin_zero: [0; 8],
        };
        if libc::bind(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
        {
            return Err(err("bind 0.0.0.0:68"));
        }
        Ok(sock)
    }
}

/// DISCOVER/OFFER/REQUEST/ACK on `ifname` (up, no address), retrying every 2 s until
/// `timeout`.
pub fn acquire(ifname: &str, mac: [u8; 6], timeout: Duration) -> Result<Lease, String> {
    use ring::rand::SecureRandom;
    let sock = socket(ifname)?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| format!("DHCP socket: {e}"))?;
    let mut x = [0u8; 4];
    ring::rand::SystemRandom::new()
        .fill(&mut x)
        .map_err(|_| "the random number generator failed".to_string())?;
    let xid = u32::from_be_bytes(x);
    let deadline = Instant::now() + timeout;
    let to = (Ipv4Addr::BROADCAST, 67);
    let mut requested: Option<(Ipv4Addr, Ipv4Addr)> = None;
    let mut next_send = Instant::now();
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        if Instant::now() >= next_send {
            let _ = sock.send_to(&build(xid, mac, requested), to);
            next_send = Instant::now() + Duration::from_secs(2);
        }
        let n = match sock.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(format!("DHCP: {e}")),
        };
        let Some(r) = parse(&buf[..n], xid, mac) else {
            continue;
        };
        match (r.kind, requested) {
            (OFFER, None) => {
                let server = r.server.ok_or("the OFFER has no server identifier")?;
                requested = Some((r.yiaddr, server));
                let _ = sock.send_to(&build(xid, mac, requested), to);
                next_send = Instant::now() + Duration::from_secs(2);
            }
            (ACK, Some((addr, _))) if r.yiaddr == addr => return lease_from(&r),
            (NAK, Some(_)) => {
                // Start over with a DISCOVER.
                requested = None;
                next_send = Instant::now();
            }
            _ => {}
        }
    }
    Err(format!(
        "DHCP on {ifname}: no lease within {} s{}",
        timeout.as_secs(),
        match requested {
            Some((a, s)) => format!(" (offered {a} by {s}, never acknowledged)"),
            None => " (no offer)".into(),
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    /// A server reply as QEMU's user-mode networking builds one.
    fn reply(kind: u8, xid: u32) -> Vec<u8> {
        let mut b = vec![0u8; 236];
        b[0] = 2;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&xid.to_be_bytes());
        b[16..20].copy_from_slice(&[10, 0, 2, 15]);
        b[28..34].copy_from_slice(&MAC);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&[53, 1, kind, 0, 54, 4, 10, 0, 2, 2, 1, 4, 255, 255, 255, 0]);
        b.extend_from_slice(&[3, 4, 10, 0, 2, 2, 51, 4, 0, 1, 81, 128, 255]);
        b
    }

    #[test]
    fn messages() {
        let d = build(0x01020304, MAC, None);
        assert_eq!(d.len(), 300);
        assert_eq!(&d[..4], &[1, 1, 6, 0]);
        assert_eq!(&d[4..8], &[1, 2, 3, 4]);
        assert_eq!(&d[10..12], &[0x80, 0]);
        assert_eq!(&d[28..34], &MAC);
        assert_eq!(&d[236..243], &[99, 130, 83, 99, 53, 1, DISCOVER]);
        let r = build(
            7,
            MAC,
            Some(("10.0.2.15".parse().unwrap(), "10.0.2.2".parse().unwrap())),
        );
        assert_eq!(
            &r[240..253],
            &[53, 1, REQUEST, 50, 4, 10, 0, 2, 15, 54, 4, 10, 0]
        );

        let ack = parse(&reply(ACK, 7), 7, MAC).unwrap();
        assert_eq!(ack.kind, ACK);
        let l = lease_from(&ack).unwrap();
        assert_eq!(
            l,
            Lease {
                address: "10.0.2.15".parse().unwrap(),
                prefix: 24,
                router: Some("10.0.2.2".parse().unwrap()),
                server: "10.0.2.2".parse().unwrap(),
                lease_s: Some(86400),
            }
        );
        // Another transaction, another client, a request, a truncated option: not ours / no.
        assert!(parse(&reply(ACK, 8), 7, MAC).is_none());
        assert!(parse(&reply(ACK, 7), 7, [0; 6]).is_none());
        assert!(parse(&build(7, MAC, None), 7, MAC).is_none());
        let mut t = reply(ACK, 7);
        t.truncate(t.len() - 3);
        assert!(parse(&t, 7, MAC).is_none());
    }

    #[test]
    fn netmasks() {
        assert_eq!(mask_prefix("255.255.255.0".parse().unwrap()), Some(24));
        assert_eq!(mask_prefix("255.255.255.255".parse().unwrap()), Some(32));
        assert_eq!(mask_prefix("0.0.0.0".parse().unwrap()), Some(0));
        assert_eq!(mask_prefix("255.0.255.0".parse().unwrap()), None);
    }
}
