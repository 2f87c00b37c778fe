//! The key service's state, in one redb database file (ACID, crash-safe, survives restarts):
//! the cluster's secrets and settings (`meta`), the nodes that joined (`nodes`, by attestation-key
//! fingerprint), which node each state disk belongs to (`disks_v2`, by LUKS2 UUID; `disks` holds
//! bindings of the former v1 derivation, which are refused), the removed nodes (`removed`, by AK:
//! tombstones, a removed AK is never admitted again; their names, overlay addresses and pod
//! ranges are never handed out again, so a removed machine's kubelet credential for `node-N`
//! never names a new machine) and the decision log (`decisions`, every grant and refusal in
//! order).
//!
//! The master secret is stored in the file (mode 0600): protect the file (or the machine) like
//! the cluster's storage itself. Every write is committed durably before the answer leaves.

use crate::overlay::OverlayRange;
use crate::podnet::PodSettings;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;
use zeroize::Zeroizing;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
/// v1 bindings (disk key = HKDF(master, UUID)): refused, see [`Store::bind_disk`].
const DISKS_V1: TableDefinition<&str, &str> = TableDefinition::new("disks");
/// v2 bindings (disk key = HKDF(master, UUID, owner's AK)).
const DISKS: TableDefinition<&str, &str> = TableDefinition::new("disks_v2");
const REMOVED: TableDefinition<&str, &[u8]> = TableDefinition::new("removed");
const DECISIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("decisions");

/// The database file inside the state directory.
pub const DB_FILE: &str = "keyservice.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(String),
    #[error("database: {what} is missing or malformed (not a nacre key service database?)")]
    Corrupt { what: &'static str },
    #[error("database {0} exists already (refusing to overwrite a cluster's master secret)")]
    Exists(String),
    #[error("record {what}: {reason}")]
    Record { what: String, reason: String },
    /// A range has no address (or pod range) left for a new node.
    #[error("{0}")]
    Exhausted(String),
    /// A request the bookkeeping refuses (`check` names the rule: `policy`, `request`).
    #[error("{reason}")]
    Refused { check: &'static str, reason: String },
    /// `remove`: no node by that name or AK fingerprint.
    #[error("no node named or with the AK fingerprint {0:?}")]
    NoSuchNode(String),
}

/// Text that may carry peer-chosen bytes, made safe to store and print: control characters
/// (newlines, ESC of ANSI sequences, ...) are escaped as Rust escapes them (`\n`, `\u{1b}`),
/// everything else is kept. Idempotent (its output has no control character).
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// A removed node (its tombstone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub name: String,
    pub overlay: String,
    pub unix: u64,
    /// Who or what removed it (`operator`, `expiry after N days`).
    pub by: String,
    /// The disk bindings removed with it (UUIDs).
    pub disks: Vec<String>,
}

fn db<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// The cluster's settings and secrets, created once by `nacre-keyservice init`.
#[derive(Clone)]
pub struct Cluster {
    pub master_secret: Zeroizing<[u8; 32]>,
    pub cluster_id: [u8; 32],
    pub overlay: OverlayRange,
    pub bootstrap_token: String,
    pub api_server: Option<String>,
    /// The pod network (`init --pod-cidr`); `None` in databases made before pod ranges existed
    /// or without one: nodes then get no pod range.
    pub pods: Option<PodSettings>,
    /// The API server's CA certificate(s), PEM (`init --api-server-ca`), checked as X.509.
    pub api_server_ca: Option<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("cluster_id", &hex::encode(self.cluster_id))
            .field("overlay", &self.overlay)
            .field("pods", &self.pods)
            .finish_non_exhaustive()
    }
}

/// A node that joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// Index of the node's overlay address in the overlay range (1 = the first host).
    pub host_index: u32,
    pub overlay: String,
    /// The node's pod range (range `host_index` of the pod CIDR), once the cluster has a pod
    /// network; records written before pod ranges existed have none until the node's next join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_range: Option<String>,
    /// Of its latest join (a new WireGuard key every boot).
    pub wg_public_key: String,
    pub endpoint: String,
    pub joins: u64,
    pub first_join_unix: u64,
    pub last_join_unix: u64,
    /// The image (manifest name/version) it last attested as.
    pub image: String,
    /// Its latest join or peers refresh (updated at most hourly); 0 in records written before
    /// it existed (then `last_join_unix` counts).
    #[serde(default)]
    pub last_seen_unix: u64,
}

impl NodeRecord {
    /// When the service last heard from the node.
    pub fn last_seen(&self) -> u64 {
        self.last_seen_unix.max(self.last_join_unix)
    }
}

/// How often [`Store::touch`] rewrites `last_seen_unix` (seconds).
pub const TOUCH_INTERVAL: u64 = 3600;

/// One decision of the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub seq: u64,
    pub unix: u64,
    /// The TCP peer.
    pub peer: String,
    /// The node's attestation-key fingerprint, when the evidence got that far.
    pub ak: Option<String>,
    pub op: String,
    /// `granted` or `refused`.
    pub outcome: String,
    /// For refusals: which check (attestation checks by name, or `policy`, `tls`, `request`).
    pub check: Option<String>,
    pub detail: String,
}

pub struct Store {
    db: Database,
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Store {
    /// Create a new database with this cluster (fails if the file exists).
    pub fn create(path: &Path, cluster: &Cluster) -> Result<Store, StoreError> {
        if path.exists() {
            return Err(StoreError::Exists(path.display().to_string()));
        }
        // Created 0600 before redb writes a byte of the secret into it.
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| StoreError::Db(format!("{}: {e}", path.display())))?;
        }
        let database = Database::create(path).map_err(db)?;
        let tx = database.begin_write().map_err(db)?;
        {
            let mut t = tx.open_table(META).map_err(db)?;
            t.insert("master_secret", cluster.master_secret.as_slice())
                .map_err(db)?;
            t.insert("cluster_id", cluster.cluster_id.as_slice())
                .map_err(db)?;
            t.insert("overlay", cluster.overlay.to_string().as_bytes())
                .map_err(db)?;
            t.insert("bootstrap_token", cluster.bootstrap_token.as_bytes())
                .map_err(db)?;
            if let Some(a) = &cluster.api_server {
                t.insert("api_server", a.as_bytes()).map_err(db)?;
            }
            if let Some(ca) = &cluster.api_server_ca {
                t.insert("api_server_ca", ca.as_bytes()).map_err(db)?;
            }
            if let Some(p) = &cluster.pods {
                t.insert("pod_cidr", p.pod_cidr.to_string().as_bytes())
                    .map_err(db)?;
                t.insert("pod_prefix", [p.pod_prefix].as_slice())
                    .map_err(db)?;
                if let Some(svc) = &p.service_cidr {
                    t.insert("service_cidr", svc.to_string().as_bytes())
                        .map_err(db)?;
                }
                if let Some(dns) = &p.cluster_dns {
                    t.insert("cluster_dns", dns.to_string().as_bytes())
                        .map_err(db)?;
                }
            }
            t.insert("next_host", 1u32.to_le_bytes().as_slice())
                .map_err(db)?;
            tx.open_table(NODES).map_err(db)?;
            tx.open_table(DISKS).map_err(db)?;
            tx.open_table(REMOVED).map_err(db)?;
            tx.open_table(DECISIONS).map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(Store { db: database })
    }

    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Db(format!(
                "{} does not exist (run `nacre-keyservice init` first)",
                path.display()
            )));
        }
        Ok(Store {
            db: Database::open(path).map_err(db)?,
        })
    }

    pub fn cluster(&self) -> Result<Cluster, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(META).map_err(db)?;
        let get = |k: &'static str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(t.get(k).map_err(db)?.map(|v| v.value().to_vec()))
        };
        let fixed = |k: &'static str| -> Result<[u8; 32], StoreError> {
            get(k)?
                .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
                .ok_or(StoreError::Corrupt { what: k })
        };
        let text = |k: &'static str| -> Result<Option<String>, StoreError> {
            get(k)?
                .map(|v| String::from_utf8(v).map_err(|_| StoreError::Corrupt { what: k }))
                .transpose()
        };
        let overlay = text("overlay")?
            .and_then(|s| s.parse().ok())
            .ok_or(StoreError::Corrupt { what: "overlay" })?;
        // The pod network, as `create` stored it (and as strictly checked again).
        let pods = match text("pod_cidr")? {
            None => None,
            Some(cidr) => {
                let prefix = get("pod_prefix")?
                    .and_then(|v| <[u8; 1]>::try_from(v.as_slice()).ok())
                    .ok_or(StoreError::Corrupt { what: "pod_prefix" })?[0];
                let service = text("service_cidr")?;
                let dns = text("cluster_dns")?;
                Some(
                    PodSettings::new(overlay, &cidr, prefix, service.as_deref(), dns.as_deref())
                        .map_err(|_| StoreError::Corrupt { what: "pod_cidr" })?,
                )
            }
        };
        Ok(Cluster {
            master_secret: Zeroizing::new(fixed("master_secret")?),
            cluster_id: fixed("cluster_id")?,
            overlay,
            bootstrap_token: text("bootstrap_token")?.ok_or(StoreError::Corrupt {
                what: "bootstrap_token",
            })?,
            api_server: text("api_server")?,
            pods,
            api_server_ca: text("api_server_ca")?,
        })
    }

    pub fn node(&self, ak: &str) -> Result<Option<NodeRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(NODES).map_err(db)?;
        let Some(v) = t.get(ak).map_err(db)? else {
            return Ok(None);
        };
        parse_record(ak, v.value()).map(Some)
    }

    /// All nodes, by AK fingerprint.
    pub fn nodes(&self) -> Result<Vec<(String, NodeRecord)>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(NODES).map_err(db)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db)? {
            let (k, v) = item.map_err(db)?;
            out.push((k.value().to_string(), parse_record(k.value(), v.value())?));
        }
        Ok(out)
    }

    /// Record a join: a known AK keeps its name, overlay address and pod range; a new one gets
    /// the next free host of the overlay range and, with a pod network, the pod range of the
    /// same index (a known node without one, from before pod ranges, gets it now). Nothing is
    /// written when a range is exhausted. Returns the record and whether the node was known.
    pub fn record_join(
        &self,
        ak: &str,
        overlay: &OverlayRange,
        pods: Option<&PodSettings>,
        update: impl FnOnce(&mut NodeRecord),
    ) -> Result<(NodeRecord, bool), StoreError> {
        let tx = self.db.begin_write().map_err(db)?;
        let result;
        {
            let mut nodes = tx.open_table(NODES).map_err(db)?;
            let existing = match nodes.get(ak).map_err(db)? {
                Some(v) => Some(parse_record(ak, v.value())?),
                None => None,
            };
            let now = now_unix();
            // A removed node is not admitted again (its tombstone stays).
            if let Some(t) = tx.open_table(REMOVED).map_err(db)?.get(ak).map_err(db)? {
                let r: Removed =
                    serde_json::from_slice(t.value()).map_err(|e| StoreError::Record {
                        what: format!("removed node {ak}"),
                        reason: e.to_string(),
                    })?;
                return Err(StoreError::Refused {
                    check: "policy",
                    reason: format!(
                        "join: this AK was {} ({}) and removed at unix {} by {}: a removed node is not admitted again",
                        r.name, r.overlay, r.unix, r.by
                    ),
                });
            }
            let (mut rec, known) = match existing {
                Some(r) => (r, true),
                None => {
                    let mut meta = tx.open_table(META).map_err(db)?;
                    let max = meta
                        .get("max_nodes")
                        .map_err(db)?
                        .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
                        .map(u32::from_le_bytes);
                    if let Some(max) = max {
                        let n = nodes.len().map_err(db)?;
                        if n >= u64::from(max) {
                            return Err(StoreError::Exhausted(format!(
                                "the cluster's limit of {max} node(s) is reached ({n} joined)"
                            )));
                        }
                    }
                    // Host indices (and so names, addresses and pod ranges) are never
                    // reused, not even a removed node's.
                    let next = meta
                        .get("next_host")
                        .map_err(db)?
                        .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
                        .map(u32::from_le_bytes)
                        .ok_or(StoreError::Corrupt { what: "next_host" })?;
                    let addr = overlay.host(next).ok_or_else(|| {
                        StoreError::Exhausted(format!(
                            "the overlay range {overlay} has no free address left"
                        ))
                    })?;
                    meta.insert("next_host", (next + 1).to_le_bytes().as_slice())
                        .map_err(db)?;
                    (
                        NodeRecord {
                            name: format!("node-{next}"),
                            host_index: next,
                            overlay: format!("{addr}/32"),
                            pod_range: None,
                            wg_public_key: String::new(),
                            endpoint: String::new(),
                            joins: 0,
                            first_join_unix: now,
                            last_join_unix: now,
                            image: String::new(),
                            last_seen_unix: now,
                        },
                        false,
                    )
                }
            };
            if let (Some(p), None) = (pods, &rec.pod_range) {
                let range = p.range_for(rec.host_index).ok_or_else(|| {
                    StoreError::Exhausted(format!(
                        "the pod CIDR {} has no /{} range left for {} (overlay host {}; {} node range(s) in all)",
                        p.pod_cidr,
                        p.pod_prefix,
                        rec.name,
                        rec.host_index,
                        p.capacity()
                    ))
                })?;
                let range = range.to_string();
                // By construction no other node holds it (host indices are never reused);
                // checked anyway, fail closed.
                for item in nodes.iter().map_err(db)? {
                    let (k, v) = item.map_err(db)?;
                    let other = parse_record(k.value(), v.value())?;
                    if k.value() != ak && other.pod_range.as_deref() == Some(range.as_str()) {
                        return Err(StoreError::Record {
                            what: format!("node {}", k.value()),
                            reason: format!("holds the pod range {range} already"),
                        });
                    }
                }
                rec.pod_range = Some(range);
            }
            update(&mut rec);
            // Two nodes with one WireGuard key break every node's peer set (a peer with a
            // node's own key, or two peers with one key): refused, nothing written.
            for item in nodes.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                if k.value() == ak {
                    continue;
                }
                let other = parse_record(k.value(), v.value())?;
                if !rec.wg_public_key.is_empty() && other.wg_public_key == rec.wg_public_key {
                    return Err(StoreError::Refused {
                        check: "request",
                        reason: format!(
                            "join: the WireGuard public key {} is {}'s already (every node needs its own)",
                            rec.wg_public_key, other.name
                        ),
                    });
                }
            }
            rec.joins += 1;
            rec.last_join_unix = now;
            rec.last_seen_unix = now;
            let json = serde_json::to_vec(&rec).map_err(db)?;
            nodes.insert(ak, json.as_slice()).map_err(db)?;
            result = (rec, known);
        }
        tx.commit().map_err(db)?;
        Ok(result)
    }

    /// Bind a disk to a node on first use; returns the owner (the caller compares). A disk
    /// bound under the v1 derivation (before keys named their owner; no released user) is
    /// refused: its key cannot be derived any more, re-provision the disk.
    pub fn bind_disk(&self, uuid: &str, ak: &str) -> Result<String, StoreError> {
        let tx = self.db.begin_write().map_err(db)?;
        let owner;
        {
            // In this transaction: a node removed since the caller looked it up gets nothing.
            if tx
                .open_table(REMOVED)
                .map_err(db)?
                .get(ak)
                .map_err(db)?
                .is_some()
            {
                return Err(StoreError::Refused {
                    check: "policy",
                    reason: "disk-key: this node was removed".into(),
                });
            }
            if tx
                .open_table(NODES)
                .map_err(db)?
                .get(ak)
                .map_err(db)?
                .is_none()
            {
                return Err(StoreError::Refused {
                    check: "policy",
                    reason: "disk-key: the node has not joined".into(),
                });
            }
            if let Ok(v1) = tx.open_table(DISKS_V1) {
                if let Some(o) = v1.get(uuid).map_err(db)? {
                    return Err(StoreError::Refused {
                        check: "policy",
                        reason: format!(
                            "disk-key: disk {uuid} was bound to {} under the v1 disk key derivation, which is no longer served (keys are bound to their owner since v2): re-provision the disk",
                            o.value()
                        ),
                    });
                }
            }
            let mut t = tx.open_table(DISKS).map_err(db)?;
            let existing = t.get(uuid).map_err(db)?.map(|v| v.value().to_string());
            owner = match existing {
                Some(o) => o,
                None => {
                    t.insert(uuid, ak).map_err(db)?;
                    ak.to_string()
                }
            };
        }
        tx.commit().map_err(db)?;
        Ok(owner)
    }

    /// The disk bindings (UUID, owner's AK).
    pub fn disks(&self) -> Result<Vec<(String, String)>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = match tx.open_table(DISKS) {
            Ok(t) => t,
            // A database from before v2 bindings: none yet.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db(e)),
        };
        let mut out = Vec::new();
        for item in t.iter().map_err(db)? {
            let (k, v) = item.map_err(db)?;
            out.push((k.value().to_string(), v.value().to_string()));
        }
        Ok(out)
    }

    /// The cluster's node limit (`init --max-nodes`), if any.
    pub fn max_nodes(&self) -> Result<Option<u32>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(META).map_err(db)?;
        let v = t.get("max_nodes").map_err(db)?;
        Ok(v.and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
            .map(u32::from_le_bytes))
    }

    /// Set the cluster's node limit (nodes that joined stay; new ones beyond it are refused).
    pub fn set_max_nodes(&self, max: u32) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db)?;
        tx.open_table(META)
            .map_err(db)?
            .insert("max_nodes", max.to_le_bytes().as_slice())
            .map_err(db)?;
        tx.commit().map_err(db)
    }

    /// Note that a node was heard from (a peers refresh), at most every [`TOUCH_INTERVAL`].
    pub fn touch(&self, ak: &str, now: u64) -> Result<(), StoreError> {
        match self.node(ak)? {
            Some(r) if now.saturating_sub(r.last_seen()) >= TOUCH_INTERVAL => {}
            _ => return Ok(()),
        }
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut nodes = tx.open_table(NODES).map_err(db)?;
            let rec = match nodes.get(ak).map_err(db)? {
                Some(v) => parse_record(ak, v.value())?,
                None => return Ok(()),
            };
            let rec = NodeRecord {
                last_seen_unix: now,
                ..rec
            };
            let json = serde_json::to_vec(&rec).map_err(db)?;
            nodes.insert(ak, json.as_slice()).map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    /// Remove a node, by name or AK fingerprint, in one transaction: its record goes (so its
    /// peers entry disappears for the others at their next refresh), its AK gets a tombstone
    /// (never admitted again), and its disk bindings are removed (their keys name its AK, which
    /// is refused: no node can get them again). Its name, overlay address and pod range are not
    /// handed out again. Returns its AK and tombstone.
    pub fn remove_node(
        &self,
        selector: &str,
        by: &str,
        now: u64,
    ) -> Result<(String, Removed), StoreError> {
        let tx = self.db.begin_write().map_err(db)?;
        let out;
        {
            let mut nodes = tx.open_table(NODES).map_err(db)?;
            let mut found = None;
            for item in nodes.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                let rec = parse_record(k.value(), v.value())?;
                if k.value() == selector || rec.name == selector {
                    found = Some((k.value().to_string(), rec));
                    break;
                }
            }
            let Some((ak, rec)) = found else {
                return Err(StoreError::NoSuchNode(escape_text(selector)));
            };
            nodes.remove(ak.as_str()).map_err(db)?;
            let mut disks = tx.open_table(DISKS).map_err(db)?;
            let mut owned = Vec::new();
            for item in disks.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                if v.value() == ak {
                    owned.push(k.value().to_string());
                }
            }
            for u in &owned {
                disks.remove(u.as_str()).map_err(db)?;
            }
            let t = Removed {
                name: rec.name,
                overlay: rec.overlay,
                unix: now,
                by: by.to_string(),
                disks: owned,
            };
            let json = serde_json::to_vec(&t).map_err(db)?;
            tx.open_table(REMOVED)
                .map_err(db)?
                .insert(ak.as_str(), json.as_slice())
                .map_err(db)?;
            out = (ak, t);
        }
        tx.commit().map_err(db)?;
        Ok(out)
    }

    /// The nodes not heard from for more than `max_age` seconds of the service's own uptime
    /// (candidates for expiry): a node counts as seen at `up_since`, when the service started,
    /// so a service that was down (or a clock that jumped) for longer does not expire every
    /// node at its start.
    pub fn stale_nodes(
        &self,
        max_age: u64,
        now: u64,
        up_since: u64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .nodes()?
            .into_iter()
            .filter(|(_, r)| now.saturating_sub(r.last_seen().max(up_since)) > max_age)
            .map(|(ak, _)| ak)
            .collect())
    }

    /// Whether this AK was removed (has a tombstone).
    pub fn is_removed(&self, ak: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        match tx.open_table(REMOVED) {
            Ok(t) => Ok(t.get(ak).map_err(db)?.is_some()),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
            Err(e) => Err(db(e)),
        }
    }

    /// The removed nodes' tombstones, by AK.
    pub fn removed(&self) -> Result<Vec<(String, Removed)>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = match tx.open_table(REMOVED) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db(e)),
        };
        let mut out = Vec::new();
        for item in t.iter().map_err(db)? {
            let (k, v) = item.map_err(db)?;
            out.push((
                k.value().to_string(),
                serde_json::from_slice(v.value()).map_err(|e| StoreError::Record {
                    what: format!("removed node {}", k.value()),
                    reason: e.to_string(),
                })?,
            ));
        }
        Ok(out)
    }

    /// Append a decision (its `seq` is assigned here). Its text fields are stored escaped
    /// ([`escape_text`]): they can carry peer-chosen strings.
    pub fn log(&self, mut d: Decision) -> Result<Decision, StoreError> {
        d.peer = escape_text(&d.peer);
        d.ak = d.ak.as_deref().map(escape_text);
        d.op = escape_text(&d.op);
        d.outcome = escape_text(&d.outcome);
        d.check = d.check.as_deref().map(escape_text);
        d.detail = escape_text(&d.detail);
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut t = tx.open_table(DECISIONS).map_err(db)?;
            let next = t
                .last()
                .map_err(db)?
                .map(|(k, _)| k.value() + 1)
                .unwrap_or(1);
            d.seq = next;
            let json = serde_json::to_vec(&d).map_err(db)?;
            t.insert(next, json.as_slice()).map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(d)
    }

    pub fn decisions(&self) -> Result<Vec<Decision>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(DECISIONS).map_err(db)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db)? {
            let (k, v) = item.map_err(db)?;
            out.push(
                serde_json::from_slice(v.value()).map_err(|e| StoreError::Record {
                    what: format!("decision {}", k.value()),
                    reason: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }
}

fn parse_record(ak: &str, bytes: &[u8]) -> Result<NodeRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Record {
        what: format!("node {ak}"),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(pods: Option<PodSettings>) -> Cluster {
        Cluster {
            master_secret: Zeroizing::new([1; 32]),
            cluster_id: [2; 32],
            overlay: "10.244.0.0/16".parse().unwrap(),
            bootstrap_token: "abcdef.0123456789abcdef".into(),
            api_server: None,
            pods,
            api_server_ca: None,
        }
    }

    fn pods(cidr: &str, prefix: u8) -> PodSettings {
        PodSettings::new("10.244.0.0/16".parse().unwrap(), cidr, prefix, None, None).unwrap()
    }

    /// A node record as the service wrote it before pod ranges existed (no `pod_range` key)
    /// still parses; the node gets the range of its host index at its next join, and keeps it.
    #[test]
    fn an_older_record_gets_its_range_at_its_next_join() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(None);
        let store = Store::create(&dir.path().join(DB_FILE), &c).unwrap();
        let old = br#"{"name":"node-7","host_index":7,"overlay":"10.244.0.7/32","wg_public_key":"k","endpoint":"10.0.2.15:51820","joins":3,"first_join_unix":1,"last_join_unix":2,"image":"i"}"#;
        {
            let tx = store.db.begin_write().unwrap();
            tx.open_table(NODES)
                .unwrap()
                .insert("ak7", old.as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let rec = store.node("ak7").unwrap().unwrap();
        assert_eq!(rec.pod_range, None);
        assert_eq!(rec.joins, 3);

        // Without a pod network the record stays as it was (and serializes without the key).
        let (rec, known) = store.record_join("ak7", &c.overlay, None, |_| {}).unwrap();
        assert!(known);
        assert_eq!(rec.pod_range, None);
        assert!(!serde_json::to_string(&rec).unwrap().contains("pod_range"));

        let p = pods("10.32.0.0/16", 24);
        let (rec, _) = store
            .record_join("ak7", &c.overlay, Some(&p), |_| {})
            .unwrap();
        assert_eq!(rec.pod_range.as_deref(), Some("10.32.7.0/24"));
        assert_eq!(rec.joins, 5);
        // A new node takes host 1 (next_host was never advanced by the inserted record) and
        // range 1; the older node keeps its range.
        let (new, known) = store
            .record_join("ak1", &c.overlay, Some(&p), |_| {})
            .unwrap();
        assert!(!known);
        assert_eq!(new.pod_range.as_deref(), Some("10.32.1.0/24"));
        let again = store.node("ak7").unwrap().unwrap();
        assert_eq!(again.pod_range.as_deref(), Some("10.32.7.0/24"));
    }

    /// A pod CIDR with 3 node ranges (a /24 in /26s, the first not handed out): the 4th node
    /// is refused, and nothing of it is written (no record, no overlay address consumed).
    #[test]
    fn exhaustion_refuses_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = pods("10.32.0.0/24", 26);
        let c = cluster(Some(p.clone()));
        let store = Store::create(&dir.path().join(DB_FILE), &c).unwrap();
        let mut ranges = Vec::new();
        for ak in ["a", "b", "c"] {
            let (rec, _) = store.record_join(ak, &c.overlay, Some(&p), |_| {}).unwrap();
            ranges.push(rec.pod_range.unwrap());
        }
        assert_eq!(
            ranges,
            ["10.32.0.64/26", "10.32.0.128/26", "10.32.0.192/26"]
        );
        let e = store
            .record_join("d", &c.overlay, Some(&p), |_| {})
            .unwrap_err();
        assert!(matches!(e, StoreError::Exhausted(_)), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("the pod CIDR 10.32.0.0/24 has no /26 range left for node-4"),
            "{e}"
        );
        assert!(store.node("d").unwrap().is_none());
        assert_eq!(store.nodes().unwrap().len(), 3);
        // The known nodes still rejoin with their ranges.
        let (rec, known) = store
            .record_join("b", &c.overlay, Some(&p), |_| {})
            .unwrap();
        assert!(known);
        assert_eq!(rec.pod_range.as_deref(), Some("10.32.0.128/26"));
        // The refused join consumed no host index: still refused the same way, as node-4.
        let e = store
            .record_join("e", &c.overlay, Some(&p), |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("for node-4"), "{e}");
    }

    /// The pod network survives the database (read back as given).
    #[test]
    fn pod_settings_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = PodSettings::new(
            "10.244.0.0/16".parse().unwrap(),
            "10.32.0.0/16",
            25,
            Some("10.96.0.0/12"),
            Some("10.96.0.10"),
        )
        .unwrap();
        let mut c = cluster(Some(p.clone()));
        c.api_server_ca = Some("-----BEGIN CERTIFICATE-----\n...\n".into());
        let path = dir.path().join(DB_FILE);
        drop(Store::create(&path, &c).unwrap());
        let back = Store::open(&path).unwrap().cluster().unwrap();
        assert_eq!(back.pods, Some(p));
        assert_eq!(back.api_server_ca, c.api_server_ca);
        let old = dir.path().join("old.redb");
        drop(Store::create(&old, &cluster(None)).unwrap());
        let back = Store::open(&old).unwrap().cluster().unwrap();
        assert_eq!((back.pods, back.api_server_ca), (None, None));
    }

    fn wg(rec: &mut NodeRecord, key: &str) {
        rec.wg_public_key = key.into();
    }

    /// Removal: the record goes, the AK is refused for good, its disk bindings go, and its
    /// name, address and pod range are never handed out again.
    #[test]
    fn removed_nodes_are_refused_and_their_names_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = pods("10.32.0.0/16", 24);
        let c = cluster(Some(p.clone()));
        let store = Store::create(&dir.path().join(DB_FILE), &c).unwrap();
        for (ak, key) in [("a", "ka"), ("b", "kb"), ("c", "kc")] {
            store
                .record_join(ak, &c.overlay, Some(&p), |r| wg(r, key))
                .unwrap();
        }
        assert_eq!(store.bind_disk("u-b", "b").unwrap(), "b");
        assert_eq!(store.bind_disk("u-a", "a").unwrap(), "a");

        // By name (or by AK); an unknown selector is named, escaped.
        let e = store
            .remove_node("node-9\n\u{1b}[2J", "operator", 100)
            .unwrap_err();
        assert!(matches!(e, StoreError::NoSuchNode(_)), "{e}");
        let (ak, t) = store.remove_node("node-2", "operator", 100).unwrap();
        assert_eq!(ak, "b");
        assert_eq!(t.overlay, "10.244.0.2/32");
        assert_eq!(t.disks, vec!["u-b".to_string()]);
        assert!(store.node("b").unwrap().is_none());
        assert_eq!(store.removed().unwrap().len(), 1);
        assert_eq!(
            store.disks().unwrap(),
            vec![("u-a".to_string(), "a".to_string())]
        );
        // Its AK is never admitted again.
        let e = store
            .record_join("b", &c.overlay, Some(&p), |r| wg(r, "kb2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("removed at unix 100 by operator"), "{e}");
        // The next new node gets a fresh name, address and pod range, never node-2's (the
        // removed machine's kubelet credential names node-2).
        let (d, known) = store
            .record_join("d", &c.overlay, Some(&p), |r| wg(r, "kd"))
            .unwrap();
        assert!(!known);
        assert_eq!(
            (d.name.as_str(), d.overlay.as_str(), d.pod_range.as_deref()),
            ("node-4", "10.244.0.4/32", Some("10.32.4.0/24"))
        );
        // A removed node asks for a disk: refused inside the binding's transaction.
        let e = store.bind_disk("u-x", "b").unwrap_err().to_string();
        assert!(e.contains("this node was removed"), "{e}");
        let e = store
            .bind_disk("u-x", "never-joined")
            .unwrap_err()
            .to_string();
        assert!(e.contains("has not joined"), "{e}");
        // A removed node's disk can be bound by another node, whose key differs (the owner is
        // in the derivation).
        assert_eq!(store.bind_disk("u-b", "d").unwrap(), "d");
        // Removing twice: no such node.
        assert!(matches!(
            store.remove_node("b", "operator", 101),
            Err(StoreError::NoSuchNode(_))
        ));
    }

    #[test]
    fn a_wireguard_key_held_by_another_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(None);
        let store = Store::create(&dir.path().join(DB_FILE), &c).unwrap();
        store
            .record_join("a", &c.overlay, None, |r| wg(r, "same"))
            .unwrap();
        let e = store
            .record_join("b", &c.overlay, None, |r| wg(r, "same"))
            .unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::Refused {
                    check: "request",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("is node-1's already"), "{e}");
        // Nothing written: no record, no address consumed.
        assert!(store.node("b").unwrap().is_none());
        let (b, _) = store
            .record_join("b", &c.overlay, None, |r| wg(r, "other"))
            .unwrap();
        assert_eq!(b.overlay, "10.244.0.2/32");
        // The node itself may keep its key across joins.
        let (a, known) = store
            .record_join("a", &c.overlay, None, |r| wg(r, "same"))
            .unwrap();
        assert!(known);
        assert_eq!(a.joins, 2);
    }

    #[test]
    fn the_node_limit_refuses_new_nodes_only() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(None);
        let store = Store::create(&dir.path().join(DB_FILE), &c).unwrap();
        assert_eq!(store.max_nodes().unwrap(), None);
        store.set_max_nodes(2).unwrap();
        assert_eq!(store.max_nodes().unwrap(), Some(2));
        for (ak, k) in [("a", "ka"), ("b", "kb")] {
            store
                .record_join(ak, &c.overlay, None, |r| wg(r, k))
                .unwrap();
        }
        let e = store
            .record_join("c", &c.overlay, None, |r| wg(r, "kc"))
            .unwrap_err();
        assert!(matches!(e, StoreError::Exhausted(_)), "{e}");
        assert!(e.to_string().contains("limit of 2 node(s)"), "{e}");
        // Known nodes rejoin; a removal makes room.
        store
            .record_join("a", &c.overlay, None, |r| wg(r, "ka2"))
            .unwrap();
        store.remove_node("b", "operator", 5).unwrap();
        store
            .record_join("c", &c.overlay, None, |r| wg(r, "kc"))
            .unwrap();
    }

    #[test]
    fn stale_nodes_by_last_seen() {
        let dir = tempfile::tempdir().unwrap();
        let c = cluster(None);
        let store = Store::create(&dir.path().join(DB_FILE), &c).unwrap();
        store
            .record_join("a", &c.overlay, None, |r| wg(r, "ka"))
            .unwrap();
        let now = now_unix();
        assert!(store.stale_nodes(60, now, 0).unwrap().is_empty());
        assert_eq!(
            store.stale_nodes(60, now + 120, 0).unwrap(),
            vec!["a".to_string()]
        );
        // A service that (re)started within max_age expires nobody, however old last_seen is.
        assert!(store
            .stale_nodes(60, now + 120, now + 100)
            .unwrap()
            .is_empty());
        assert!(store
            .stale_nodes(60, now + 1_000_000, now + 1_000_000)
            .unwrap()
            .is_empty());
        // A peers refresh an hour later counts as being seen.
        store.touch("a", now + 2 * TOUCH_INTERVAL).unwrap();
        assert!(store
            .stale_nodes(60, now + 2 * TOUCH_INTERVAL + 30, 0)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn peer_chosen_text_is_escaped_in_the_log() {
        assert_eq!(escape_text("a\nb\u{1b}[31mc"), "a\\nb\\u{1b}[31mc");
        assert_eq!(escape_text("ünïcode ok"), "ünïcode ok");
        let once = escape_text("x\r\n\u{7}");
        assert_eq!(escape_text(&once), once, "idempotent");
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join(DB_FILE), &cluster(None)).unwrap();
        let d = store
            .log(Decision {
                seq: 0,
                unix: 1,
                peer: "10.0.0.1:1".into(),
                ak: None,
                op: "join".into(),
                outcome: "refused".into(),
                check: Some("request".into()),
                detail: "name \"evil\n#2 join granted\u{1b}[0m\"".into(),
            })
            .unwrap();
        assert!(!d.detail.chars().any(char::is_control), "{:?}", d.detail);
        assert!(
            d.detail.contains("\\n#2 join granted\\u{1b}[0m"),
            "{}",
            d.detail
        );
        assert_eq!(store.decisions().unwrap()[0].detail, d.detail);
    }
}
