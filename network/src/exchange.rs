//! `peers = "insecure-test-exchange"`: TEST ONLY, NOT SECURE. Each node sends its WireGuard
//! public key, overlay address and listen port in plain UDP to the configured underlay
//! addresses and waits for theirs. Anyone on the underlay can read and forge these messages:
//! this stands in for the attested key service so two test guests can build a tunnel. The
//! name is in the measured configuration, so a node using it is visible in its measurements.
//!
//! Protocol (one text datagram, both directions):
//! `nacre-insecure-test-exchange/1 key=<hex> overlay=<ip> port=<u16> ack=<0|1> want=<0|1>`
//! - `ack=1`: the sender has the receiver's details;
//! - `want=1`: the sender is not done with the receiver (it lacks its details or its ack);
//!   a message with `want=1` is answered at once, and so is the one that completes the
//!   exchange with its sender (so the sender can stop lingering).
//!
//! A node is done when it has every node's details and every node's ack; it then lingers a
//! moment to answer late `want=1` messages (unless every node's last message said `want=0`). Sends repeat every 500 ms; past the timeout the
//! step fails (the node stops).

use crate::cidr::Cidr;
use crate::config::TestExchangeConfig;
use crate::peers::{LocalNode, Peer, PeerError, PeerSource};
use crate::wg::{Key, KEY_LEN};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const MAGIC: &str = "nacre-insecure-test-exchange/1";
const RESEND: Duration = Duration::from_millis(500);
const LINGER: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub key: Key,
    pub overlay: IpAddr,
    pub port: u16,
    pub ack: bool,
    pub want: bool,
}

impl Hello {
    pub fn encode(&self) -> String {
        format!(
            "{MAGIC} key={} overlay={} port={} ack={} want={}",
            hex::encode(self.key),
            self.overlay,
            self.port,
            u8::from(self.ack),
            u8::from(self.want)
        )
    }

    pub fn decode(b: &[u8]) -> Result<Hello, String> {
        let s = std::str::from_utf8(b).map_err(|_| "not UTF-8".to_string())?;
        let mut it = s.split(' ');
        if it.next() != Some(MAGIC) {
            return Err("not an exchange message".into());
        }
        let mut field = |name: &str| -> Result<String, String> {
            let f = it.next().ok_or(format!("no {name}"))?;
            f.strip_prefix(name)
                .and_then(|v| v.strip_prefix('='))
                .map(str::to_string)
                .ok_or(format!("expected {name}=, got {f:?}"))
        };
        let flag = |v: String, name: &str| match v.as_str() {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(format!("{name}={v:?}")),
        };
        let mut key = [0u8; KEY_LEN];
        hex::decode_to_slice(field("key")?, &mut key).map_err(|e| format!("key: {e}"))?;
        let overlay = field("overlay")?
            .parse()
            .map_err(|e| format!("overlay: {e}"))?;
        let port = field("port")?.parse().map_err(|e| format!("port: {e}"))?;
        let ack = flag(field("ack")?, "ack")?;
        let want = flag(field("want")?, "want")?;
        if it.next().is_some() {
            return Err("trailing fields".into());
        }
        Ok(Hello {
            key,
            overlay,
            port,
            ack,
            want,
        })
    }
}

/// The exchange's state for a set of nodes (pure: the socket loop feeds it).
#[derive(Debug, Default)]
pub struct Exchange {
    nodes: Vec<IpAddr>,
    heard: BTreeMap<IpAddr, Hello>,
    acked: BTreeSet<IpAddr>,
}

impl Exchange {
    /// Some node's last message said it is not done with us (it may still need an answer).
    pub fn someone_waits(&self) -> bool {
        self.heard.values().any(|h| h.want)
    }
}

impl Exchange {
    pub fn new(nodes: &[IpAddr]) -> Self {
        Exchange {
            nodes: nodes.to_vec(),
            ..Default::default()
        }
    }

    fn finished_with(&self, n: &IpAddr) -> bool {
        self.heard.contains_key(n) && self.acked.contains(n)
    }

    pub fn done(&self) -> bool {
        self.nodes.iter().all(|n| self.finished_with(n))
    }

    /// Our message to node `n`.
    pub fn hello_to(&self, me: &LocalNode, n: &IpAddr) -> Hello {
        Hello {
            key: me.public_key,
            overlay: me.overlay,
            port: me.listen_port,
            ack: self.heard.contains_key(n),
            want: !self.finished_with(n),
        }
    }

    /// The nodes that still get periodic messages.
    pub fn pending(&self) -> Vec<IpAddr> {
        self.nodes
            .iter()
            .filter(|n| !self.finished_with(n))
            .copied()
            .collect()
    }

    /// A message from `from`: returns whether to answer it at once (it says `want=1`, or it
    /// just completed the exchange with `from`: the answer, `want=0`, lets `from` stop
    /// lingering). Messages from addresses that are not configured nodes are ignored (`Err`),
    /// and so are changed details from a node already heard.
    pub fn receive(&mut self, from: IpAddr, h: Hello) -> Result<bool, String> {
        if !self.nodes.contains(&from) {
            return Err(format!(
                "ignoring a message from {from}: not a configured node"
            ));
        }
        if let Some(old) = self.heard.get(&from) {
            if old.key != h.key || old.overlay != h.overlay || old.port != h.port {
                return Err(format!("{from} changed its details mid-exchange"));
            }
        }
        let was_finished = self.finished_with(&from);
        if h.ack {
            self.acked.insert(from);
        }
        let want = h.want;
        self.heard.insert(from, h);
        Ok(want || (!was_finished && self.finished_with(&from)))
    }

    pub fn peers(&self) -> Vec<Peer> {
        self.heard
            .iter()
            .map(|(ip, h)| Peer {
                public_key: h.key,
                endpoint: Some(SocketAddr::new(*ip, h.port)),
                allowed_ips: vec![Cidr::host(h.overlay)],
                name: ip.to_string(),
            })
            .collect()
    }

    pub fn missing(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| !self.finished_with(n))
            .map(|n| {
                format!(
                    "{n} ({})",
                    if self.heard.contains_key(n) {
                        "no ack"
                    } else {
                        "never heard"
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub struct TestExchange {
    cfg: TestExchangeConfig,
}

impl TestExchange {
    pub fn new(cfg: &TestExchangeConfig) -> Self {
        TestExchange { cfg: cfg.clone() }
    }
}

impl PeerSource for TestExchange {
    fn name(&self) -> &'static str {
        "insecure-test-exchange"
    }

    fn peers(&mut self, me: &LocalNode, log: &dyn Fn(&str)) -> Result<Vec<Peer>, PeerError> {
        let io = |what: &str, e: std::io::Error| PeerError::Source(format!("{what}: {e}"));
        let sock = UdpSocket::bind((me.underlay, self.cfg.port))
            .map_err(|e| io(&format!("binding {}:{}", me.underlay, self.cfg.port), e))?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| io("socket timeout", e))?;
        log(&format!(
            "insecure test exchange (NOT SECURE, test only): {} <-> {}",
            me.underlay,
            self.cfg
                .nodes
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let mut x = Exchange::new(&self.cfg.nodes);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(self.cfg.timeout_s);
        let mut linger_until: Option<Instant> = None;
        let mut next_send = start;
        let mut buf = [0u8; 512];
        let send = |x: &Exchange, n: &IpAddr| {
            let msg = x.hello_to(me, n).encode();
            // Errors (no ARP answer yet, the other guest not up) only mean: try again later.
            let _ = sock.send_to(msg.as_bytes(), (*n, self.cfg.port));
        };
        loop {
            let now = Instant::now();
            match linger_until {
                // Every node said it is done with us: nothing left to answer.
                Some(_) if !x.someone_waits() => break,
                Some(t) if now >= t => break,
                Some(_) => {}
                None if x.done() => {
                    log(&format!(
                        "insecure test exchange: all {} node(s) answered in {:.1} s",
                        self.cfg.nodes.len(),
                        start.elapsed().as_secs_f64()
                    ));
                    linger_until = Some(now + LINGER);
                }
                None if now >= deadline => {
                    return Err(PeerError::Source(format!(
                        "insecure test exchange: no answer within {} s from {}",
                        self.cfg.timeout_s,
                        x.missing()
                    )));
                }
                None => {
                    if now >= next_send {
                        for n in x.pending() {
                            send(&x, &n);
                        }
                        next_send = now + RESEND;
                    }
                }
            }
            match sock.recv_from(&mut buf) {
                Ok((len, src)) => {
                    if src.port() != self.cfg.port {
                        continue;
                    }
                    let h = match Hello::decode(&buf[..len]) {
                        Ok(h) => h,
                        Err(e) => {
                            log(&format!("insecure test exchange: from {src}: {e}"));
                            continue;
                        }
                    };
                    match x.receive(src.ip(), h) {
                        Ok(true) => send(&x, &src.ip()),
                        Ok(false) => {}
                        Err(e) => log(&format!("insecure test exchange: {e}")),
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                            | std::io::ErrorKind::ConnectionRefused
                    ) => {}
                Err(e) => return Err(io("receiving", e)),
            }
        }
        Ok(x.peers())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u8) -> (IpAddr, LocalNode) {
        let ip: IpAddr = format!("192.0.2.{i}").parse().unwrap();
        (
            ip,
            LocalNode {
                public_key: [i; 32],
                overlay: format!("10.244.0.{i}").parse().unwrap(),
                underlay: ip,
                listen_port: 51820,
                pod_range: None,
            },
        )
    }

    #[test]
    fn hello_roundtrip_and_strictness() {
        let h = Hello {
            key: [0xab; 32],
            overlay: "10.244.0.2".parse().unwrap(),
            port: 51820,
            ack: true,
            want: false,
        };
        let s = h.encode();
        assert!(s.starts_with("nacre-insecure-test-exchange/1 key=abab"));
        assert_eq!(Hello::decode(s.as_bytes()).unwrap(), h);
        for bad in [
            s.replace("/1", "/2"),
            s.replace("ack=1", "ack=2"),
            s.replace("key=ab", "key="),
            s.replace(" want=0", ""),
            format!("{s} extra=1"),
            s.replace("overlay=10.244.0.2", "overlay=x"),
            s.replace("port=51820", "port=70000"),
        ] {
            assert!(Hello::decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    /// Two nodes, with the first messages lost (the other guest was not up yet): both end
    /// with the other's details and neither answers forever.
    #[test]
    fn two_nodes_converge() {
        let (ip1, n1) = node(1);
        let (ip2, n2) = node(2);
        let mut a = Exchange::new(&[ip2]);
        let mut b = Exchange::new(&[ip1]);
        // a's periodic message is lost; b's reaches a.
        let m = b.hello_to(&n2, &ip1);
        assert!(!m.ack && m.want);
        assert!(a.receive(ip2, m).unwrap(), "a answers a want=1");
        let reply = a.hello_to(&n1, &ip2);
        assert!(reply.ack && reply.want);
        assert!(b.receive(ip1, reply).unwrap());
        assert!(b.done(), "b has a's details and a's ack");
        assert!(b.someone_waits(), "b lingers: its answer to a may be lost");
        let last = b.hello_to(&n2, &ip1);
        assert!(last.ack && !last.want);
        assert!(
            a.receive(ip2, last).unwrap(),
            "a answers once: it just finished"
        );
        assert!(a.done());
        assert!(!a.someone_waits(), "a does not linger: b is done");
        let bye = a.hello_to(&n1, &ip2);
        assert!(bye.ack && !bye.want);
        assert!(
            !b.receive(ip1, bye).unwrap(),
            "no answer to that: no ping-pong"
        );
        assert!(!b.someone_waits(), "b stops lingering");
        let p = a.peers();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].public_key, [2; 32]);
        assert_eq!(p[0].endpoint, Some("192.0.2.2:51820".parse().unwrap()));
        assert_eq!(p[0].allowed_ips, vec!["10.244.0.2/32".parse().unwrap()]);
        assert!(a.pending().is_empty());
    }

    #[test]
    fn strangers_and_key_changes_are_refused() {
        let (ip1, _) = node(1);
        let (ip2, n2) = node(2);
        let (ip3, n3) = node(3);
        let mut a = Exchange::new(&[ip2]);
        assert!(a
            .receive(ip3, Exchange::new(&[ip1]).hello_to(&n3, &ip1))
            .is_err());
        assert!(!a.done());
        a.receive(ip2, Exchange::new(&[ip1]).hello_to(&n2, &ip1))
            .unwrap();
        let mut forged = Exchange::new(&[ip1]).hello_to(&n2, &ip1);
        forged.key = [9; 32];
        assert!(a.receive(ip2, forged).unwrap_err().contains("changed"));
        assert!(a.missing().contains("192.0.2.2 (no ack)"));
    }
}
