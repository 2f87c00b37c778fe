//! `[key_service]`: the attested key service is where this node gets its overlay address and
//! WireGuard peers (a [`PeerSource`]) and its state disk's key (a [`KeySource`]). Every request
//! is its own attested TLS connection: the node's TPM quotes the PCRs over the service's nonce
//! and the connection's key, and sends the firmware event log and the runtime log with it.
//!
//! ```toml
//! [key_service]
//! endpoint = "10.0.2.2:7443"                 # host:port on the underlay
//! ca = "/etc/nacre/keyservice-ca.pem"        # the service's CA (on the verified root)
//! timeout_s = 300                            # how long an unreachable service is retried
//! refresh_s = 30                             # how often a member asks for the peer set (0: never)
//! # In-cluster mode (the service on an attested control-plane node), instead of `ca`:
//! # server_manifests = ["/etc/nacre/control-plane-ready.json"]   # + .sig next to each
//! # server_manifest_key = "/etc/nacre/release.pub"
//! # server_ek_ca = "/etc/nacre/ek-ca.pem"      # how the service's TPM is trusted
//! ```
//!
//! Unreachable: retried with exponential backoff (1 s doubling to 10 s) until `timeout_s`.
//! Refused (attestation failed, or a rule of the service): the step fails at once and the node
//! stops (fail closed); the service's decision log says why.

use crate::stage::platform::Tee;
use base64::Engine;
use nacre_attestation::atls::Attest;
use nacre_attestation::evidence::Evidence;
use nacre_attestation::join::{CallError, Client, Joined, PeerInfo, Request, Response, WgAnnounce};
use nacre_attestation::tpm::Attester;
use nacre_attestation::Platform;
use nacre_network::cidr::Cidr;
use nacre_network::config::WireguardConfig;
use nacre_network::peers::{Announce, LocalNode, Peer, PeerError, PeerSource};
use nacre_statedisk::{KeyError, KeySource};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const FIRMWARE_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
const DEFAULT_CA: &str = "/etc/nacre/keyservice-ca.pem";
/// Where kubelet's join data is written (tmpfs, 0600): the kubelet service reads it.
pub const KUBELET_JOIN: &str = "/run/nacre/kubelet-join.json";
/// PCRs quoted: 0–15 (the firmware's, the UKI's, nacre-init's phases and the cluster id). The
/// service's golden manifest decides which are enforced; PCR 15 is always needed.
const QUOTED: [u32; 15] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15];

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub endpoint: String,
    #[serde(default = "default_ca")]
    pub ca: String,
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    #[serde(default = "default_refresh")]
    pub refresh_s: u64,
    /// In-cluster mode: the service proves itself by its own attestation instead of `ca`.
    /// Its golden manifests (signed with `server_manifest_key`) and the CA of its TPM's EK.
    #[serde(default)]
    pub server_manifests: Vec<String>,
    pub server_manifest_key: Option<String>,
    pub server_ek_ca: Option<String>,
}

fn default_ca() -> String {
    DEFAULT_CA.into()
}
fn default_timeout() -> u64 {
    300
}
fn default_refresh() -> u64 {
    30
}

/// Evidence from this node's TPM, with the logs as they are right now, and on a confidential
/// VM the platform's report binding the AK and the TLS key to the nonce.
struct NodeAttest {
    runtime_log: String,
    tee: Option<Tee>,
}

impl Attest for NodeAttest {
    fn evidence(&self, nonce: &[u8], tls_spki: &[u8]) -> Result<Evidence, String> {
        let firmware_log =
            std::fs::read(FIRMWARE_LOG).map_err(|e| format!("{FIRMWARE_LOG}: {e}"))?;
        let runtime_log = nacre_eventlog::cel::read(std::path::Path::new(&self.runtime_log))
            .map_err(|e| format!("{}: {e}", self.runtime_log))?;
        let mut ev = Attester::device()
            .evidence(nonce, tls_spki, &QUOTED, firmware_log, runtime_log)
            .map_err(|e| e.to_string())?;
        // On SEV-SNP the report, on TDX the quote binds the AK and the TLS key to the nonce:
        // REPORT_DATA / REPORTDATA = SHA-512(nonce || AK || TLS key) on both.
        ev.platform = platform_part(self.tee, nonce, &ev.ak_public, tls_spki, &Fetch::Kernel)?;
        Ok(ev)
    }
}

/// Where a platform report comes from: the kernel (configfs-tsm), or a test's stand-in.
enum Fetch {
    Kernel,
    #[cfg(test)]
    Fake(fn(&[u8; 64]) -> Result<Vec<u8>, String>),
}

impl Fetch {
    fn snp(&self, data: &[u8; 64]) -> Result<(Vec<u8>, Vec<u8>), String> {
        match self {
            Fetch::Kernel => nacre_attestation::snp::fetch_report(data),
            #[cfg(test)]
            Fetch::Fake(f) => f(data).map(|r| (r, b"vcek".to_vec())),
        }
    }

    fn tdx(&self, data: &[u8; 64]) -> Result<Vec<u8>, String> {
        match self {
            Fetch::Kernel => nacre_attestation::tdx::fetch_quote(data),
            #[cfg(test)]
            Fetch::Fake(f) => f(data),
        }
    }
}

/// The platform part of the evidence for this node's platform.
fn platform_part(
    tee: Option<Tee>,
    nonce: &[u8],
    ak_spki: &[u8],
    tls_spki: &[u8],
    fetch: &Fetch,
) -> Result<Platform, String> {
    let data = || nacre_attestation::snp::report_data(nonce, ak_spki, tls_spki);
    Ok(match tee {
        None => Platform::QemuVtpm,
        Some(Tee::SevSnp) => {
            let (report, vcek) = fetch
                .snp(&data())
                .map_err(|e| format!("SEV-SNP report: {e}"))?;
            Platform::SevSnp { report, vcek }
        }
        Some(Tee::Tdx) => Platform::Tdx {
            quote: fetch.tdx(&data()).map_err(|e| format!("TDX quote: {e}"))?,
        },
    })
}

pub struct KeyService {
    client: Arc<Client>,
    cfg: Config,
    joined: Option<Joined>,
    /// The disk key last released (format, then open, ask for the same disk: one request).
    disk_key: Option<(String, Zeroizing<Vec<u8>>)>,
}

impl KeyService {
    pub fn new(cfg: Config) -> Result<Self, String> {
        Self::with_runtime_log(cfg, crate::measure::RUNTIME_LOG)
    }

    fn with_runtime_log(cfg: Config, runtime_log: &str) -> Result<Self, String> {
        let tee = crate::stage::platform::Probe::read()
            .tee()
            .map_err(|e| e.to_string())?;
        let attest = Arc::new(NodeAttest {
            runtime_log: runtime_log.to_string(),
            tee,
        });
        let timeout = Duration::from_secs(30);
        let client = match &cfg.server_manifest_key {
            Some(key) => {
                Client::attested(&cfg.endpoint, server_verifier(&cfg, key)?, attest, timeout)
            }
            None => {
                let ca = std::fs::read(&cfg.ca).map_err(|e| format!("{}: {e}", cfg.ca))?;
                Client::new(&cfg.endpoint, &ca, attest, timeout)
                    .map_err(|e| format!("{}: {e}", cfg.ca))?
            }
        };
        Ok(KeyService {
            client: Arc::new(client),
            cfg,
            joined: None,
            disk_key: None,
        })
    }

    pub fn joined(&self) -> Option<&Joined> {
        self.joined.as_ref()
    }

    fn call(&self, req: &Request) -> Result<Response, CallError> {
        call_with_retry(&self.client, req, Duration::from_secs(self.cfg.timeout_s))
    }

    /// The refresher for a member's peer set (after the cluster id is measured).
    pub fn refresher(&self, me: LocalNode, wg: WireguardConfig) -> Option<Refresher> {
        (self.cfg.refresh_s > 0).then(|| Refresher {
            client: self.client.clone(),
            every: Duration::from_secs(self.cfg.refresh_s),
            me,
            wg,
            current: self
                .joined
                .as_ref()
                .map(|j| j.peers.clone())
                .unwrap_or_default(),
        })
    }
}

/// The verifier of the service's own evidence (in-cluster mode).
fn server_verifier(
    cfg: &Config,
    key: &str,
) -> Result<Arc<dyn nacre_attestation::Verifier>, String> {
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("{p}: {e}"));
    if cfg.server_manifests.is_empty() {
        return Err("server_manifest_key without server_manifests".into());
    }
    let manifests = cfg
        .server_manifests
        .iter()
        .map(|m| {
            Ok(nacre_attestation::SignedManifest {
                json: read(m)?,
                signature_b64: read(&format!("{m}.sig"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let key = nacre_measure::sign::PublicKey::from_pem_file(std::path::Path::new(key))
        .map_err(|e| format!("{key}: {e}"))?;
    let ek_ca = cfg
        .server_ek_ca
        .as_deref()
        .ok_or("server_manifest_key needs server_ek_ca (how the service's TPM is trusted)")?;
    let trust = nacre_attestation::ek::EkCertified::from_pem(&read(ek_ca)?)?;
    Ok(Arc::new(
        nacre_attestation::QemuVtpmVerifier::with_manifests(manifests, key, Box::new(trust)),
    ))
}

/// Retry while unreachable, with backoff, until `budget` is spent; anything else returns.
fn call_with_retry(
    client: &Client,
    req: &Request,
    budget: Duration,
) -> Result<Response, CallError> {
    let start = Instant::now();
    let mut wait = Duration::from_secs(1);
    loop {
        match client.call(req) {
            Err(e) if e.retryable() && start.elapsed() + wait < budget => {
                crate::warn!("{e}; retrying in {} s", wait.as_secs());
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

fn unexpected(op: &str, r: &Response) -> String {
    format!(
        "answered {op} with {}",
        serde_json::to_string(r).unwrap_or_default()
    )
}

fn peer_from(p: &PeerInfo) -> Result<Peer, PeerError> {
    let bad = |reason: String| PeerError::Invalid {
        peer: p.name.clone(),
        reason,
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(&p.public_key)
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
        .ok_or_else(|| bad("public key is not 32 base64 bytes".into()))?;
    let allowed_ips = p
        .allowed_ips
        .iter()
        .map(|a| {
            a.parse::<Cidr>()
                .map_err(|e| bad(format!("allowed IP {a}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Peer {
        public_key: key,
        endpoint: Some(p.endpoint),
        allowed_ips,
        name: p.name.clone(),
    })
}

impl PeerSource for KeyService {
    fn name(&self) -> &'static str {
        "key-service"
    }

    /// The join: announce wg0's key and the underlay, get the overlay address and the peers.
    fn assign(&mut self, me: &Announce, log: &dyn Fn(&str)) -> Result<Option<Cidr>, PeerError> {
        let req = Request::Join {
            wireguard: WgAnnounce {
                public_key: nacre_network::key_b64(&me.public_key),
                underlay: me.underlay,
                listen_port: me.listen_port,
            },
        };
        let resp = self
            .call(&req)
            .map_err(|e| PeerError::Source(e.to_string()))?;
        let Response::Joined(j) = resp else {
            return Err(PeerError::Source(unexpected("join", &resp)));
        };
        log(&format!(
            "key service {}: {} {} as {} with {} peer(s)",
            self.client.endpoint(),
            if j.rejoin { "rejoined" } else { "joined" },
            j.node,
            j.overlay,
            j.peers.len()
        ));
        let overlay: Cidr = j
            .overlay
            .parse()
            .map_err(|e| PeerError::Source(format!("overlay {}: {e}", j.overlay)))?;
        self.joined = Some(j);
        Ok(Some(overlay))
    }

    fn peers(&mut self, _me: &LocalNode, _log: &dyn Fn(&str)) -> Result<Vec<Peer>, PeerError> {
        let j = self
            .joined
            .as_ref()
            .ok_or_else(|| PeerError::Source("peers asked before the join".into()))?;
        j.peers.iter().map(peer_from).collect()
    }
}

impl KeySource for KeyService {
    fn name(&self) -> &'static str {
        "key-service"
    }

    fn token_type(&self) -> Option<&'static str> {
        None
    }

    fn use_token(&mut self, _token: &Map<String, Value>) -> Result<(), KeyError> {
        Ok(())
    }

    fn disk_key(&mut self, disk_uuid: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if let Some((uuid, key)) = &self.disk_key {
            if uuid == disk_uuid {
                return Ok(key.clone());
            }
        }
        let failed = |reason: String| KeyError::Failed {
            source_name: "key-service",
            reason,
        };
        let resp = self
            .call(&Request::DiskKey {
                disk_uuid: disk_uuid.to_string(),
            })
            .map_err(|e| failed(e.to_string()))?;
        let Response::DiskKey { key } = resp else {
            return Err(failed(unexpected("disk-key", &resp)));
        };
        let key = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(key)
                .map_err(|e| failed(format!("disk key: {e}")))?,
        );
        if key.len() != nacre_statedisk::keysource::DISK_KEY_LEN {
            return Err(failed(format!("disk key of {} bytes", key.len())));
        }
        self.disk_key = Some((disk_uuid.to_string(), key.clone()));
        Ok(key)
    }

    fn new_token(&mut self) -> Result<Option<Map<String, Value>>, KeyError> {
        Ok(None)
    }
}

/// Keeps a member's peer set current: asks the service every `every`, replaces wg0's peers
/// when the set changed. A refusal empties the peer set (the service no longer vouches for the
/// cluster as this node sees it: nothing is sent through wg0 until it does again).
pub struct Refresher {
    client: Arc<Client>,
    every: Duration,
    me: LocalNode,
    wg: WireguardConfig,
    current: Vec<PeerInfo>,
}

impl Refresher {
    pub fn spawn(mut self) {
        // The thread starts with every signal blocked: PID 1 takes SIGCHLD, SIGTERM, ... on its
        // signalfd in the main thread, and a process-directed signal the kernel handed to this
        // thread instead (where SIGCHLD is ignored) would be lost: a service's exit unnoticed.
        use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
        let mut old = SigSet::empty();
        if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut old)).is_err() {
            crate::warn!("key service: cannot block signals: the peer refresher is not started");
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("peer-refresh".into())
            .spawn(move || loop {
                std::thread::sleep(self.every);
                self.once();
            });
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        if let Err(e) = spawned {
            crate::warn!("key service: cannot start the peer refresher: {e}");
        }
    }

    fn once(&mut self) {
        let next = match self.client.call(&Request::Peers {}) {
            Ok(Response::Peers { peers }) => peers,
            Ok(other) => {
                crate::warn!("key service: {}", unexpected("peers", &other));
                return;
            }
            Err(e) if e.retryable() => {
                crate::warn!("{e} (keeping the current peers)");
                return;
            }
            Err(e) => {
                crate::warn!("{e}: removing every peer");
                Vec::new()
            }
        };
        if next == self.current {
            return;
        }
        let peers = match next.iter().map(peer_from).collect::<Result<Vec<_>, _>>() {
            Ok(p) => p,
            Err(e) => {
                crate::warn!("key service: {e} (keeping the current peers)");
                return;
            }
        };
        match nacre_network::update_peers(&self.me, &self.wg, "key-service", &peers) {
            Ok(()) => {
                crate::info!(
                    "key service: wg0 now has {} peer(s): {}",
                    peers.len(),
                    next.iter()
                        .map(|p| format!("{} {}", p.name, p.allowed_ips.join(",")))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                self.current = next;
            }
            Err(e) => crate::warn!("key service: updating wg0's peers: {e}"),
        }
    }
}

/// `nacre-init key-service-probe join|disk-key UUID|peers [--runtime-log PATH]`: one request to
/// the configured key service from a running node, attested like the init's own (for operators
/// checking a node, and for tests showing what the service refuses to a node whose services
/// run). Exit 0 granted, 3 refused, 1 other errors.
pub fn probe(args: &[String]) -> i32 {
    let mut runtime_log = crate::measure::RUNTIME_LOG.to_string();
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--runtime-log" {
            match it.next() {
                Some(p) => runtime_log = p.clone(),
                None => return usage(),
            }
        } else {
            words.push(a.as_str());
        }
    }
    let req = match words.as_slice() {
        ["join"] => Request::Join {
            wireguard: WgAnnounce {
                public_key: base64::engine::general_purpose::STANDARD.encode([0x70u8; 32]),
                underlay: std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
                listen_port: 51820,
            },
        },
        ["disk-key", uuid] => Request::DiskKey {
            disk_uuid: uuid.to_string(),
        },
        ["peers"] => Request::Peers {},
        _ => return usage(),
    };
    let cfg = match crate::config::read()
        .and_then(|c| crate::config::section::<Config>(&c, "key_service"))
    {
        Ok(Some(c)) => c,
        Ok(None) => {
            eprintln!("no [key_service] in {}", crate::config::CONFIG);
            return 1;
        }
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let ks = match KeyService::with_runtime_log(cfg, &runtime_log) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    match ks.client.call(&req) {
        Ok(Response::DiskKey { .. }) => {
            println!("granted: {} (a disk key)", req.op());
            0
        }
        Ok(r) => {
            println!("granted: {}", serde_json::to_string(&r).unwrap_or_default());
            0
        }
        Err(e @ CallError::Refused { .. }) => {
            println!("refused: {e}");
            3
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn usage() -> i32 {
    eprintln!("usage: nacre-init key-service-probe join|disk-key UUID|peers [--runtime-log PATH]");
    2
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_attestation::snp::report_data;

    /// A stand-in for the kernel that returns the 64 bytes it was asked to bind.
    fn echo(d: &[u8; 64]) -> Result<Vec<u8>, String> {
        Ok(d.to_vec())
    }

    fn refuse(_: &[u8; 64]) -> Result<Vec<u8>, String> {
        Err("/sys/kernel/config/tsm/report is missing".into())
    }

    #[test]
    fn tdx_evidence_carries_a_quote_bound_like_snp() {
        let (nonce, ak, tls) = (b"nonce".as_slice(), b"ak".as_slice(), b"tls".as_slice());
        let p = platform_part(Some(Tee::Tdx), nonce, ak, tls, &Fetch::Fake(echo)).unwrap();
        // REPORTDATA = the same binding as SEV-SNP's REPORT_DATA: SHA-512(nonce || AK || TLS).
        assert_eq!(
            p,
            Platform::Tdx {
                quote: report_data(nonce, ak, tls).to_vec()
            }
        );
        let p = platform_part(Some(Tee::SevSnp), nonce, ak, tls, &Fetch::Fake(echo)).unwrap();
        assert_eq!(
            p,
            Platform::SevSnp {
                report: report_data(nonce, ak, tls).to_vec(),
                vcek: b"vcek".to_vec()
            }
        );
        assert_eq!(
            platform_part(None, nonce, ak, tls, &Fetch::Fake(refuse)),
            Ok(Platform::QemuVtpm)
        );
        // No quote, no evidence: the request fails (and the node with it), never a plain one.
        let e = platform_part(Some(Tee::Tdx), nonce, ak, tls, &Fetch::Fake(refuse)).unwrap_err();
        assert!(e.starts_with("TDX quote: "), "{e}");
    }
}
