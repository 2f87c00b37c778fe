//! The key service's state, in one redb database file (ACID, crash-safe, survives restarts):
//! the cluster's secrets and settings (`meta`), the nodes that joined (`nodes`, by attestation-key
//! fingerprint), which node each state disk belongs to (`disks`, by LUKS2 UUID) and the decision
//! log (`decisions`, every grant and refusal in order).
//!
//! The master secret is stored in the file (mode 0600): protect the file (or the machine) like
//! the cluster's storage itself. Every write is committed durably before the answer leaves.

use crate::overlay::OverlayRange;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;
use zeroize::Zeroizing;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const DISKS: TableDefinition<&str, &str> = TableDefinition::new("disks");
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
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("cluster_id", &hex::encode(self.cluster_id))
            .field("overlay", &self.overlay)
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
    /// Of its latest join (a new WireGuard key every boot).
    pub wg_public_key: String,
    pub endpoint: String,
    pub joins: u64,
    pub first_join_unix: u64,
    pub last_join_unix: u64,
    /// The image (manifest name/version) it last attested as.
    pub image: String,
}

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
            t.insert("next_host", 1u32.to_le_bytes().as_slice())
                .map_err(db)?;
            tx.open_table(NODES).map_err(db)?;
            tx.open_table(DISKS).map_err(db)?;
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
        Ok(Cluster {
            master_secret: Zeroizing::new(fixed("master_secret")?),
            cluster_id: fixed("cluster_id")?,
            overlay,
            bootstrap_token: text("bootstrap_token")?.ok_or(StoreError::Corrupt {
                what: "bootstrap_token",
            })?,
            api_server: text("api_server")?,
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

    /// Record a join: a known AK keeps its name and overlay address; a new one gets the next
    /// free host of the overlay range. Returns the record and whether the node was known.
    pub fn record_join(
        &self,
        ak: &str,
        overlay: &OverlayRange,
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
            let (mut rec, known) = match existing {
                Some(r) => (r, true),
                None => {
                    let mut meta = tx.open_table(META).map_err(db)?;
                    let next = meta
                        .get("next_host")
                        .map_err(db)?
                        .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
                        .map(u32::from_le_bytes)
                        .ok_or(StoreError::Corrupt { what: "next_host" })?;
                    let addr = overlay.host(next).ok_or_else(|| StoreError::Record {
                        what: "overlay".into(),
                        reason: format!("the overlay range {overlay} has no free address left"),
                    })?;
                    meta.insert("next_host", (next + 1).to_le_bytes().as_slice())
                        .map_err(db)?;
                    (
                        NodeRecord {
                            name: format!("node-{next}"),
                            host_index: next,
                            overlay: format!("{addr}/32"),
                            wg_public_key: String::new(),
                            endpoint: String::new(),
                            joins: 0,
                            first_join_unix: now,
                            last_join_unix: now,
                            image: String::new(),
                        },
                        false,
                    )
                }
            };
            update(&mut rec);
            rec.joins += 1;
            rec.last_join_unix = now;
            let json = serde_json::to_vec(&rec).map_err(db)?;
            nodes.insert(ak, json.as_slice()).map_err(db)?;
            result = (rec, known);
        }
        tx.commit().map_err(db)?;
        Ok(result)
    }

    /// Bind a disk to a node on first use; returns the owner (the caller compares).
    pub fn bind_disk(&self, uuid: &str, ak: &str) -> Result<String, StoreError> {
        let tx = self.db.begin_write().map_err(db)?;
        let owner;
        {
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

    pub fn disks(&self) -> Result<Vec<(String, String)>, StoreError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(DISKS).map_err(db)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db)? {
            let (k, v) = item.map_err(db)?;
            out.push((k.value().to_string(), v.value().to_string()));
        }
        Ok(out)
    }

    /// Append a decision (its `seq` is assigned here).
    pub fn log(&self, mut d: Decision) -> Result<Decision, StoreError> {
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
