//! A DHCPv4 client (RFC 2131) for the underlay: DISCOVER, OFFER, REQUEST, ACK on one interface,
//! over a UDP socket bound to port 68 on that device (broadcast flag set while the interface has
//! no address), and the renewal exchanges of a bound lease (RENEWING: a REQUEST unicast to the
//! server from T1; REBINDING: broadcast from T2) that [`crate::lease`] runs in a thread.
//!
//! Options used: subnet mask (1), routers (3), DNS servers (6), domain name (15), interface MTU
//! (26), lease time (51), server identifier (54), T1/T2 (58/59; default 0.5 and 0.875 of the
//! lease), domain search list (119, RFC 3397 with compression) and classless static routes (121,
//! RFC 3442: when present, the routers option is ignored). Long options split over several
//! instances are concatenated (RFC 3396) and option overload (52) into `file`/`sname` is read.
//!
//! Parsing is strict and fails closed: a reply for this client whose options we use are
//! malformed (wrong lengths, truncated or over-long 121 descriptors, a prefix longer than 32,
//! destination bits past the prefix, invalid names) is refused with a [`DhcpError`] saying what
//! and where, and never half-applied. Unknown options are skipped. Message building and parsing
//! are pure and host-tested with byte fixtures: a DHCPACK from systemd's DHCP client tests, one
//! captured from dnsmasq 2.90 (`testdata/`), option 121 values from dracut, systemd and dhcpdump
//! threads; `tests/dhcp_netns.rs` runs the client against dnsmasq in network namespaces.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

const MAGIC: [u8; 4] = [99, 130, 83, 99];
pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;

/// The parameter request list (option 55) of every DISCOVER and REQUEST.
pub const REQUESTED_OPTIONS: [u8; 11] = [1, 3, 6, 15, 26, 51, 54, 58, 59, 119, 121];

/// The largest DHCP message this client accepts (option 57), an Ethernet MTU's worth.
const MAX_MESSAGE: u16 = 1500;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhcpError {
    #[error("malformed DHCP message: {0}")]
    Malformed(String),
    #[error("DHCP option {code} ({}): {reason}", option_name(*code))]
    Option { code: u8, reason: String },
    #[error("DHCP option 121 (classless static routes), route {index} at byte {offset}: {reason}")]
    Route {
        index: usize,
        offset: usize,
        reason: String,
    },
    #[error("unusable DHCP lease: {0}")]
    Lease(String),
    #[error("DHCP socket on {ifname}: {what}: {err}")]
    Socket {
        ifname: String,
        what: &'static str,
        err: String,
    },
    #[error("DHCP on {ifname}: no lease within {secs} s ({detail})")]
    Timeout {
        ifname: String,
        secs: u64,
        detail: String,
    },
    #[error("the random number generator failed")]
    Random,
}

fn option_name(code: u8) -> &'static str {
    match code {
        1 => "subnet mask",
        3 => "routers",
        6 => "DNS servers",
        15 => "domain name",
        26 => "interface MTU",
        51 => "lease time",
        52 => "option overload",
        53 => "message type",
        54 => "server identifier",
        58 => "renewal time T1",
        59 => "rebinding time T2",
        119 => "domain search",
        121 => "classless static routes",
        _ => "other",
    }
}

fn bad(code: u8, reason: impl Into<String>) -> DhcpError {
    DhcpError::Option {
        code,
        reason: reason.into(),
    }
}

/// A route from the lease: `gateway: None` is an on-link route (RFC 3442's router 0.0.0.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dest: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gateway {
            Some(g) => write!(f, "{}/{} via {g}", self.dest, self.prefix),
            None => write!(f, "{}/{} on-link", self.dest, self.prefix),
        }
    }
}

fn prefix_mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// The options of a reply this client uses (each validated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub mtu: Option<u16>,
    pub lease_s: Option<u32>,
    pub server: Option<Ipv4Addr>,
    pub t1_s: Option<u32>,
    pub t2_s: Option<u32>,
    pub search: Vec<String>,
    /// Option 121, when present (even if it would be empty, which is refused).
    pub classless: Option<Vec<Route>>,
}

/// A parsed server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: u8,
    pub xid: u32,
    pub yiaddr: Ipv4Addr,
    pub options: Options,
}

/// What this client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Discover,
    /// SELECTING: a REQUEST for an offered address, naming its server (broadcast).
    Select {
        address: Ipv4Addr,
        server: Ipv4Addr,
    },
    /// RENEWING (unicast to the server) or REBINDING (broadcast): `ciaddr` is the address held.
    Renew {
        address: Ipv4Addr,
    },
}

/// Build a DISCOVER or REQUEST.
pub fn build(xid: u32, mac: [u8; 6], req: Request) -> Vec<u8> {
    let mut m = vec![0u8; 236];
    m[0] = 1; // BOOTREQUEST
    m[1] = 1; // Ethernet
    m[2] = 6;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[28..34].copy_from_slice(&mac);
    m.extend_from_slice(&MAGIC);
    match req {
        Request::Discover => {
            // No address yet: replies must be broadcast.
            m[10..12].copy_from_slice(&0x8000u16.to_be_bytes());
            m.extend_from_slice(&[53, 1, DISCOVER]);
        }
        Request::Select { address, server } => {
            m[10..12].copy_from_slice(&0x8000u16.to_be_bytes());
            m.extend_from_slice(&[53, 1, REQUEST, 50, 4]);
            m.extend_from_slice(&address.octets());
            m.extend_from_slice(&[54, 4]);
            m.extend_from_slice(&server.octets());
        }
        Request::Renew { address } => {
            // RFC 2131 4.3.2: ciaddr set, no requested address or server identifier.
            m[12..16].copy_from_slice(&address.octets());
            m.extend_from_slice(&[53, 1, REQUEST]);
        }
    }
    m.extend_from_slice(&[57, 2]);
    m.extend_from_slice(&MAX_MESSAGE.to_be_bytes());
    m.push(55);
    m.push(REQUESTED_OPTIONS.len() as u8);
    m.extend_from_slice(&REQUESTED_OPTIONS);
    m.push(255);
    // Some servers drop messages shorter than a BOOTP packet (300 bytes).
    if m.len() < 300 {
        m.resize(300, 0);
    }
    m
}

fn ip4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// Walk one option area, concatenating repeated options (RFC 3396) into `out` in order.
fn walk(area: &[u8], what: &str, out: &mut Vec<(u8, Vec<u8>)>) -> Result<(), DhcpError> {
    let mut i = 0;
    loop {
        let Some(&code) = area.get(i) else {
            return Err(DhcpError::Malformed(format!(
                "the {what} ends without the end option (255)"
            )));
        };
        match code {
            255 => return Ok(()),
            0 => i += 1,
            _ => {
                let len = *area.get(i + 1).ok_or_else(|| {
                    DhcpError::Malformed(format!(
                        "option {code} at byte {i} of the {what} has no length"
                    ))
                })? as usize;
                let v = area.get(i + 2..i + 2 + len).ok_or_else(|| {
                    DhcpError::Malformed(format!(
                        "option {code} at byte {i} of the {what}: length {len} runs past its end ({} bytes)",
                        area.len()
                    ))
                })?;
                match out.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, data)) => data.extend_from_slice(v),
                    None => out.push((code, v.to_vec())),
                }
                i += 2 + len;
            }
        }
    }
}

fn one_ip(code: u8, v: &[u8]) -> Result<Ipv4Addr, DhcpError> {
    if v.len() != 4 {
        return Err(bad(code, format!("length {} (expected 4)", v.len())));
    }
    Ok(ip4(v))
}

fn ip_list(code: u8, v: &[u8]) -> Result<Vec<Ipv4Addr>, DhcpError> {
    if v.is_empty() || !v.len().is_multiple_of(4) {
        return Err(bad(
            code,
            format!("length {} (expected a positive multiple of 4)", v.len()),
        ));
    }
    Ok(v.chunks(4).map(ip4).collect())
}

fn u32_opt(code: u8, v: &[u8]) -> Result<u32, DhcpError> {
    match v {
        [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(bad(code, format!("length {} (expected 4)", v.len()))),
    }
}

/// One DNS label: letters, digits, '-' and '_' (what a resolv.conf line can carry safely).
fn check_label(l: &[u8]) -> Result<(), String> {
    if l.is_empty() || l.len() > 63 {
        return Err(format!("label of {} bytes (1 to 63 allowed)", l.len()));
    }
    if let Some(c) = l
        .iter()
        .find(|c| !(c.is_ascii_alphanumeric() || **c == b'-' || **c == b'_'))
    {
        return Err(format!("byte {c:#04x} in a name"));
    }
    Ok(())
}

/// A domain name in text (option 15): labels separated by dots, an optional final dot; trailing
/// NULs (some servers send C strings) are dropped.
pub fn domain_text(v: &[u8]) -> Result<String, String> {
    let mut end = v.len();
    while end > 0 && v[end - 1] == 0 {
        end -= 1;
    }
    let v = &v[..end];
    let v = v.strip_suffix(b".").unwrap_or(v);
    if v.is_empty() || v.len() > 253 {
        return Err(format!("a name of {} bytes (1 to 253 allowed)", v.len()));
    }
    for l in v.split(|c| *c == b'.') {
        check_label(l)?;
    }
    Ok(String::from_utf8_lossy(v).into_owned())
}

/// One name in DNS wire format starting at `start` of the (concatenated) option 119 data, with
/// compression pointers into earlier bytes of that data; returns the name and where the next
/// name starts.
fn wire_name(v: &[u8], start: usize) -> Result<(String, usize), String> {
    let mut labels: Vec<String> = Vec::new();
    let mut pos = start;
    let mut next = None;
    let mut jumps = 0;
    let mut total = 0usize;
    loop {
        let l = *v
            .get(pos)
            .ok_or(format!("name at byte {start} is truncated"))?;
        match l {
            0 => {
                pos += 1;
                break;
            }
            l if l & 0xc0 == 0xc0 => {
                let lo = *v
                    .get(pos + 1)
                    .ok_or(format!("compression pointer at byte {pos} is truncated"))?;
                let target = (usize::from(l & 0x3f) << 8) | usize::from(lo);
                if target >= pos {
                    return Err(format!(
                        "compression pointer at byte {pos} points forward (to {target})"
                    ));
                }
                jumps += 1;
                if jumps > 32 {
                    return Err(format!("name at byte {start}: compression loop"));
                }
                next.get_or_insert(pos + 2);
                pos = target;
            }
            l if l & 0xc0 != 0 => {
                return Err(format!("reserved label type {l:#04x} at byte {pos}"));
            }
            l => {
                let len = usize::from(l);
                let label = v
                    .get(pos + 1..pos + 1 + len)
                    .ok_or(format!("label at byte {pos} is truncated"))?;
                check_label(label)?;
                total += len + 1;
                if total > 254 {
                    return Err(format!("name at byte {start} is longer than 253 bytes"));
                }
                labels.push(String::from_utf8_lossy(label).into_owned());
                pos += 1 + len;
            }
        }
    }
    if labels.is_empty() {
        return Err(format!("the root name at byte {start} is no search domain"));
    }
    Ok((labels.join("."), next.unwrap_or(pos)))
}

/// Option 119 (RFC 3397): a list of names in DNS wire format.
pub fn search_list(v: &[u8]) -> Result<Vec<String>, String> {
    if v.is_empty() {
        return Err("empty".into());
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let (name, next) = wire_name(v, i)?;
        out.push(name);
        i = next;
    }
    Ok(out)
}

/// Option 121 (RFC 3442): descriptors of a prefix length, the significant octets of the
/// destination and a router (0.0.0.0: on-link).
pub fn classless_routes(v: &[u8]) -> Result<Vec<Route>, DhcpError> {
    let err = |index, offset, reason: String| DhcpError::Route {
        index,
        offset,
        reason,
    };
    if v.len() < 5 {
        return Err(bad(
            121,
            format!("length {} (at least 5: one route)", v.len()),
        ));
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let index = out.len();
        let width = v[i];
        if width > 32 {
            return Err(err(index, i, format!("prefix length {width} > 32")));
        }
        let significant = usize::from(width).div_ceil(8);
        let need = 1 + significant + 4;
        let d = v.get(i..i + need).ok_or_else(|| {
            err(
                index,
                i,
                format!(
                    "truncated: /{width} needs {need} bytes, {} left",
                    v.len() - i
                ),
            )
        })?;
        let mut dest = [0u8; 4];
        dest[..significant].copy_from_slice(&d[1..1 + significant]);
        let dest_u = u32::from_be_bytes(dest);
        let dest = Ipv4Addr::from(dest_u);
        if dest_u & !prefix_mask(width) != 0 {
            return Err(err(
                index,
                i,
                format!("destination {dest} has bits set past /{width}"),
            ));
        }
        let gw = ip4(&d[1 + significant..]);
        if gw.is_broadcast() || gw.is_multicast() {
            return Err(err(
                index,
                i,
                format!("router {gw} is not a unicast address"),
            ));
        }
        out.push(Route {
            dest,
            prefix: width,
            gateway: (!gw.is_unspecified()).then_some(gw),
        });
        i += need;
    }
    Ok(out)
}

fn decode(raw: &[(u8, Vec<u8>)]) -> Result<(u8, Options), DhcpError> {
    let mut kind = 0;
    let mut o = Options::default();
    for (code, v) in raw {
        let code = *code;
        match code {
            53 => match v.as_slice() {
                [k] => kind = *k,
                _ => return Err(bad(53, format!("length {} (expected 1)", v.len()))),
            },
            1 => {
                let m = one_ip(1, v)?;
                mask_prefix(m).ok_or_else(|| bad(1, format!("netmask {m} is not contiguous")))?;
                o.mask = Some(m);
            }
            3 => o.routers = ip_list(3, v)?,
            6 => o.dns = ip_list(6, v)?,
            15 => o.domain = Some(domain_text(v).map_err(|e| bad(15, e))?),
            26 => match v.as_slice() {
                [a, b] => {
                    let mtu = u16::from_be_bytes([*a, *b]);
                    // RFC 2132 9.4: at least 68; nacre will not shrink a link below IPv4's 576.
                    if mtu < 576 {
                        return Err(bad(26, format!("MTU {mtu} (at least 576 accepted)")));
                    }
                    o.mtu = Some(mtu);
                }
                _ => return Err(bad(26, format!("length {} (expected 2)", v.len()))),
            },
            51 => o.lease_s = Some(u32_opt(51, v)?),
            54 => o.server = Some(one_ip(54, v)?),
            58 => o.t1_s = Some(u32_opt(58, v)?),
            59 => o.t2_s = Some(u32_opt(59, v)?),
            119 => o.search = search_list(v).map_err(|e| bad(119, e))?,
            121 => o.classless = Some(classless_routes(v)?),
            _ => {}
        }
    }
    Ok((kind, o))
}

/// Is this a reply to our `xid` and `mac`? (Anything else on port 68 is someone else's.)
fn ours(b: &[u8], xid: u32, mac: [u8; 6]) -> bool {
    b.len() >= 240
        && b[0] == 2
        && b[4..8] == xid.to_be_bytes()
        && b[28..34] == mac
        && b[236..240] == MAGIC
}

/// Parse a server reply: `Ok(None)` for a message that is not a reply to `xid` and `mac`;
/// an error for one that is, but is malformed (it must then be ignored, never used).
pub fn parse(b: &[u8], xid: u32, mac: [u8; 6]) -> Result<Option<Reply>, DhcpError> {
    if !ours(b, xid, mac) {
        return Ok(None);
    }
    if b[1] != 1 || b[2] != 6 {
        return Err(DhcpError::Malformed(format!(
            "hardware type {} length {} (expected Ethernet, 6)",
            b[1], b[2]
        )));
    }
    let mut raw = Vec::new();
    walk(&b[240..], "options field", &mut raw)?;
    // Option overload (52): more options in `file` (1), `sname` (2) or both (3), read after
    // the options field, `file` before `sname` (RFC 3396 section 7).
    if let Some((_, v)) = raw.iter().find(|(c, _)| *c == 52) {
        let o = match v.as_slice() {
            [o @ 1..=3] => *o,
            _ => return Err(bad(52, format!("value {v:?} (expected 1, 2 or 3)"))),
        };
        let mut more = Vec::new();
        if o & 1 != 0 {
            walk(&b[108..236], "file field (overloaded)", &mut more)?;
        }
        if o & 2 != 0 {
            walk(&b[44..108], "sname field (overloaded)", &mut more)?;
        }
        for (code, v) in more {
            match raw.iter_mut().find(|(c, _)| *c == code) {
                Some((_, data)) => data.extend_from_slice(&v),
                None => raw.push((code, v)),
            }
        }
    }
    let (kind, options) = decode(&raw)?;
    if kind == 0 {
        return Err(bad(53, "missing"));
    }
    Ok(Some(Reply {
        kind,
        xid,
        yiaddr: ip4(&b[16..20]),
        options,
    }))
}

/// The prefix length of a contiguous netmask.
pub fn mask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let p = m.leading_ones();
    (m.checked_shl(p).unwrap_or(0) == 0).then_some(p as u8)
}

/// What the server gave, validated, with the routes to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// The default route's gateway (from option 121 when present, else option 3).
    pub router: Option<Ipv4Addr>,
    pub server: Ipv4Addr,
    /// `None`: infinite (no lease time, or 0xffffffff).
    pub lease_s: Option<u32>,
    /// Effective T1 and T2 (options 58/59 or 0.5 and 0.875 of the lease).
    pub t1_s: Option<u32>,
    pub t2_s: Option<u32>,
    /// Routes to install in this order (on-link ones first, so that gateways are reachable);
    /// the kernel's own subnet route is not repeated.
    pub routes: Vec<Route>,
    /// The routes came from option 121 (option 3 was ignored).
    pub classless: bool,
    pub mtu: Option<u16>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub search: Vec<String>,
}

impl Lease {
    /// Validate an ACK into a lease.
    pub fn from_reply(r: &Reply) -> Result<Lease, DhcpError> {
        let o = &r.options;
        let mask = o
            .mask
            .ok_or_else(|| DhcpError::Lease("the ACK has no subnet mask".into()))?;
        let prefix =
            mask_prefix(mask).ok_or_else(|| bad(1, format!("netmask {mask} is not contiguous")))?;
        if prefix == 0 {
            return Err(bad(1, "netmask 0.0.0.0"));
        }
        let a = r.yiaddr;
        if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
            return Err(DhcpError::Lease(format!("unusable address {a}")));
        }
        let server = o
            .server
            .ok_or_else(|| DhcpError::Lease("the ACK has no server identifier".into()))?;
        let lease_s = o.lease_s.filter(|s| *s != u32::MAX);
        let (t1_s, t2_s) = match lease_s {
            None => (None, None),
            Some(l) => {
                let t1 = o.t1_s.unwrap_or(l / 2);
                let t2 = o
                    .t2_s
                    .unwrap_or((u64::from(l) * 7 / 8).try_into().unwrap_or(l));
                if !(t1 <= t2 && t2 <= l) {
                    return Err(bad(
                        58,
                        format!("T1 {t1} s, T2 {t2} s, lease {l} s: not T1 <= T2 <= lease"),
                    ));
                }
                (Some(t1), Some(t2))
            }
        };
        let subnet = u32::from(a) & prefix_mask(prefix);
        let on_subnet = |g: Ipv4Addr| u32::from(g) & prefix_mask(prefix) == subnet;
        let mut routes = Vec::new();
        let classless = o.classless.is_some();
        match &o.classless {
            // RFC 3442: with option 121, option 3 is ignored.
            Some(rs) => routes.extend(rs.iter().copied()),
            None => {
                if let Some(g) = o.routers.iter().copied().find(|g| !g.is_unspecified()) {
                    // A router outside the leased prefix (a /32 lease without option 121):
                    // reach it on-link, as the classless GCE lease says explicitly.
                    if !on_subnet(g) {
                        routes.push(Route {
                            dest: g,
                            prefix: 32,
                            gateway: None,
                        });
                    }
                    routes.push(Route {
                        dest: Ipv4Addr::UNSPECIFIED,
                        prefix: 0,
                        gateway: Some(g),
                    });
                }
            }
        }
        // The kernel adds the subnet route with the address: do not repeat it.
        routes.retain(|r| {
            !(r.gateway.is_none() && r.prefix == prefix && u32::from(r.dest) == subnet)
        });
        for r in &routes {
            if r.gateway == Some(a) {
                return Err(bad(121, format!("route {r} goes through our own address")));
            }
        }
        // On-link routes first: a gateway must be reachable when its route is added.
        routes.sort_by_key(|r| r.gateway.is_some());
        let router = routes
            .iter()
            .find(|r| r.prefix == 0)
            .and_then(|r| r.gateway);
        Ok(Lease {
            address: a,
            prefix,
            router,
            server,
            lease_s,
            t1_s,
            t2_s,
            routes,
            classless,
            mtu: o.mtu,
            dns: o.dns.clone(),
            domain: o.domain.clone(),
            search: o.search.clone(),
        })
    }

    /// T1, T2 and the lease time as durations (`None`: infinite lease, nothing to renew).
    pub fn timers(&self) -> Option<(Duration, Duration, Duration)> {
        let s = |v: u32| Duration::from_secs(u64::from(v));
        Some((s(self.t1_s?), s(self.t2_s?), s(self.lease_s?)))
    }

    /// One line for logs.
    pub fn describe(&self) -> String {
        let mut s = format!("{}/{} from {}", self.address, self.prefix, self.server);
        if let Some(r) = self.router {
            s += &format!(", router {r}");
        }
        match (self.lease_s, self.t1_s, self.t2_s) {
            (Some(l), Some(t1), Some(t2)) => {
                s += &format!(", lease {l} s (renew at {t1} s, rebind at {t2} s)")
            }
            _ => s += ", lease unlimited",
        }
        if !self.routes.is_empty() {
            s += &format!(
                ", routes{} {}",
                if self.classless { " (option 121)" } else { "" },
                self.routes
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(m) = self.mtu {
            s += &format!(", MTU {m}");
        }
        if !self.dns.is_empty() {
            s += &format!(
                ", DNS {}",
                self.dns
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        if let Some(d) = &self.domain {
            s += &format!(", domain {d}");
        }
        if !self.search.is_empty() {
            s += &format!(", search {}", self.search.join(" "));
        }
        s
    }
}

/// The resolv.conf for a lease: up to three name servers (the resolver's limit), the search
/// list (option 119, else the domain name of option 15).
pub fn resolv_conf(lease: &Lease, ifname: &str) -> String {
    let mut s = format!(
        "# nacre-init: from the DHCP lease of {} on {ifname} (server {})\n",
        lease.address, lease.server
    );
    for d in lease.dns.iter().take(3) {
        s += &format!("nameserver {d}\n");
    }
    if !lease.search.is_empty() {
        s += &format!("search {}\n", lease.search.join(" "));
    } else if let Some(d) = &lease.domain {
        s += &format!("search {d}\n");
    }
    s
}

/// A UDP socket on port 68 bound to `ifname`, allowed to broadcast.
fn socket(ifname: &str) -> Result<UdpSocket, DhcpError> {
    use std::os::fd::FromRawFd;
    let err = |what: &'static str| DhcpError::Socket {
        ifname: ifname.to_string(),
        what,
        err: std::io::Error::last_os_error().to_string(),
    };
    // SAFETY: plain socket calls on a descriptor this function owns; sizes match the types.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(err("socket"));
        }
        let sock = UdpSocket::from_raw_fd(fd);
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

fn new_xid() -> Result<u32, DhcpError> {
    use ring::rand::SecureRandom;
    let mut x = [0u8; 4];
    ring::rand::SystemRandom::new()
        .fill(&mut x)
        .map_err(|_| DhcpError::Random)?;
    Ok(u32::from_be_bytes(x))
}

/// Receive one datagram (200 ms timeout): `Ok(None)` on timeout.
fn recv(sock: &UdpSocket, ifname: &str, buf: &mut [u8]) -> Result<Option<usize>, DhcpError> {
    match sock.recv_from(buf) {
        Ok((n, _)) => Ok(Some(n)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(DhcpError::Socket {
            ifname: ifname.into(),
            what: "receive",
            err: e.to_string(),
        }),
    }
}

fn open(ifname: &str) -> Result<UdpSocket, DhcpError> {
    let sock = socket(ifname)?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| DhcpError::Socket {
            ifname: ifname.into(),
            what: "SO_RCVTIMEO",
            err: e.to_string(),
        })?;
    Ok(sock)
}

/// DISCOVER/OFFER/REQUEST/ACK on `ifname` (up), retrying every 2 s until `timeout`. Returns
/// the lease and when its REQUEST was sent (the lease's times count from then). Malformed
/// replies are refused (the last refusal is named if no lease comes).
pub fn acquire(
    ifname: &str,
    mac: [u8; 6],
    timeout: Duration,
) -> Result<(Lease, Instant), DhcpError> {
    let sock = open(ifname)?;
    let xid = new_xid()?;
    let deadline = Instant::now() + timeout;
    let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let mut req = Request::Discover;
    let mut next_send = Instant::now();
    let mut sent_at = Instant::now();
    let mut refused: Option<DhcpError> = None;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        if Instant::now() >= next_send {
            sent_at = Instant::now();
            let _ = sock.send_to(&build(xid, mac, req), to);
            next_send = Instant::now() + Duration::from_secs(2);
        }
        let Some(n) = recv(&sock, ifname, &mut buf)? else {
            continue;
        };
        let r = match parse(&buf[..n], xid, mac) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                refused = Some(e);
                continue;
            }
        };
        match (r.kind, req) {
            (OFFER, Request::Discover) => {
                let Some(server) = r.options.server else {
                    refused = Some(DhcpError::Lease(
                        "an OFFER without server identifier".into(),
                    ));
                    continue;
                };
                req = Request::Select {
                    address: r.yiaddr,
                    server,
                };
                sent_at = Instant::now();
                let _ = sock.send_to(&build(xid, mac, req), to);
                next_send = Instant::now() + Duration::from_secs(2);
            }
            (ACK, Request::Select { address, .. }) if r.yiaddr == address => {
                match Lease::from_reply(&r) {
                    Ok(l) => return Ok((l, sent_at)),
                    Err(e) => {
                        // Fail closed: never use it; start over.
                        refused = Some(e);
                        req = Request::Discover;
                        next_send = Instant::now() + Duration::from_secs(1);
                    }
                }
            }
            (NAK, Request::Select { .. }) => {
                req = Request::Discover;
                next_send = Instant::now();
            }
            _ => {}
        }
    }
    let mut detail = match req {
        Request::Select { address, server } => {
            format!("offered {address} by {server}, never acknowledged")
        }
        _ => "no offer".into(),
    };
    if let Some(e) = refused {
        detail += &format!("; refused: {e}");
    }
    Err(DhcpError::Timeout {
        ifname: ifname.into(),
        secs: timeout.as_secs(),
        detail,
    })
}

/// What a RENEWING or REBINDING exchange ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// An ACK (its address may differ from the one held: the caller decides), and when the
    /// REQUEST it answers was sent.
    Ack(Lease, Instant),
    /// A NAK from this server.
    Nak(Ipv4Addr),
    /// Nothing usable before the deadline (the last refused reply, if any).
    NoAnswer(Option<DhcpError>),
}

/// REQUESTs with `ciaddr = address` sent to `to` (the server in RENEWING, the broadcast address
/// in REBINDING) until `deadline`, retransmitted after half the remaining time (at least 2 s,
/// at most 60 s; RFC 2131 4.4.5).
pub fn renew(
    ifname: &str,
    mac: [u8; 6],
    address: Ipv4Addr,
    to: Ipv4Addr,
    deadline: Instant,
) -> Result<Renewal, DhcpError> {
    let sock = open(ifname)?;
    let xid = new_xid()?;
    let msg = build(xid, mac, Request::Renew { address });
    let to = SocketAddrV4::new(to, 67);
    let mut next_send = Instant::now();
    let mut sent_at = Instant::now();
    let mut refused = None;
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(Renewal::NoAnswer(refused));
        }
        if now >= next_send {
            sent_at = now;
            // A send error (no route yet, say) is like a lost packet: retry later.
            let _ = sock.send_to(&msg, to);
            let wait = (deadline.saturating_duration_since(now) / 2)
                .clamp(Duration::from_secs(2), Duration::from_secs(60));
            next_send = now + wait;
        }
        let Some(n) = recv(&sock, ifname, &mut buf)? else {
            continue;
        };
        match parse(&buf[..n], xid, mac) {
            Ok(Some(r)) if r.kind == ACK => match Lease::from_reply(&r) {
                Ok(l) => return Ok(Renewal::Ack(l, sent_at)),
                Err(e) => refused = Some(e),
            },
            Ok(Some(r)) if r.kind == NAK => {
                return Ok(Renewal::Nak(r.options.server.unwrap_or(*to.ip())))
            }
            Ok(_) => {}
            Err(e) => refused = Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// A server reply with these option bytes (after the magic cookie).
    fn reply_with(xid: u32, yiaddr: [u8; 4], options: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 236];
        b[0] = 2;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&xid.to_be_bytes());
        b[16..20].copy_from_slice(&yiaddr);
        b[28..34].copy_from_slice(&MAC);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(options);
        b
    }

    /// A server reply as QEMU's user-mode networking builds one.
    fn reply(kind: u8, xid: u32) -> Vec<u8> {
        let mut o = vec![53, 1, kind, 0, 54, 4, 10, 0, 2, 2, 1, 4, 255, 255, 255, 0];
        o.extend_from_slice(&[3, 4, 10, 0, 2, 2, 51, 4, 0, 1, 81, 128, 255]);
        reply_with(xid, [10, 0, 2, 15], &o)
    }

    /// The DHCPACK of systemd's DHCP client test (src/libsystemd-network/test-dhcp-client.c,
    /// `test_addr_acq_ack`, systemd v216-era): IPv4 + UDP headers, then the BOOTP message; the
    /// test writes the xid at byte 32 and the client's MAC at byte 56, as done here.
    fn systemd_ack(xid: u32) -> Vec<u8> {
        let mut p = vec![0u8; 328];
        let head: [u8; 56] = [
            0x45, 0x10, 0x01, 0x48, 0x00, 0x00, 0x00, 0x00, 0x80, 0x11, 0xb3, 0x84, 0xc0, 0xa8,
            0x02, 0x01, 0xc0, 0xa8, 0x02, 0xbf, 0x00, 0x43, 0x00, 0x44, 0x01, 0x34, 0x00, 0x00,
            0x02, 0x01, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0xc0, 0xa8, 0x02, 0xbf, 0xc0, 0xa8, 0x02, 0x01, 0x00, 0x00, 0x00, 0x00,
        ];
        p[..56].copy_from_slice(&head);
        let options: [u8; 48] = [
            0x63, 0x82, 0x53, 0x63, 0x35, 0x01, 0x05, 0x36, 0x04, 0xc0, 0xa8, 0x02, 0x01, 0x33,
            0x04, 0x00, 0x00, 0x02, 0x58, 0x01, 0x04, 0xff, 0xff, 0xff, 0x00, 0x2a, 0x04, 0xc0,
            0xa8, 0x02, 0x01, 0x0f, 0x09, 0x6c, 0x61, 0x62, 0x2e, 0x69, 0x6e, 0x74, 0x72, 0x61,
            0x03, 0x04, 0xc0, 0xa8, 0x02, 0x01,
        ];
        p[264..312].copy_from_slice(&options);
        p[312] = 0xff;
        p[32..36].copy_from_slice(&xid.to_be_bytes());
        p[56..62].copy_from_slice(&MAC);
        p
    }

    /// The GCE lease shape: a /32 address, the router reached through an on-link /32 route,
    /// the default route through it (option 121), option 3 naming another router (ignored),
    /// MTU 1460, two DNS servers, a domain and a compressed search list.
    fn gce_ack(xid: u32) -> Vec<u8> {
        let mut o = vec![
            53, 1, ACK, 54, 4, 169, 254, 169, 254, 51, 4, 0, 0, 0x0e, 0x10,
        ];
        o.extend_from_slice(&[1, 4, 255, 255, 255, 255, 3, 4, 10, 128, 0, 99]);
        // 121: 32 10.128.0.1 -> 0.0.0.0 ; 0 -> 10.128.0.1
        o.extend_from_slice(&[121, 14, 32, 10, 128, 0, 1, 0, 0, 0, 0, 0, 10, 128, 0, 1]);
        o.extend_from_slice(&[26, 2, 0x05, 0xb4, 6, 8, 169, 254, 169, 254, 8, 8, 8, 8]);
        o.extend_from_slice(&[15, 18]);
        o.extend_from_slice(b"c.nacre.internal\0\0");
        // 119: c.nacre.internal, google.internal (the second ends in a pointer to "internal").
        let mut s = vec![1, b'c', 5];
        s.extend_from_slice(b"nacre");
        s.push(8);
        s.extend_from_slice(b"internal");
        s.push(0);
        s.push(6);
        s.extend_from_slice(b"google");
        s.extend_from_slice(&[0xc0, 8]);
        o.push(119);
        o.push(s.len() as u8);
        o.extend_from_slice(&s);
        o.push(255);
        reply_with(xid, [10, 128, 0, 5], &o)
    }

    #[test]
    fn messages() {
        let d = build(0x01020304, MAC, Request::Discover);
        assert_eq!(d.len(), 300);
        assert_eq!(&d[..4], &[1, 1, 6, 0]);
        assert_eq!(&d[4..8], &[1, 2, 3, 4]);
        assert_eq!(&d[10..12], &[0x80, 0]);
        assert_eq!(&d[28..34], &MAC);
        assert_eq!(&d[236..243], &[99, 130, 83, 99, 53, 1, DISCOVER]);
        assert_eq!(&d[243..247], &[57, 2, 0x05, 0xdc]);
        assert_eq!(&d[247..249], &[55, 11]);
        assert_eq!(&d[249..260], &REQUESTED_OPTIONS);
        assert_eq!(d[260], 255);
        let r = build(
            7,
            MAC,
            Request::Select {
                address: ip("10.0.2.15"),
                server: ip("10.0.2.2"),
            },
        );
        assert_eq!(
            &r[240..253],
            &[53, 1, REQUEST, 50, 4, 10, 0, 2, 15, 54, 4, 10, 0]
        );
        // Renewing: ciaddr, no broadcast flag, no option 50/54.
        let n = build(
            9,
            MAC,
            Request::Renew {
                address: ip("10.128.0.5"),
            },
        );
        assert_eq!(&n[10..16], &[0, 0, 10, 128, 0, 5]);
        assert_eq!(&n[240..247], &[53, 1, REQUEST, 57, 2, 0x05, 0xdc]);
        let mut raw = Vec::new();
        walk(&n[240..], "request", &mut raw).unwrap();
        assert!(raw.iter().all(|(c, _)| *c != 50 && *c != 54));

        let ack = parse(&reply(ACK, 7), 7, MAC).unwrap().unwrap();
        assert_eq!(ack.kind, ACK);
        let l = Lease::from_reply(&ack).unwrap();
        assert_eq!(l.address, ip("10.0.2.15"));
        assert_eq!(l.prefix, 24);
        assert_eq!(l.router, Some(ip("10.0.2.2")));
        assert_eq!(l.server, ip("10.0.2.2"));
        assert_eq!(l.lease_s, Some(86400));
        assert_eq!((l.t1_s, l.t2_s), (Some(43200), Some(75600)));
        assert_eq!(
            l.routes,
            vec![Route {
                dest: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                gateway: Some(ip("10.0.2.2"))
            }]
        );
        assert!(!l.classless);
        // Another transaction, another client, a request: not ours.
        assert_eq!(parse(&reply(ACK, 8), 7, MAC), Ok(None));
        assert_eq!(parse(&reply(ACK, 7), 7, [0; 6]), Ok(None));
        assert_eq!(parse(&build(7, MAC, Request::Discover), 7, MAC), Ok(None));
        // Ours but truncated: refused, with the reason.
        let mut t = reply(ACK, 7);
        t.truncate(t.len() - 3);
        let e = parse(&t, 7, MAC).unwrap_err();
        assert!(
            e.to_string().contains("option 51 at byte") && e.to_string().contains("runs past"),
            "{e}"
        );
        let mut t = reply(ACK, 7);
        t.pop();
        assert!(parse(&t, 7, MAC)
            .unwrap_err()
            .to_string()
            .contains("without the end option"));
    }

    #[test]
    fn systemd_fixture() {
        let p = systemd_ack(0xdeadbeef);
        let r = parse(&p[28..], 0xdeadbeef, MAC).unwrap().unwrap();
        assert_eq!(r.kind, ACK);
        assert_eq!(r.yiaddr, ip("192.168.2.191"));
        assert_eq!(r.options.domain.as_deref(), Some("lab.intra"));
        let l = Lease::from_reply(&r).unwrap();
        assert_eq!(l.address, ip("192.168.2.191"));
        assert_eq!(l.prefix, 24);
        assert_eq!(l.router, Some(ip("192.168.2.1")));
        assert_eq!(l.server, ip("192.168.2.1"));
        assert_eq!(l.lease_s, Some(600));
        assert_eq!((l.t1_s, l.t2_s), (Some(300), Some(525)));
        assert!(l.dns.is_empty() && l.mtu.is_none());
        assert_eq!(
            resolv_conf(&l, "eth0"),
            "# nacre-init: from the DHCP lease of 192.168.2.191 on eth0 (server 192.168.2.1)\nsearch lab.intra\n"
        );
    }

    #[test]
    fn gce_lease() {
        let r = parse(&gce_ack(5), 5, MAC).unwrap().unwrap();
        assert_eq!(r.options.routers, vec![ip("10.128.0.99")]);
        let l = Lease::from_reply(&r).unwrap();
        assert_eq!(l.address, ip("10.128.0.5"));
        assert_eq!(l.prefix, 32);
        assert!(l.classless);
        assert_eq!(l.router, Some(ip("10.128.0.1")), "option 3 is ignored");
        assert_eq!(
            l.routes,
            vec![
                Route {
                    dest: ip("10.128.0.1"),
                    prefix: 32,
                    gateway: None
                },
                Route {
                    dest: Ipv4Addr::UNSPECIFIED,
                    prefix: 0,
                    gateway: Some(ip("10.128.0.1"))
                },
            ]
        );
        assert_eq!(l.mtu, Some(1460));
        assert_eq!(l.dns, vec![ip("169.254.169.254"), ip("8.8.8.8")]);
        assert_eq!(l.domain.as_deref(), Some("c.nacre.internal"));
        assert_eq!(l.search, vec!["c.nacre.internal", "google.internal"]);
        assert_eq!(
            (l.lease_s, l.t1_s, l.t2_s),
            (Some(3600), Some(1800), Some(3150))
        );
        assert_eq!(
            resolv_conf(&l, "eth0"),
            "# nacre-init: from the DHCP lease of 10.128.0.5 on eth0 (server 169.254.169.254)\n\
             nameserver 169.254.169.254\nnameserver 8.8.8.8\n\
             search c.nacre.internal google.internal\n"
        );
        let d = l.describe();
        assert!(
            d.contains("routes (option 121) 10.128.0.1/32 on-link, 0.0.0.0/0 via 10.128.0.1"),
            "{d}"
        );

        // A /32 lease with only option 3: the router is made reachable on-link.
        let mut o = vec![53, 1, ACK, 54, 4, 10, 128, 0, 1, 1, 4, 255, 255, 255, 255];
        o.extend_from_slice(&[3, 4, 10, 128, 0, 1, 255]);
        let l = Lease::from_reply(
            &parse(&reply_with(5, [10, 128, 0, 5], &o), 5, MAC)
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(l.routes.len(), 2);
        assert_eq!(l.routes[0].to_string(), "10.128.0.1/32 on-link");
        assert_eq!(l.routes[1].to_string(), "0.0.0.0/0 via 10.128.0.1");
        assert_eq!(l.lease_s, None, "no option 51: unlimited");
        assert!(l.timers().is_none());
    }

    /// A real DHCPACK from dnsmasq 2.90 (see the header of the fixture file).
    #[test]
    fn dnsmasq_fixture() {
        let text = include_str!("testdata/dnsmasq-gce-ack.hex");
        let hex: String = text.lines().filter(|l| !l.starts_with('#')).collect();
        let b: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let xid = u32::from_be_bytes(b[4..8].try_into().unwrap());
        let r = parse(&b, xid, MAC).unwrap().unwrap();
        assert_eq!(r.kind, ACK);
        assert_eq!(r.options.routers, vec![ip("10.128.0.99")]);
        let l = Lease::from_reply(&r).unwrap();
        assert_eq!(
            l.describe(),
            "10.128.0.5/32 from 10.128.0.1, router 10.128.0.1, lease 120 s (renew at 10 s, \
             rebind at 105 s), routes (option 121) 10.128.0.1/32 on-link, 0.0.0.0/0 via \
             10.128.0.1, MTU 1460, DNS 10.128.0.1 10.128.0.2, domain c.nacre.internal, search \
             c.nacre.internal google.internal"
        );
        // Every truncation of it is refused or not ours, never a lease.
        for n in 0..b.len() - 1 {
            if let Ok(Some(r)) = parse(&b[..n], xid, MAC) {
                panic!("truncated to {n} bytes, still parsed: {r:?}");
            }
        }
    }

    #[test]
    fn classless_fixtures() {
        // From dracut's PR #585 (dhclient's decimal form): "0,10,0,0,1,16,169,254,0,0,0,0".
        let r = classless_routes(&[0, 10, 0, 0, 1, 16, 169, 254, 0, 0, 0, 0]).unwrap();
        assert_eq!(r[0].to_string(), "0.0.0.0/0 via 10.0.0.1");
        assert_eq!(r[1].to_string(), "169.254.0.0/16 on-link");
        // From systemd issue #40147 (a networkd SendOption=121 value).
        let r = classless_routes(&[
            0x18, 0xc0, 0xa8, 0x02, 0x0a, 0x00, 0x00, 0xff, 0x00, 0x0a, 0x00, 0x00, 0x01,
        ])
        .unwrap();
        assert_eq!(r[0].to_string(), "192.168.2.0/24 via 10.0.0.255");
        assert_eq!(r[1].to_string(), "0.0.0.0/0 via 10.0.0.1");
        // RFC 3442's examples of destination encodings.
        let r = classless_routes(&[
            25, 129, 210, 177, 128, 1, 2, 3, 4, 9, 10, 0, 1, 2, 3, 4, 32, 10, 17, 0, 1, 0, 0, 0, 0,
        ])
        .unwrap();
        assert_eq!(r[0].to_string(), "129.210.177.128/25 via 1.2.3.4");
        assert_eq!(r[1].to_string(), "10.0.0.0/9 via 1.2.3.4");
        assert_eq!(r[2].to_string(), "10.17.0.1/32 on-link");
    }

    #[test]
    fn malformed_classless() {
        // dhcpdump PR #3's malformed example (prefix length 0xf4).
        let e =
            classless_routes(&[0xf4, 0xc0, 0xa8, 0x02, 0x04, 0xc0, 0xa8, 0x01, 0xfd]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "DHCP option 121 (classless static routes), route 0 at byte 0: prefix length 244 > 32"
        );
        // 33.
        assert!(matches!(
            classless_routes(&[33, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
            Err(DhcpError::Route { index: 0, .. })
        ));
        // A second descriptor cut short.
        let e = classless_routes(&[0, 10, 0, 0, 1, 24, 192, 168]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "DHCP option 121 (classless static routes), route 1 at byte 5: truncated: /24 needs 8 bytes, 3 left"
        );
        // Too short for one route; bits past the prefix; a broadcast router.
        assert!(matches!(
            classless_routes(&[0, 10, 0, 0]),
            Err(DhcpError::Option { code: 121, .. })
        ));
        assert!(classless_routes(&[8, 10, 0, 0, 0])
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        assert!(classless_routes(&[9, 10, 192, 1, 2, 3, 4])
            .unwrap_err()
            .to_string()
            .contains("destination 10.192.0.0 has bits set past /9"));
        assert!(classless_routes(&[0, 255, 255, 255, 255])
            .unwrap_err()
            .to_string()
            .contains("not a unicast"));
        // Inside a whole reply: the reply is refused, not half-used.
        let mut g = gce_ack(5);
        let at = g.windows(3).position(|w| w == [121, 14, 32]).unwrap();
        g[at + 2] = 40;
        assert!(matches!(
            parse(&g, 5, MAC),
            Err(DhcpError::Route { index: 0, .. })
        ));
    }

    #[test]
    fn malformed_options() {
        let cases: &[(&[u8], &str)] = &[
            (&[1, 3, 255, 255, 255], "option 1 (subnet mask): length 3"),
            (&[1, 4, 255, 0, 255, 0], "not contiguous"),
            (&[3, 5, 1, 2, 3, 4, 5], "option 3 (routers): length 5"),
            (&[6, 0], "option 6 (DNS servers): length 0"),
            (&[26, 1, 5], "option 26 (interface MTU): length 1"),
            (&[26, 2, 0, 67], "MTU 67"),
            (&[51, 2, 0, 1], "option 51 (lease time): length 2"),
            (&[54, 3, 1, 2, 3], "option 54 (server identifier): length 3"),
            (&[15, 4, b'a', b'\n', b'b', b'c'], "byte 0x0a in a name"),
            (&[15, 3, b'a', b'.', b'.'], "label of 0 bytes"),
            (&[119, 3, 1, b'a', 0xc0], "truncated"),
            (&[119, 4, 0xc0, 0, 0, 0], "points forward"),
            (&[119, 1, 0], "root name"),
            (&[119, 3, 1, b' ', 0], "byte 0x20"),
            (&[52, 1, 4], "option 52 (option overload)"),
            (&[58, 4, 0, 0, 0x10, 0], "not T1 <= T2 <= lease"),
        ];
        for (opt, want) in cases {
            // The valid options, without the one under test (a repeated option would be
            // concatenated to it, RFC 3396).
            let base: [&[u8]; 4] = [
                &[53, 1, ACK],
                &[54, 4, 10, 0, 0, 1],
                &[51, 4, 0, 0, 0x0e, 0x10],
                &[1, 4, 255, 255, 255, 0],
            ];
            let mut o: Vec<u8> = base
                .iter()
                .filter(|b| b[0] != opt[0])
                .flat_map(|b| b.iter().copied())
                .collect();
            o.extend_from_slice(opt);
            o.push(255);
            let res = parse(&reply_with(3, [10, 0, 0, 5], &o), 3, MAC)
                .and_then(|r| Lease::from_reply(&r.unwrap()));
            let e = res.expect_err(want).to_string();
            assert!(e.contains(want), "{opt:?}: {e} (wanted {want})");
        }
        // No mask, no server id, no message type.
        let no_mask = reply_with(3, [10, 0, 0, 5], &[53, 1, ACK, 54, 4, 10, 0, 0, 1, 255]);
        let r = parse(&no_mask, 3, MAC).unwrap().unwrap();
        assert!(Lease::from_reply(&r).is_err());
        assert!(matches!(
            parse(
                &reply_with(3, [10, 0, 0, 5], &[1, 4, 255, 0, 0, 0, 255]),
                3,
                MAC
            ),
            Err(DhcpError::Option { code: 53, .. })
        ));
    }

    #[test]
    fn long_options_and_overload() {
        // RFC 3396: option 6 split in two; option 121 continued in the `file` field through
        // option overload.
        let mut b = reply_with(
            4,
            [10, 0, 0, 5],
            &[
                53, 1, ACK, 52, 1, 1, 54, 4, 10, 0, 0, 1, 1, 4, 255, 255, 255, 0, 6, 4, 1, 1, 1, 1,
                6, 4, 8, 8, 8, 8, 121, 3, 0, 10, 0, 255,
            ],
        );
        b[108..113].copy_from_slice(&[121, 2, 0, 1, 255]);
        let r = parse(&b, 4, MAC).unwrap().unwrap();
        assert_eq!(r.options.dns, vec![ip("1.1.1.1"), ip("8.8.8.8")]);
        assert_eq!(
            r.options.classless,
            Some(vec![Route {
                dest: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                gateway: Some(ip("10.0.0.1"))
            }])
        );
        // The overloaded field without an end option: refused.
        b[112] = 0;
        b[108..236].iter_mut().skip(4).for_each(|x| *x = 7);
        assert!(parse(&b, 4, MAC).is_err());
    }

    #[test]
    fn search_lists() {
        assert_eq!(
            search_list(&[3, b'e', b'n', b'g', 0]).unwrap(),
            vec!["eng".to_string()]
        );
        // RFC 3397's example: eng.apple.com., marketing.apple.com. (pointer to "apple").
        let mut v = vec![3];
        v.extend_from_slice(b"eng");
        v.push(5);
        v.extend_from_slice(b"apple");
        v.push(3);
        v.extend_from_slice(b"com");
        v.push(0);
        v.push(9);
        v.extend_from_slice(b"marketing");
        v.extend_from_slice(&[0xc0, 4]);
        assert_eq!(
            search_list(&v).unwrap(),
            vec![
                "eng.apple.com".to_string(),
                "marketing.apple.com".to_string()
            ]
        );
        // A pointer to itself.
        assert!(search_list(&[1, b'a', 0xc0, 0]).is_err());
        assert!(domain_text(b"a.b.").is_ok());
        assert!(domain_text(b"a b").is_err());
        assert!(domain_text(b"").is_err());
    }

    #[test]
    fn netmasks() {
        assert_eq!(mask_prefix(ip("255.255.255.0")), Some(24));
        assert_eq!(mask_prefix(ip("255.255.255.255")), Some(32));
        assert_eq!(mask_prefix(ip("0.0.0.0")), Some(0));
        assert_eq!(mask_prefix(ip("255.0.255.0")), None);
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(9), 0xff80_0000);
        assert_eq!(prefix_mask(32), u32::MAX);
    }
}
