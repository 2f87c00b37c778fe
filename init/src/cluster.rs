//! `[cluster]`: the cluster configuration from outside the image (`nacre_cluster`).
//!
//! ```toml
//! [cluster]
//! source = "qemu-fw-cfg"      # where the platform passes it (the image's variant decides):
//!                             # "qemu-fw-cfg", "aws-imds", "gcp-metadata" or "azure-imds"
//! timeout_s = 60              # metadata sources only: how long the metadata server may take
//! ```
//!
//! The cloud sources (`nacre_cluster::metadata`) are read over the underlay: stage 2 brings
//! up `[network]` without `[network.wireguard]` first ([`underlay_config`]), reads, parses and
//! measures the configuration, applies it, and only then checks the underlay against the
//! cluster ranges and brings up wg0 (`nacre_network::setup_overlay`).
//!
//! A release image is the same for every cluster; what differs (the key service's endpoint and
//! CA, the ranges routed only through wg0) is read at boot, parsed strictly, and its SHA-256
//! extended into PCR 15 (on TDX also RTMR[3]) *before* the node acts on it. It then fills in
//! what init.toml leaves open: `[key_service] endpoint` and `ca`, and
//! `[network.wireguard] cluster_ranges`. init.toml must not set those itself (one source of
//! truth: a value in the image would silently win or lose).

use nacre_cluster::{ClusterConfig, Source};
use std::path::Path;

/// Where the configuration's CA certificate is written for the key service client.
pub const CA_PATH: &str = "/run/nacre/cluster-ca.pem";

#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    pub source: Source,
    /// Metadata sources: how long the server may take, retries included (default 60 s).
    pub timeout_s: Option<u64>,
}

impl Section {
    /// Where to read from on this node.
    pub fn platform(&self) -> Result<nacre_cluster::Platform, String> {
        let mut p = nacre_cluster::Platform::node();
        match (self.timeout_s, self.source.needs_network()) {
            (None, _) => {}
            (Some(0), _) => return Err("[cluster] timeout_s must be at least 1".into()),
            (Some(t), true) => p.wait = std::time::Duration::from_secs(t),
            (Some(_), false) => {
                return Err(format!(
                    "[cluster] timeout_s is for the metadata sources, not {}",
                    self.source.name()
                ))
            }
        }
        Ok(p)
    }

    /// Read the configuration's bytes (metadata sources: the underlay must be up).
    pub fn read(&self, log: &dyn Fn(&str)) -> Result<Vec<u8>, String> {
        let p = self.platform()?;
        self.source.read(&p, log).map_err(|e| match self.source {
            Source::QemuFwCfg => format!(
                "{} ({}): {e}",
                nacre_cluster::FW_CFG_NAME,
                self.source.name()
            ),
            _ => format!("{}: {e}", self.source.name()),
        })
    }
}

/// `[network]` without `[network.wireguard]`: the underlay a metadata source is read over
/// (the cluster ranges wg0 needs come from the configuration read).
pub fn underlay_config(cfg: &toml::Table) -> Result<nacre_network::Config, String> {
    let mut net = cfg
        .get("network")
        .and_then(toml::Value::as_table)
        .cloned()
        .ok_or("the cluster configuration's source is a metadata server, reached over the underlay: init.toml needs [network]")?;
    net.remove("wireguard");
    let mut t = toml::Table::new();
    t.insert("network".into(), toml::Value::Table(net));
    crate::config::section(&t, "network")
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no [network] table".into())
}

/// Fill init.toml's open fields from the cluster configuration (the CA goes to `ca_path`,
/// written by the caller). Refuses a configuration that init.toml contradicts.
pub fn apply(cfg: &mut toml::Table, cluster: &ClusterConfig, ca_path: &str) -> Result<(), String> {
    use toml::Value;
    let ks = cfg
        .entry("key_service")
        .or_insert_with(|| Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or("[key_service] is not a table")?;
    for key in ["endpoint", "ca"] {
        if ks.contains_key(key) {
            return Err(format!(
                "init.toml sets [key_service] {key}, which the cluster configuration provides"
            ));
        }
    }
    ks.insert(
        "endpoint".into(),
        Value::String(cluster.key_service.endpoint.clone()),
    );
    ks.insert("ca".into(), Value::String(ca_path.to_owned()));
    let wg = cfg
        .get_mut("network")
        .and_then(Value::as_table_mut)
        .and_then(|n| n.get_mut("wireguard"))
        .and_then(Value::as_table_mut)
        .ok_or("init.toml has no [network.wireguard], which the cluster configuration needs")?;
    if wg.contains_key("cluster_ranges") {
        return Err(
            "init.toml sets [network.wireguard] cluster_ranges, which the cluster configuration provides"
                .into(),
        );
    }
    wg.insert(
        "cluster_ranges".into(),
        Value::Array(
            cluster
                .network
                .cluster_ranges
                .iter()
                .map(|r| Value::String(r.clone()))
                .collect(),
        ),
    );
    Ok(())
}

/// Write the configuration's CA certificate for the key service client (root only reads it
/// anyway; the certificate is public).
pub fn write_ca(cluster: &ClusterConfig, path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, cluster.key_service.ca.as_bytes())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = include_str!("../../cluster/tests/data/test-ca.pem");

    fn cluster() -> ClusterConfig {
        ClusterConfig::new(
            "c1",
            "10.0.2.2:7443".parse().unwrap(),
            CA,
            vec!["10.244.0.0/16".into(), "10.96.0.0/12".into()],
        )
        .unwrap()
    }

    const RELEASE: &str = r#"
[cluster]
source = "qemu-fw-cfg"

[network]
interface = "eth0"
dhcp = true

[network.wireguard]
listen_port = 51820
peers = "key-service"

[key_service]
timeout_s = 300
"#;

    #[test]
    fn fills_the_open_fields_and_the_result_parses() {
        let mut cfg = crate::config::load(Some(RELEASE)).unwrap();
        let s: Section = crate::config::section(&cfg, "cluster").unwrap().unwrap();
        assert_eq!(s.source, Source::QemuFwCfg);
        apply(&mut cfg, &cluster(), "/run/x.pem").unwrap();
        let ks: crate::keyservice::Config = crate::config::section(&cfg, "key_service")
            .unwrap()
            .unwrap();
        assert_eq!(ks.endpoint, "10.0.2.2:7443");
        assert_eq!(ks.ca, "/run/x.pem");
        assert_eq!(ks.timeout_s, 300);
        let net: nacre_network::Config = crate::config::section(&cfg, "network").unwrap().unwrap();
        let wg = net.wireguard.unwrap();
        assert_eq!(wg.cluster_ranges.len(), 2);
        assert_eq!(wg.cluster_ranges[1].to_string(), "10.96.0.0/12");
    }

    #[test]
    fn refuses_what_init_toml_would_contradict() {
        for (extra, what) in [
            ("[key_service]\nendpoint = \"1.2.3.4:1\"\n", "endpoint"),
            ("[key_service]\nca = \"/etc/x.pem\"\n", "ca"),
        ] {
            let text = RELEASE.replace("[key_service]\ntimeout_s = 300\n", extra);
            let mut cfg = crate::config::load(Some(&text)).unwrap();
            let e = apply(&mut cfg, &cluster(), "/run/x.pem").unwrap_err();
            assert!(e.contains(what), "{e}");
        }
        let text = RELEASE.replace(
            "peers = \"key-service\"",
            "peers = \"key-service\"\ncluster_ranges = [\"10.0.0.0/8\"]",
        );
        let mut cfg = crate::config::load(Some(&text)).unwrap();
        assert!(apply(&mut cfg, &cluster(), "/run/x.pem")
            .unwrap_err()
            .contains("cluster_ranges"));
        let mut cfg = crate::config::load(Some("[cluster]\nsource = \"qemu-fw-cfg\"\n")).unwrap();
        assert!(apply(&mut cfg, &cluster(), "/run/x.pem")
            .unwrap_err()
            .contains("[network.wireguard]"));
        let typo = crate::config::load(Some("[cluster]\nsource = \"fw-cfg\"\n")).unwrap();
        assert!(crate::config::section::<Section>(&typo, "cluster").is_err());
    }

    #[test]
    fn metadata_sources_bring_up_the_underlay_alone_first() {
        let text = RELEASE.replace(
            "source = \"qemu-fw-cfg\"",
            "source = \"gcp-metadata\"\ntimeout_s = 5",
        );
        let cfg = crate::config::load(Some(&text)).unwrap();
        let s: Section = crate::config::section(&cfg, "cluster").unwrap().unwrap();
        assert_eq!(s.source, Source::GcpMetadata);
        assert_eq!(
            s.platform().unwrap().wait,
            std::time::Duration::from_secs(5)
        );
        assert_eq!(s.platform().unwrap().metadata, nacre_cluster::METADATA_ADDR);
        // The whole [network] does not parse yet (no cluster_ranges); the underlay does.
        assert!(crate::config::section::<nacre_network::Config>(&cfg, "network").is_err());
        let u = underlay_config(&cfg).unwrap();
        assert!(u.dhcp && u.wireguard.is_none());
        assert_eq!(u.interface.as_deref(), Some("eth0"));
        u.validate().unwrap();
        // No [network]: a metadata source cannot be reached.
        let bare = crate::config::load(Some("[cluster]\nsource = \"aws-imds\"\n")).unwrap();
        assert!(underlay_config(&bare).unwrap_err().contains("[network]"));
        // timeout_s only for metadata sources, never 0.
        for (src, t) in [("qemu-fw-cfg", 5), ("azure-imds", 0)] {
            let s: Section =
                toml::from_str(&format!("source = \"{src}\"\ntimeout_s = {t}")).unwrap();
            assert!(s.platform().unwrap_err().contains("timeout_s"));
        }
    }

    #[test]
    fn ca_is_written_whole() {
        let dir = std::env::temp_dir().join(format!("nacre-init-cluster-{}", std::process::id()));
        let p = dir.join("ca.pem");
        write_ca(&cluster(), &p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), CA);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
