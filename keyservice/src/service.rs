//! What the service grants to an attested node, and why it refuses.
//!
//! The attestation itself (quote, nonce, logs, golden manifest) is checked by the platform's
//! [`nacre_attestation::Verifier`] during the TLS handshake; a request only reaches
//! [`Service::handle`] with an [`Accepted`] verdict. On top of it, PCR 15 (the cluster id
//! nacre-init extends once it has joined) decides what a node may ask:
//! * PCR 15 zero (a node whose image carries its cluster's configuration), or extend(0, this
//!   cluster's configuration digest) (a release-image node that measured the cluster
//!   configuration it was given, `nacre_cluster`): the node has not joined in this boot:
//!   `join`, then `disk-key`;
//! * the same followed by extend(·, this cluster's id): a member in this boot: `peers`;
//! * anything else (another cluster's configuration or id, or PCR 15 not quoted): refused. A
//!   node booted with another cluster's configuration, or an edited copy of this one, never
//!   reaches a rule that releases anything.
//!
//! On TDX, RTMR[3] says the same in hardware the host cannot reset (nacre-init extends the
//! cluster events into both; the verifier hands over RTMR[3]'s cluster part,
//! [`nacre_eventlog::runtime::member_rtmr3`] for a member): it must be zero where PCR 15 is, and
//! this cluster's value where PCR 15 shows a member. The phase on TDX is RTMR[3]'s, not PCR 11's
//! (`TdxVerifier`).
//!
//! And the phase of the golden manifest the node matched (PCR 11 holds nacre-init's phases):
//! keys and the join only at `sysinit` (the verified root is up, no service has run yet); the
//! peer set at `sysinit` or `ready` (services running). A node whose workload runs can never
//! ask for a disk key: its PCR 11 says `ready`.
//!
//! Disk keys: HKDF-SHA256(salt "nacre disk key v2", IKM master secret, info = the disk's LUKS2
//! UUID, a zero byte, and the owner's AK fingerprint), 64 bytes. A disk UUID is bound to the node
//! that first asked for it; another node asking for the same UUID is refused (a good image never
//! does that; this keeps one node's disk key from another node). Because the owner is in the
//! derivation, the binding is not only a database row: a restored or copied database whose
//! binding for a UUID is missing or names another node yields another key, never the owner's.

use crate::overlay::OverlayRange;
use crate::podnet::PodSettings;
use crate::store::{now_unix, Cluster, Decision, NodeRecord, Store, StoreError};
use base64::Engine;
use nacre_attestation::join::{
    Joined, KubeletJoin, PeerInfo, PodNetwork, Request, Response, WgAnnounce,
};
use nacre_attestation::Accepted;
use nacre_eventlog::runtime::{pcr15_after, rtmr3_after, CLUSTER_ID_PCR, RTMR_LEN};
use nacre_eventlog::{HashAlg, RuntimeEvent};
use std::net::SocketAddr;
use zeroize::Zeroizing;

/// Length of a disk key (nacre-statedisk's keyslot passphrase length).
pub const DISK_KEY_LEN: usize = 64;
const DISK_KEY_SALT: &[u8] = b"nacre disk key v2";
/// kubelet's `clusterDomain` (Kubernetes' default).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// HKDF-SHA256 of the master secret with the disk's UUID and its owner's AK fingerprint as info.
pub fn disk_key(
    master: &[u8; 32],
    disk_uuid: &str,
    owner_ak: &str,
) -> Zeroizing<[u8; DISK_KEY_LEN]> {
    struct Len;
    impl ring::hkdf::KeyType for Len {
        fn len(&self) -> usize {
            DISK_KEY_LEN
        }
    }
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, DISK_KEY_SALT).extract(master);
    let mut out = Zeroizing::new([0u8; DISK_KEY_LEN]);
    let info = [disk_uuid.as_bytes(), &[0u8], owner_ak.as_bytes()];
    // Cannot fail: 64 bytes is far below HKDF-SHA256's 255 * 32 limit.
    if let Ok(okm) = prk.expand(&info, Len) {
        let _ = okm.fill(out.as_mut_slice());
    }
    out
}

/// PCR 15 of a node that joined this cluster (and extended nothing else there).
pub fn member_pcr15(cluster_id: &[u8; 32]) -> Vec<u8> {
    let digest = RuntimeEvent::ClusterId(*cluster_id)
        .digest(HashAlg::Sha256)
        .unwrap_or_default();
    HashAlg::Sha256
        .extend(&[0u8; 32], &digest)
        .unwrap_or_default()
}

/// One admissible value of PCR 15 (and RTMR[3], extended with the same events on TDX).
struct Pcr15Form {
    membership: Membership,
    pcr15: Vec<u8>,
    rtmr3: [u8; RTMR_LEN],
    what: &'static str,
}

/// PCR 15's admissible values: nothing or this cluster's configuration (not joined), then the
/// cluster id after them (a member).
fn pcr15_forms(cluster_id: &[u8; 32], config: Option<[u8; 32]>) -> Vec<Pcr15Form> {
    let id = RuntimeEvent::ClusterId(*cluster_id);
    let mut forms = vec![
        (Membership::NotJoined, vec![], "zero: not joined"),
        (Membership::Member, vec![id], "this cluster's id"),
    ];
    if let Some(d) = config {
        let c = RuntimeEvent::ClusterConfig(d);
        forms.push((
            Membership::NotJoined,
            vec![c],
            "this cluster's configuration: not joined",
        ));
        forms.push((
            Membership::Member,
            vec![c, id],
            "this cluster's configuration and id",
        ));
    }
    forms
        .into_iter()
        .map(|(membership, events, what)| Pcr15Form {
            membership,
            pcr15: pcr15_after(&events).unwrap_or_default(),
            rtmr3: rtmr3_after(&events),
            what,
        })
        .collect()
}

/// A LUKS2 UUID as libcryptsetup writes it (lowercase 8-4-4-4-12 hex).
fn valid_uuid(u: &str) -> bool {
    let parts: Vec<&str> = u.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
    NotJoined,
    Member,
}

pub struct Service {
    store: Store,
    cluster: Cluster,
    /// What PCR 15 (and on TDX RTMR[3]) may hold, and what that makes the node.
    forms: Vec<Pcr15Form>,
    /// SHA-256 of this cluster's configuration (`cluster.toml`), if nodes are given one.
    cluster_config: Option<[u8; 32]>,
    /// Where decisions are echoed as they happen (the service's log), besides the database.
    echo: Box<dyn Fn(&Decision) + Send + Sync>,
}

/// A refusal: which rule and why.
struct Refuse {
    check: &'static str,
    reason: String,
}

fn refuse<T>(check: &'static str, reason: impl Into<String>) -> Result<T, Refuse> {
    Err(Refuse {
        check,
        reason: reason.into(),
    })
}

impl From<StoreError> for Refuse {
    fn from(e: StoreError) -> Self {
        Refuse {
            check: match e {
                StoreError::Exhausted(_) => "capacity",
                _ => "database",
            },
            reason: e.to_string(),
        }
    }
}

impl Service {
    pub fn new(
        store: Store,
        echo: Box<dyn Fn(&Decision) + Send + Sync>,
    ) -> Result<Self, StoreError> {
        let cluster = store.cluster()?;
        Ok(Service {
            forms: pcr15_forms(&cluster.cluster_id, None),
            cluster_config: None,
            store,
            cluster,
            echo,
        })
    }

    /// Nodes of release images measure this cluster configuration (its SHA-256) into PCR 15
    /// before they join: admit them too, and refuse any other configuration.
    pub fn with_cluster_config(mut self, digest: [u8; 32]) -> Self {
        self.forms = pcr15_forms(&self.cluster.cluster_id, Some(digest));
        self.cluster_config = Some(digest);
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn cluster_id(&self) -> [u8; 32] {
        self.cluster.cluster_id
    }

    /// Record a decision (database and echo). A decision that cannot be recorded is still
    /// echoed; the caller refuses when a grant could not be recorded.
    pub fn record(
        &self,
        peer: SocketAddr,
        ak: Option<String>,
        op: &str,
        outcome: Result<String, (String, String)>,
    ) -> Result<(), StoreError> {
        let (outcome, check, detail) = match outcome {
            Ok(detail) => ("granted", None, detail),
            Err((check, reason)) => ("refused", Some(check), reason),
        };
        self.log_decision(peer, ak, op, outcome, check, detail)
    }

    /// Remove a node (by name or AK fingerprint; [`Store::remove_node`]) and record it: its
    /// peers entry disappears for the others at their next refresh, its AK is never admitted
    /// again, its disks' keys are not released again.
    pub fn remove_node(
        &self,
        selector: &str,
        by: &str,
    ) -> Result<(String, crate::store::Removed), StoreError> {
        let (ak, t) = self.store.remove_node(selector, by, now_unix())?;
        let detail = format!(
            "{} ({}) removed by {}{}",
            t.name,
            t.overlay,
            t.by,
            if t.disks.is_empty() {
                String::new()
            } else {
                format!("; its disk(s) {} are no longer served", t.disks.join(", "))
            }
        );
        let local = SocketAddr::from(([0, 0, 0, 0], 0));
        self.log_decision(local, Some(ak.clone()), "remove", "removed", None, detail)?;
        Ok((ak, t))
    }

    /// Remove every node not heard from (join or peers refresh) for `max_age` seconds of the
    /// service's uptime (it has been up since `up_since`; [`Store::stale_nodes`]).
    pub fn expire(
        &self,
        max_age: u64,
        up_since: u64,
    ) -> Result<Vec<(String, crate::store::Removed)>, StoreError> {
        let by = format!("expiry (not seen for {} s)", max_age);
        let mut out = Vec::new();
        for ak in self.store.stale_nodes(max_age, now_unix(), up_since)? {
            out.push(self.remove_node(&ak, &by)?);
        }
        Ok(out)
    }

    /// Whether this AK was removed ([`Service::remove_node`]): the in-cluster service checks it
    /// before it quotes for a client.
    pub fn is_removed(&self, ak: &str) -> Result<bool, StoreError> {
        self.store.is_removed(ak)
    }

    /// A connection that ended before the peer presented anything (a node powering off in the
    /// middle of a request, a port scan): recorded, but neither a grant nor a refusal.
    pub fn record_aborted(&self, peer: SocketAddr, detail: String) -> Result<(), StoreError> {
        self.log_decision(peer, None, "connect", "aborted", Some("tls".into()), detail)
    }

    /// A connection whose peer went away during credential activation (after its evidence was
    /// accepted, before it returned the credential): nothing was served; neither a grant nor
    /// a refusal, but the AK is named.
    pub fn record_aborted_activation(
        &self,
        peer: SocketAddr,
        ak: String,
        detail: String,
    ) -> Result<(), StoreError> {
        self.log_decision(
            peer,
            Some(ak),
            "attest",
            "aborted",
            Some("credential activation".into()),
            detail,
        )
    }

    /// Unauthenticated events that were counted instead of recorded one by one
    /// ([`crate::limits::EventBudget`]): one decision for a source (or for many) and a window.
    pub fn record_summary(&self, summary: &crate::limits::Summary) -> Result<(), StoreError> {
        let d = Decision {
            seq: 0,
            unix: now_unix(),
            peer: summary
                .source
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "*".into()),
            ak: None,
            op: "connect".into(),
            outcome: "summary".into(),
            check: Some("rate limit".into()),
            detail: summary.detail(),
        };
        let r = self.store.log(d.clone());
        match &r {
            Ok(logged) => (self.echo)(logged),
            Err(_) => (self.echo)(&d),
        }
        r.map(|_| ())
    }

    fn log_decision(
        &self,
        peer: SocketAddr,
        ak: Option<String>,
        op: &str,
        outcome: &str,
        check: Option<String>,
        detail: String,
    ) -> Result<(), StoreError> {
        let d = Decision {
            seq: 0,
            unix: now_unix(),
            peer: peer.to_string(),
            ak,
            op: op.to_string(),
            outcome: outcome.to_string(),
            check,
            detail,
        };
        let r = self.store.log(d.clone());
        match &r {
            Ok(logged) => (self.echo)(logged),
            Err(_) => (self.echo)(&d),
        }
        r.map(|_| ())
    }

    /// Answer one attested request; every answer is recorded.
    pub fn handle(&self, accepted: &Accepted, peer: SocketAddr, req: &Request) -> Response {
        // Fail closed: an acceptance still pending credential activation serves nothing
        // (nacre_attestation::credential::settle / join::challenge_peer complete it).
        if accepted.ek_activation.is_some() {
            let reason = "the AK is trusted through its EK certificate, but the credential activation was not completed".to_string();
            let _ = self.record(
                peer,
                Some(accepted.ak_fingerprint()),
                req.op(),
                Err(("credential activation".into(), reason.clone())),
            );
            return Response::Refused { reason };
        }
        let ak = accepted.ak_fingerprint();
        let result = self.decide(accepted, &ak, req);
        match result {
            Ok((resp, detail)) => {
                match self.record(peer, Some(ak), req.op(), Ok(detail)) {
                    Ok(()) => resp,
                    // Nothing is released that was not logged.
                    Err(e) => Response::Refused {
                        reason: format!("the decision could not be recorded: {e}"),
                    },
                }
            }
            Err(r) => {
                let reason = format!("{}: {}", r.check, r.reason);
                let _ = self.record(peer, Some(ak), req.op(), Err((r.check.into(), r.reason)));
                Response::Refused { reason }
            }
        }
    }

    fn membership(&self, accepted: &Accepted) -> Result<Membership, Refuse> {
        let Some(pcr15) = accepted.pcrs.get(&CLUSTER_ID_PCR) else {
            return refuse("policy", "the quote does not cover PCR 15 (the cluster id)");
        };
        let Some(form) = self.forms.iter().find(|f| f.pcr15 == *pcr15) else {
            let configured = match &self.cluster_config {
                Some(d) => format!(
                    "; nodes of this cluster measure its configuration {} (cluster.toml) and then its id",
                    hex::encode(d)
                ),
                None => String::new(),
            };
            return refuse(
                "policy",
                format!(
                    "PCR 15 is {}: the node measured another cluster's configuration or joined another cluster in this boot{configured}",
                    hex::encode(pcr15)
                ),
            );
        };
        // TDX: RTMR[3] must say the same as PCR 15 (the same events).
        if let Some(rtmr3) = &accepted.tdx_rtmr3 {
            if *rtmr3 != form.rtmr3 {
                return refuse(
                    "policy",
                    format!(
                        "RTMR[3] is {}, not {} ({}), which PCR 15 shows",
                        hex::encode(rtmr3),
                        hex::encode(form.rtmr3),
                        form.what
                    ),
                );
            }
        }
        Ok(form.membership)
    }

    fn decide(
        &self,
        accepted: &Accepted,
        ak: &str,
        req: &Request,
    ) -> Result<(Response, String), Refuse> {
        let membership = self.membership(accepted)?;
        let i = &accepted.image;
        let image = format!("{} {} ({})", i.reference, i.version, i.variant);
        match req {
            Request::Join { wireguard } => {
                if membership != Membership::NotJoined {
                    return refuse(
                        "policy",
                        "join: PCR 15 is not zero (already joined in this boot)",
                    );
                }
                check_phase(accepted, req, &["sysinit"])?;
                let endpoint =
                    check_announce(wireguard, &self.cluster.overlay, self.cluster.pods.as_ref())?;
                let pods = self.cluster.pods.as_ref();
                let (rec, known) =
                    self.store
                        .record_join(ak, &self.cluster.overlay, pods, |r| {
                            r.wg_public_key = wireguard.public_key.clone();
                            r.endpoint = endpoint.to_string();
                            r.image = image.clone();
                        })?;
                let pod_network = match (pods, &rec.pod_range) {
                    (Some(p), Some(range)) => Some(PodNetwork {
                        pod_range: range.clone(),
                        pod_cidr: p.pod_cidr.to_string(),
                        service_cidr: p.service_cidr.map(|c| c.to_string()),
                    }),
                    (Some(_), None) => {
                        return refuse("database", "join: the node's pod range was not recorded")
                    }
                    (None, _) => None,
                };
                let peers = self.peers_for(ak)?;
                let detail = format!(
                    "{} {} as {}{} ({}), image {image}, {} peer(s)",
                    if known { "rejoined" } else { "joined" },
                    rec.name,
                    rec.overlay,
                    match &rec.pod_range {
                        Some(r) => format!(" pods {r}"),
                        None => String::new(),
                    },
                    endpoint,
                    peers.len()
                );
                Ok((
                    Response::Joined(Joined {
                        node: rec.name,
                        cluster_id: hex::encode(self.cluster.cluster_id),
                        overlay: rec.overlay,
                        peers,
                        pods: pod_network,
                        kubelet: KubeletJoin {
                            api_server: self.cluster.api_server.clone(),
                            api_server_ca: self.cluster.api_server_ca.clone(),
                            bootstrap_token: self.cluster.bootstrap_token.clone(),
                            cluster_dns: pods.and_then(|p| p.cluster_dns).map(|d| d.to_string()),
                            cluster_domain: CLUSTER_DOMAIN.into(),
                        },
                        rejoin: known,
                    }),
                    detail,
                ))
            }
            Request::DiskKey { disk_uuid } => {
                if membership != Membership::NotJoined {
                    return refuse(
                        "policy",
                        "disk-key: PCR 15 is not zero (disk keys are released before the node extends the cluster id)",
                    );
                }
                check_phase(accepted, req, &["sysinit"])?;
                let Some(rec) = self.store.node(ak)? else {
                    return refuse("policy", "disk-key: the node has not joined");
                };
                if !valid_uuid(disk_uuid) {
                    return refuse("request", format!("disk-key: {disk_uuid:?} is not a UUID"));
                }
                let uuid = disk_uuid.to_ascii_lowercase();
                let owner = self.store.bind_disk(&uuid, ak)?;
                if owner != ak {
                    return refuse(
                        "policy",
                        format!("disk-key: disk {uuid} belongs to another node ({owner})"),
                    );
                }
                let key = disk_key(&self.cluster.master_secret, &uuid, ak);
                Ok((
                    Response::DiskKey {
                        key: nacre_attestation::join::SecretB64::new(
                            base64::engine::general_purpose::STANDARD.encode(key.as_slice()),
                        ),
                    },
                    format!("disk key for {uuid} to {}", rec.name),
                ))
            }
            Request::Peers {} => {
                if membership != Membership::Member {
                    return refuse(
                        "policy",
                        "peers: PCR 15 does not show this cluster's id (join first)",
                    );
                }
                check_phase(accepted, req, &["sysinit", "ready"])?;
                let Some(rec) = self.store.node(ak)? else {
                    return refuse("policy", "peers: the node has not joined");
                };
                // Seen (for `serve --expire-after-days`); rewritten at most hourly.
                self.store.touch(ak, now_unix())?;
                let peers = self.peers_for(ak)?;
                let detail = format!("{} peer(s) to {}", peers.len(), rec.name);
                Ok((Response::Peers { peers }, detail))
            }
        }
    }

    /// Every other node's latest WireGuard key, endpoint, overlay address and pod range.
    fn peers_for(&self, ak: &str) -> Result<Vec<PeerInfo>, Refuse> {
        let mut out = Vec::new();
        for (other, rec) in self.store.nodes()? {
            if other == ak {
                continue;
            }
            if let Some(p) = peer_info(&rec) {
                out.push(p);
            }
        }
        Ok(out)
    }
}

/// The phase of the golden manifest the node matched must be one of `allowed`.
fn check_phase(accepted: &Accepted, req: &Request, allowed: &[&str]) -> Result<(), Refuse> {
    let phase = accepted.phase.as_deref().unwrap_or("none");
    if allowed.contains(&phase) {
        return Ok(());
    }
    refuse(
        "policy",
        format!(
            "{}: the node matched the golden manifest of phase {phase}; allowed: {}",
            req.op(),
            allowed.join(", ")
        ),
    )
}

/// A peer routes its overlay address and, once it has one, its pod range through its tunnel
/// (a node whose record predates pod ranges gets one at its next join).
fn peer_info(rec: &NodeRecord) -> Option<PeerInfo> {
    let mut allowed_ips = vec![rec.overlay.clone()];
    allowed_ips.extend(rec.pod_range.clone());
    Some(PeerInfo {
        name: rec.name.clone(),
        public_key: rec.wg_public_key.clone(),
        endpoint: rec.endpoint.parse().ok()?,
        allowed_ips,
    })
}

fn check_announce(
    w: &WgAnnounce,
    overlay: &OverlayRange,
    pods: Option<&PodSettings>,
) -> Result<SocketAddr, Refuse> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(&w.public_key)
        .ok()
        .filter(|k| k.len() == 32 && k.iter().any(|b| *b != 0));
    if key.is_none() {
        return refuse(
            "request",
            "join: the WireGuard public key is not 32 base64 bytes",
        );
    }
    if w.listen_port == 0 {
        return refuse("request", "join: listen port 0");
    }
    match w.underlay {
        std::net::IpAddr::V4(a) if overlay.contains(a) => {
            return refuse(
                "request",
                format!("join: the underlay {a} is inside the overlay range {overlay}"),
            )
        }
        std::net::IpAddr::V4(a) if pods.is_some_and(|p| p.pod_cidr.contains(a)) => {
            return refuse(
                "request",
                format!("join: the underlay {a} is inside the cluster's pod CIDR"),
            )
        }
        std::net::IpAddr::V4(a)
            if pods
                .and_then(|p| p.service_cidr)
                .is_some_and(|c| c.contains(a)) =>
        {
            return refuse(
                "request",
                format!("join: the underlay {a} is inside the cluster's service CIDR"),
            )
        }
        a if a.is_unspecified() || a.is_loopback() || a.is_multicast() => {
            return refuse("request", format!("join: the underlay {a} is not routable"))
        }
        _ => {}
    }
    Ok(SocketAddr::new(w.underlay, w.listen_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_keys_are_hkdf_of_master_uuid_and_owner() {
        let m = [7u8; 32];
        let (u0, u1) = (
            "0f0e0d0c-0b0a-0908-0706-050403020100",
            "0f0e0d0c-0b0a-0908-0706-050403020101",
        );
        let (ak, other) = ("aa".repeat(32), "bb".repeat(32));
        let a = disk_key(&m, u0, &ak);
        assert_ne!(a.as_slice(), disk_key(&m, u1, &ak).as_slice());
        assert_eq!(a.as_slice(), disk_key(&m, u0, &ak).as_slice());
        assert_ne!(a.as_slice(), disk_key(&[8u8; 32], u0, &ak).as_slice());
        // Another owner, another key: a binding lost or rewritten in the database gives no one
        // the owner's key.
        assert_ne!(a.as_slice(), disk_key(&m, u0, &other).as_slice());
        // RFC 5869 by hand: PRK = HMAC(salt, IKM); T(1) = HMAC(PRK, info || 1), T(2) = ...
        let hmac = |k: &[u8], d: &[u8]| {
            ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k), d)
                .as_ref()
                .to_vec()
        };
        let prk = hmac(b"nacre disk key v2", &m);
        let info = [u0.as_bytes(), &[0], ak.as_bytes()].concat();
        let t1 = hmac(&prk, &[info.as_slice(), &[1]].concat());
        let t2 = hmac(&prk, &[t1.as_slice(), info.as_slice(), &[2]].concat());
        assert_eq!(a.as_slice(), [t1, t2].concat().as_slice());
    }

    #[test]
    fn uuids_are_checked() {
        assert!(valid_uuid("0f0e0d0c-0b0a-0908-0706-050403020100"));
        for bad in [
            "",
            "../../x",
            "0f0e0d0c0b0a09080706050403020100",
            "0f0e0d0c-0b0a-0908-0706-05040302010g",
        ] {
            assert!(!valid_uuid(bad), "{bad}");
        }
    }

    #[test]
    fn announcements_are_checked() {
        let r: OverlayRange = "10.244.0.0/16".parse().unwrap();
        let key = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let ok = WgAnnounce {
            public_key: key.clone(),
            underlay: "10.0.2.15".parse().unwrap(),
            listen_port: 51820,
        };
        assert_eq!(
            check_announce(&ok, &r, None).ok(),
            Some("10.0.2.15:51820".parse().unwrap())
        );
        let cases = [
            WgAnnounce {
                public_key: "AAAA".into(),
                ..ok.clone()
            },
            WgAnnounce {
                public_key: base64::engine::general_purpose::STANDARD.encode([0u8; 32]),
                ..ok.clone()
            },
            WgAnnounce {
                underlay: "10.244.3.3".parse().unwrap(),
                ..ok.clone()
            },
            WgAnnounce {
                underlay: "127.0.0.1".parse().unwrap(),
                ..ok.clone()
            },
            WgAnnounce {
                listen_port: 0,
                ..ok.clone()
            },
        ];
        for c in cases {
            assert!(check_announce(&c, &r, None).is_err(), "{c:?}");
        }
        // With a pod network, an underlay inside its pod or service CIDR is refused too.
        let pods = PodSettings::new(r, "10.32.0.0/16", 24, Some("10.96.0.0/12"), None).unwrap();
        assert!(check_announce(&ok, &r, Some(&pods)).is_ok());
        for (inside, what) in [("10.32.7.1", "pod CIDR"), ("10.100.0.1", "service CIDR")] {
            let w = WgAnnounce {
                underlay: inside.parse().unwrap(),
                ..ok.clone()
            };
            assert!(check_announce(&w, &r, None).is_ok(), "{inside}");
            let e = check_announce(&w, &r, Some(&pods)).unwrap_err();
            assert!(e.reason.contains(what), "{}", e.reason);
        }
    }

    #[test]
    fn member_pcr15_is_one_extend_of_the_cluster_id_event() {
        let id = [0xab; 32];
        let mut bank = nacre_eventlog::PcrBank::new(HashAlg::Sha256);
        let d = RuntimeEvent::ClusterId(id).digest(HashAlg::Sha256).unwrap();
        bank.extend(15, &d).unwrap();
        assert_eq!(bank.get(15).unwrap(), member_pcr15(&id).as_slice());
    }

    /// On TDX, RTMR[3] must agree with PCR 15: zero to join, this cluster's value for a member.
    #[test]
    fn tdx_rtmr3_is_judged_with_pcr15() {
        use nacre_eventlog::runtime::member_rtmr3;
        let dir = tempfile::tempdir().unwrap();
        let id = [0x33; 32];
        let store = Store::create(
            &dir.path().join("k.redb"),
            &Cluster {
                master_secret: Zeroizing::new([1; 32]),
                cluster_id: id,
                overlay: "10.244.0.0/16".parse().unwrap(),
                bootstrap_token: "abcdef.0123456789abcdef".into(),
                api_server: None,
                pods: None,
                api_server_ca: None,
            },
        )
        .unwrap();
        let service = Service::new(store, Box::new(|_: &Decision| {})).unwrap();
        let accepted = |pcr15: Vec<u8>, rtmr3: Option<[u8; 48]>| Accepted {
            image: nacre_measure::manifest::ImageRef {
                reference: "r".into(),
                version: "v".into(),
                variant: "qemu-tdx".into(),
                uki_sha256: "00".repeat(32),
                roothash: None,
            },
            phase: Some("sysinit".into()),
            pcrs: [(15, pcr15)].into_iter().collect(),
            matched: vec![],
            warnings: vec![],
            ak_public: vec![1],
            platform_warnings: vec![],
            tdx_rtmr3: rtmr3,
            ek_activation: None,
        };
        let zero = vec![0u8; 32];
        let member = member_pcr15(&id);
        let m = |a: &Accepted| service.membership(a).map_err(|r| r.reason);
        // Not TDX: PCR 15 alone.
        assert_eq!(m(&accepted(zero.clone(), None)), Ok(Membership::NotJoined));
        // TDX, both zero / both this cluster's.
        assert_eq!(
            m(&accepted(zero.clone(), Some([0; 48]))),
            Ok(Membership::NotJoined)
        );
        assert_eq!(
            m(&accepted(member.clone(), Some(member_rtmr3(&id)))),
            Ok(Membership::Member)
        );
        // PCR 15 zero (a vTPM the host restarted) but RTMR[3] shows a join.
        let e = m(&accepted(zero, Some(member_rtmr3(&id)))).unwrap_err();
        assert!(e.contains("(zero: not joined), which PCR 15 shows"), "{e}");
        // PCR 15 this cluster's, RTMR[3] another's (or none).
        let e = m(&accepted(member.clone(), Some(member_rtmr3(&[0x34; 32])))).unwrap_err();
        assert!(e.contains("(this cluster's id), which PCR 15 shows"), "{e}");
        assert!(m(&accepted(member.clone(), Some([0; 48]))).is_err());

        // With a cluster configuration: its extend admits a join, then a member; another
        // configuration (or the right one on PCR 15 with RTMR[3] not agreeing) is refused.
        let config = [0xc0; 32];
        let service = service.with_cluster_config(config);
        let m = |a: &Accepted| service.membership(a).map_err(|r| r.reason);
        let c = RuntimeEvent::ClusterConfig(config);
        let i = RuntimeEvent::ClusterId(id);
        let configured = pcr15_after(&[c]).unwrap();
        let configured_member = pcr15_after(&[c, i]).unwrap();
        assert_eq!(
            m(&accepted(configured.clone(), None)),
            Ok(Membership::NotJoined)
        );
        assert_eq!(
            m(&accepted(configured.clone(), Some(rtmr3_after(&[c])))),
            Ok(Membership::NotJoined)
        );
        assert_eq!(
            m(&accepted(
                configured_member.clone(),
                Some(rtmr3_after(&[c, i]))
            )),
            Ok(Membership::Member)
        );
        assert_eq!(m(&accepted(member, None)), Ok(Membership::Member));
        assert_eq!(m(&accepted(vec![0; 32], None)), Ok(Membership::NotJoined));
        let other = pcr15_after(&[RuntimeEvent::ClusterConfig([0xc1; 32])]).unwrap();
        let e = m(&accepted(other, None)).unwrap_err();
        assert!(e.contains("another cluster's configuration"), "{e}");
        assert!(e.contains(&hex::encode(config)), "{e}");
        let e = m(&accepted(configured, Some([0; 48]))).unwrap_err();
        assert!(e.contains("which PCR 15 shows"), "{e}");
        // The id without the configuration it came with, in the wrong order: refused.
        let swapped = pcr15_after(&[i, c]).unwrap();
        assert!(m(&accepted(swapped, None)).is_err());
    }

    /// A pod CIDR with room for 3 nodes: the 4th joining node is refused by the `capacity`
    /// check, the refusal is logged, and the first three keep serving.
    #[test]
    fn a_full_pod_cidr_refuses_the_join_as_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let overlay: OverlayRange = "10.244.0.0/16".parse().unwrap();
        let store = Store::create(
            &dir.path().join("k.redb"),
            &Cluster {
                master_secret: Zeroizing::new([1; 32]),
                cluster_id: [0x44; 32],
                overlay,
                bootstrap_token: "abcdef.0123456789abcdef".into(),
                api_server: None,
                pods: Some(PodSettings::new(overlay, "10.32.0.0/24", 26, None, None).unwrap()),
                api_server_ca: None,
            },
        )
        .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = log.clone();
        let service = Service::new(
            store,
            Box::new(move |d: &Decision| l.lock().unwrap().push(d.clone())),
        )
        .unwrap();
        let node = |ak: u8| Accepted {
            image: nacre_measure::manifest::ImageRef {
                reference: "r".into(),
                version: "v".into(),
                variant: "qemu-vtpm".into(),
                uki_sha256: "00".repeat(32),
                roothash: None,
            },
            phase: Some("sysinit".into()),
            pcrs: [(15, vec![0u8; 32])].into_iter().collect(),
            matched: vec![],
            warnings: vec![],
            ak_public: vec![ak],
            platform_warnings: vec![],
            tdx_rtmr3: None,
            ek_activation: None,
        };
        let join = |ak: u8| {
            service.handle(
                &node(ak),
                "10.0.2.2:40000".parse().unwrap(),
                &Request::Join {
                    wireguard: WgAnnounce {
                        public_key: base64::engine::general_purpose::STANDARD.encode([ak; 32]),
                        underlay: std::net::IpAddr::from([10, 0, 2, 10 + ak]),
                        listen_port: 51820,
                    },
                },
            )
        };
        let mut ranges = Vec::new();
        for ak in 1..=3 {
            let Response::Joined(j) = join(ak) else {
                panic!("node {ak} refused")
            };
            ranges.push(j.pods.unwrap().pod_range);
        }
        assert_eq!(
            ranges,
            ["10.32.0.64/26", "10.32.0.128/26", "10.32.0.192/26"]
        );
        let Response::Refused { reason } = join(4) else {
            panic!("the 4th node joined")
        };
        assert!(
            reason.starts_with("capacity: the pod CIDR 10.32.0.0/24 has no /26 range left"),
            "{reason}"
        );
        let last = log.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            (last.outcome.as_str(), last.check.as_deref()),
            ("refused", Some("capacity"))
        );
        // A known node still rejoins, with its range.
        let Response::Joined(j) = join(2) else {
            panic!("node 2 refused")
        };
        assert_eq!(j.pods.unwrap().pod_range, "10.32.0.128/26");
        assert_eq!(j.peers.len(), 2);
        assert!(j
            .peers
            .iter()
            .any(|p| p.allowed_ips == ["10.244.0.1/32", "10.32.0.64/26"]));
    }
}
