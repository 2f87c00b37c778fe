//! What nacre-keyservice's tests share (the swtpm nodes are in attestation/tests/support).
#![allow(dead_code)]

use nacre_keyservice::store::{Cluster, Store, DB_FILE};
use nacre_keyservice::tls;
use std::path::Path;
use zeroize::Zeroizing;

/// A cluster's state in `dir` (fixed master secret, cluster id 0x17.., overlay 10.244.0.0/16,
/// this API server): its database and its TLS identity.
pub fn cluster_state(dir: &Path, api_server: Option<&str>) -> Cluster {
    let cluster = Cluster {
        master_secret: Zeroizing::new([0x42; 32]),
        cluster_id: [0x17; 32],
        overlay: "10.244.0.0/16".parse().unwrap(),
        bootstrap_token: "abcdef.0123456789abcdef".into(),
        api_server: api_server.map(Into::into),
        pods: None,
        api_server_ca: None,
    };
    Store::create(&dir.join(DB_FILE), &cluster).unwrap();
    tls::create_identity(dir).unwrap();
    cluster
}
