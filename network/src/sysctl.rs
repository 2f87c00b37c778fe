//! The few kernel settings the node's routing depends on, written under `/proc/sys` (of the
//! calling thread's network namespace) and read back.
//!
//! - **Ingress filtering**: strict reverse-path filtering (`net.ipv4.conf.{all,default,
//!   <underlay>}.rp_filter = 1`). For every packet it receives, the kernel looks up the route
//!   back to the packet's source (with the same policy rules) and drops the packet unless that
//!   route leaves through the interface it arrived on (counted as `TcpExt: IPReversePathFilter`
//!   in `/proc/net/netstat`). A cluster source routes through wg0 (table
//!   [`crate::WG_TABLE`]; the own pod range through `cni0`), so a packet "from" a peer's overlay
//!   or pod address that arrives on the underlay is dropped, while the same packet through
//!   wg0 (where WireGuard already checked it against the peer's allowed IPs) is accepted; when
//!   wg0 is absent or down the route back is `unreachable` and everything with a cluster source
//!   is dropped. The kernel applies the larger of `all` and the interface's value, so `all = 1`
//!   covers interfaces created later (wg0, cni0) too; `default` and the underlay's own are set
//!   for anyone reading them. IPv4 only (the kernel has no IPv6 rp_filter).
//! - **Forwarding** (`net.ipv4.ip_forward = 1`) only on a node with a pod range: pods' packets
//!   are routed between `cni0` and wg0.

use std::path::{Path, PathBuf};

/// Where the kernel's settings are.
pub const PROC_SYS: &str = "/proc/sys";

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{}: wrote {wrote:?}, the kernel reports {read:?}", path.display())]
    NotApplied {
        path: PathBuf,
        wrote: String,
        read: String,
    },
    #[error("{0:?} is not an interface name")]
    Interface(String),
}

/// Write `value` to `root/<parts...>` and read it back (a setting the kernel clamps or
/// ignores is an error, not a silent weaker node).
pub fn set(root: &Path, parts: &[&str], value: &str) -> Result<(), SysctlError> {
    let path = parts.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    let io = |err| SysctlError::Io {
        path: path.clone(),
        err,
    };
    std::fs::write(&path, format!("{value}\n")).map_err(io)?;
    let read = std::fs::read_to_string(&path).map_err(io)?;
    if read.trim() != value {
        return Err(SysctlError::NotApplied {
            path,
            wrote: value.into(),
            read: read.trim().into(),
        });
    }
    Ok(())
}

/// The strict reverse-path filter on `all`, `default` and the underlay `underlay`, under
/// `root` ([`PROC_SYS`] on a node). Returns the settings written, for the log.
pub fn strict_rp_filter(root: &Path, underlay: &str) -> Result<Vec<String>, SysctlError> {
    // An interface name is one path component (IFNAMSIZ - 1 bytes, no '/').
    if underlay.is_empty()
        || underlay.len() > 15
        || underlay.contains('/')
        || underlay == "."
        || underlay == ".."
    {
        return Err(SysctlError::Interface(underlay.into()));
    }
    let mut done = Vec::new();
    for conf in ["all", "default", underlay] {
        set(root, &["net", "ipv4", "conf", conf, "rp_filter"], "1")?;
        done.push(format!("net.ipv4.conf.{conf}.rp_filter = 1"));
    }
    Ok(done)
}

/// `net.ipv4.ip_forward = 1` under `root`: for a node whose pods are routed.
pub fn enable_forwarding(root: &Path) -> Result<(), SysctlError> {
    set(root, &["net", "ipv4", "ip_forward"], "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/proc/sys` with the files the kernel has (and nothing else).
    fn fake(name: &str, ifaces: &[&str]) -> PathBuf {
        let root = std::env::temp_dir().join(format!("nacre-sysctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for i in ifaces {
            let d = root.join("net/ipv4/conf").join(i);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("rp_filter"), "2\n").unwrap();
        }
        std::fs::write(root.join("net/ipv4/ip_forward"), "0\n").unwrap();
        root
    }

    #[test]
    fn rp_filter_on_all_default_and_the_underlay() {
        let root = fake("ok", &["all", "default", "eth0", "lo"]);
        let done = strict_rp_filter(&root, "eth0").unwrap();
        assert_eq!(
            done,
            [
                "net.ipv4.conf.all.rp_filter = 1",
                "net.ipv4.conf.default.rp_filter = 1",
                "net.ipv4.conf.eth0.rp_filter = 1"
            ]
        );
        for i in ["all", "default", "eth0"] {
            let v = std::fs::read_to_string(root.join("net/ipv4/conf").join(i).join("rp_filter"));
            assert_eq!(v.unwrap(), "1\n", "{i}");
        }
        // Not touched: only the three named.
        let lo = std::fs::read_to_string(root.join("net/ipv4/conf/lo/rp_filter")).unwrap();
        assert_eq!(lo, "2\n");
        assert_eq!(
            std::fs::read_to_string(root.join("net/ipv4/ip_forward")).unwrap(),
            "0\n",
            "forwarding is separate"
        );
        enable_forwarding(&root).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("net/ipv4/ip_forward")).unwrap(),
            "1\n"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn errors_name_the_file() {
        // No such interface: the error names the file that is missing.
        let root = fake("missing", &["all", "default"]);
        let e = strict_rp_filter(&root, "eth9").unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}: ",
                root.join("net/ipv4/conf/eth9/rp_filter").display()
            )),
            "{e}"
        );
        for bad in ["", "..", "a/b", "sixteen-chars-xx"] {
            let e = strict_rp_filter(&root, bad).unwrap_err().to_string();
            assert_eq!(e, format!("{bad:?} is not an interface name"));
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
