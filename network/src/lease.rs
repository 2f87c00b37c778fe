//! A DHCP lease on the underlay, applied and kept: the MTU (option 26), the address, the routes
//! (option 121 or 3) over rtnetlink, and `/run/nacre/resolv.conf` (options 6, 15, 119) for the
//! node's services (the root is read-only; kubelet's `resolvConf` points there), written
//! atomically (temporary file + rename).
//!
//! [`spawn_keeper`] renews the lease in a thread (RFC 2131 4.4.5): at T1 a REQUEST unicast to
//! the server, at T2 broadcast to any server; an ACK for the same address updates the lease
//! (routes, MTU and resolv.conf follow changes). A NAK, an ACK for another address, or the lease
//! running out without an ACK: the address is **removed** from the interface (RFC 2131: the
//! client must stop using it; with it go its routes), which is logged clearly, and discovery
//! starts again until a new lease is applied. A node without its underlay address cannot reach
//! its peers or the key service, so this fails closed; wg0 and the cluster routing stay as they
//! are. The thread never panics and logs every error; it ends only with an infinite lease.

use crate::cidr::Cidr;
use crate::dhcp::{self, Lease, Renewal, Route};
use crate::nl::NlError;
use crate::rtnl::{self, Rtnl};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the node's resolver configuration is written.
pub const RESOLV_CONF: &str = "/run/nacre/resolv.conf";

/// How long one discovery attempt runs after a lease was lost.
const REDISCOVER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{what}: {err}")]
    Netlink { what: String, err: NlError },
    #[error("{path}: {err}")]
    Write { path: String, err: std::io::Error },
    #[error("the lease {address} overlaps the cluster range {range}")]
    ClusterOverlap { address: Cidr, range: Cidr },
    #[error("{0}")]
    Address(String),
}

fn nl<T>(r: Result<T, NlError>, what: impl FnOnce() -> String) -> Result<T, LeaseError> {
    r.map_err(|err| LeaseError::Netlink { what: what(), err })
}

/// A lease held on an interface, for [`spawn_keeper`].
#[derive(Debug, Clone)]
pub struct Bound {
    pub ifname: String,
    pub index: u32,
    pub mac: [u8; 6],
    pub lease: Lease,
    /// When the REQUEST that got the lease was sent: T1, T2 and the lease count from here.
    pub at: Instant,
    /// A new lease inside one of these is refused (cluster traffic only goes through wg0).
    pub cluster_ranges: Vec<Cidr>,
    /// Where resolv.conf goes ([`RESOLV_CONF`]).
    pub resolv_conf: PathBuf,
}

/// The address as a prefix.
pub fn address_of(l: &Lease) -> Result<Cidr, LeaseError> {
    Cidr::new(IpAddr::V4(l.address), l.prefix).map_err(|e| LeaseError::Address(e.to_string()))
}

fn route_cidr(r: &Route) -> Result<Cidr, LeaseError> {
    Cidr::new(IpAddr::V4(r.dest), r.prefix).map_err(|e| LeaseError::Address(e.to_string()))
}

/// Refuse a lease whose address lies in a cluster range.
pub fn check_cluster_ranges(l: &Lease, ranges: &[Cidr]) -> Result<(), LeaseError> {
    let address = address_of(l)?;
    match ranges.iter().find(|r| r.overlaps(&address.network())) {
        Some(r) => Err(LeaseError::ClusterOverlap { address, range: *r }),
        None => Ok(()),
    }
}

/// Write `text` to `path` atomically: a temporary file in the same directory, synced, renamed.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), LeaseError> {
    use std::io::Write;
    let err = |err| LeaseError::Write {
        path: path.display().to_string(),
        err,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

/// Apply `new` on link `index`, given the lease applied before (`None`: nothing is, or the
/// address was removed): MTU, address, routes (removing those the new lease no longer has),
/// resolv.conf. Returns what changed, for the log.
pub fn apply(
    rt: &mut Rtnl,
    index: u32,
    ifname: &str,
    new: &Lease,
    old: Option<&Lease>,
    resolv_conf: &Path,
) -> Result<Vec<String>, LeaseError> {
    let mut changed = Vec::new();
    if let Some(mtu) = new.mtu {
        if old.and_then(|o| o.mtu) != Some(mtu) {
            nl(rt.set_mtu(index, u32::from(mtu)), || {
                format!("setting {ifname}'s MTU to {mtu}")
            })?;
            changed.push(format!("MTU {mtu}"));
        }
    }
    let address = address_of(new)?;
    let same_address = old.is_some_and(|o| o.address == new.address && o.prefix == new.prefix);
    if !same_address {
        nl(rt.add_address(index, &address, true), || {
            format!("adding {address} to {ifname}")
        })?;
        changed.push(format!("address {address}"));
    }
    let src = Some(IpAddr::V4(new.address));
    if !same_address || old.map(|o| &o.routes) != Some(&new.routes) {
        for r in &new.routes {
            let dst = route_cidr(r)?;
            nl(
                rt.replace_route(rtnl::dhcp_route_message(
                    &dst,
                    r.gateway.map(IpAddr::V4),
                    index,
                    src,
                )),
                || format!("route {r} dev {ifname}"),
            )?;
        }
        if let Some(o) = old {
            for r in o.routes.iter().filter(|r| !new.routes.contains(r)) {
                let dst = route_cidr(r)?;
                // Gone already (with an address change): fine.
                let _ = rt.del_route(rtnl::dhcp_route_message(
                    &dst,
                    r.gateway.map(IpAddr::V4),
                    index,
                    None,
                ));
                changed.push(format!("route {r} removed"));
            }
        }
        changed.push(if new.routes.is_empty() {
            "no routes".to_string()
        } else {
            format!(
                "routes {}",
                new.routes
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    }
    let text = dhcp::resolv_conf(new, ifname);
    if old.map(|o| dhcp::resolv_conf(o, ifname)) != Some(text.clone()) {
        write_atomic(resolv_conf, &text)?;
        changed.push(format!("{}", resolv_conf.display()));
    }
    Ok(changed)
}

/// Remove the lease's address (and with it the kernel's routes through it).
fn drop_address(b: &Bound, log: &dyn Fn(&str)) {
    let result = address_of(&b.lease).and_then(|a| {
        let mut rt = nl(Rtnl::open(), || "opening rtnetlink".into())?;
        nl(rt.del_address(b.index, &a), || {
            format!("removing {a} from {}", b.ifname)
        })
    });
    match result {
        Ok(()) => log(&format!(
            "DHCP: removed {}/{} from {}",
            b.lease.address, b.lease.prefix, b.ifname
        )),
        Err(e) => log(&format!("DHCP: error: {e}")),
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Renew the lease in a thread named `dhcp` for as long as the node runs.
///
/// The thread starts with every signal blocked: PID 1 takes SIGCHLD, SIGTERM, ... on a
/// signalfd in its main thread, and a process-directed signal the kernel handed to this thread
/// instead (where SIGCHLD is ignored) would be lost: a service's exit unnoticed.
pub fn spawn_keeper(
    b: Bound,
    log: impl Fn(&str) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    // SAFETY: sigfillset and pthread_sigmask on signal sets owned by this function.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        old
    };
    let spawned = std::thread::Builder::new()
        .name("dhcp".into())
        .spawn(move || keep(b, &log));
    // SAFETY: restores this thread's mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    spawned
}

/// One renewal phase (RENEWING towards `to` until `until`), retried on socket errors.
fn phase(b: &Bound, to: Ipv4Addr, until: Instant, log: &dyn Fn(&str)) -> Renewal {
    loop {
        if Instant::now() >= until {
            return Renewal::NoAnswer(None);
        }
        match dhcp::renew(&b.ifname, b.mac, b.lease.address, to, until) {
            Ok(r) => return r,
            Err(e) => {
                log(&format!("DHCP: error: {e} (retrying in 2 s)"));
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
}

fn keep(mut b: Bound, log: &dyn Fn(&str)) {
    // The last apply failed: the next one starts from scratch (routes, MTU, resolv.conf).
    let mut dirty = false;
    loop {
        let Some((t1, t2, end)) = b.lease.timers() else {
            log(&format!(
                "DHCP: the lease of {} is unlimited: nothing to renew",
                b.lease.address
            ));
            return;
        };
        sleep_until(b.at + t1);
        log(&format!(
            "DHCP: renewing {} with {} (T1 {} s)",
            b.lease.address,
            b.lease.server,
            t1.as_secs()
        ));
        let mut outcome = phase(&b, b.lease.server, b.at + t2, log);
        if let Renewal::NoAnswer(refused) = &outcome {
            log(&format!(
                "DHCP: no answer from {} by T2 ({} s){}: rebinding (broadcast)",
                b.lease.server,
                t2.as_secs(),
                refused
                    .as_ref()
                    .map(|e| format!(", refused: {e}"))
                    .unwrap_or_default()
            ));
            outcome = phase(&b, Ipv4Addr::BROADCAST, b.at + end, log);
        }
        match outcome {
            Renewal::Ack(new, at)
                if new.address == b.lease.address && new.prefix == b.lease.prefix =>
            {
                let changes = Rtnl::open()
                    .map_err(|err| LeaseError::Netlink {
                        what: "opening rtnetlink".into(),
                        err,
                    })
                    .and_then(|mut rt| {
                        apply(
                            &mut rt,
                            b.index,
                            &b.ifname,
                            &new,
                            (!dirty).then_some(&b.lease),
                            &b.resolv_conf,
                        )
                    });
                dirty = changes.is_err();
                match changes {
                    Ok(c) => log(&format!(
                        "DHCP: lease renewed: {}{}",
                        new.describe(),
                        if c.is_empty() {
                            String::new()
                        } else {
                            format!("; changed: {}", c.join("; "))
                        }
                    )),
                    // The address is still valid: keep it, apply everything again at the next T1.
                    Err(e) => log(&format!("DHCP: lease renewed, but applying it failed: {e}")),
                }
                b.lease = new;
                b.at = at;
                continue;
            }
            Renewal::Ack(new, _) => {
                log(&format!(
                    "DHCP: the renewal gave {}/{} instead of {}/{}: dropping the old address, restarting discovery",
                    new.address, new.prefix, b.lease.address, b.lease.prefix
                ));
            }
            Renewal::Nak(server) => {
                log(&format!(
                    "DHCP: NAK from {server} for {}: dropping it, restarting discovery",
                    b.lease.address
                ));
            }
            Renewal::NoAnswer(refused) => {
                log(&format!(
                    "DHCP: LEASE EXPIRED: {}/{} on {} was not renewed within its {} s lease (server {}){}: removing the address (RFC 2131), restarting discovery",
                    b.lease.address,
                    b.lease.prefix,
                    b.ifname,
                    end.as_secs(),
                    b.lease.server,
                    refused
                        .map(|e| format!(", last refused reply: {e}"))
                        .unwrap_or_default()
                ));
            }
        }
        drop_address(&b, log);
        b = rediscover(b, log);
        dirty = false;
    }
}

/// Discovery until a lease is acquired and applied (from scratch: the old address is gone).
fn rediscover(mut b: Bound, log: &dyn Fn(&str)) -> Bound {
    loop {
        let (lease, at) = match dhcp::acquire(&b.ifname, b.mac, REDISCOVER_TIMEOUT) {
            Ok(x) => x,
            Err(e) => {
                log(&format!("DHCP: {e}; trying again"));
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
        };
        if let Err(e) = check_cluster_ranges(&lease, &b.cluster_ranges) {
            log(&format!("DHCP: refused: {e}; trying again in 10 s"));
            std::thread::sleep(Duration::from_secs(10));
            continue;
        }
        let applied = Rtnl::open()
            .map_err(|err| LeaseError::Netlink {
                what: "opening rtnetlink".into(),
                err,
            })
            .and_then(|mut rt| apply(&mut rt, b.index, &b.ifname, &lease, None, &b.resolv_conf));
        match applied {
            Ok(_) => {
                if lease.address != b.lease.address {
                    log(&format!(
                        "DHCP: the underlay address changed from {} to {}: wg0's peers still know the old one",
                        b.lease.address, lease.address
                    ));
                }
                log(&format!("DHCP: new lease: {}", lease.describe()));
                b.lease = lease;
                b.at = at;
                return b;
            }
            Err(e) => {
                log(&format!(
                    "DHCP: applying the new lease failed: {e}; trying again in 10 s"
                ));
                std::thread::sleep(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_is_replaced_atomically() {
        let dir = std::env::temp_dir().join(format!("nacre-lease-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("run/nacre/resolv.conf");
        write_atomic(&path, "nameserver 10.0.0.1\n").unwrap();
        write_atomic(&path, "nameserver 10.0.0.2\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "nameserver 10.0.0.2\n"
        );
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("resolv.conf")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cluster_overlap() {
        let lease = Lease {
            address: "10.244.1.5".parse().unwrap(),
            prefix: 24,
            router: None,
            server: "10.244.1.1".parse().unwrap(),
            lease_s: None,
            t1_s: None,
            t2_s: None,
            routes: vec![],
            classless: false,
            mtu: None,
            dns: vec![],
            domain: None,
            search: vec![],
        };
        let ranges = ["10.244.0.0/16".parse().unwrap()];
        assert!(matches!(
            check_cluster_ranges(&lease, &ranges),
            Err(LeaseError::ClusterOverlap { .. })
        ));
        assert!(check_cluster_ranges(&lease, &["10.96.0.0/12".parse().unwrap()]).is_ok());
    }
}
