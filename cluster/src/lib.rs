//! The cluster configuration: what differs between clusters that boot the same release image.
//!
//! A release image is built, signed and measured once; its golden values hold for every cluster.
//! What a node needs to know about *its* cluster reaches it at boot from outside the image, as
//! a small TOML document (schema `nacre.cluster.v1`):
//!
//! ```toml
//! schema = "nacre.cluster.v1"
//! name = "prod-eu-1"                    # for people and logs: [a-z0-9-], 1-63 characters
//!
//! [key_service]
//! endpoint = "10.0.2.2:7443"            # IP:port on the underlay (no DNS before the join)
//! ca = """                              # the service's CA certificate (PEM, exactly one)
//! -----BEGIN CERTIFICATE-----
//! ...
//! -----END CERTIFICATE-----
//! """
//!
//! [network]
//! cluster_ranges = ["10.244.0.0/16", "10.32.0.0/16", "10.96.0.0/12"]
//!                                       # overlay, pod and service CIDRs: routed only
//!                                       # through wg0 (fail closed)
//! ```
//!
//! `nacre-keyservice init` writes it (`STATE/cluster.toml`); the operator hands it to the
//! platform ([`Source`]): QEMU `-fw_cfg name=opt/nacre/cluster.toml,file=cluster.toml`
//! ([`FW_CFG_NAME`]), or the cloud's instance metadata ([`metadata`]: AWS IMDSv2 user data, the
//! GCE instance attribute `nacre-cluster`, Azure IMDS user data), read with a small strict
//! HTTP/1.1 client ([`http`]) once the underlay is up ([`Source::needs_network`]).
//!
//! **Measured before use.** nacre-init reads the bytes, parses them with [`parse`] (strict:
//! unknown keys, a second certificate, a malformed range or endpoint are errors; nothing is
//! defaulted), and extends [`Measured::digest`] (SHA-256 of the exact bytes) into PCR 15 (on TDX
//! also RTMR[3]) as the runtime event `nacre.cluster-config=<hex>` before it connects anywhere.
//! The key service computes the same digest from its own copy, so a node booted with another
//! cluster's configuration (or an edited one) shows another PCR 15 and is refused. Why a
//! configuration from an untrusted channel (cloud metadata) cannot lead a node to release
//! anything of this cluster to someone else: `docs/cluster-config.md`.

// Runs in PID 1 (nacre-init): no unwrap/expect/panic outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod http;
pub mod metadata;

pub use metadata::METADATA_ADDR;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The schema this crate reads and writes.
pub const SCHEMA: &str = "nacre.cluster.v1";
/// Largest configuration accepted (a CA certificate and a few lines fit many times over).
pub const MAX_LEN: usize = 64 * 1024;
/// The QEMU fw_cfg item the configuration is passed in (`-fw_cfg name=...,file=...`).
pub const FW_CFG_NAME: &str = "opt/nacre/cluster.toml";
/// Where the kernel's qemu_fw_cfg driver shows fw_cfg items by name.
pub const FW_CFG_SYSFS: &str = "/sys/firmware/qemu_fw_cfg/by_name";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cluster configuration is empty")]
    Empty,
    #[error("cluster configuration is {0} bytes, more than the {MAX_LEN} allowed")]
    TooLarge(usize),
    #[error("cluster configuration is not UTF-8 text (byte {0})")]
    NotText(usize),
    #[error("cluster configuration: {0}")]
    Toml(String),
    #[error("cluster configuration schema is {0:?}, expected {SCHEMA:?}")]
    Schema(String),
    #[error("cluster configuration name {0:?}: 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'")]
    Name(String),
    #[error("[key_service] endpoint {0:?}: expected IP:PORT with a port other than 0 (e.g. 10.0.2.2:7443)")]
    Endpoint(String),
    #[error("[key_service] ca: {0}")]
    Ca(String),
    #[error("[network] cluster_ranges: {0}")]
    Ranges(String),
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not present (the platform passed no cluster configuration)")]
    Missing(String),
    #[error("{url}: {err}")]
    Http {
        url: String,
        #[source]
        err: http::HttpError,
    },
    #[error("{url}: HTTP {status} {reason}")]
    Status {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("{url}: the response does not carry exactly `Metadata-Flavor: Google` (found {found:?}): not the GCE metadata server")]
    Flavor { url: String, found: String },
    #[error("{url}: the IMDSv2 session token is unusable: {reason}")]
    Token { url: String, reason: String },
    #[error("{url}: the user data is not strict base64: {reason}")]
    Base64 { url: String, reason: String },
    #[error("{last} (gave up after {attempts} attempt(s) in {secs:.1} s)")]
    GaveUp {
        attempts: u32,
        secs: f64,
        #[source]
        last: Box<ConfigError>,
    },
}

/// The configuration, as parsed. Fields are public for writers (`nacre-keyservice init`);
/// readers get one only through [`parse`], which validated it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub schema: String,
    pub name: String,
    pub key_service: KeyService,
    pub network: Network,
}

/// How the node reaches and trusts its cluster's key service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyService {
    /// `IP:PORT`.
    pub endpoint: String,
    /// The service's CA certificate, PEM.
    pub ca: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// The ranges that travel only through wg0 (the overlay, pod and service ranges).
    pub cluster_ranges: Vec<String>,
}

/// A validated configuration and the digest the node extends for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    pub config: ClusterConfig,
    /// SHA-256 of the exact bytes read.
    pub digest: [u8; 32],
}

/// SHA-256 of a configuration's bytes (what PCR 15 gets).
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Parse and validate a configuration; its digest covers exactly `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Measured, ConfigError> {
    if bytes.is_empty() {
        return Err(ConfigError::Empty);
    }
    if bytes.len() > MAX_LEN {
        return Err(ConfigError::TooLarge(bytes.len()));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ConfigError::NotText(e.valid_up_to()))?;
    if let Some(i) = text.find('\0') {
        return Err(ConfigError::NotText(i));
    }
    let config: ClusterConfig =
        toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string().trim().to_owned()))?;
    config.validate()?;
    Ok(Measured {
        config,
        digest: digest(bytes),
    })
}

impl ClusterConfig {
    /// A configuration for a cluster (what `nacre-keyservice init` writes).
    pub fn new(
        name: &str,
        endpoint: SocketAddr,
        ca_pem: &str,
        cluster_ranges: Vec<String>,
    ) -> Result<Self, ConfigError> {
        let c = ClusterConfig {
            schema: SCHEMA.to_owned(),
            name: name.to_owned(),
            key_service: KeyService {
                endpoint: endpoint.to_string(),
                ca: ca_pem.to_owned(),
            },
            network: Network { cluster_ranges },
        };
        c.validate()?;
        Ok(c)
    }

    /// The document, as written to `cluster.toml`. [`parse`] of it gives `self` back.
    pub fn render(&self) -> Result<String, ConfigError> {
        let body = toml::to_string(self).map_err(|e| ConfigError::Toml(e.to_string()))?;
        Ok(format!(
            "# nacre cluster configuration ({SCHEMA}): hand it to the node's platform as is\n\
             # (QEMU: -fw_cfg name={FW_CFG_NAME},file=cluster.toml); nodes measure its SHA-256\n\
             # into PCR 15 and the key service admits only nodes that measured these bytes.\n{body}"
        ))
    }

    /// The endpoint as a socket address (validated by [`parse`]).
    pub fn endpoint(&self) -> Result<SocketAddr, ConfigError> {
        parse_endpoint(&self.key_service.endpoint)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.schema != SCHEMA {
            return Err(ConfigError::Schema(self.schema.clone()));
        }
        parse_endpoint(&self.key_service.endpoint)?;
        check_pem_certificate(&self.key_service.ca)?;
        check_parts(&self.name, &self.network.cluster_ranges)
    }
}

/// The name and ranges of a configuration still to be written (before its CA exists).
pub fn check_parts(name: &str, cluster_ranges: &[String]) -> Result<(), ConfigError> {
    if !valid_name(name) {
        return Err(ConfigError::Name(name.to_owned()));
    }
    if cluster_ranges.is_empty() {
        return Err(ConfigError::Ranges(
            "none given (at least the overlay range)".into(),
        ));
    }
    for (i, r) in cluster_ranges.iter().enumerate() {
        check_cidr(r).map_err(ConfigError::Ranges)?;
        if cluster_ranges[..i].contains(r) {
            return Err(ConfigError::Ranges(format!("{r:?} is listed twice")));
        }
    }
    Ok(())
}

fn valid_name(n: &str) -> bool {
    (1..=63).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

fn parse_endpoint(s: &str) -> Result<SocketAddr, ConfigError> {
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(a),
        _ => Err(ConfigError::Endpoint(s.to_owned())),
    }
}

/// Exactly one PEM CERTIFICATE block (whitespace around it only) whose body is base64 of a DER
/// SEQUENCE. The TLS stack parses the certificate itself; this keeps a second certificate, a
/// private key or stray text out of a measured document.
fn check_pem_certificate(pem: &str) -> Result<(), ConfigError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let t = pem.trim();
    let body = t
        .strip_prefix(BEGIN)
        .and_then(|r| r.strip_suffix(END))
        .ok_or_else(|| ConfigError::Ca(format!("expected one {BEGIN} ... {END} block")))?;
    if body.contains("-----") {
        return Err(ConfigError::Ca("more than one PEM block".into()));
    }
    let b64: String = body.split_whitespace().collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| ConfigError::Ca(format!("the certificate is not base64: {e}")))?;
    if der.len() < 64 || der[0] != 0x30 {
        return Err(ConfigError::Ca(
            "the certificate is not a DER SEQUENCE".into(),
        ));
    }
    Ok(())
}

/// `ADDRESS/PREFIX` with no host bits set.
fn check_cidr(s: &str) -> Result<(), String> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected ADDRESS/PREFIX"))?;
    let addr: IpAddr = a.parse().map_err(|_| format!("{s:?}: bad address"))?;
    let prefix: u8 = p.parse().map_err(|_| format!("{s:?}: bad prefix length"))?;
    let bits: u32 = if addr.is_ipv4() { 32 } else { 128 };
    if u32::from(prefix) > bits || prefix == 0 {
        return Err(format!("{s:?}: prefix length must be 1-{bits}"));
    }
    let host_bits_set = match addr {
        IpAddr::V4(v) => u32::from(v) & (u32::MAX >> prefix.min(31)) != 0 && prefix < 32,
        IpAddr::V6(v) => u128::from(v) & (u128::MAX >> prefix.min(127)) != 0 && prefix < 128,
    };
    if host_bits_set {
        return Err(format!("{s:?}: host bits set (a range, not an address)"));
    }
    Ok(())
}

/// Where a node reads its cluster configuration (`[cluster] source` in init.toml; the image's
/// variant decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// QEMU's firmware configuration device: `-fw_cfg name=opt/nacre/cluster.toml,file=...`,
    /// read through the kernel's qemu_fw_cfg driver (module `qemu_fw_cfg`).
    QemuFwCfg,
    /// AWS EC2 instance user data through IMDSv2 ([`metadata`]).
    AwsImds,
    /// The GCE instance attribute `nacre-cluster` ([`metadata`]).
    GcpMetadata,
    /// Azure VM user data through IMDS, base64 ([`metadata`]).
    AzureImds,
}

/// Where the sources are on this machine, and how long a metadata server may take.
#[derive(Debug, Clone)]
pub struct Platform {
    /// The kernel's fw_cfg items by name ([`FW_CFG_SYSFS`]).
    pub fw_cfg_sysfs: PathBuf,
    /// The metadata server ([`METADATA_ADDR`]; tests point it at 127.0.0.1).
    pub metadata: SocketAddr,
    /// How long a metadata server may take to answer, retries included.
    pub wait: Duration,
    /// How long one attempt (connect, request, response) may take.
    pub request_timeout: Duration,
}

/// Default of [`Platform::wait`] on a node.
pub const METADATA_WAIT: Duration = Duration::from_secs(60);
/// Default of [`Platform::request_timeout`] on a node.
pub const METADATA_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl Platform {
    /// A node's: fw_cfg in sysfs, the clouds' metadata server, [`METADATA_WAIT`].
    pub fn node() -> Self {
        Platform {
            fw_cfg_sysfs: PathBuf::from(FW_CFG_SYSFS),
            metadata: METADATA_ADDR,
            wait: METADATA_WAIT,
            request_timeout: METADATA_REQUEST_TIMEOUT,
        }
    }
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::QemuFwCfg => "qemu-fw-cfg",
            Source::AwsImds => "aws-imds",
            Source::GcpMetadata => "gcp-metadata",
            Source::AzureImds => "azure-imds",
        }
    }

    /// The source is reached over the underlay: bring it up before [`Source::read`].
    pub fn needs_network(self) -> bool {
        !matches!(self, Source::QemuFwCfg)
    }

    /// The raw bytes from the platform (not yet parsed). A metadata server is retried until
    /// `p.wait` has passed (`log` hears about each retry); everything else fails at once.
    pub fn read(self, p: &Platform, log: &dyn Fn(&str)) -> Result<Vec<u8>, ConfigError> {
        match self {
            Source::QemuFwCfg => read_fw_cfg(&p.fw_cfg_sysfs, FW_CFG_NAME),
            Source::AwsImds | Source::GcpMetadata | Source::AzureImds => {
                metadata::read(p, self, log)
            }
        }
    }
}

/// An fw_cfg item by name: its `size` file first (so an oversized item is refused before it
/// is read), then `raw`, which must have exactly that size.
fn read_fw_cfg(by_name: &Path, name: &str) -> Result<Vec<u8>, ConfigError> {
    let dir = by_name.join(name);
    let display = dir.display().to_string();
    if !dir.is_dir() {
        return Err(ConfigError::Missing(format!("fw_cfg {display}")));
    }
    let size_path = dir.join("size");
    let size_text = std::fs::read_to_string(&size_path).map_err(|source| ConfigError::Read {
        path: size_path.display().to_string(),
        source,
    })?;
    let size: usize = size_text.trim().parse().map_err(|_| ConfigError::Read {
        path: size_path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a number"),
    })?;
    if size > MAX_LEN {
        return Err(ConfigError::TooLarge(size));
    }
    let raw_path = dir.join("raw");
    let bytes = std::fs::read(&raw_path).map_err(|source| ConfigError::Read {
        path: raw_path.display().to_string(),
        source,
    })?;
    if bytes.len() != size {
        return Err(ConfigError::Read {
            path: raw_path.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} bytes read, fw_cfg says {size}", bytes.len()),
            ),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real self-signed certificate made for these tests (openssl req -x509 -newkey ec -pkeyopt
    // ec_paramgen_curve:P-256 -subj /CN=nacre-test -days 1 -nodes); nacre-init's tests share it.
    const CA: &str = include_str!("../tests/data/test-ca.pem");

    fn sample() -> ClusterConfig {
        ClusterConfig::new(
            "test-1",
            "10.0.2.2:7443".parse().unwrap(),
            CA,
            vec!["10.244.0.0/16".into()],
        )
        .unwrap()
    }

    #[test]
    fn render_parse_round_trip_and_digest_of_exact_bytes() {
        let c = sample();
        let text = c.render().unwrap();
        let m = parse(text.as_bytes()).unwrap();
        assert_eq!(m.config, c);
        assert_eq!(m.digest, digest(text.as_bytes()));
        // One more space changes the digest (the bytes are measured, not the meaning).
        let m2 = parse(format!("{text} ").as_bytes()).unwrap();
        assert_eq!(m2.config, c);
        assert_ne!(m2.digest, m.digest);
        assert_eq!(c.endpoint().unwrap(), "10.0.2.2:7443".parse().unwrap());
    }

    fn edit(from: &str, to: &str) -> Result<Measured, ConfigError> {
        let text = sample().render().unwrap();
        assert!(text.contains(from), "{from:?} not in {text}");
        parse(text.replacen(from, to, 1).as_bytes())
    }

    #[test]
    fn strict_parsing_names_what_is_wrong() {
        let e = |r: Result<Measured, ConfigError>| r.unwrap_err().to_string();
        assert!(e(edit("[network]", "[network]\nmtu = 1400")).contains("mtu"));
        assert!(e(edit("name = ", "nmae = ")).contains("nmae"));
        assert!(e(edit(
            "schema = \"nacre.cluster.v1\"",
            "schema = \"nacre.cluster.v2\""
        ))
        .contains("schema"));
        assert!(e(edit("test-1", "Test_1")).contains("name"));
        assert!(e(edit("10.0.2.2:7443", "keys.example:7443")).contains("endpoint"));
        assert!(e(edit("10.0.2.2:7443", "10.0.2.2:0")).contains("endpoint"));
        assert!(e(edit("10.244.0.0/16", "10.244.0.1/16")).contains("host bits"));
        assert!(e(edit("10.244.0.0/16", "10.244.0.0/33")).contains("prefix"));
        assert!(e(edit("10.244.0.0/16", "10.244.0.0")).contains("ADDRESS/PREFIX"));
        assert!(e(edit("[\"10.244.0.0/16\"]", "[]")).contains("none given"));
        assert!(e(edit("-----END CERTIFICATE-----", "-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----")).contains("more than one"));
        assert!(e(edit(
            "-----BEGIN CERTIFICATE-----",
            "-----BEGIN PRIVATE KEY-----"
        ))
        .contains("block"));
        assert!(e(edit("MIIBgDCC", "!!!!gDCC")).contains("base64"));
        // Missing tables, empty input, binary, oversized.
        assert!(matches!(parse(b""), Err(ConfigError::Empty)));
        assert!(matches!(
            parse(b"schema = \"nacre.cluster.v1\"\nname = \"a\"\n"),
            Err(ConfigError::Toml(_))
        ));
        assert!(matches!(parse(&[0xff, 0xfe]), Err(ConfigError::NotText(0))));
        assert!(matches!(
            parse(b"name = \"a\0\""),
            Err(ConfigError::NotText(9))
        ));
        assert!(matches!(
            parse(&vec![b'#'; MAX_LEN + 1]),
            Err(ConfigError::TooLarge(_))
        ));
        assert!(ClusterConfig::new("x", "10.0.0.1:1".parse().unwrap(), "junk", vec![]).is_err());
    }

    /// What `nacre-keyservice init --pod-cidr --service-cidr` writes: the overlay, pod and
    /// service CIDRs, in that order, each once.
    #[test]
    fn overlay_pod_and_service_ranges_round_trip_and_are_listed_once() {
        let ranges = ["10.244.0.0/16", "10.32.0.0/16", "10.96.0.0/12"];
        let c = ClusterConfig::new(
            "test-1",
            "10.0.2.2:7443".parse().unwrap(),
            CA,
            ranges.iter().map(|r| r.to_string()).collect(),
        )
        .unwrap();
        let text = c.render().unwrap();
        assert!(
            text.contains(r#"cluster_ranges = ["10.244.0.0/16", "10.32.0.0/16", "10.96.0.0/12"]"#),
            "{text}"
        );
        assert_eq!(
            parse(text.as_bytes())
                .unwrap()
                .config
                .network
                .cluster_ranges,
            ranges
        );
        let twice = text.replacen("\"10.96.0.0/12\"", "\"10.32.0.0/16\"", 1);
        let e = parse(twice.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("\"10.32.0.0/16\" is listed twice"), "{e}");
    }

    #[test]
    fn fw_cfg_item_is_read_by_size_and_refused_when_absent_or_short() {
        let dir = std::env::temp_dir().join(format!("nacre-cluster-fwcfg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let item = dir.join(FW_CFG_NAME);
        let p = Platform {
            fw_cfg_sysfs: dir.clone(),
            ..Platform::node()
        };
        let read = || Source::QemuFwCfg.read(&p, &|_| ());
        let err = read().unwrap_err();
        assert!(matches!(err, ConfigError::Missing(_)), "{err}");
        std::fs::create_dir_all(&item).unwrap();
        let text = sample().render().unwrap();
        std::fs::write(item.join("raw"), &text).unwrap();
        std::fs::write(item.join("size"), format!("{}\n", text.len())).unwrap();
        let bytes = read().unwrap();
        assert_eq!(parse(&bytes).unwrap().config, sample());
        std::fs::write(item.join("size"), format!("{}\n", text.len() + 1)).unwrap();
        assert!(read().unwrap_err().to_string().contains("fw_cfg says"));
        std::fs::write(item.join("size"), format!("{}\n", MAX_LEN + 1)).unwrap();
        assert!(matches!(read(), Err(ConfigError::TooLarge(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
