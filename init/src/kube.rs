//! The node's Kubernetes configuration, rendered from the attested join (issue 11): the CNI
//! network containerd's CRI plugin attaches pods to, and kubelet's bootstrap kubeconfig,
//! `KubeletConfiguration`, API server CA and command-line flags.
//!
//! Everything is written under `/run/nacre` (tmpfs, fresh each boot) before any service starts;
//! the release image's services are pointed at these paths (containerd's `config.toml`:
//! [`CNI_CONF_DIR`]; kubelet's `args_file`: [`KUBELET_ARGS`]). The renderers are pure (tested on
//! the host, and every key they emit is checked against the upstream Go types in
//! `tests/fixtures/k8s/`); [`write`] is the thin part that puts them on disk, each file written
//! to a temporary name and renamed over the old one.
//!
//! - **CNI** (only when the join carries `pods`): `bridge` on `cni0` with the node's pod range
//!   (host-local IPAM, gateway = its first host), no masquerading (a pod's packets to another
//!   node keep their pod source, so the peer's WireGuard `allowed_ips` accept them), then
//!   `portmap` (hostPort). `loopback` is not listed: containerd's CRI plugin brings up each pod's
//!   `lo` itself (`cni.WithLoNetwork`, the `loopback` binary from the same plugin directory;
//!   that is why it waits for two networks). cniVersion 1.0.0, the newest that Debian
//!   bookworm's containernetworking-plugins 1.1.1 implements.
//! - **kubelet** (only when the join names an API server and its CA): it serves only on the
//!   node's overlay address (wg0), authenticates callers by client certificate (the cluster CA)
//!   or webhook, never anonymously, authorizes through the API server, bootstraps and rotates
//!   its client and serving certificates (kept on the state disk under `/var/lib/kubelet`),
//!   drives containerd with the cgroupfs driver (there is no systemd; containerd's runc must
//!   say `SystemdCgroup = false` too) and resolves through [`RESOLV_CONF`] (from DHCP).
//!   `protectKernelDefaults`: kubelet refuses to start unless the kernel settings it depends on
//!   are as it wants them, instead of changing them itself; nacre-init sets them
//!   ([`KERNEL_TUNABLES`]), so what kubelet may change on the node stays in nacre-init's hands.

use nacre_attestation::join::{Joined, KubeletJoin, PodNetwork};
use nacre_network::cidr::Cidr;
use serde_json::{json, Value};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[cfg(test)]
mod upstream;

/// containerd's CRI plugin reads its network from here (`conf_dir` in its `config.toml`).
pub const CNI_CONF_DIR: &str = "/run/nacre/cni/net.d";
pub const CNI_CONFLIST: &str = "/run/nacre/cni/net.d/10-nacre.conflist";
/// host-local's allocations (tmpfs: no pod survives a reboot, neither do its addresses).
pub const CNI_IPAM_DIR: &str = "/run/nacre/cni/ipam";
/// The node's pod bridge; its address is the first host of the pod range.
pub const CNI_BRIDGE: &str = "cni0";
/// The CNI network's name.
pub const CNI_NETWORK: &str = "nacre";
/// The pods' interface MTU: WireGuard's default on wg0 (1500 - 80), so a pod's full-size packet
/// to another node fits the tunnel without depending on path MTU discovery.
pub const POD_MTU: u16 = 1420;

pub const KUBE_DIR: &str = "/run/nacre/kubernetes";
pub const KUBELET_CONFIG: &str = "/run/nacre/kubernetes/kubelet-config.json";
pub const BOOTSTRAP_KUBECONFIG: &str = "/run/nacre/kubernetes/bootstrap-kubelet.conf";
/// kubelet's extra flags, one per line (the kubelet service's `args_file`).
pub const KUBELET_ARGS: &str = "/run/nacre/kubernetes/kubelet.args";
/// The API server's CA: kubelet's `clientCAFile` (who may call kubelet's API).
pub const API_SERVER_CA: &str = "/run/nacre/kubernetes/ca.crt";
/// The rotated client kubeconfig and certificates: on the state disk (kept across boots).
pub const KUBECONFIG: &str = "/var/lib/kubelet/kubeconfig";
pub const CERT_DIR: &str = "/var/lib/kubelet/pki";
pub const CONTAINERD_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";
pub const RESOLV_CONF: &str = nacre_network::lease::RESOLV_CONF;

/// The kernel settings kubelet checks with `protectKernelDefaults` (kubelet's own values:
/// `pkg/kubelet/cm/container_manager_linux.go` `setupKernelTunables`), under `/proc/sys`.
pub const KERNEL_TUNABLES: [(&str, &str); 6] = [
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// The CNI cluster name in the bootstrap kubeconfig, and its user and context.
const KUBECONFIG_CLUSTER: &str = "nacre";
const KUBECONFIG_USER: &str = "kubelet-bootstrap";
const KUBECONFIG_CONTEXT: &str = "kubelet-bootstrap@nacre";

/// kubelet in a release image that has one (scripts/build-image.sh --kubelet).
pub const KUBELET_BINARY: &str = "/usr/bin/kubelet";

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// A value of the join that cannot go into a configuration file.
    #[error("the join's {field} {value:?}: {reason}")]
    Join {
        field: &'static str,
        value: String,
        reason: String,
    },
    /// The image runs kubelet, and the join gives it nothing to join with.
    #[error("this image runs kubelet ({KUBELET_BINARY}), but {0}: the cluster's key service was initialized without --api-server/--api-server-ca")]
    NoKubelet(&'static str),
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Sysctl(#[from] nacre_network::sysctl::SysctlError),
}

fn bad(field: &'static str, value: &str, reason: impl Into<String>) -> KubeError {
    KubeError::Join {
        field,
        value: value.into(),
        reason: reason.into(),
    }
}

/// The node's address on the overlay (`10.244.0.3/32` → `10.244.0.3`): kubelet's address and
/// node IP.
pub fn node_ip(overlay: &str) -> Result<IpAddr, KubeError> {
    let c: Cidr = overlay
        .parse()
        .map_err(|e| bad("overlay", overlay, format!("{e}")))?;
    if c.addr().is_unspecified() || c.addr().is_loopback() {
        return Err(bad("overlay", overlay, "not a node address"));
    }
    Ok(c.addr())
}

/// The pod range and the cluster's pod range, checked: IPv4 networks (no host bits), the
/// node's inside the cluster's, with room for the gateway and at least one pod.
fn pod_ranges(p: &PodNetwork) -> Result<(Cidr, Cidr), KubeError> {
    let parse = |field: &'static str, v: &str| -> Result<Cidr, KubeError> {
        let c: Cidr = v.parse().map_err(|e| bad(field, v, format!("{e}")))?;
        if !c.is_ipv4() {
            return Err(bad(field, v, "only IPv4 pod ranges are supported"));
        }
        if !c.is_network() {
            return Err(bad(field, v, "host bits are set (not a network)"));
        }
        Ok(c)
    };
    let range = parse("pods.pod_range", &p.pod_range)?;
    let cidr = parse("pods.pod_cidr", &p.pod_cidr)?;
    if range.prefix() > 30 {
        return Err(bad(
            "pods.pod_range",
            &p.pod_range,
            "too small (at most /30: a gateway and a pod)",
        ));
    }
    if !cidr.covers(&range) {
        return Err(bad(
            "pods.pod_range",
            &p.pod_range,
            format!("not inside the cluster's pod range {cidr}"),
        ));
    }
    Ok((range, cidr))
}

/// The CNI network configuration list for the node's pod range.
pub fn cni_conflist(p: &PodNetwork) -> Result<Value, KubeError> {
    let (range, cidr) = pod_ranges(p)?;
    // Pods route the cluster's pod range and its service range (kube-proxy's DNAT on this node)
    // through the gateway, and nothing else: there is no masquerading, so a default route would
    // only send pod addresses out the underlay in clear (and the answers are dropped). Egress
    // beyond the cluster needs a NAT this node does not provide.
    let mut routes = vec![json!({ "dst": cidr.to_string() })];
    if let Some(v) = &p.service_cidr {
        let svc: Cidr = v
            .parse()
            .map_err(|e| bad("pods.service_cidr", v, format!("{e}")))?;
        if !svc.is_ipv4() || !svc.is_network() {
            return Err(bad(
                "pods.service_cidr",
                v,
                "not an IPv4 network (host bits set, or IPv6)",
            ));
        }
        routes.push(json!({ "dst": svc.to_string() }));
    }
    Ok(json!({
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": CNI_BRIDGE,
                "isGateway": true,
                "isDefaultGateway": false,
                "ipMasq": false,
                "hairpinMode": true,
                "mtu": POD_MTU,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": range.to_string() }]],
                    "routes": routes,
                    "dataDir": CNI_IPAM_DIR
                }
            },
            {
                "type": "portmap",
                "capabilities": { "portMappings": true }
            }
        ]
    }))
}

/// What kubelet gets: the files' contents.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeletFiles {
    pub config: Value,
    pub bootstrap_kubeconfig: Value,
    /// The API server's CA, PEM, as the service sent it.
    pub ca_pem: String,
    pub args: Vec<String>,
}

/// Whether kubelet can be configured from this join; `Err(reason)` for a join without an API
/// server or its CA (the node runs containerd only).
pub fn kubelet_parts(k: &KubeletJoin) -> Result<(&str, &str), &'static str> {
    match (k.api_server.as_deref(), k.api_server_ca.as_deref()) {
        (None, _) => Err("the join names no API server"),
        (Some(_), None) => Err("the join carries no API server CA"),
        (Some(s), Some(c)) => Ok((s, c)),
    }
}

/// kubelet's files for a join that names an API server and its CA. `resolv_conf`: the node's
/// resolver configuration (pods with `dnsPolicy: Default` get it; `None`: there is none, and
/// kubelet is told so with `resolvConf: ""` instead of reading a missing file).
pub fn kubelet_files(j: &Joined, resolv_conf: Option<&str>) -> Result<KubeletFiles, KubeError> {
    let k = &j.kubelet;
    let (server, ca) = kubelet_parts(k).map_err(|r| bad("kubelet", "", r))?;
    check_server(server)?;
    check_ca(ca)?;
    check_token(&k.bootstrap_token)?;
    check_node_name(&j.node)?;
    check_domain(&k.cluster_domain)?;
    let ip = node_ip(&j.overlay)?;
    let dns = match &k.cluster_dns {
        None => None,
        Some(d) => Some(
            d.parse::<IpAddr>()
                .map_err(|e| bad("kubelet.cluster_dns", d, format!("not an IP address: {e}")))?,
        ),
    };
    use base64::Engine;
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(ca.as_bytes());
    let mut config = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": ip.to_string(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "authentication": {
            "anonymous": { "enabled": false },
            "webhook": { "enabled": true },
            "x509": { "clientCAFile": API_SERVER_CA }
        },
        "authorization": { "mode": "Webhook" },
        "rotateCertificates": true,
        "serverTLSBootstrap": true,
        "tlsMinVersion": "VersionTLS13",
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": CONTAINERD_ENDPOINT,
        "resolvConf": resolv_conf.unwrap_or_default(),
        "clusterDomain": k.cluster_domain,
        "protectKernelDefaults": true
    });
    if let (Some(d), Some(o)) = (dns, config.as_object_mut()) {
        o.insert("clusterDNS".into(), json!([d.to_string()]));
    }
    let bootstrap_kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": KUBECONFIG_CLUSTER,
            "cluster": { "server": server, "certificate-authority-data": ca_b64 }
        }],
        "users": [{
            "name": KUBECONFIG_USER,
            "user": { "token": k.bootstrap_token }
        }],
        "contexts": [{
            "name": KUBECONFIG_CONTEXT,
            "context": { "cluster": KUBECONFIG_CLUSTER, "user": KUBECONFIG_USER }
        }],
        "current-context": KUBECONFIG_CONTEXT
    });
    let args = vec![
        format!("--config={KUBELET_CONFIG}"),
        format!("--bootstrap-kubeconfig={BOOTSTRAP_KUBECONFIG}"),
        format!("--kubeconfig={KUBECONFIG}"),
        format!("--cert-dir={CERT_DIR}"),
        format!("--node-ip={ip}"),
        format!("--hostname-override={}", j.node),
    ];
    Ok(KubeletFiles {
        config,
        bootstrap_kubeconfig,
        ca_pem: ca.to_string(),
        args,
    })
}

/// `https://host[:port][/path]`, printable, no whitespace.
fn check_server(s: &str) -> Result<(), KubeError> {
    let rest = s
        .strip_prefix("https://")
        .ok_or_else(|| bad("kubelet.api_server", s, "not an https:// URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(bad("kubelet.api_server", s, "no host"));
    }
    if s.len() > 2048 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "kubelet.api_server",
            s,
            "whitespace or control characters, or longer than 2048 bytes",
        ));
    }
    Ok(())
}

/// One or more PEM `CERTIFICATE` blocks whose bodies are base64 of DER SEQUENCEs; anything
/// else (a key, text around the blocks aside) is refused. Returns the certificates' DER.
fn check_ca(pem: &str) -> Result<Vec<Vec<u8>>, KubeError> {
    use base64::Engine;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let field = "kubelet.api_server_ca";
    let short = |s: &str| s.chars().take(64).collect::<String>();
    let mut certs = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        match (&mut body, line) {
            (None, BEGIN) => body = Some(String::new()),
            (None, l) if l.starts_with("-----BEGIN ") => {
                return Err(bad(field, &short(pem), format!("{l}: not a certificate")))
            }
            (None, _) => {}
            (Some(b), END) => {
                let der = base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(|e| {
                        bad(
                            field,
                            &short(pem),
                            format!("certificate {}: {e}", certs.len() + 1),
                        )
                    })?;
                if der.first() != Some(&0x30) {
                    return Err(bad(
                        field,
                        &short(pem),
                        format!("certificate {} is not DER", certs.len() + 1),
                    ));
                }
                certs.push(der);
                body = None;
            }
            (Some(b), l) => b.push_str(l),
        }
    }
    if body.is_some() {
        return Err(bad(
            field,
            &short(pem),
            "a certificate without its END line",
        ));
    }
    if certs.is_empty() {
        return Err(bad(field, &short(pem), "no PEM certificate"));
    }
    Ok(certs)
}

/// A kubeadm bootstrap token: `[a-z0-9]{6}.[a-z0-9]{16}`. Not echoed in errors.
fn check_token(t: &str) -> Result<(), KubeError> {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    match t.split_once('.') {
        Some((id, secret)) if ok(id, 6) && ok(secret, 16) => Ok(()),
        _ => Err(bad(
            "kubelet.bootstrap_token",
            "(not shown)",
            "not a bootstrap token ([a-z0-9]{6}.[a-z0-9]{16})",
        )),
    }
}

/// A DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63.
fn dns_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// A node name is a DNS-1123 subdomain (kubelet's `--hostname-override`).
fn check_node_name(n: &str) -> Result<(), KubeError> {
    if n.len() <= 253 && n.split('.').all(dns_label) {
        Ok(())
    } else {
        Err(bad("node", n, "not a DNS-1123 subdomain"))
    }
}

fn check_domain(d: &str) -> Result<(), KubeError> {
    if d.len() <= 253 && d.split('.').all(dns_label) {
        Ok(())
    } else {
        Err(bad("kubelet.cluster_domain", d, "not a DNS domain"))
    }
}

/// One flag a line.
pub fn args_text(args: &[String]) -> String {
    args.iter().map(|a| format!("{a}\n")).collect()
}

/// `path` under `root` (`/` on a node, a scratch directory in tests).
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> KubeError + '_ {
    move |err| KubeError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// A directory with exactly `mode` (created with its parents if missing).
fn ensure_dir(path: &Path, mode: u32) -> Result<(), KubeError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

/// `bytes` at `path` with `mode`: written to a temporary name beside it, synced, renamed over
/// it (a reader sees the old file or the whole new one).
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KubeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&tmp)(e)),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn json_bytes(v: &Value) -> Vec<u8> {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s.into_bytes()
}

/// Write `value` to `root/proc/sys/<name>` and read it back (nacre-network's sysctl writer).
fn set_tunable(root: &Path, name: &str, value: &str) -> Result<(), KubeError> {
    let parts: Vec<&str> = std::iter::once("proc/sys").chain(name.split('/')).collect();
    nacre_network::sysctl::set(root, &parts, value)?;
    Ok(())
}

/// Render and write the node's CNI and kubelet configuration under `root` (`/` on a node). A
/// join without `pods` writes no CNI network; one without an API server or its CA writes no
/// kubelet files (each said in the log).
pub fn write(root: &Path, j: &Joined, log: &dyn Fn(&str)) -> Result<(), KubeError> {
    match &j.pods {
        None => log("no pod network in the join: no CNI configuration (pods get no network)"),
        Some(p) => {
            let list = cni_conflist(p)?;
            ensure_dir(&under(root, "/run/nacre/cni"), 0o755)?;
            ensure_dir(&under(root, CNI_CONF_DIR), 0o755)?;
            ensure_dir(&under(root, CNI_IPAM_DIR), 0o700)?;
            write_atomic(&under(root, CNI_CONFLIST), &json_bytes(&list), 0o644)?;
            log(&format!(
                "CNI network {CNI_NETWORK:?} in {CNI_CONFLIST}: pods on {} (bridge {CNI_BRIDGE}), cluster pods {}",
                p.pod_range, p.pod_cidr
            ));
        }
    }
    if let Err(why) = kubelet_parts(&j.kubelet) {
        // Fail closed and say why now, rather than kubelet failing its first start on a
        // missing args file.
        if under(root, KUBELET_BINARY).exists() {
            return Err(KubeError::NoKubelet(why));
        }
        log(&format!(
            "no kubelet configuration: {why} (the node runs containerd only)"
        ));
        return Ok(());
    }
    // The DHCP lease writes the resolver configuration; a static network has none.
    let resolv = under(root, RESOLV_CONF).exists().then_some(RESOLV_CONF);
    if resolv.is_none() {
        log(&format!(
            "kubelet: no {RESOLV_CONF} (no DHCP lease): pods get only the cluster's DNS"
        ));
    }
    let f = kubelet_files(j, resolv)?;
    for (name, value) in KERNEL_TUNABLES {
        set_tunable(root, name, value)?;
    }
    ensure_dir(&under(root, KUBE_DIR), 0o700)?;
    write_atomic(&under(root, API_SERVER_CA), f.ca_pem.as_bytes(), 0o644)?;
    write_atomic(
        &under(root, BOOTSTRAP_KUBECONFIG),
        &json_bytes(&f.bootstrap_kubeconfig),
        0o600,
    )?;
    write_atomic(&under(root, KUBELET_CONFIG), &json_bytes(&f.config), 0o644)?;
    write_atomic(
        &under(root, KUBELET_ARGS),
        args_text(&f.args).as_bytes(),
        0o644,
    )?;
    log(&format!(
        "kubelet: node {} on {}, API server {}, configuration in {KUBE_DIR}",
        j.node,
        j.overlay,
        j.kubelet.api_server.as_deref().unwrap_or_default()
    ));
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A real certificate (the EK fixture's issuer-signed GCE EK certificate stands in for an
    /// API server CA: only its PEM shape matters here).
    pub(crate) fn ca_pem() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../attestation/tests/fixtures/ek/uca_tpm_ecc_enc_cert.pem"
        ))
        .unwrap()
    }

    pub(crate) fn joined() -> Joined {
        Joined {
            node: "node-2".into(),
            cluster_id: "00".repeat(32),
            overlay: "10.244.0.3/32".into(),
            peers: vec![],
            pods: Some(PodNetwork {
                pod_range: "10.32.1.0/24".into(),
                pod_cidr: "10.32.0.0/16".into(),
                service_cidr: Some("10.96.0.0/12".into()),
            }),
            kubelet: KubeletJoin {
                api_server: Some("https://10.0.2.2:6443".into()),
                api_server_ca: Some(ca_pem()),
                bootstrap_token: "abcdef.0123456789abcdef".into(),
                cluster_dns: Some("10.96.0.10".into()),
                cluster_domain: "cluster.local".into(),
            },
            rejoin: false,
        }
    }

    #[test]
    fn conflist_serves_the_pod_range_without_masquerading() {
        let v = cni_conflist(joined().pods.as_ref().unwrap()).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["name"], "nacre");
        let types: Vec<_> = v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["bridge", "portmap"]);
        let b = &v["plugins"][0];
        assert_eq!(b["bridge"], "cni0");
        assert_eq!(
            (b["isGateway"].as_bool(), b["ipMasq"].as_bool()),
            (Some(true), Some(false))
        );
        assert_eq!(b["ipam"]["ranges"][0][0]["subnet"], "10.32.1.0/24");
        assert_eq!(b["ipam"]["routes"][0]["dst"], "10.32.0.0/16");
        assert_eq!(b["ipam"]["routes"][1]["dst"], "10.96.0.0/12");
        assert_eq!(b["ipam"]["routes"].as_array().map(Vec::len), Some(2));
        assert_eq!(b["ipam"]["dataDir"], "/run/nacre/cni/ipam");
        assert_eq!(v["plugins"][1]["capabilities"]["portMappings"], true);
    }

    #[test]
    fn bad_pod_ranges_are_refused_naming_the_field() {
        let p = |r: &str, c: &str| PodNetwork {
            pod_range: r.into(),
            pod_cidr: c.into(),
            service_cidr: None,
        };
        for (r, c, needle) in [
            ("10.33.1.0/24", "10.32.0.0/16", "not inside"),
            ("10.32.1.1/24", "10.32.0.0/16", "host bits"),
            ("10.32.1.0/31", "10.32.0.0/16", "too small"),
            ("fd00::/64", "fd00::/48", "IPv4"),
            ("10.32.1.0", "10.32.0.0/16", "pod_range"),
            ("10.32.1.0/24", "10.32.0.0/33", "pod_cidr"),
        ] {
            let e = cni_conflist(&p(r, c)).unwrap_err().to_string();
            assert!(e.contains(needle), "{r} {c}: {e}");
        }
    }

    #[test]
    fn kubelet_files_carry_the_services_ca_token_and_overlay_address() {
        let j = joined();
        let f = kubelet_files(&j, Some(RESOLV_CONF)).unwrap();
        let c = &f.config;
        assert_eq!(c["address"], "10.244.0.3");
        assert_eq!(c["clusterDNS"], json!(["10.96.0.10"]));
        assert_eq!(c["authentication"]["anonymous"]["enabled"], false);
        assert_eq!(c["authentication"]["x509"]["clientCAFile"], API_SERVER_CA);
        assert_eq!(c["authorization"]["mode"], "Webhook");
        assert_eq!(c["readOnlyPort"], 0);
        assert_eq!(c["resolvConf"], "/run/nacre/resolv.conf");
        assert_eq!(kubelet_files(&j, None).unwrap().config["resolvConf"], "");
        let k = &f.bootstrap_kubeconfig;
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD
            .decode(
                k["clusters"][0]["cluster"]["certificate-authority-data"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(ca, ca_pem().as_bytes());
        assert_eq!(
            k["clusters"][0]["cluster"]["server"],
            "https://10.0.2.2:6443"
        );
        assert_eq!(k["users"][0]["user"]["token"], "abcdef.0123456789abcdef");
        let ctx = k["current-context"].as_str().unwrap();
        let named = k["contexts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == ctx)
            .unwrap();
        assert_eq!(named["context"]["cluster"], k["clusters"][0]["name"]);
        assert_eq!(named["context"]["user"], k["users"][0]["name"]);
        assert_eq!(f.ca_pem, ca_pem());
        assert!(f.args.contains(&"--node-ip=10.244.0.3".to_string()));
        assert!(f.args.contains(&"--hostname-override=node-2".to_string()));
        assert_eq!(
            args_text(&f.args).lines().next(),
            Some("--config=/run/nacre/kubernetes/kubelet-config.json")
        );
        // Without a cluster DNS there is no clusterDNS key at all.
        let mut j2 = joined();
        j2.kubelet.cluster_dns = None;
        assert!(kubelet_files(&j2, Some(RESOLV_CONF))
            .unwrap()
            .config
            .get("clusterDNS")
            .is_none());
    }

    #[test]
    fn bad_kubelet_join_values_are_refused_naming_the_field() {
        type Edit = Box<dyn Fn(&mut Joined)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|j| j.kubelet.api_server = Some("http://10.0.2.2:6443".into())),
                "https://",
            ),
            (
                Box::new(|j| j.kubelet.api_server = Some("https://".into())),
                "no host",
            ),
            (
                Box::new(|j| j.kubelet.api_server = Some("https://a b".into())),
                "whitespace",
            ),
            (
                Box::new(|j| j.kubelet.api_server_ca = Some("hello".into())),
                "no PEM certificate",
            ),
            (
                Box::new(|j| {
                    j.kubelet.api_server_ca = Some(
                        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
                    )
                }),
                "not a certificate",
            ),
            (
                Box::new(|j| {
                    j.kubelet.api_server_ca = Some(
                        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".into(),
                    )
                }),
                "certificate 1",
            ),
            (
                Box::new(|j| {
                    let pem = ca_pem();
                    j.kubelet.api_server_ca =
                        Some(pem.lines().take(3).collect::<Vec<_>>().join("\n"))
                }),
                "END line",
            ),
            (
                Box::new(|j| j.kubelet.bootstrap_token = "abcdef.0123456789ABCDEF".into()),
                "bootstrap_token",
            ),
            (
                Box::new(|j| j.kubelet.bootstrap_token = "abcdef0123456789abcdef".into()),
                "bootstrap_token",
            ),
            (
                Box::new(|j| j.kubelet.cluster_dns = Some("10.96.0".into())),
                "cluster_dns",
            ),
            (
                Box::new(|j| j.kubelet.cluster_domain = "Cluster.Local".into()),
                "cluster_domain",
            ),
            (Box::new(|j| j.node = "node_2".into()), "node"),
            (Box::new(|j| j.overlay = "10.244.0.3".into()), "overlay"),
        ];
        for (edit, needle) in cases {
            let mut j = joined();
            edit(&mut j);
            let e = kubelet_files(&j, Some(RESOLV_CONF))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
            assert!(!e.contains("0123456789"), "the token leaked: {e}");
        }
    }

    /// Runs `cmd` in network namespace `ns` with the CNI environment and `conf` on stdin.
    fn cni(ns: &str, plugin: &str, command: &str, pod_ns: &str, conf: &Value) -> (bool, String) {
        use std::process::{Command, Stdio};
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "env", "-i"])
            .arg(format!("CNI_COMMAND={command}"))
            .arg("CNI_CONTAINERID=nacre-kube-test")
            .arg(format!("CNI_NETNS=/run/netns/{pod_ns}"))
            .arg("CNI_IFNAME=eth0")
            .arg("CNI_PATH=/usr/lib/cni")
            .arg("PATH=/usr/sbin:/usr/bin:/sbin:/bin")
            .arg(format!("/usr/lib/cni/{plugin}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn sh(args: &[&str]) -> String {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    struct Netns(Vec<String>);
    impl Drop for Netns {
        fn drop(&mut self) {
            for n in &self.0 {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", n])
                    .status();
            }
        }
    }

    /// The rendered list, run through Debian's real plugins (`containernetworking-plugins`
    /// 1.1.1 in `/usr/lib/cni`, the node's own) as containerd's CRI plugin runs them: the node
    /// in one network namespace, the pod in another. The pod gets the first free address of
    /// the range behind the gateway, the routes and the MTU; nothing is masqueraded; portmap
    /// adds its DNAT. Needs root, `ip` and `iptables`.
    #[test]
    fn the_real_cni_plugins_take_the_conflist() {
        let pid = std::process::id();
        let (node, pod) = (format!("nkn{pid}"), format!("nkp{pid}"));
        let _ns = Netns(vec![node.clone(), pod.clone()]);
        for n in [&node, &pod] {
            let ok = std::process::Command::new("ip")
                .args(["netns", "add", n])
                .status()
                .unwrap()
                .success();
            assert!(ok, "ip netns add {n} (this test needs root)");
        }
        let ipam_dir = scratch("ipam").join("ipam");
        let list = cni_conflist(joined().pods.as_ref().unwrap()).unwrap();
        // Each plugin gets the list's cniVersion and name (libcni); the IPAM data goes to a
        // scratch directory instead of the node's /run/nacre/cni/ipam.
        let conf = |i: usize| {
            let mut c = list["plugins"][i].clone();
            c["cniVersion"] = list["cniVersion"].clone();
            c["name"] = list["name"].clone();
            c
        };
        let mut bridge = conf(0);
        bridge["ipam"]["dataDir"] = json!(ipam_dir.to_str().unwrap());
        let (ok, out) = cni(&node, "bridge", "ADD", &pod, &bridge);
        assert!(ok, "bridge ADD: {out}");
        let result: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(result["ips"][0]["address"], "10.32.1.2/24", "{out}");
        assert_eq!(result["ips"][0]["gateway"], "10.32.1.1", "{out}");
        let routes = sh(&["ip", "-n", &pod, "-4", "route"]);
        // No default route: without masquerading it would leak pod addresses to the underlay.
        assert!(!routes.contains("default"), "{routes}");
        assert!(
            routes.contains("10.32.0.0/16 via 10.32.1.1 dev eth0"),
            "{routes}"
        );
        let link = sh(&["ip", "-n", &pod, "link", "show", "eth0"]);
        assert!(link.contains("mtu 1420"), "{link}");
        let gw = sh(&["ip", "-n", &node, "-4", "addr", "show", "cni0"]);
        assert!(gw.contains("inet 10.32.1.1/24"), "{gw}");
        let nat = sh(&["ip", "netns", "exec", &node, "iptables", "-t", "nat", "-S"]);
        assert!(!nat.contains("MASQUERADE"), "ipMasq is off, yet: {nat}");

        let mut portmap = conf(1);
        portmap["prevResult"] = result.clone();
        portmap["runtimeConfig"] = json!({ "portMappings": [{ "hostPort": 18080, "containerPort": 80, "protocol": "tcp" }] });
        let (ok, out) = cni(&node, "portmap", "ADD", &pod, &portmap);
        assert!(ok, "portmap ADD: {out}");
        let nat = sh(&["ip", "netns", "exec", &node, "iptables", "-t", "nat", "-S"]);
        assert!(nat.contains("--to-destination 10.32.1.2:80"), "{nat}");

        let (ok, out) = cni(&node, "portmap", "DEL", &pod, &portmap);
        assert!(ok, "portmap DEL: {out}");
        let (ok, out) = cni(&node, "bridge", "DEL", &pod, &bridge);
        assert!(ok, "bridge DEL: {out}");
        std::fs::remove_dir_all(ipam_dir.parent().unwrap()).unwrap();
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nacre-kube-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for (t, _) in KERNEL_TUNABLES {
            let p = d.join("proc/sys").join(t);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "0\n").unwrap();
        }
        d
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn write_puts_every_file_in_place_with_its_mode() {
        let root = scratch("all");
        let resolv = under(&root, RESOLV_CONF);
        std::fs::create_dir_all(resolv.parent().unwrap()).unwrap();
        std::fs::write(&resolv, "nameserver 10.0.2.3\n").unwrap();
        let lines = std::cell::RefCell::new(Vec::new());
        write(&root, &joined(), &|l| {
            lines.borrow_mut().push(l.to_string())
        })
        .unwrap();
        let at = |p: &str| under(&root, p);
        let conf: Value =
            serde_json::from_slice(&std::fs::read(at(CNI_CONFLIST)).unwrap()).unwrap();
        assert_eq!(conf, cni_conflist(joined().pods.as_ref().unwrap()).unwrap());
        let kc: Value =
            serde_json::from_slice(&std::fs::read(at(KUBELET_CONFIG)).unwrap()).unwrap();
        assert_eq!(kc["resolvConf"], RESOLV_CONF);
        assert_eq!(mode(&at(BOOTSTRAP_KUBECONFIG)), 0o600);
        assert_eq!(mode(&at(KUBE_DIR)), 0o700);
        assert_eq!(mode(&at(CNI_IPAM_DIR)), 0o700);
        assert_eq!(
            std::fs::read_to_string(at(API_SERVER_CA)).unwrap(),
            ca_pem()
        );
        let args = std::fs::read_to_string(at(KUBELET_ARGS)).unwrap();
        assert!(
            args.lines().any(|l| l == "--cert-dir=/var/lib/kubelet/pki"),
            "{args}"
        );
        for (t, v) in KERNEL_TUNABLES {
            assert_eq!(
                std::fs::read_to_string(root.join("proc/sys").join(t)).unwrap(),
                format!("{v}\n")
            );
        }
        // No temporary file is left behind; a second write replaces the files.
        write(&root, &joined(), &|_| {}).unwrap();
        let names: Vec<_> = std::fs::read_dir(at(KUBE_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        assert_eq!(names.len(), 4, "{names:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_join_without_pods_or_api_server_writes_nothing_and_says_why() {
        let root = scratch("none");
        let mut j = joined();
        j.pods = None;
        j.kubelet.api_server_ca = None;
        let lines = std::cell::RefCell::new(Vec::new());
        write(&root, &j, &|l| lines.borrow_mut().push(l.to_string())).unwrap();
        assert!(!under(&root, "/run/nacre").exists());
        let lines = lines.into_inner();
        assert!(lines[0].contains("no pod network"), "{lines:?}");
        assert!(lines[1].contains("no API server CA"), "{lines:?}");
        j.kubelet.api_server = None;
        assert_eq!(
            kubelet_parts(&j.kubelet),
            Err("the join names no API server")
        );
        // An image with kubelet stops instead: its kubelet would have nothing to join with.
        let bin = under(&root, KUBELET_BINARY);
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::write(&bin, b"").unwrap();
        let e = write(&root, &j, &|_| {}).unwrap_err().to_string();
        assert!(
            e.contains("runs kubelet") && e.contains("names no API server"),
            "{e}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_tunable_the_kernel_does_not_take_is_an_error() {
        let root = scratch("tunable");
        // A directory where the file should be: the write fails, naming the path.
        let p = root.join("proc/sys/kernel/panic");
        std::fs::remove_file(&p).unwrap();
        std::fs::create_dir(&p).unwrap();
        let e = write(&root, &joined(), &|_| {}).unwrap_err().to_string();
        assert!(e.contains("proc/sys/kernel/panic"), "{e}");
        assert!(!under(&root, BOOTSTRAP_KUBECONFIG).exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
