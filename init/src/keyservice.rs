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
//! # server_platforms = ["tdx"]                 # default: this node's own platform
//! # server_tdx_collateral = "/etc/nacre/tdx-collateral.json"
//! # server_snp_min_tcb = ["milan=4,0,24,219"]  # sev-snp: minimum TCB per product (required)
//! # server_accept_guest_bound_ak = ["qemu-snp"] # sev-snp: opt in to a guest-bound AK
//! # server_allow_no_expiry = true              # accept manifests without not_after (default: refused)
//! # server_phases = ["ready"]                  # the default: a running service
//! # server_cluster_id = "<64 hex digits>"      # else: the measured [cluster] configuration
//! ```
//!
//! In-cluster mode checks the service as the service checks nodes
//! ([`nacre_attestation::incluster`]): its platform evidence (a node in a CVM takes no TPM
//! quote alone unless `server_platforms` says so), its phase, and its membership of this
//! cluster (PCR 15, on TDX RTMR[3]: this cluster's configuration and id; the id given at the
//! join is checked on every later request).
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
    /// In-cluster mode: the platforms whose evidence the service may present (`qemu-vtpm`:
    /// a TPM quote alone, `tdx`: a TDX quote binding it); default: this node's own platform, so
    /// a node in a CVM accepts only a service that proves its CVM too.
    #[serde(default)]
    pub server_platforms: Vec<String>,
    /// The phases a running service may be in (default `ready`).
    #[serde(default = "default_server_phases")]
    pub server_phases: Vec<String>,
    /// This cluster's id (64 hex digits), if the node knows it before joining; otherwise the
    /// service must show the cluster configuration this node measured, and after the join
    /// the id it was given.
    pub server_cluster_id: Option<String>,
    /// `tdx` in `server_platforms`: the offline collateral for the service's platform (dcap-qvl
    /// QuoteCollateralV3 JSON, as `nacre-keyservice serve --tdx-collateral`).
    pub server_tdx_collateral: Option<String>,
    /// `sev-snp` in `server_platforms`: the minimum TCB per product of the service's chip
    /// (`PRODUCT=TCB` as `nacre-keyservice serve --snp-min-tcb`, e.g. `milan=4,0,24,219`); a
    /// product without one is refused.
    #[serde(default)]
    pub server_snp_min_tcb: Vec<String>,
    /// The VMPL the service's SEV-SNP report must come from (default 0).
    #[serde(default)]
    pub server_snp_vmpl: u32,
    /// `sev-snp`: variants whose AK nothing but the service's own REPORT_DATA binds, accepted
    /// anyway (`qemu-snp`; as `nacre-keyservice serve --accept-guest-bound-ak`); default none,
    /// so a qemu-snp service is refused. Variants with a platform binding are refused here.
    #[serde(default)]
    pub server_accept_guest_bound_ak: Vec<String>,
    /// In-cluster mode: accept `server_manifests` without `not_after` (they never expire), each
    /// warned about; default false, so such a manifest stops the mode (as `nacre-keyservice
    /// serve --allow-no-expiry`).
    #[serde(default)]
    pub server_allow_no_expiry: bool,
}

fn default_server_phases() -> Vec<String> {
    vec!["ready".into()]
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
        // Cloud vTPMs announce themselves by their NV indices (nacre_attestation::binding):
        // Azure's paravisor holds the HCL report, whose SNP report binds its own AK (that AK
        // quotes; the VCEK comes from IMDS's THIM endpoint, checked against the report with
        // AMD's roots; if that fails none is sent, logged, and the key service needs it in its
        // store); GCE holds an AK template and
        // Google's certificate for the AK it yields (that AK quotes, the report names it).
        // On SEV-SNP the report, on TDX the quote binds the AK and the TLS key to the nonce:
        // REPORT_DATA / REPORTDATA = SHA-512(nonce || AK || TLS key) on both. EC2
        // (aws-sev-snp): AWS's NitroTPM document binds the AK (not exercised against AWS by
        // this project). The in-cluster key service attests by the same function.
        let cvm = self.tee.map(|t| match t {
            Tee::SevSnp => nacre_attestation::tpm::Cvm::SevSnp,
            Tee::Tdx => nacre_attestation::tpm::Cvm::Tdx,
        });
        Attester::device()
            .with_log(|m| crate::warn!("{m}"))
            .cvm_evidence(
                cvm,
                nonce,
                tls_spki,
                &QUOTED,
                firmware_log,
                runtime_log,
                &|ak| platform_part(self.tee, nonce, ak, tls_spki, &Fetch::Kernel),
            )
    }
    /// The service trusts this TPM's AK through its EK certificate: prove the AK is in it.
    fn activate_credential(
        &self,
        challenge: &nacre_attestation::credential::CredentialChallenge,
    ) -> Result<Vec<u8>, String> {
        Attester::device()
            .activate_credential(challenge)
            .map_err(|e| e.to_string())
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
    /// In-cluster mode: the cluster id the join gave; later requests check the service's.
    learned_id: Arc<std::sync::OnceLock<[u8; 32]>>,
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
        let learned_id = Arc::new(std::sync::OnceLock::new());
        let client = match &cfg.server_manifest_key {
            Some(key) => {
                let identity = server_identity(&cfg, runtime_log, learned_id.clone())?;
                let v = server_verifier(&cfg, key, tee, identity)?;
                Client::attested(&cfg.endpoint, v, attest, timeout)
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
            learned_id,
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

/// What this node knows of its cluster to check an in-cluster service against: the configured
/// id, the one the join gives (`learned_id`), and the cluster configuration this node measured
/// (its runtime log's `cluster-config` record).
fn server_identity(
    cfg: &Config,
    runtime_log: &str,
    learned_id: Arc<std::sync::OnceLock<[u8; 32]>>,
) -> Result<nacre_attestation::incluster::ClusterIdentity, String> {
    let cluster_id = match &cfg.server_cluster_id {
        Some(h) => {
            let mut id = [0u8; 32];
            hex::decode_to_slice(h, &mut id)
                .map_err(|e| format!("server_cluster_id {h:?}: not 64 hex digits: {e}"))?;
            Some(id)
        }
        None => None,
    };
    let log = nacre_eventlog::cel::read(std::path::Path::new(runtime_log))
        .map_err(|e| format!("{runtime_log}: {e}"))?;
    let config = log
        .iter()
        .filter_map(|r| nacre_eventlog::RuntimeEvent::from_cel(r).ok())
        .find_map(|e| match e {
            nacre_eventlog::RuntimeEvent::ClusterConfig(d) => Some(d),
            _ => None,
        });
    if cluster_id.is_none() && config.is_none() {
        return Err("in-cluster mode (server_manifest_key) needs this cluster's identity to check the service against: server_cluster_id, or a cluster configuration ([cluster]) measured before".into());
    }
    Ok(nacre_attestation::incluster::ClusterIdentity {
        cluster_id,
        learned_id,
        config,
    })
}

/// The platforms the service may attest on: `server_platforms`, or this node's own.
fn server_platforms(cfg: &Config, tee: Option<Tee>) -> Result<Vec<&'static str>, String> {
    if cfg.server_platforms.is_empty() {
        return Ok(vec![match tee {
            None => "qemu-vtpm",
            Some(Tee::Tdx) => "tdx",
            Some(Tee::SevSnp) => "sev-snp",
        }]);
    }
    cfg.server_platforms
        .iter()
        .map(|p| match p.as_str() {
            "qemu-vtpm" => Ok("qemu-vtpm"),
            "tdx" => Ok("tdx"),
            "sev-snp" => Ok("sev-snp"),
            other => Err(format!(
                "server_platforms: unknown platform {other:?} (qemu-vtpm, tdx, sev-snp)"
            )),
        })
        .collect()
}

/// `sev-snp` for the service: its minimum TCB per product (required) and VMPL; launch
/// measurements come from the signed manifests.
fn server_snp_policy(cfg: &Config) -> Result<nacre_attestation::snp::SnpPolicy, String> {
    use nacre_attestation::snp::{Generation, SnpPolicy, Tcb};
    if cfg.server_snp_min_tcb.is_empty() {
        return Err("server_platforms sev-snp needs server_snp_min_tcb (e.g. [\"milan=4,0,24,219\"]): no minimum TCB is assumed".into());
    }
    let mut min = std::collections::BTreeMap::new();
    for t in &cfg.server_snp_min_tcb {
        let (product, tcb) = t
            .split_once('=')
            .ok_or_else(|| format!("server_snp_min_tcb {t:?}: PRODUCT=TCB"))?;
        let g: Generation = product
            .parse()
            .map_err(|e| format!("server_snp_min_tcb {t:?}: {e}"))?;
        let tcb = Tcb::parse(tcb, g).map_err(|e| format!("server_snp_min_tcb {t:?}: {e}"))?;
        if min.insert(g, tcb).is_some() {
            return Err(format!("server_snp_min_tcb: {product} is given twice"));
        }
    }
    Ok(SnpPolicy::new(cfg.server_snp_vmpl, min))
}

/// `server_accept_guest_bound_ak`: only variants whose platform binds the AK with nothing but
/// the guest's REPORT_DATA (nacre_attestation::binding::Mechanism::GuestBoundReportData).
fn server_binding_policy(
    cfg: &Config,
) -> Result<nacre_attestation::binding::BindingPolicy, String> {
    use nacre_attestation::binding::{mechanism, BindingPolicy, Mechanism};
    let mut p = BindingPolicy::default();
    for v in &cfg.server_accept_guest_bound_ak {
        match mechanism(v) {
            Some(Mechanism::GuestBoundReportData) => {
                crate::warn!("server_accept_guest_bound_ak {v}: a {v} key service is accepted with an AK only its own REPORT_DATA binds (a guest can bind a software AK)");
                p.accept_guest_bound.insert(v.clone());
            }
            Some(m) => {
                return Err(format!(
                    "server_accept_guest_bound_ak {v}: {v} binds its AK with {m}, which is always required"
                ))
            }
            None => return Err(format!("server_accept_guest_bound_ak {v}: not a known variant")),
        }
    }
    Ok(p)
}

/// The verifier of the service's own evidence (in-cluster mode): the platform verifiers of
/// `server_platforms` (a platform not listed is refused), then the phase of a running service
/// and membership of this cluster ([`nacre_attestation::incluster::ServiceVerifier`]).
fn server_verifier(
    cfg: &Config,
    key: &str,
    tee: Option<Tee>,
    cluster: nacre_attestation::incluster::ClusterIdentity,
) -> Result<Arc<dyn nacre_attestation::Verifier>, String> {
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("{p}: {e}"));
    if cfg.server_manifests.is_empty() {
        return Err("server_manifest_key without server_manifests".into());
    }
    let platforms = server_platforms(cfg, tee)?;
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
    // A manifest without a lifetime never expires: refused unless server_allow_no_expiry.
    for (path, m) in cfg.server_manifests.iter().zip(&manifests) {
        let parsed = nacre_measure::manifest::Manifest::from_json(&m.json)
            .map_err(|e| format!("{path}: {e}"))?;
        if parsed.not_after.is_none() {
            if !cfg.server_allow_no_expiry {
                return Err(format!(
                    "server manifest {path} has no not_after: it would never expire; sign it with a lifetime (nacre-measure golden gives one by default) or set server_allow_no_expiry"
                ));
            }
            crate::warn!("server manifest {path} has no not_after: it NEVER EXPIRES (server_allow_no_expiry)");
        }
    }
    // sha384 manifests (aws-sev-snp) hold the golden values of NitroTPM documents, as serve
    // splits them; the quote's verifiers take the others.
    let (nitro, manifests): (Vec<_>, Vec<_>) = manifests.into_iter().partition(|m| {
        nacre_measure::manifest::Manifest::from_json(&m.json)
            .is_ok_and(|p| p.alg == nacre_eventlog::HashAlg::Sha384)
    });
    let binding = server_binding_policy(cfg)?;
    let key = nacre_measure::sign::PublicKey::from_pem_file(std::path::Path::new(key))
        .map_err(|e| format!("{key}: {e}"))?;
    let mut by = nacre_attestation::ByPlatform::default();
    for p in platforms {
        match p {
            "qemu-vtpm" => {
                let ek_ca = cfg.server_ek_ca.as_deref().ok_or(
                    "server_platforms qemu-vtpm needs server_ek_ca (how the service's TPM is trusted)",
                )?;
                let trust = nacre_attestation::ek::EkCertified::from_pem(&read(ek_ca)?)?;
                by.qemu_vtpm = Some(Box::new(
                    nacre_attestation::QemuVtpmVerifier::with_manifests(
                        manifests.clone(),
                        key.clone(),
                        Box::new(trust),
                    ),
                ));
            }
            "tdx" => {
                let path = cfg.server_tdx_collateral.as_deref().ok_or(
                    "server_platforms tdx needs server_tdx_collateral (the service platform's collateral)",
                )?;
                let collateral = nacre_attestation::tdx::collateral_from_json(&read(path)?)
                    .map_err(|e| format!("{path}: {e}"))?;
                by.tdx = Some(Box::new(nacre_attestation::TdxVerifier::new(
                    collateral,
                    nacre_attestation::tdx::TdxPolicy::default(),
                    manifests.clone(),
                    key.clone(),
                )));
            }
            _ => {
                by.sev_snp = Some(Box::new(
                    nacre_attestation::SevSnpVerifier::new(
                        nacre_attestation::snp::AmdRoots::bundled()
                            .map_err(|e| format!("AMD's built-in SEV-SNP roots: {e}"))?,
                        server_snp_policy(cfg)?,
                        manifests.clone(),
                        key.clone(),
                    )
                    .with_binding_policy(binding.clone())
                    .with_nitro(nacre_attestation::nitro::NitroTrust::aws(nitro.clone())),
                ));
            }
        }
    }
    Ok(Arc::new(nacre_attestation::incluster::ServiceVerifier {
        platforms: Arc::new(by),
        phases: cfg.server_phases.clone(),
        cluster,
    }))
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
    // The kind only: a misplaced disk key must not reach the console.
    match r {
        Response::Refused { reason } => format!("answered {op} with a refusal: {reason}"),
        other => format!("answered {op} with {}", other.kind()),
    }
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
        let mut id = [0u8; 32];
        if hex::decode_to_slice(&j.cluster_id, &mut id).is_ok() {
            let _ = self.learned_id.set(id);
        }
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

    /// The pod range the service allocated this node (`Joined::pods`); nacre-network checks
    /// it lies inside a cluster range and serves it on cni0.
    fn pod_range(&self) -> Result<Option<Cidr>, PeerError> {
        let j = self
            .joined
            .as_ref()
            .ok_or_else(|| PeerError::Source("pod range asked before the join".into()))?;
        pod_range_of(j)
    }
}

/// The join's pod range (`Joined::pods`), parsed; `None` when the service allocates none.
fn pod_range_of(j: &Joined) -> Result<Option<Cidr>, PeerError> {
    match &j.pods {
        None => Ok(None),
        Some(p) => {
            p.pod_range.parse().map(Some).map_err(|e| {
                PeerError::Source(format!("the join's pod range {:?}: {e}", p.pod_range))
            })
        }
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
                .decode(key.expose())
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

    fn in_cluster(extra: &str) -> Config {
        toml::from_str(&format!(
            "endpoint = \"10.0.2.2:7443\"\nserver_manifests = [\"/nonexistent/m.json\"]\nserver_manifest_key = \"/nonexistent/k.pub\"\n{extra}"
        ))
        .unwrap()
    }

    fn runtime_log(dir: &std::path::Path, events: &[nacre_eventlog::RuntimeEvent]) -> String {
        let p = dir.join("runtime.cel");
        let _ = std::fs::remove_file(&p);
        let mut w = nacre_eventlog::CelWriter::open(&p).unwrap();
        for e in events {
            let rec = e
                .to_cel(w.next_recnum(), &[nacre_eventlog::HashAlg::Sha256])
                .unwrap();
            w.append(&rec).unwrap();
        }
        p.to_string_lossy().into_owned()
    }

    /// In-cluster mode: the service's platforms default to this node's own (a node in a CVM
    /// never takes a TPM quote alone), the phase to `ready`, and the cluster identity comes
    /// from `server_cluster_id` or the configuration this node measured; without either the
    /// node refuses to start the mode (fail closed).
    #[test]
    fn in_cluster_service_identity_and_platforms() {
        use nacre_eventlog::{Phase, RuntimeEvent};
        let cfg = in_cluster("");
        assert_eq!(cfg.server_phases, vec!["ready".to_string()]);
        assert_eq!(server_platforms(&cfg, None).unwrap(), vec!["qemu-vtpm"]);
        assert_eq!(server_platforms(&cfg, Some(Tee::Tdx)).unwrap(), vec!["tdx"]);
        assert_eq!(
            server_platforms(&cfg, Some(Tee::SevSnp)).unwrap(),
            vec!["sev-snp"]
        );
        let listed = in_cluster("server_platforms = [\"tdx\", \"qemu-vtpm\"]");
        assert_eq!(
            server_platforms(&listed, Some(Tee::Tdx)).unwrap(),
            vec!["tdx", "qemu-vtpm"]
        );
        let bad = in_cluster("server_platforms = [\"sgx\"]");
        assert!(server_platforms(&bad, None)
            .unwrap_err()
            .contains("unknown platform \"sgx\""));

        let dir = std::env::temp_dir().join(format!("nacre-init-incluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let learned = Arc::new(std::sync::OnceLock::new());
        // Nothing known: refused.
        let log = runtime_log(&dir, &[RuntimeEvent::Phase(Phase::Sysinit)]);
        let e = server_identity(&cfg, &log, learned.clone()).unwrap_err();
        assert!(e.contains("needs this cluster's identity"), "{e}");
        // The measured configuration, from this node's runtime log.
        let log = runtime_log(
            &dir,
            &[
                RuntimeEvent::Phase(Phase::Sysinit),
                RuntimeEvent::ClusterConfig([0xc0; 32]),
            ],
        );
        let id = server_identity(&cfg, &log, learned.clone()).unwrap();
        assert_eq!(id.config, Some([0xc0; 32]));
        assert_eq!(id.cluster_id, None);
        // The configured id.
        let with_id = in_cluster(&format!("server_cluster_id = \"{}\"", "42".repeat(32)));
        let id = server_identity(&with_id, &log, learned.clone()).unwrap();
        assert_eq!(id.cluster_id, Some([0x42; 32]));
        let bad_id = in_cluster("server_cluster_id = \"42\"");
        assert!(server_identity(&bad_id, &log, learned).is_err());
        // SEV-SNP for the service needs a minimum TCB: none is assumed.
        let snp = in_cluster("server_platforms = [\"sev-snp\"]");
        let key = dir.join("k.pub");
        let m = dir.join("m.json");
        let manifest = |not_after: Option<&str>| {
            let mut j = serde_json::json!({
                "schema": nacre_measure::manifest::SCHEMA,
                "image": {"ref": "r", "version": "1.0.0", "variant": "qemu-vtpm", "uki_sha256": "00".repeat(32)},
                "alg": "sha256",
                "stub": "systemd-stub-252",
                "secure_boot": false,
                "phase": "ready",
                "measurements": {"4": {"expected": "04".repeat(32), "warn_only": false}},
                "events": [],
            });
            if let Some(t) = not_after {
                j["not_after"] = t.into();
            }
            serde_json::to_vec(&j).unwrap()
        };
        std::fs::write(&m, manifest(Some("2099-12-31T23:59:59Z"))).unwrap();
        std::fs::write(dir.join("m.json.sig"), b"x").unwrap();
        let forever = dir.join("forever.json");
        std::fs::write(&forever, manifest(None)).unwrap();
        std::fs::write(dir.join("forever.json.sig"), b"x").unwrap();
        let (signer, _) = nacre_measure::sign::PemSigner::generate().unwrap();
        let spki = nacre_measure::sign::BlobSigner::public_key_spki(&signer);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&spki)
        );
        std::fs::write(&key, pem).unwrap();
        let snp = Config {
            server_manifests: vec![m.to_string_lossy().into_owned()],
            ..snp
        };
        let ident = server_identity(&with_id, &log, Arc::default()).unwrap();
        let e = server_verifier(&snp, &key.to_string_lossy(), None, ident.clone())
            .err()
            .unwrap();
        assert!(e.contains("needs server_snp_min_tcb"), "{e}");
        let with_tcb = Config {
            server_snp_min_tcb: vec!["milan=4,0,24,219".into()],
            ..snp.clone()
        };
        assert!(server_verifier(&with_tcb, &key.to_string_lossy(), None, ident.clone()).is_ok());
        // A manifest without not_after (it never expires): refused, named, unless opted in.
        let no_expiry = Config {
            server_manifests: vec![
                m.to_string_lossy().into_owned(),
                forever.to_string_lossy().into_owned(),
            ],
            ..with_tcb.clone()
        };
        let e = server_verifier(&no_expiry, &key.to_string_lossy(), None, ident.clone())
            .err()
            .unwrap();
        assert!(
            e.contains("forever.json")
                && e.contains("no not_after")
                && e.contains("server_allow_no_expiry"),
            "{e}"
        );
        assert!(!in_cluster("").server_allow_no_expiry);
        let opted_in = Config {
            server_allow_no_expiry: in_cluster("server_allow_no_expiry = true")
                .server_allow_no_expiry,
            ..no_expiry
        };
        assert!(server_verifier(&opted_in, &key.to_string_lossy(), None, ident.clone()).is_ok());
        let bad_tcb = Config {
            server_snp_min_tcb: vec!["rome=1,2,3,4".into()],
            ..snp.clone()
        };
        let e = server_verifier(&bad_tcb, &key.to_string_lossy(), None, ident.clone())
            .err()
            .unwrap();
        assert!(e.contains("server_snp_min_tcb \"rome=1,2,3,4\""), "{e}");
        // A guest-bound AK (qemu-snp) only by opt-in, and only for variants without a binding.
        assert!(server_binding_policy(&with_tcb)
            .unwrap()
            .accept_guest_bound
            .is_empty());
        let opt_in = Config {
            server_accept_guest_bound_ak: vec!["qemu-snp".into()],
            ..with_tcb.clone()
        };
        assert!(server_binding_policy(&opt_in)
            .unwrap()
            .accept_guest_bound
            .contains("qemu-snp"));
        assert!(server_verifier(&opt_in, &key.to_string_lossy(), None, ident.clone()).is_ok());
        for (v, why) in [("azure-sev-snp", "always required"), ("sgx", "not a known")] {
            let bad = Config {
                server_accept_guest_bound_ak: vec![v.into()],
                ..with_tcb.clone()
            };
            let e = server_binding_policy(&bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        // tdx without collateral, qemu-vtpm without an EK CA: named.
        let tdx = Config {
            server_platforms: vec!["tdx".into()],
            ..snp.clone()
        };
        let e = server_verifier(&tdx, &key.to_string_lossy(), None, ident.clone())
            .err()
            .unwrap();
        assert!(e.contains("needs server_tdx_collateral"), "{e}");
        let qemu = Config {
            server_platforms: vec![],
            ..snp
        };
        let e = server_verifier(&qemu, &key.to_string_lossy(), None, ident)
            .err()
            .unwrap();
        assert!(e.contains("needs server_ek_ca"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
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

    /// The pod range handed to nacre-network comes from the join's `pods`; a malformed one
    /// stops the node with the join's value named.
    #[test]
    fn pod_range_from_the_join() {
        let mut j: Joined = serde_json::from_value(serde_json::json!({
            "node": "node-1",
            "cluster_id": "00".repeat(32),
            "overlay": "10.244.0.3/32",
            "peers": [],
            "kubelet": {
                "api_server": "https://10.244.0.1:6443",
                "bootstrap_token": "abcdef.0123456789abcdef"
            },
            "rejoin": false,
        }))
        .unwrap();
        assert_eq!(pod_range_of(&j).unwrap(), None);
        j.pods = Some(nacre_attestation::join::PodNetwork {
            pod_range: "10.32.1.0/24".into(),
            pod_cidr: "10.32.0.0/16".into(),
            service_cidr: None,
        });
        assert_eq!(
            pod_range_of(&j).unwrap(),
            Some("10.32.1.0/24".parse().unwrap())
        );
        if let Some(p) = j.pods.as_mut() {
            p.pod_range = "10.32.1.0".into();
        }
        let e = pod_range_of(&j).unwrap_err().to_string();
        assert!(e.starts_with("the join's pod range \"10.32.1.0\": "), "{e}");
    }
}
