//! nacre's key service: the one place a cluster's secrets live. A node proves over attested TLS
//! that it runs a golden image (its TPM quote, event logs and golden manifest are checked by
//! nacre-attestation's verifier during the handshake); only then does the service answer its
//! `join` (overlay address, WireGuard peers, kubelet's bootstrap data), `disk-key` (its state
//! disk's key, HKDF of the master secret and the disk UUID) and `peers` requests. Every decision
//! is recorded in an embedded database that survives restarts.
//!
//! * [`store`]: the redb database (cluster secrets, nodes, disks, decision log).
//! * [`service`]: the rules on top of attestation (PCR 15, disk ownership) and key derivation.
//! * [`server`]: TCP + rustls, one attested connection per request.
//! * [`limits`]: what unauthenticated clients can cost (deadline, per-source limits, event budget).
//! * [`tls`]: the service's CA and server certificate.
//! * [`podnet`]: the cluster's pod network (each node's pod range) and the checks of `init`'s
//!   pod, service and DNS settings and API server CA.

pub mod bench;
pub mod certstore;
pub mod incluster;
pub mod limits;
pub mod overlay;
pub mod podnet;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;

pub use service::{disk_key, Service};
pub use store::{Cluster, Store};
