//! What an unauthenticated client can cost the key service.
//!
//! Before a client's evidence is verified it is nobody: anything it can make the service hold or
//! write must be bounded by time, not by its traffic.
//!
//! * **A deadline per connection** ([`DeadlineStream`]): from accept to close, every read and
//!   write of a connection shares one deadline (default 20 s, `serve --connection-deadline`).
//!   Each I/O call sets the socket timeout to the time left (at most the idle timeout), so a
//!   client that trickles one byte a second is cut at the deadline whatever it sends.
//! * **Connections per source** ([`SourceSlots`]): at most `per_source` connections in flight
//!   per source (default 8, `serve --max-per-source`; an IPv4 address, or an IPv6 /64, which one
//!   host usually holds whole), and at most `max_in_flight` overall (256). The excess is closed
//!   at accept, before any TLS. One attacker address therefore holds at most `per_source` slots,
//!   each for at most the deadline: good clients from other addresses are not delayed by it.
//!   An attacker with `max_in_flight / per_source` (32) addresses or more can still fill the
//!   global limit; each slot is then freed at the latest after the deadline, so a booting node
//!   that retries gets in within about one deadline, but the service cannot tell such clients
//!   from nodes before they attest: that case needs filtering in front of the service (the
//!   underlay's firewall, a cloud load balancer's limits).
//! * **Unauthenticated events counted, not committed one by one** ([`EventBudget`]): aborted
//!   handshakes, TLS errors, refused attestations, per-source and in-flight rejections. In each
//!   window (default 60 s) the first `full_per_source` (5) events of a source and at most
//!   `full_total` (64) in all are recorded in full; the rest are only counted and written at the
//!   end of the window as one summary decision per source ("N more <kind> from <source> in the
//!   last 60 s"; beyond `summary_sources` (16) sources, one more decision sums up the others).
//!   The decision log thus grows by at most `full_total + summary_sources + 1` (81) records per
//!   window, whatever the traffic. Decisions on authenticated clients (joins, disk keys, the
//!   service's own refusals of attested nodes) are still recorded one by one.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The limits on unauthenticated clients (see the module documentation).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// From accept to close.
    pub deadline: Duration,
    /// The longest one read or write may wait (within the deadline).
    pub idle: Duration,
    /// Connections in flight per source (IPv4 address or IPv6 /64).
    pub per_source: usize,
    /// Connections in flight overall.
    pub max_in_flight: usize,
    /// The period of the unauthenticated event budget and of its summaries.
    pub log_window: Duration,
    /// Unauthenticated events recorded in full per source per window.
    pub full_per_source: u32,
    /// Unauthenticated events recorded in full per window, all sources together.
    pub full_total: u32,
    /// Sources given their own summary per window; the others share one.
    pub summary_sources: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            deadline: Duration::from_secs(20),
            idle: crate::server::IO_TIMEOUT,
            per_source: 8,
            max_in_flight: crate::server::MAX_IN_FLIGHT,
            log_window: Duration::from_secs(60),
            full_per_source: 5,
            full_total: 64,
            summary_sources: 16,
        }
    }
}

/// Sources tracked per window at most (memory bound); more are counted as one.
const MAX_TRACKED_SOURCES: usize = 4096;

/// The source a limit applies to: the IPv4 address, or the /64 of an IPv6 address.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A TCP stream whose reads and writes all end at one deadline.
pub struct DeadlineStream {
    sock: TcpStream,
    deadline: Instant,
    total: Duration,
    idle: Duration,
}

impl DeadlineStream {
    pub fn new(sock: TcpStream, total: Duration, idle: Duration) -> Self {
        DeadlineStream {
            sock,
            deadline: Instant::now() + total,
            total,
            idle,
        }
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.sock
    }

    fn expired(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "connection deadline of {} s passed",
                self.total.as_secs_f64()
            ),
        )
    }

    /// The timeout for the next call, or the deadline's error.
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.expired());
        }
        Ok(left.min(self.idle))
    }

    fn timed_out(&self, e: io::Error) -> io::Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                if Instant::now() >= self.deadline {
                    self.expired()
                } else {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("nothing for {} s", self.idle.as_secs_f64()),
                    )
                }
            }
            _ => e,
        }
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = self.left()?;
        self.sock.set_read_timeout(Some(t))?;
        self.sock.read(buf).map_err(|e| self.timed_out(e))
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let t = self.left()?;
        self.sock.set_write_timeout(Some(t))?;
        self.sock.write(buf).map_err(|e| self.timed_out(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The source already has `per_source` connections in flight.
    Source(usize),
    /// `max_in_flight` connections are in flight.
    Overload(usize),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Source(n) => {
                write!(f, "more than {n} connections in flight from this source")
            }
            Rejected::Overload(n) => write!(f, "more than {n} connections in flight"),
        }
    }
}

#[derive(Default)]
struct Slots {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// Connections in flight, overall and per source.
pub struct SourceSlots {
    per_source: usize,
    max: usize,
    inner: Mutex<Slots>,
}

/// A connection's slot, given back when dropped.
pub struct Slot {
    slots: Arc<SourceSlots>,
    source: IpAddr,
}

impl SourceSlots {
    pub fn new(per_source: usize, max: usize) -> Arc<Self> {
        Arc::new(SourceSlots {
            per_source,
            max,
            inner: Mutex::new(Slots::default()),
        })
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Rejected> {
        let source = source_of(ip);
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if s.total >= self.max {
            return Err(Rejected::Overload(self.max));
        }
        let n = s.by_source.entry(source).or_insert(0);
        if *n >= self.per_source {
            return Err(Rejected::Source(self.per_source));
        }
        *n += 1;
        s.total += 1;
        Ok(Slot {
            slots: self.clone(),
            source,
        })
    }

    pub fn in_flight(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self
            .slots
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                s.by_source.remove(&self.source);
            }
        }
    }
}

/// One summary decision: events counted but not recorded in full in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The source, or `None` for the sources beyond `summary_sources` together.
    pub source: Option<IpAddr>,
    /// How many sources this sums up (1 for a named source).
    pub sources: usize,
    /// Events by kind.
    pub counts: BTreeMap<String, u64>,
    pub window: Duration,
}

impl Summary {
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// "12 more aborted, 3 more tls from 192.0.2.7 in the last 60 s".
    pub fn detail(&self) -> String {
        let kinds: Vec<String> = self
            .counts
            .iter()
            .map(|(k, n)| format!("{n} more {k}"))
            .collect();
        let from = match self.source {
            Some(ip) => ip.to_string(),
            None => format!("{} other sources", self.sources),
        };
        format!(
            "{} from {from} in the last {} s (unauthenticated, counted, not recorded one by one)",
            kinds.join(", "),
            self.window.as_secs()
        )
    }
}

#[derive(Default)]
struct SourceCount {
    full: u32,
    suppressed: BTreeMap<String, u64>,
}

struct Window {
    started: Instant,
    full: u32,
    sources: HashMap<IpAddr, SourceCount>,
    /// Events of sources beyond MAX_TRACKED_SOURCES.
    untracked: BTreeMap<String, u64>,
    untracked_sources: usize,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            started: now,
            full: 0,
            sources: HashMap::new(),
            untracked: BTreeMap::new(),
            untracked_sources: 0,
        }
    }
}

/// The budget of unauthenticated events recorded in full (see the module documentation).
pub struct EventBudget {
    limits: ConnectionLimits,
    window: Mutex<Window>,
}

impl EventBudget {
    pub fn new(limits: ConnectionLimits) -> Self {
        EventBudget {
            limits,
            window: Mutex::new(Window::new(Instant::now())),
        }
    }

    /// An unauthenticated event of `kind` from `ip`: true if it is to be recorded in full,
    /// false if it was only counted.
    pub fn note(&self, ip: IpAddr, kind: &str) -> bool {
        let source = source_of(ip);
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let tracked = w.sources.len() < MAX_TRACKED_SOURCES || w.sources.contains_key(&source);
        if !tracked {
            *w.untracked.entry(kind.to_string()).or_insert(0) += 1;
            w.untracked_sources += 1;
            return false;
        }
        let full_left = w.full < self.limits.full_total;
        let c = w.sources.entry(source).or_default();
        if full_left && c.full < self.limits.full_per_source {
            c.full += 1;
            w.full += 1;
            true
        } else {
            *c.suppressed.entry(kind.to_string()).or_insert(0) += 1;
            false
        }
    }

    /// The summaries of the window if it is over (or of whatever was counted, with `force`),
    /// and a new window.
    pub fn take_due(&self, force: bool) -> Vec<Summary> {
        let now = Instant::now();
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if !force && now.duration_since(w.started) < self.limits.log_window {
            return Vec::new();
        }
        let old = std::mem::replace(&mut *w, Window::new(now));
        drop(w);
        let window = self.limits.log_window;
        let mut per: Vec<(IpAddr, BTreeMap<String, u64>)> = old
            .sources
            .into_iter()
            .filter(|(_, c)| !c.suppressed.is_empty())
            .map(|(ip, c)| (ip, c.suppressed))
            .collect();
        per.sort_by_key(|(ip, c)| (std::cmp::Reverse(c.values().sum::<u64>()), *ip));
        let mut out = Vec::new();
        let mut rest = Summary {
            source: None,
            sources: old.untracked_sources,
            counts: old.untracked,
            window,
        };
        for (i, (ip, counts)) in per.into_iter().enumerate() {
            if i < self.limits.summary_sources {
                out.push(Summary {
                    source: Some(ip),
                    sources: 1,
                    counts,
                    window,
                });
            } else {
                rest.sources += 1;
                for (k, n) in counts {
                    *rest.counts.entry(k).or_insert(0) += n;
                }
            }
        }
        if !rest.counts.is_empty() {
            out.push(rest);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            full_per_source: 2,
            full_total: 5,
            summary_sources: 2,
            ..ConnectionLimits::default()
        }
    }

    #[test]
    fn slots_per_source_and_overall() {
        let s = SourceSlots::new(2, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = s.admit(a).unwrap();
        let _a2 = s.admit(a).unwrap();
        assert_eq!(s.admit(a).err(), Some(Rejected::Source(2)));
        let _b1 = s.admit(b).unwrap();
        assert_eq!(s.admit(b).err(), Some(Rejected::Overload(3)));
        drop(a1);
        assert!(s.admit(a).is_ok());
        // One IPv6 /64 is one source.
        let s = SourceSlots::new(1, 10);
        let _x = s.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(s.admit("2001:db8::2".parse().unwrap()).is_err());
        assert!(s.admit("2001:db8:0:1::2".parse().unwrap()).is_ok());
    }

    #[test]
    fn events_beyond_the_budget_are_summarised() {
        let b = EventBudget::new(limits());
        let ips: Vec<IpAddr> = (1..=4)
            .map(|i| format!("192.0.2.{i}").parse().unwrap())
            .collect();
        let mut full = 0;
        for _ in 0..10 {
            for ip in &ips {
                full += b.note(*ip, "aborted") as u32;
            }
        }
        assert_eq!(full, 5, "the total budget");
        assert!(b.take_due(false).is_empty(), "the window is not over");
        let s = b.take_due(true);
        // Two named sources and one summary of the other two: every event accounted for.
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[2].source, None);
        assert_eq!(s[2].sources, 2);
        assert_eq!(s.iter().map(Summary::total).sum::<u64>() + full as u64, 40);
        assert!(
            s[0].detail().contains("more aborted from 192.0.2."),
            "{}",
            s[0].detail()
        );
        // A new window: the budget is back.
        assert!(b.note(ips[0], "tls"));
        assert!(b.take_due(true).is_empty());
    }
}
